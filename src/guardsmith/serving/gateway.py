"""``guardsmith serve gateway``: the filtered generation system (method B.1) as an OpenAI-compatible service.

``POST /v1/chat/completions`` forwards the request to a generator (any OpenAI-compatible URL,
through the official ``openai`` SDK's ``AsyncOpenAI``), scores every answer with the guard (in
process from a model folder or rule, or a ``serve guard`` URL through its ``/v1/moderations``),
and returns the answer when t < tau, else the refusal text (``FilteredSystem.is_filtered``).
With ``prompt_harm`` among ``gate_tasks`` the prompt alone is scored first and a prompt at or
above tau is refused without calling the generator. A streaming request is answered after the
guard has seen the whole answer (buffered), then released as SSE chunks. The guard's time is
reported in the ``x-guardsmith-guard-ms`` response header and in ``/metrics``; every request
logs its t, tau and decision (never the prompt text at INFO). Interactions near the boundary
(|t - tau| < delta) are collected as ``interactions`` tables (`guardsmith.serving.collect`).

Configuration: :class:`GatewayConfig` (a YAML file, ``--config``).
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the handlers' `Request` annotations
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardsmith.config import option
from guardsmith.errors import GuardsmithError, redact
from guardsmith.filtered_system import DEFAULT_REFUSAL, FilteredSystem, check_scores
from guardsmith.serving.api import APIError, Choice, bad, chat_request, completion, sse_chunks, unknown_model
from guardsmith.serving.batcher import Batcher
from guardsmith.serving.collect import InteractionSink, interaction_row
from guardsmith.serving.engine import GuardEngine, Item
from guardsmith.serving.http import base_app, json_body
from guardsmith.serving.metrics import ServiceMetrics
from guardsmith.vocabulary import HARM_TASKS

log = logging.getLogger("guardsmith.serving")

GATE_TASKS = HARM_TASKS
"""What can gate an answer: the prompt alone, or each answer."""


@dataclass
class GatewayConfig:
    """The gateway's settings (YAML keys)."""

    generator: str = option(help="Base URL of the generator's OpenAI-compatible API, e.g. http://vllm:8000/v1.")
    guard: str = option(help="The guard: a model folder (path, file:// or s3:// URI, scored in process), "
                             "openai:URL?model=NAME, rule:keywords / rule:letters (deterministic stand-ins), or the "
                             "http(s)://HOST:PORT/v1 URL of a `guardsmith serve guard` (its /v1/moderations).")
    model: str = option("guardsmith-gateway", "Model name clients ask for (the generator_model name is accepted too).")
    generator_model: str = option("", "Model name sent to the generator (empty: the name the client asked for).")
    generator_api_key_env: str = option("", "Environment variable holding the generator's API key (empty: none).")
    guard_api_key_env: str = option("", "Environment variable holding the guard service's API key (URL guards; empty: none).")
    guard_model: str = option("", "Model name sent to a guard service URL (empty: the service's own).")
    tau: float = option(0.5, "Filter threshold: an answer with t >= tau is replaced by the refusal.")
    refusal: str = option(DEFAULT_REFUSAL, "Text returned in place of a filtered answer.")
    taxonomy: str | None = option(None, "Taxonomy the guard judges with (aegis2, wildguard); default: the guard's own.")
    policy: str | None = option(None, "Custom policy text the guard judges with (wins over taxonomy); default: the guard's own.")
    gate_tasks: list[str] = option(help="What gates: response_harm (score each answer), prompt_harm (score the "
                                        "prompt first; refuse without generating).",
                                   factory=lambda: ["response_harm"])
    delta: float = option(0.1, "Interactions with |t - tau| < delta are collected for the next training run.")
    interactions_uri: str = option("", "Where near-boundary interactions go: each flush a committed table "
                                       "<uri>/part-<time>-<n> (empty: not collected).")
    flush_rows: int = option(100, "Flush collected interactions after this many rows.")
    flush_seconds: float = option(60.0, "Flush collected interactions at least this often (seconds) when rows wait.")
    timeout_s: float = option(120.0, "Timeout of one generator or guard-service call, seconds.")
    max_retries: int = option(2, "Retries of a failed generator call (the openai SDK's backoff).")
    guard_backend: str = option("transformers", "Backend of an in-process guard model: transformers or vllm.")
    guard_device: str = option("auto", "Device of an in-process transformers guard: auto, cpu, cuda.")
    max_batch: int = option(16, "In-process guard: most answers scored in one model call.")
    max_wait_ms: float = option(5.0, "In-process guard: longest wait for more answers to batch, milliseconds.")

    def check(self) -> "GatewayConfig":
        from guardsmith.filtered_system import check_tau

        self.tau = check_tau(self.tau)
        bad_tasks = [t for t in self.gate_tasks if t not in GATE_TASKS]
        if bad_tasks or not self.gate_tasks:
            raise GuardsmithError(f"gate_tasks: {bad_tasks or 'empty'}; use one or both of {', '.join(GATE_TASKS)}")
        if not 0 <= self.delta <= 1:
            raise GuardsmithError(f"delta must be from 0 to 1, got {self.delta}")
        if not self.generator.startswith(("http://", "https://")):
            raise GuardsmithError(f"generator must be an http(s) URL, got {redact(self.generator)!r}")
        if not self.refusal.strip():
            raise GuardsmithError("refusal must not be empty")
        return self


def load_gateway_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
    """The gateway config from a YAML file, then overrides (unknown keys, wrong types: one line)."""
    from guardsmith.config import load_config

    return load_config(GatewayConfig, path, dict(overrides or {})).check()


# ---------------------------------------------------------------------------------------- guards

class LocalGuard:
    """The guard in process: a `GuardEngine` behind a batcher."""

    def __init__(self, engine: GuardEngine, cfg: GatewayConfig, metrics: ServiceMetrics) -> None:
        self.engine = engine
        self.key = engine.policy_key(cfg.taxonomy, cfg.policy)
        self.batcher = Batcher(engine.score_batch, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                               on_batch=metrics.batch)

    @property
    def taxonomy(self) -> str | None:
        return self.key[0]

    @property
    def policy(self) -> str | None:
        return self.key[1]

    async def score(self, items: Sequence[Item]) -> list[float]:
        for item in items:
            self.engine.check(self.key, item)
        return list(await asyncio.gather(*(self.batcher.submit(self.key, it) for it in items)))

    async def aclose(self) -> None:
        self.engine.close()


class RemoteGuard:
    """A `guardsmith serve guard` URL: its ``/v1/moderations`` ``score`` per item."""

    def __init__(self, url: str, cfg: GatewayConfig) -> None:
        import httpx

        self.url = url.rstrip("/")
        key = os.environ.get(cfg.guard_api_key_env) if cfg.guard_api_key_env else None
        if cfg.guard_api_key_env and not key:
            raise GuardsmithError(f"the guard API key variable ${cfg.guard_api_key_env} is not set")
        self.client = httpx.AsyncClient(timeout=cfg.timeout_s,
                                        headers={"Authorization": f"Bearer {key}"} if key else None)
        self.taxonomy, self.policy, self.model = cfg.taxonomy, cfg.policy, cfg.guard_model or None

    async def score(self, items: Sequence[Item]) -> list[float]:
        import httpx

        inputs = [it.prompt if it.response is None else
                  [{"role": "user", "content": it.prompt}, {"role": "assistant", "content": it.response}]
                  for it in items]
        body: dict[str, Any] = {"input": inputs}
        for key in ("taxonomy", "policy", "model"):
            if getattr(self, key):
                body[key] = getattr(self, key)
        try:
            resp = await self.client.post(f"{self.url}/moderations", json=body)
        except httpx.HTTPError as exc:
            raise APIError(502, f"the guard service {redact(self.url)} failed: {type(exc).__name__}",
                           code="guard_unavailable") from None
        if resp.status_code != 200:
            raise APIError(502, f"the guard service {redact(self.url)} answered {resp.status_code}",
                           code="guard_unavailable")
        try:
            results = resp.json()["results"]
            return check_scores([r["category_scores"]["harmful"] for r in results], len(items))
        except (ValueError, KeyError, TypeError, GuardsmithError) as exc:
            raise APIError(502, f"the guard service {redact(self.url)} sent a malformed reply: {exc}",
                           code="guard_unavailable") from None

    async def aclose(self) -> None:
        await self.client.aclose()


def open_guard_for(cfg: GatewayConfig, metrics: ServiceMetrics) -> LocalGuard | RemoteGuard:
    """The gateway's guard from its config."""
    if cfg.guard.startswith(("http://", "https://")):
        return RemoteGuard(cfg.guard, cfg)
    engine = GuardEngine.open(cfg.guard, name="gateway-guard", backend=cfg.guard_backend, device=cfg.guard_device,
                              batch_size=cfg.max_batch)
    return LocalGuard(engine, cfg, metrics)


# ---------------------------------------------------------------------------------------- app

def _prompt_of(messages: list[dict[str, str]]) -> Item:
    """The prompt judged for a chat request (the conversation ending in its last user turn)."""
    from guardsmith.serving.guard_service import conversation_item

    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return conversation_item(messages, "messages")


def gateway_app(cfg: GatewayConfig, *, guard: LocalGuard | RemoteGuard | None = None,
                metrics: ServiceMetrics | None = None):
    """The FastAPI app of the gateway (``guard`` given: use it instead of opening ``cfg.guard``)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from openai import APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI

    cfg = cfg.check()
    metrics = metrics or ServiceMetrics("gateway")
    guard = guard or open_guard_for(cfg, metrics)
    system = FilteredSystem(generator=None, scorer=guard, tau=cfg.tau, refusal=cfg.refusal)  # type: ignore[arg-type]
    api_key = os.environ.get(cfg.generator_api_key_env) if cfg.generator_api_key_env else None
    if cfg.generator_api_key_env and not api_key:
        raise GuardsmithError(f"the generator API key variable ${cfg.generator_api_key_env} is not set")
    client = AsyncOpenAI(base_url=cfg.generator, api_key=api_key or "unused", timeout=cfg.timeout_s,
                         max_retries=cfg.max_retries)
    sink = InteractionSink(cfg.interactions_uri, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds) \
        if cfg.interactions_uri else None
    served = [cfg.model] + ([cfg.generator_model] if cfg.generator_model and cfg.generator_model != cfg.model else [])
    state = {"ready": False}

    async def flush_loop() -> None:
        while True:
            await asyncio.sleep(min(1.0, sink.flush_seconds))
            if sink.due():
                await asyncio.to_thread(sink.flush)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(flush_loop()) if sink is not None else None
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await asyncio.to_thread(sink.flush)
            await client.close()
            await guard.aclose()

    def ready() -> dict[str, Any] | None:
        if not state["ready"]:
            return None
        return {"model": cfg.model, "generator": redact(cfg.generator), "tau": cfg.tau,
                "gate_tasks": list(cfg.gate_tasks), "collecting": sink is not None}

    app = base_app("guardsmith gateway", metrics, ready, lifespan=lifespan)
    app.state.config, app.state.metrics, app.state.sink = cfg, metrics, sink

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "guardsmith"}
                                           for m in served]}

    async def generate(req, model: str) -> tuple[list[Choice], int, int]:
        kwargs: dict[str, Any] = {"model": model, "messages": req.messages, "n": req.n, "temperature": req.temperature,
                                  "top_p": req.top_p, "max_tokens": req.max_tokens}
        if req.seed is not None:
            kwargs["seed"] = req.seed
        if req.stop:
            kwargs["stop"] = list(req.stop)
        try:
            reply = await client.chat.completions.create(**kwargs)
        except APIStatusError as exc:
            status = exc.status_code if exc.status_code < 500 else 502
            raise APIError(status, f"the generator answered {exc.status_code}: {str(exc.message)[:300]}",
                           code="generator_error") from None
        except (APIConnectionError, APITimeoutError) as exc:
            raise APIError(502, f"the generator at {redact(cfg.generator)} failed: {type(exc).__name__}",
                           code="generator_unavailable") from None
        choices = [Choice(c.message.content or "", c.finish_reason or "stop") for c in reply.choices]
        usage = reply.usage
        return choices, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)

    def collect(rid: str, prompt: str, response: str | None, t: float, filtered: bool) -> None:
        if sink is None or abs(t - cfg.tau) >= cfg.delta:
            return
        full = sink.add(interaction_row(prompt=prompt, response=response, t=t, tau=cfg.tau, filtered=filtered,
                                        model=cfg.model, request_id=rid, taxonomy=guard.taxonomy, policy=guard.policy))
        if full:
            asyncio.get_running_loop().run_in_executor(None, sink.flush)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = chat_request(await json_body(request))
        if req.model not in served:
            raise unknown_model(req.model, served)
        for flag, name in ((req.logprobs, "logprobs"), (req.continue_final_message, "continue_final_message")):
            if flag:
                raise bad(f"{name} is not supported by the gateway (a filtered answer has no token probabilities)",
                          name, "unsupported_parameter")
        rid = uuid.uuid4().hex[:16]
        item = _prompt_of(req.messages)
        guard_s = 0.0
        t_prompt = None
        if "prompt_harm" in cfg.gate_tasks:
            start = time.perf_counter()
            (t_prompt,) = await guard.score([Item(item.prompt)])
            guard_s += time.perf_counter() - start
        if t_prompt is not None and system.is_filtered(t_prompt):
            choices = [Choice(system.refusal, "stop") for _ in range(req.n)]
            ts: list[float | None] = [None] * req.n
            filtered = [True] * req.n
            prompt_tokens = completion_tokens = 0
            collect(rid, item.prompt, None, t_prompt, True)  # a prompt-only row
        else:
            choices, prompt_tokens, completion_tokens = await generate(req, cfg.generator_model or req.model)
            ts = [None] * len(choices)
            if "response_harm" in cfg.gate_tasks:
                start = time.perf_counter()
                ts = list(await guard.score([Item(item.prompt, c.text) for c in choices]))
                guard_s += time.perf_counter() - start
            filtered = [t is not None and system.is_filtered(t) for t in ts]
            for c, t, f in zip(choices, ts, filtered):
                if t is not None:
                    collect(rid, item.prompt, c.text, t, f)
            choices = [Choice(system.refusal, "stop") if f else c for c, f in zip(choices, filtered)]
        metrics.guard_latency.observe(guard_s)
        metrics.scored.inc(sum(t is not None for t in ts) + (t_prompt is not None))
        refused = sum(filtered)
        metrics.flagged.inc(refused)
        metrics.decisions.labels("refused").inc(refused)
        metrics.decisions.labels("answered").inc(len(choices) - refused)
        decision = ",".join("refused" if f else "answered" for f in filtered)
        shown_t = ",".join("-" if t is None else f"{t:.4f}" for t in ts)
        log.info("request %s t_prompt=%s t=%s tau=%.4f decision=%s guard_ms=%.1f", rid,
                 "-" if t_prompt is None else f"{t_prompt:.4f}", shown_t, cfg.tau, decision, guard_s * 1000)
        headers = {"x-guardsmith-guard-ms": f"{guard_s * 1000:.3f}", "x-guardsmith-decision": decision,
                   "x-guardsmith-t": shown_t, "x-request-id": rid}
        if req.stream:
            return StreamingResponse(sse_chunks(req.model, choices, prompt_tokens, completion_tokens, req.include_usage),
                                     media_type="text/event-stream", headers=headers)
        extra = {"guardsmith": {"tau": cfg.tau, "t_prompt": t_prompt, "t": ts, "filtered": filtered,
                                "guard_latency_s": guard_s}}
        return JSONResponse(completion(req.model, choices, prompt_tokens, completion_tokens, extra), headers=headers)

    return app
