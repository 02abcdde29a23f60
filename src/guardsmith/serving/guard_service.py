"""``guardsmith serve guard``: a trained guard behind the standard moderation API and as a chat model.

Endpoints:

- ``POST /v1/moderations``: OpenAI's request and response shape. ``input`` is a string, a list of
  strings, a conversation (a list of chat messages: the last assistant turn is judged, in the
  context of the user turn before it) or a list of conversations. Each result has ``flagged``
  (score >= the service's threshold), ``categories`` / ``category_scores`` with one category,
  ``harmful``, and the extra fields ``score`` (P(unsafe)) and ``task`` (``prompt_harm`` for a text
  or a conversation ending in a user turn, ``response_harm`` otherwise). Optional extra request
  fields: ``taxonomy`` (a taxonomy name) or ``policy`` (custom policy text), else the guard's own;
  ``reasoning: true`` adds the guard's R-mode ``reasoning`` and the labels it wrote.
- ``POST /v1/chat/completions``: the guard as a chat model (the messages go to the model as
  given), with ``stream``, ``n``, ``logprobs``/``top_logprobs``, ``stop``, ``max_tokens``,
  ``seed``; other parameters are 400s in OpenAI's error shape, another model name a 404.
- ``GET /v1/models``, ``/health``, ``/ready``, ``/metrics``.

Concurrent requests are batched into the model (:class:`~guardsmith.serving.batcher.Batcher`).
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the handlers' `Request` annotations
import uuid
from collections.abc import Mapping
from typing import Any

from guardsmith.serving.api import APIError, bad, chat_request, completion, content_text, sse_chunks, unknown_model
from guardsmith.serving.batcher import Batcher
from guardsmith.serving.engine import GuardEngine, Item
from guardsmith.serving.http import base_app, json_body
from guardsmith.serving.metrics import ServiceMetrics

MODERATION_FIELDS = frozenset({"input", "model", "taxonomy", "policy", "reasoning", "user"})
CATEGORY = "harmful"
"""The one category a guardsmith guard scores (its harm verdict)."""


def conversation_item(messages: list[Any], param: str) -> Item:
    """A chat conversation -> the item judged: its last assistant turn after the user turn before it
    (earlier turns rendered as the dialogue context), or its last user turn when it ends with one."""
    from guardsmith.serving.api import chat_messages
    from guardsmith.sources.topic_following import render_dialogue

    turns = [m for m in chat_messages(messages, param) if m["role"] != "system"]
    response = None
    if turns and turns[-1]["role"] == "assistant":
        response = turns.pop()["content"]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise bad(f"{param}: a conversation needs a user turn (before the assistant turn judged)", param)
    turn = turns.pop()["content"]
    try:
        prompt = render_dialogue([(m["role"], m["content"]) for m in turns], turn) if turns else turn
    except Exception as exc:  # noqa: BLE001 - the dialogue's own one-line error
        raise bad(f"{param}: {exc}", param) from None
    return Item(prompt, response)


def moderation_items(value: Any) -> list[Item]:
    """The items of a moderation ``input`` (see the module docs)."""
    if isinstance(value, str):
        if not value.strip():
            raise bad("input must not be empty", "input")
        return [Item(value)]
    if not isinstance(value, list) or not value:
        raise bad("input must be a string, a list of strings, or chat messages", "input")
    if all(isinstance(v, Mapping) and "role" in v for v in value):
        return [conversation_item(value, "input")]
    if all(isinstance(v, Mapping) and "type" in v for v in value):
        return [Item(content_text(value, "input"))]
    items = []
    for i, v in enumerate(value):
        if isinstance(v, str) and v.strip():
            items.append(Item(v))
        elif isinstance(v, list):
            items.append(conversation_item(v, f"input[{i}]"))
        else:
            raise bad(f"input[{i}] must be a non-empty string or a list of chat messages", f"input[{i}]")
    return items


def guard_app(engine: GuardEngine, *, threshold: float = 0.5, max_batch: int = 16, max_wait_ms: float = 5.0,
              metrics: ServiceMetrics | None = None):
    """The FastAPI app of the guard service for a loaded `engine`."""
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    from guardsmith.filtered_system import check_tau

    threshold = check_tau(threshold)
    metrics = metrics or ServiceMetrics("guard")
    scores = Batcher(engine.score_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, on_batch=metrics.batch)
    reasons = Batcher(engine.reason_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, on_batch=metrics.batch)
    chats = Batcher(engine.chat_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, on_batch=metrics.batch)
    app = base_app("guardsmith guard", metrics, lambda: {**engine.describe(), "threshold": threshold})
    app.state.engine, app.state.metrics, app.state.batchers = engine, metrics, (scores, reasons, chats)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0,
                                            "owned_by": "guardsmith"}]}

    @app.post("/v1/moderations")
    async def moderations(request: Request):
        body = await json_body(request)
        if not isinstance(body, Mapping):
            raise bad("the request body must be a JSON object")
        unknown = sorted(set(body) - MODERATION_FIELDS)
        if unknown:
            raise bad(f"parameter {unknown[0]!r} is not supported by this server", unknown[0], "unsupported_parameter")
        if body.get("model") is not None and body["model"] != engine.name:
            raise unknown_model(body["model"], [engine.name])
        if "input" not in body:
            raise bad("'input' is required", "input")
        want_reasoning = body.get("reasoning", False)
        if not isinstance(want_reasoning, bool):
            raise bad("reasoning must be true or false", "reasoning")
        if want_reasoning and engine.can_reason() is not None:
            raise bad(engine.can_reason() or "", "reasoning")
        items = moderation_items(body["input"])
        key = engine.policy_key(body.get("taxonomy"), body.get("policy"))
        for item in items:
            engine.check(key, item)
        values = await asyncio.gather(*(scores.submit(key, it) for it in items))
        reasoned = await asyncio.gather(*(reasons.submit(key, it) for it in items)) if want_reasoning else None
        results = []
        for i, (item, score) in enumerate(zip(items, values)):
            flagged = score >= threshold
            result: dict[str, Any] = {"flagged": flagged, "categories": {CATEGORY: flagged},
                                      "category_scores": {CATEGORY: score}, "score": score, "task": item.task}
            if reasoned is not None:
                r = reasoned[i]
                result["reasoning"] = r.reasoning
                result["reasoning_labels"] = {"prompt_harm": r.prompt_harm, "response_harm": r.response_harm,
                                              "parse_ok": r.parse_ok}
            results.append(result)
        metrics.scored.inc(len(results))
        metrics.flagged.inc(sum(r["flagged"] for r in results))
        return {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": engine.name, "results": results}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = chat_request(await json_body(request))
        if req.model != engine.name:
            raise unknown_model(req.model, [engine.name])
        engine.check_chat(req)
        result = await chats.submit(engine.chat_key(req), req)
        if isinstance(result, APIError):
            raise result
        choices, prompt_tokens, completion_tokens = result
        if req.stream:
            return StreamingResponse(sse_chunks(engine.name, choices, prompt_tokens, completion_tokens,
                                                req.include_usage), media_type="text/event-stream")
        return completion(engine.name, choices, prompt_tokens, completion_tokens)

    return app
