"""A small OpenAI-compatible chat-completions server with a pluggable responder.

Used by the tests (real sockets, fault injection), by ``guardsmith serve`` and, later, to serve
the offline template teacher and the rule judge. Standard library only: a
``ThreadingHTTPServer`` in a background thread.

Endpoints: ``POST /v1/chat/completions`` (messages, n, temperature, top_p, max_tokens, seed,
logprobs, top_logprobs) and ``GET /v1/models``.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable

from guardsmith.errors import GuardsmithError
from guardsmith.inference.base import Backend, Generation, Message, SamplingParams

log = logging.getLogger("guardsmith.inference.server")


@runtime_checkable
class Responder(Protocol):
    """Answers one chat request with `params.n` texts (or `Generation`s, to report token counts).

    A responder may also define ``top_logprobs(messages, params, k) -> dict[str, float]`` (the
    top-k first-token log-probabilities); the server then answers ``logprobs: true`` requests.
    """

    def __call__(self, messages: list[Message], params: SamplingParams) -> Sequence[str | Generation]:
        ...


class ScriptedResponder:
    """Replies from a list (served in order, cycling, one per sample) or from a callable.

    A callable gets ``(messages, params)`` and returns one text (used for all n samples) or a
    list of texts. `logprobs` (token -> log-probability) is returned as the first token's top
    log-probabilities when a request asks for them.
    """

    def __init__(self, replies: Sequence[str] | Callable[[list[Message], SamplingParams], str | Sequence[str]],
                 logprobs: dict[str, float] | None = None) -> None:
        if not callable(replies):
            replies = list(replies)
            if not replies:
                raise GuardsmithError("ScriptedResponder needs at least one reply")
            self._cycle = itertools.cycle(replies)
        self._replies = replies
        self._logprobs = dict(logprobs) if logprobs else None
        self._lock = threading.Lock()
        self.calls: list[tuple[list[Message], SamplingParams]] = []

    def __call__(self, messages: list[Message], params: SamplingParams) -> list[str]:
        with self._lock:
            self.calls.append((messages, params))
            if not callable(self._replies):
                return [next(self._cycle) for _ in range(params.n)]
        out = self._replies(messages, params)
        if isinstance(out, str):
            return [out] * params.n
        out = list(out)
        if not out:
            raise GuardsmithError("the scripted reply function returned no texts")
        return [out[i % len(out)] for i in range(params.n)]

    def top_logprobs(self, messages: list[Message], params: SamplingParams, k: int) -> dict[str, float] | None:
        """The configured first-token log-probabilities (top k), or None when none were given."""
        if self._logprobs is None:
            return None
        return dict(sorted(self._logprobs.items(), key=lambda kv: -kv[1])[:k])


def echo_responder(messages: list[Message], params: SamplingParams) -> str:
    """Default reply: the last message's content."""
    return messages[-1]["content"]


class BackendResponder:
    """Serves any `Backend` (e.g. the tiny transformers model); calls are serialised with a lock."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()

    def __call__(self, messages: list[Message], params: SamplingParams) -> list[Generation]:
        with self._lock:
            return self.backend.generate([messages], n=params.n, temperature=params.temperature,
                                         top_p=params.top_p, max_tokens=params.max_tokens, seed=params.seed)[0]


@dataclass
class Fault:
    """One injected failure: ``status`` (429, 500, 503...), ``slow`` or ``drop``."""

    kind: str
    status: int = 0
    retry_after: str | None = None
    delay_s: float = 0.0
    message: str = "injected fault"


class FaultPlan:
    """A queue of faults applied to the next chat-completion requests, in order (thread-safe)."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.served: list[Fault] = []

    def fail(self, status: int = 500, times: int = 1, retry_after: float | str | None = None,
             message: str = "injected fault") -> FaultPlan:
        """Answer the next `times` requests with `status` (and a Retry-After header if given)."""
        ra = None if retry_after is None else (retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
        return self._add(Fault("status", status=status, retry_after=ra, message=message), times)

    def slow(self, delay_s: float, times: int = 1) -> FaultPlan:
        """Sleep `delay_s` before answering the next `times` requests (beyond a client timeout)."""
        return self._add(Fault("slow", delay_s=delay_s), times)

    def drop(self, times: int = 1) -> FaultPlan:
        """Close the connection without any response for the next `times` requests."""
        return self._add(Fault("drop"), times)

    def _add(self, fault: Fault, times: int) -> FaultPlan:
        with self._lock:
            self._queue.extend([fault] * times)
        return self

    def pop(self) -> Fault | None:
        """The next fault to apply, or None."""
        with self._lock:
            if not self._queue:
                return None
            fault = self._queue.popleft()
            self.served.append(fault)
            return fault

    @property
    def pending(self) -> int:
        """Faults not yet applied."""
        with self._lock:
            return len(self._queue)


@dataclass
class ServerStats:
    """Counters for tests: chat requests seen, current and maximum requests in flight."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    auth_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ----------------------------------------------------------------------------

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None,
               kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def _authorised(self) -> bool:
        key = self.server.owner.api_key
        if key is None:
            return True
        if self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        with self.server.owner.stats.lock:
            self.server.owner.stats.auth_failures += 1
        self._error(401, "invalid or missing API key", kind="authentication_error")
        return False

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- endpoints ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        owner = self.server.owner
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, f"no route for GET {self.path}")
            return
        if not self._authorised():
            return
        self._send_json(200, {"object": "list", "data": [
            {"id": owner.model, "object": "model", "created": int(owner.started), "owned_by": "guardsmith"}]})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        owner = self.server.owner
        raw = self._read_body()
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route for POST {self.path}")
            return
        owner.stats.enter()
        try:
            fault = owner.faults.pop()
            if fault is not None and self._apply(fault):
                return
            if not self._authorised():
                return
            self._complete(raw)
        finally:
            owner.stats.leave()

    def _apply(self, fault: Fault) -> bool:
        """Apply a fault; True when the request has been fully handled by it."""
        if fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault.kind == "slow":
            self.server.owner._stopping.wait(fault.delay_s)
            return False
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        self._error(fault.status, fault.message, headers, kind="server_error" if fault.status >= 500 else "rate_limit")
        return True

    def _complete(self, raw: bytes) -> None:
        owner = self.server.owner
        try:
            req = json.loads(raw or b"{}")
            messages = req["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("'messages' must be a non-empty list")
            messages = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
            n = 1 if req.get("n") is None else int(req["n"])
            if owner.max_n is not None:
                n = min(n, owner.max_n)
            seed, temperature, top_p = req.get("seed"), req.get("temperature"), req.get("top_p")
            params = SamplingParams(
                n=n,
                temperature=1.0 if temperature is None else float(temperature),
                top_p=1.0 if top_p is None else float(top_p),
                max_tokens=int(req.get("max_tokens") or req.get("max_completion_tokens") or 256),
                seed=None if seed is None else int(seed),
            )
        except (ValueError, KeyError, TypeError, GuardsmithError) as exc:
            self._error(400, f"bad request: {exc}")
            return
        if owner.delay_s:
            owner._stopping.wait(owner.delay_s)
        try:
            replies = list(owner.responder(messages, params))
        except Exception as exc:  # noqa: BLE001 - reported to the client as a 500
            log.exception("responder failed")
            self._error(500, f"responder failed: {type(exc).__name__}: {exc}", kind="server_error")
            return
        logprobs = None
        if req.get("logprobs"):
            top = getattr(owner.responder, "top_logprobs", None)
            k = int(req.get("top_logprobs") or 1)
            values = top(messages, params, k) if top is not None else None
            if values:
                best = max(values.items(), key=lambda kv: kv[1])
                logprobs = {"content": [{"token": best[0], "logprob": best[1], "top_logprobs": [
                    {"token": t, "logprob": lp} for t, lp in values.items()]}]}
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        choices, completion_tokens = [], 0
        for i, reply in enumerate(replies):
            if isinstance(reply, Generation):
                text, reason = reply.text, reply.finish_reason
                prompt_tokens = reply.prompt_tokens
                completion_tokens += reply.completion_tokens
            else:
                text, reason = str(reply), "stop"
                completion_tokens += len(text.split())
            choices.append({"index": i, "message": {"role": "assistant", "content": text},
                            "finish_reason": reason, "logprobs": logprobs})
        self._send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model") or owner.model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog (5) resets clients under real concurrency
    owner: ChatServer


class ChatServer:
    """A running server: `.url` (ends in ``/v1``), `.port`, `.stats`, `.faults`, `.stop()`; a context manager."""

    def __init__(self, responder: Responder | Callable[..., Any], host: str = "127.0.0.1", port: int = 0, *,
                 api_key: str | None = None, faults: FaultPlan | None = None, model: str = "guardsmith-local",
                 max_n: int | None = None, delay_s: float = 0.0) -> None:
        self.responder = responder
        self.api_key = api_key
        self.faults = faults or FaultPlan()
        self.model = model
        self.max_n = max_n
        self.delay_s = delay_s
        self.stats = ServerStats()
        self.started = time.time()
        self._stopping = threading.Event()
        try:
            self._httpd = _HTTPServer((host, port), _Handler)
        except OSError as exc:
            raise GuardsmithError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._httpd.owner = self
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"guardsmith-serve-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def __repr__(self) -> str:
        return f"ChatServer(url={self.url!r}, model={self.model!r}, auth={'on' if self.api_key else 'off'})"

    def start(self) -> ChatServer:
        """Start serving in a background thread."""
        self._thread.start()
        log.info("serving OpenAI-compatible chat completions at %s", self.url)
        return self

    def wait(self) -> None:
        """Block until `stop()` is called (or Ctrl-C, which stops the server)."""
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(responder: Responder | Callable[..., Any] | None = None, host: str = "127.0.0.1", port: int = 0, *,
          api_key: str | None = None, api_key_env: str | None = None, faults: FaultPlan | None = None,
          model: str = "guardsmith-local", max_n: int | None = None, delay_s: float = 0.0) -> ChatServer:
    """Start a chat-completions server in a background thread and return it (running).

    `responder` defaults to echoing the last message. `port=0` picks a free port. An API key
    (given directly or read from `api_key_env`) makes the server answer 401 to other keys.
    `max_n` caps the choices per response (to exercise clients' top-up requests); `delay_s`
    delays every completion (to observe concurrency).
    """
    if api_key is None and api_key_env:
        api_key = os.environ.get(api_key_env) or None
        if api_key is None:
            raise GuardsmithError(f"the API key variable ${api_key_env} is not set")
    if responder is None:
        responder = ScriptedResponder(echo_responder)
    return ChatServer(responder, host, port, api_key=api_key, faults=faults, model=model,
                      max_n=max_n, delay_s=delay_s).start()
