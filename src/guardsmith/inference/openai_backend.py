"""OpenAI-compatible chat-completions client (teachers and judges): asyncio, bounded, retrying.

The API key is read from an environment variable (name configurable) and sent as a Bearer
token; ``user:password@`` in the base URL is sent as HTTP basic auth and removed from the URL.
Neither is ever logged, nor appears in error messages or in the backend's repr.

Every attempt has one deadline (`timeout_s`) for connecting, sending and reading the whole
reply; a server's Retry-After is honoured up to `retry_after_max_s`. A request the endpoint
rejects (4xx other than 408/409/425/429 and the auth/route errors 401/403/404) or whose reply
cannot be parsed is a failure of that request: one line naming the request's index, or an
error `Generation` with ``on_error="collect"``.

HTTP runs on aiohttp: one `aiohttp.ClientSession` per backend object, on an event loop in a
daemon thread of the backend's own, reused by every call until `close()`. Requests go through a
rolling window (a new one starts as soon as one finishes, at most `max_concurrency` in flight);
`generate_stream` / `agenerate_stream` hand results out as they complete, so a caller can keep
the window full across its own batches (the teacher's shards). docs/inference.md has the design
and docs/performance.md the measurements (httpx's pool bookkeeping capped the old client at
about 70 requests/s with 256 in flight).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import heapq
import json
import logging
import math
import os
import queue
import random
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
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

    One `aiohttp.ClientSession` (a connection pool of `max_concurrency` connections) per backend
    object, on an event loop in a daemon thread of its own, serves every call (sync and async) until
    `close()`; `max_concurrency` bounds the requests in flight across all calls at once.
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
        self.__loop: _ClientLoop | None = None
        self.__closer: weakref.finalize | None = None
        self.__lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OpenAIBackend(url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})")

    # -- public API -------------------------------------------------------------------------

    async def agenerate(self, requests: list[list[Message]], on_error: OnError = "raise",
                        **sampling: Any) -> list[list[Generation]]:
        """Coroutine behind `generate` (same keywords): results keep input order."""
        check_requests(requests)
        _check_on_error(on_error)
        return await asyncio.wrap_future(self._runtime().submit(
            self._agenerate(requests, SamplingParams(**sampling), on_error)))

    async def agenerate_stream(self, requests: Iterable[list[Message]], on_error: OnError = "raise",
                               ahead: int | None = None, **sampling: Any) -> AsyncIterator[tuple[int, list[Generation]]]:
        """``(index, generations)`` for each request as soon as its reply is in (completion order, not
        input order), with at most `max_concurrency` requests in flight: a rolling window.

        `requests` may be any iterable (a generator is read lazily, one request per free slot);
        ``ahead`` (optional) keeps request i from starting until every request before i - ahead has
        finished, which bounds how far results can run ahead of the oldest unfinished one. Keywords
        and errors as `generate`; leaving the loop early cancels the requests in flight.
        """
        _check_on_error(on_error)
        params = SamplingParams(**sampling)
        caller = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        done = self._runtime().submit(self._produce(requests, params, on_error, ahead,
                                                 lambda item: caller.call_soon_threadsafe(inbox.put_nowait, item)))
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.error
                yield item
        finally:
            done.cancel()

    def generate_stream(self, requests: Iterable[list[Message]], n: int = 1, temperature: float = 0.0,
                        top_p: float = 1.0, max_tokens: int = 256, seed: int | None = None,
                        on_error: OnError = "raise", ahead: int | None = None) -> Iterator[tuple[int, list[Generation]]]:
        """`agenerate_stream` for sync code: a generator of ``(index, generations)`` in completion order.

        The requests are read (lazily, from the client's own thread) and sent while the caller works
        on earlier results; closing the generator (or an exception in the caller's thread, e.g. a
        SIGTERM stop) cancels what is in flight.
        """
        _check_on_error(on_error)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        inbox: queue.Queue = queue.Queue()
        done = self._runtime().submit(self._produce(requests, params, on_error, ahead, inbox.put))
        try:
            while True:
                item = inbox.get()
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.error
                yield item
        finally:
            if not done.done():
                done.cancel()
                concurrent.futures.wait([done], timeout=5.0)

    def _generate(self, requests: list[list[Message]], params: SamplingParams,
                  on_error: OnError = "raise") -> list[list[Generation]]:
        """Send all requests concurrently (at most `max_concurrency` in flight), from sync code."""
        return self._call(self._agenerate(requests, params, on_error))

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
        return self._call(self._ordered(
            requests, "scoring", lambda i, req: self._probability_one(i, req, prefix, words)))

    def close(self) -> None:
        """Close the HTTP session (its connections) and stop the client's thread; safe to call twice.
        A later call opens a new session."""
        with self.__lock:
            closer, self.__closer, self.__loop = self.__closer, None, None
        if closer is not None:
            closer()

    # -- internals ---------------------------------------------------------------------------

    def _runtime(self) -> _ClientLoop:
        """The client's event loop thread and session, started on first use."""
        with self.__lock:
            if self.__loop is None:
                headers = {"Content-Type": "application/json"}
                if self.__key:
                    headers["Authorization"] = f"Bearer {self.__key}"
                self.__loop = _ClientLoop(self.max_concurrency, headers, self.__basic)
                self.__closer = weakref.finalize(self, self.__loop.close)
            return self.__loop

    def _call(self, coro) -> Any:
        """Run ``coro`` on the client's loop and wait for it from sync code. An exception in the
        waiting thread (SIGTERM's stop, Ctrl-C) cancels it; errors come out as themselves."""
        done = self._runtime().submit(coro)
        try:
            return done.result()
        except BaseException:
            if not done.done():
                done.cancel()
                concurrent.futures.wait([done], timeout=5.0)
            raise

    async def _agenerate(self, requests: list[list[Message]], params: SamplingParams,
                         on_error: OnError = "raise") -> list[list[Generation]]:
        return await self._ordered(requests, "generating",
                                   lambda i, req: self._generate_one(i, req, params, on_error))

    async def _ordered(self, requests: list[list[Message]], description: str, one: Callable) -> list:
        """``one(index, request)`` for every request through the rolling window; results keep
        input order; progress on long batches."""
        results: list[Any] = [None] * len(requests)
        ticker = None
        if requests and len(requests) >= self.progress_min_requests:
            from guardsmith.progress import track

            ticker = track(range(len(requests)), f"{description} via {self.base_url}")
            next(ticker)

        def keep(index: int, value: Any) -> None:
            results[index] = value
            if ticker is not None:
                next(ticker, None)

        await self._window(enumerate(requests), one, keep)
        if ticker is not None:
            ticker.close()
        return results

    async def _produce(self, requests: Iterable[list[Message]], params: SamplingParams, on_error: OnError,
                       ahead: int | None, put: Callable[[Any], Any]) -> None:
        """Feed `put` with ``(index, generations)`` as replies arrive, then `_END`; an error is put
        as `_Raised` (after which nothing more comes)."""
        try:
            await self._window(_checked(requests), lambda i, req: self._generate_one(i, req, params, on_error),
                               lambda i, gens: put((i, gens)), ahead)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer's thread
            put(_Raised(exc))
            return
        put(_END)

    async def _window(self, items: Iterator[tuple[int, Any]], one: Callable, emit: Callable[[int, Any], Any],
                      ahead: int | None = None) -> None:
        """Run ``one(index, item)`` for every item with at most `max_concurrency` running (a rolling
        window: a new one starts as soon as one finishes) and ``emit(index, result)`` each result as
        it comes; the first error cancels the rest and is raised."""
        items = iter(items)
        finished: asyncio.Queue[int] = asyncio.Queue()
        running: dict[int, asyncio.Task] = {}
        oldest: list[int] = []  # heap of running indexes (lazily pruned)
        held: tuple[int, Any] | None = None
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < self.max_concurrency:
                    if held is None:
                        try:
                            held = next(items)
                        except StopIteration:
                            exhausted = True
                            break
                    index, item = held
                    while oldest and oldest[0] not in running:
                        heapq.heappop(oldest)
                    if ahead is not None and oldest and index - oldest[0] > ahead:
                        break
                    task = asyncio.ensure_future(one(index, item))
                    task.add_done_callback(lambda _t, i=index: finished.put_nowait(i))
                    running[index] = task
                    heapq.heappush(oldest, index)
                    held = None
                if not running:
                    return
                index = await finished.get()
                emit(index, running.pop(index).result())
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await asyncio.wait(list(running.values()))

    def _redact(self, text: Any) -> str:
        """``text`` as one line with the API key, the basic-auth password and URL credentials hidden."""
        out = str(text)
        for secret in (self.__key, self.__basic[1] if self.__basic else None):
            if secret:
                out = out.replace(secret, "***")
        return _one_line(out)

    async def _attempt(self, payload: bytes) -> tuple[int, str, str | None, bytes]:
        """One POST, the whole reply read: ``(status, reason, Retry-After, body)``."""
        runtime = self._runtime()
        async with runtime.session().post(self.url, data=payload, **runtime.proxy(self.url)) as resp:
            return resp.status, resp.reason or "", resp.headers.get("Retry-After"), await resp.read()

    async def _post(self, index: int, body: dict[str, Any]) -> Any:
        """POST with retries on 429/5xx/timeouts/dropped connections; returns the parsed JSON.

        Each attempt (connect, send, read the whole reply) has one deadline of `timeout_s`.
        A rejection of this request raises `BadReply`; key/URL errors and exhausted retries raise
        GuardsmithError naming request `index`.
        """
        import aiohttp

        payload = json.dumps(body).encode()
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            wait: float | None = None
            try:
                async with asyncio.timeout(self.timeout_s):
                    status, reason, retry_after, raw = await self._attempt(payload)
            except TimeoutError as exc:
                last = f"timed out: no complete reply within {self.timeout_s:g} s ({type(exc).__name__})"
            except aiohttp.ClientError as exc:
                last = f"connection error ({type(exc).__name__}: {self._redact(exc) or 'no detail'})"
            else:
                if status < 300:
                    try:
                        return json.loads(raw)
                    except ValueError:
                        shown = raw[:120].decode("utf-8", "replace")
                        raise BadReply("malformed reply", f"HTTP {status} with a body that is not JSON: "
                                                          f"{self._redact(shown)!r}") from None
                message = self._redact(_error_message(raw, reason))
                if status in CONFIG_STATUSES:
                    hint = ""
                    if status in (401, 403):
                        hint = (f" (check the API key in ${self.api_key_env}"
                                f"{'' if self.__key else ', which is not set'})")
                    raise GuardsmithError(f"request {index}: {self.url} answered HTTP {status}: {message}{hint}")
                if status not in RETRY_STATUSES:
                    raise BadReply(f"HTTP {status}", message)
                last = f"HTTP {status}: {message}"
                after = parse_retry_after(retry_after)
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

    async def _generate_one(self, index: int, messages: list[Message], params: SamplingParams,
                            on_error: OnError) -> list[Generation]:
        """One request's `n` generations (topped up when the server returns fewer choices); the
        latency is the time spent sending and waiting for replies, not waiting for a free slot."""
        out: list[Generation] = []
        sent = 0.0
        round_ = 0
        sem = self._runtime().semaphore()
        try:
            while len(out) < params.n:
                want = params.n - len(out)
                seed = None if params.seed is None else params.seed + round_
                async with sem:
                    start = time.perf_counter()
                    try:
                        data = await self._post(index, self._body(messages, params, want, seed))
                    finally:
                        sent += time.perf_counter() - start
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
            return failed(params.n, str(exc), sent)
        for g in out:
            g.latency_s = sent
        return out

    async def _probability_one(self, index: int, messages: list[Message], prefix: str,
                               words: tuple[str, ...]) -> dict[str, float]:
        body = self._body([*messages, {"role": "assistant", "content": prefix}],
                          SamplingParams(max_tokens=1), 1, None)
        body.update({"logprobs": True, "top_logprobs": TOP_LOGPROBS,
                     "continue_final_message": True, "add_generation_prompt": False, **self.extra_body})
        try:
            async with self._runtime().semaphore():
                top = parse_top_logprobs(await self._post(index, body))
        except BadReply as exc:
            raise GuardsmithError(f"request {index}: {exc.describe(self.url)}") from None
        if top is None:
            raise GuardsmithError(f"{self.url} returned no logprobs; the server does not support "
                                  "answer probabilities (use the transformers or vllm backend)")
        return words_from_top_logprobs(top, words)


_END = object()
"""End of a stream of results."""


@dataclass
class _Raised:
    """An error that ended a stream, handed to the consumer's thread."""

    error: BaseException


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "collect"):
        raise GuardsmithError(f"on_error must be 'raise' or 'collect', got {on_error!r}")


def _checked(requests: Iterable[list[Message]]) -> Iterator[tuple[int, list[Message]]]:
    """``(index, request)`` of each request, checked as it is read (an error names its index)."""
    for index, request in enumerate(requests):
        try:
            check_requests([request])
        except GuardsmithError as exc:
            raise GuardsmithError(str(exc).replace("request 0", f"request {index}", 1)) from None
        yield index, request


KEEPALIVE_S = 4.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The client's event loop: uvloop's where it is installed (a dependency on Linux and macOS;
    about twice the requests per CPU-second of asyncio's own loop at hundreds in flight, see
    benchmarks/client_throughput.py), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
"""Idle pooled connections are closed after this long: below the 5 s keep-alive of uvicorn (vLLM,
SGLang), so a connection the server is about to drop is not reused for a (non-retryable) POST."""


class _ClientLoop:
    """An asyncio loop in a daemon thread holding one `aiohttp.ClientSession` (pool of `limit`
    connections) and the semaphore that bounds requests in flight; `close()` ends both."""

    def __init__(self, limit: int, headers: dict[str, str], basic: tuple[str, str] | None) -> None:
        self.limit = limit
        self._headers = headers
        self._basic = basic
        self._session: Any = None
        self._proxy: dict[str, Any] | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self._run, name="guardsmith-openai", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def session(self):
        """The session (created on first use, inside the loop)."""
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0, keepalive_timeout=KEEPALIVE_S,
                                             ttl_dns_cache=300)
            headers = dict(self._headers)
            if self._basic:
                headers["Authorization"] = aiohttp.encode_basic_auth(*self._basic)
            # trust_env=False: aiohttp would then look up netrc and the proxy variables in a worker
            # thread on every request (two thread hops each); the proxy is resolved once instead
            self._session = aiohttp.ClientSession(connector=connector, headers=headers,
                                                  timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def proxy(self, url: str) -> dict[str, Any]:
        """``proxy``/``proxy_auth`` keywords for requests to ``url`` from the standard environment
        variables (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), looked up once per session."""
        if self._proxy is None:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
                self._proxy = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:
                self._proxy = {}
        return self._proxy

    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        return self._semaphore

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=5.0)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def close(self) -> None:
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        if threading.current_thread() is self.thread:  # garbage-collected inside its own loop
            self.loop.create_task(self._shutdown()).add_done_callback(lambda _t: self.loop.stop())
            return
        try:
            self.submit(self._shutdown()).result(timeout=10.0)
        except BaseException:  # noqa: BLE001 - closing is best effort; the thread is a daemon
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10.0)
        if not self.thread.is_alive():
            self.loop.close()


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


def _error_message(body: bytes, reason: str = "") -> str:
    """The server's error message from an OpenAI-style error body, else the start of the text."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or data)[:300]
    except ValueError:
        return (body[:300].decode("utf-8", "replace") or reason or "")[:300]


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@`` and the ``(user, password)`` for basic auth (None if absent)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (unquote(user), unquote(password))
