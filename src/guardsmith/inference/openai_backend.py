"""OpenAI-compatible chat-completions client (teachers and judges): asyncio, bounded, retrying.

The API key is read from an environment variable (name configurable) and sent as a Bearer
token; ``user:password@`` in the base URL is sent as HTTP basic auth and removed from the URL.
Neither is ever logged, nor appears in error messages or in the backend's repr.

Every attempt has one deadline (`timeout_s`) for connecting, sending and reading the whole
reply; a server's Retry-After is honoured up to `retry_after_max_s`. A request the endpoint
rejects (4xx other than 408/409/425/429 and the auth/route errors 401/403/404) or whose reply
cannot be parsed is a failure of that request: one line naming the request's index, or an
error `Generation` with ``on_error="collect"``.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from guardsmith.errors import GuardsmithError, redact
from guardsmith.inference.base import (
    Backend,
    Generation,
    Message,
    OnError,
    SamplingParams,
    check_requests,
    failed,
    normalise_logprobs,
    plain_messages,
)

log = logging.getLogger("guardsmith.inference.openai")

RETRY_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
TOP_LOGPROBS = 20
"""First-token alternatives asked for when scoring answer words."""
CONFIG_STATUSES = frozenset({401, 403, 404})
"""Rejections that concern every request alike (key, permission, URL or model name): never a bad row."""
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BadReply(GuardsmithError):
    """One request failed on its own: the endpoint rejected it (``status="HTTP 400"``) or its reply
    cannot be parsed (``status="malformed reply"``). `cause` is one line."""

    def __init__(self, status: str, cause: str) -> None:
        self.status = status
        self.cause = _one_line(cause)
        super().__init__(f"{status}: {self.cause}")

    def describe(self, url: str) -> str:
        """The failure as a sentence about `url`."""
        if self.status == "malformed reply":
            return f"{url} sent a malformed reply: {self.cause}"
        return f"{url} answered {self.status}: {self.cause}"


def _one_line(text: Any, limit: int = 300) -> str:
    """``text`` redacted, whitespace collapsed to single spaces, at most `limit` characters."""
    out = " ".join(redact(text).split())
    return out if len(out) <= limit else out[:limit - 3] + "..."


def _shown(value: Any) -> str:
    """A short repr of a JSON value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null", dict: "an object"}.get(type(value), type(value).__name__)


REASONING_FIELDS = ("reasoning_content", "reasoning")
"""Message fields in which servers return a reasoning model's chain of thought apart from the
answer: vLLM and SGLang with a reasoning parser, DeepSeek's API (``reasoning_content``); newer vLLM
and some hosted APIs (``reasoning``)."""


def with_reasoning(message: dict[str, Any], index: int, content: str) -> str:
    """``content`` with the message's separate chain of thought (:data:`REASONING_FIELDS`) put back in
    front as a ``<think>`` block, the form a reasoning model writes when no parser splits it off, so
    every reader sees one text whichever way the server is configured. Content that already holds a
    think block is left as it is."""
    for field in REASONING_FIELDS:
        reasoning = message.get(field)
        if reasoning is None:
            continue
        if not isinstance(reasoning, str):
            raise BadReply("malformed reply", f"choice {index}: {field} is {_json_type(reasoning)}, not text: "
                                              f"{_shown(reasoning)}")
        if reasoning.strip() and "<think>" not in content:
            return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.lstrip()}"
    return content


def parse_reply(data: Any) -> tuple[list[tuple[str, str]], int, int]:
    """``([(text, finish_reason), ...], prompt_tokens, completion_tokens)`` of a chat-completion body.

    Raises `BadReply` ("malformed reply") with a one-line cause for anything else: a body that is
    not an object, no choices, choices not a list, a choice or message not an object, content
    that is not text, usage not an object, token counts that are not non-negative integers.
    """
    if not isinstance(data, dict):
        raise BadReply("malformed reply", f"the body is {_json_type(data)}, not an object: {_shown(data)}")
    choices = data.get("choices")
    if choices is None or choices == []:
        err = data.get("error")
        if err:
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise BadReply("malformed reply", f"no choices; the body holds an error: {msg}")
        raise BadReply("malformed reply", "no choices")
    if not isinstance(choices, list):
        raise BadReply("malformed reply", f"choices is {_json_type(choices)}, not a list: {_shown(choices)}")
    out = []
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise BadReply("malformed reply", f"choice {i} is {_json_type(choice)}, not an object: {_shown(choice)}")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise BadReply("malformed reply",
                           f"choice {i}: message is {_json_type(message)}, not an object: {_shown(message)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise BadReply("malformed reply", f"choice {i}: content is {_json_type(content)}, not text: {_shown(content)}")
        reason = choice.get("finish_reason")
        if reason is not None and not isinstance(reason, str):
            raise BadReply("malformed reply", f"choice {i}: finish_reason is not text: {_shown(reason)}")
        out.append((with_reasoning(message, i, content or ""), reason or "stop"))
    usage = data.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise BadReply("malformed reply", f"usage is {_json_type(usage)}, not an object: {_shown(usage)}")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadReply("malformed reply", f"usage.{name} is not a non-negative integer: {_shown(value)}")
        counts.append(value)
    return out, counts[0], counts[1]


def parse_top_logprobs(data: Any) -> dict[str, float] | None:
    """First-token ``{token: logprob}`` of a chat-completion body asked for logprobs; None when the
    first choice has none. Raises `BadReply` for a malformed body or malformed logprobs."""
    parse_reply(data)
    lp = data["choices"][0].get("logprobs")
    if lp is None:
        return None
    try:
        first = lp["content"][0]
        tops = first.get("top_logprobs") or [first]
        top = {t["token"]: float(t["logprob"]) for t in tops}
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise BadReply("malformed reply", f"logprobs are not a list of tokens with log-probabilities: {_shown(lp)}") \
            from None
    if not all(isinstance(t, str) for t in top) or any(math.isnan(v) or v > 0 for v in top.values()):
        raise BadReply("malformed reply", f"logprobs are not tokens with log-probabilities <= 0: {_shown(lp)}")
    return top


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(max_s, base_s * 2**attempt))."""
    cap = min(max_s, base_s * (2 ** attempt))
    return (rng or random).uniform(0.0, cap)


class OpenAIBackend(Backend):
    """Client for any OpenAI-compatible ``/chat/completions`` endpoint (vLLM serve, OpenAI, the local server).

    Options: `base_url` (ending in ``/v1``), `model`, `api_key_env` (env var holding the key;
    unset means no Authorization header), `max_concurrency` (in-flight requests), `timeout_s`
    (deadline of one whole HTTP attempt: connect, send, read the full reply), `max_retries`
    (retries after the first attempt), `backoff_base_s` /
    `backoff_max_s` (full-jitter exponential backoff), `retry_after_max_s` (cap on a server's
    Retry-After), `extra_body` (merged into every request body), `progress_min_requests`
    (show progress for batches at least this long).
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        retry_after_max_s: float = 300.0,
        extra_body: dict[str, Any] | None = None,
        progress_min_requests: int = 50,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise GuardsmithError(f"OpenAI backend URL must start with http:// or https://, got {redact(base_url)!r}")
        if not model:
            raise GuardsmithError(f"no model name for {redact(base_url)}; add ?model=NAME to the spec")
        if not _ENV_NAME.match(api_key_env):
            raise GuardsmithError(f"api_key_env must be an environment variable name, got {api_key_env!r}")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or retry_after_max_s < 0:
            raise GuardsmithError("max_concurrency must be >= 1, max_retries >= 0, timeout_s > 0 "
                                  "and retry_after_max_s >= 0")
        base_url, self.__basic = _split_userinfo(base_url)
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self.extra_body = dict(extra_body or {})
        self.progress_min_requests = int(progress_min_requests)
        self.__key = os.environ.get(api_key_env) or None
        if self.__key and self.__basic:
            log.warning("%s: the URL's user:password is ignored because $%s holds an API key",
                        self.base_url, api_key_env)
            self.__basic = None

    def __repr__(self) -> str:
        return (f"OpenAIBackend(url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})")

    # -- public API -------------------------------------------------------------------------

    async def agenerate(self, requests: list[list[Message]], on_error: OnError = "raise",
                        **sampling: Any) -> list[list[Generation]]:
        """Coroutine behind `generate` (same keywords): results keep input order."""
        check_requests(requests)
        if on_error not in ("raise", "collect"):
            raise GuardsmithError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
        return await self._agenerate(requests, SamplingParams(**sampling), on_error)

    def _generate(self, requests: list[list[Message]], params: SamplingParams,
                  on_error: OnError = "raise") -> list[list[Generation]]:
        """Send all requests concurrently (at most `max_concurrency` in flight), from sync code."""
        return _run_sync(self._agenerate(requests, params, on_error))

    def _answer_probability(
        self, requests: list[list[Message]], prefix: str, words: tuple[str, ...]
    ) -> list[dict[str, float]]:
        """Best effort via ``logprobs``/``top_logprobs`` of the first completion token.

        The prefix is sent as a final assistant message to be continued (vLLM's
        ``continue_final_message``), with ``max_tokens=1``. Each word gets the probability of
        the top tokens that are a non-empty prefix of that word and of no other word (after
        stripping whitespace); tokens matching several words are ignored. This is a
        first-token approximation, so prefer the transformers or vLLM backend where exact
        scores matter. Raises GuardsmithError if the server returns no logprobs.
        """
        return _run_sync(self._each(
            requests, "scoring", lambda client, sem, i, req: self._probability_one(client, sem, i, req, prefix, words)))

    def close(self) -> None:
        """Nothing persistent to release: each call opens and closes its own HTTP client."""

    # -- internals ---------------------------------------------------------------------------

    def _client(self):
        import httpx

        headers = {"Content-Type": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        auth = httpx.BasicAuth(*self.__basic) if self.__basic else None
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        return httpx.AsyncClient(headers=headers, auth=auth, timeout=httpx.Timeout(self.timeout_s), limits=limits)

    async def _agenerate(self, requests: list[list[Message]], params: SamplingParams,
                         on_error: OnError = "raise") -> list[list[Generation]]:
        return await self._each(requests, "generating",
                                lambda client, sem, i, req: self._generate_one(client, sem, i, req, params, on_error))

    async def _each(self, requests: list[list[Message]], description: str, one: Callable) -> list:
        """``one(client, semaphore, index, request)`` for every request on one HTTP client; the
        semaphore keeps at most `max_concurrency` POSTs in flight; results keep input order."""
        async with self._client() as client:
            sem = asyncio.Semaphore(self.max_concurrency)
            return await self._gather([one(client, sem, i, req) for i, req in enumerate(requests)], description)

    async def _gather(self, coros: list, description: str) -> list:
        """Run coroutines concurrently, keep order, report progress on long batches."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            if tasks and len(tasks) >= self.progress_min_requests:
                from guardsmith.progress import track

                ticker = track(range(len(tasks)), f"{description} via {self.base_url}")
                next(ticker)
                for fut in asyncio.as_completed(tasks):
                    await fut
                    next(ticker, None)
            return list(await asyncio.gather(*tasks))
        finally:
            for t in tasks:
                t.cancel()

    def _redact(self, text: Any) -> str:
        """``text`` as one line with the API key, the basic-auth password and URL credentials hidden."""
        out = str(text)
        for secret in (self.__key, self.__basic[1] if self.__basic else None):
            if secret:
                out = out.replace(secret, "***")
        return _one_line(out)

    async def _post(self, client, index: int, body: dict[str, Any]) -> Any:
        """POST with retries on 429/5xx/timeouts/dropped connections; returns the parsed JSON.

        Each attempt (connect, send, read the whole reply) has one deadline of `timeout_s`.
        A rejection of this request raises `BadReply`; key/URL errors and exhausted retries raise
        GuardsmithError naming request `index`.
        """
        import httpx

        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            wait: float | None = None
            try:
                resp = await asyncio.wait_for(client.post(self.url, json=body), self.timeout_s)
            except (TimeoutError, httpx.TimeoutException) as exc:
                last = f"timed out: no complete reply within {self.timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__}: {self._redact(exc) or 'no detail'})"
            else:
                if resp.status_code < 300:
                    try:
                        return resp.json()
                    except ValueError:
                        raise BadReply("malformed reply", f"HTTP {resp.status_code} with a body that is not JSON: "
                                                          f"{self._redact(resp.text[:120])!r}") from None
                message = self._redact(_error_message(resp))
                if resp.status_code in CONFIG_STATUSES:
                    hint = ""
                    if resp.status_code in (401, 403):
                        hint = (f" (check the API key in ${self.api_key_env}"
                                f"{'' if self.__key else ', which is not set'})")
                    raise GuardsmithError(f"request {index}: {self.url} answered HTTP {resp.status_code}: "
                                          f"{message}{hint}")
                if resp.status_code not in RETRY_STATUSES:
                    raise BadReply(f"HTTP {resp.status_code}", message)
                last = f"HTTP {resp.status_code}: {message}"
                after = parse_retry_after(resp.headers.get("retry-after"))
                if after is not None:
                    wait = min(after, self.retry_after_max_s)
            if attempt + 1 >= attempts:
                break
            if wait is None:
                wait = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s)
            log.warning("request %d: POST %s failed (%s); retry %d/%d in %.2f s",
                        index, self.url, last, attempt + 1, self.max_retries, wait)
            await asyncio.sleep(wait)
        raise GuardsmithError(f"request {index}: POST {self.url} failed after {attempts} attempts; last error: {last}")

    def _body(self, messages: list[Message], params: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": plain_messages(messages),
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        body.update(self.extra_body)
        return body

    async def _generate_one(self, client, sem: asyncio.Semaphore, index: int, messages: list[Message],
                            params: SamplingParams, on_error: OnError) -> list[Generation]:
        out: list[Generation] = []
        start = time.perf_counter()
        round_ = 0
        try:
            while len(out) < params.n:
                want = params.n - len(out)
                seed = None if params.seed is None else params.seed + round_
                async with sem:
                    data = await self._post(client, index, self._body(messages, params, want, seed))
                choices, prompt_tokens, completion_total = parse_reply(data)
                share, extra = divmod(completion_total, len(choices))
                for i, (text, reason) in enumerate(choices[:want]):
                    out.append(Generation(text=text, prompt_tokens=prompt_tokens,
                                          completion_tokens=share + (1 if i < extra else 0), latency_s=0.0,
                                          finish_reason=reason))
                round_ += 1
        except BadReply as exc:
            if on_error == "raise":
                raise GuardsmithError(f"request {index}: {exc.describe(self.url)}") from None
            log.debug("request %d failed: %s", index, exc)
            return failed(params.n, str(exc), time.perf_counter() - start)
        latency = time.perf_counter() - start
        for g in out:
            g.latency_s = latency
        return out

    async def _probability_one(self, client, sem: asyncio.Semaphore, index: int, messages: list[Message],
                               prefix: str, words: tuple[str, ...]) -> dict[str, float]:
        body = self._body([*messages, {"role": "assistant", "content": prefix}],
                          SamplingParams(max_tokens=1), 1, None)
        body.update({"logprobs": True, "top_logprobs": TOP_LOGPROBS,
                     "continue_final_message": True, "add_generation_prompt": False, **self.extra_body})
        try:
            async with sem:
                top = parse_top_logprobs(await self._post(client, index, body))
        except BadReply as exc:
            raise GuardsmithError(f"request {index}: {exc.describe(self.url)}") from None
        if top is None:
            raise GuardsmithError(f"{self.url} returned no logprobs; the server does not support "
                                  "answer probabilities (use the transformers or vllm backend)")
        return words_from_top_logprobs(top, words)


def words_from_top_logprobs(top: dict[str, float], words: tuple[str, ...]) -> dict[str, float]:
    """Assign top first-token probabilities to the answer words they can start; normalise."""
    mass = {w: 0.0 for w in words}
    for token, lp in top.items():
        piece = token.strip()
        if not piece:
            continue
        hits = [w for w in words if w.startswith(piece)]
        if len(hits) == 1:
            mass[hits[0]] += math.exp(lp)
    if not any(mass.values()):
        raise GuardsmithError(f"no top token starts any of the answer words {words!r}")
    return normalise_logprobs({w: math.log(m) if m > 0 else -math.inf for w, m in mass.items()})


def _error_message(resp) -> str:
    """The server's error message from an OpenAI-style error body, else the start of the text."""
    try:
        data = resp.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or data)[:300]
    except ValueError:
        return (resp.text or resp.reason_phrase or "")[:300]


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@`` and the ``(user, password)`` for basic auth (None if absent)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (unquote(user), unquote(password))


def _run_sync(coro):
    """Run a coroutine to completion from sync code, even when the caller's thread has a running loop."""
    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if not running:
        try:
            return asyncio.run(coro)
        except BaseExceptionGroup as group:
            raise _own_error(group) from None
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=runner, name="guardsmith-openai")
    thread.start()
    thread.join()
    if "error" in box:
        error = box["error"]
        raise (_own_error(error) if isinstance(error, BaseExceptionGroup) else error)
    return box["value"]


def _own_error(group: BaseExceptionGroup) -> BaseException:
    """The first of our own errors inside an exception group (the HTTP stack's task groups wrap a
    SIGTERM stop or a failed request in one); the group itself when it holds none."""
    mine = group.subgroup(lambda exc: isinstance(exc, GuardsmithError))
    while isinstance(mine, BaseExceptionGroup):
        mine = mine.exceptions[0]
    return mine if mine is not None else group
