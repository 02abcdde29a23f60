"""A small OpenAI-compatible chat-completions server with a pluggable responder.

A stand-in for the real OpenAI-protocol servers (vLLM, hosted teachers) where they cannot run:
used by the tests (real sockets, fault injection), by ``guardsmith serve`` (a local model folder
over HTTP) and ``guardsmith serve offline-teacher`` (the offline template teacher and rule
judges, :mod:`guardsmith.standins.offline`). Standard library only: a ``ThreadingHTTPServer`` in
a background thread.

Endpoints: ``POST /v1/chat/completions`` (messages, n, temperature, top_p, max_tokens, seed,
logprobs, top_logprobs) and ``GET /v1/models``.

Fault injection (:class:`FaultPlan`): status answers with any Retry-After, slow answers, answers
dripped a byte at a time, dropped connections (before or in the middle of the body), malformed
bodies (:data:`MALFORMED`), and poisoned requests (every request whose body contains a marker
gets a fixed error, e.g. 400 "prompt too long").
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
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

log = logging.getLogger("guardsmith.standins.chat_server")


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


class Rejected(GuardsmithError):
    """Raised by a responder for a request it refuses (e.g. a prompt too long for the model):
    the server answers `status` (default 400) with the message, as a real endpoint would."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class BackendResponder:
    """Serves any `Backend` (e.g. the tiny transformers model); calls are serialised with a lock.
    A request the backend reports as failed on its own (too long for the model) is `Rejected`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()

    def __call__(self, messages: list[Message], params: SamplingParams) -> list[Generation]:
        with self._lock:
            gens = self.backend.generate([messages], n=params.n, temperature=params.temperature, top_p=params.top_p,
                                         max_tokens=params.max_tokens, seed=params.seed, on_error="collect")[0]
        if gens and gens[0].error:
            raise Rejected(gens[0].error)
        return gens


def _truncated(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return body[:len(body) // 2]


def _with(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], bytes]:
    """A mangler that sets ``payload[path...]`` to `value` (``"0"`` indexes the first choice)."""
    def mangle(payload: dict[str, Any]) -> bytes:
        target: Any = payload
        for key in path[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[path[-1]] = value
        return json.dumps(payload).encode()
    return mangle


MALFORMED: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "list": lambda p: json.dumps([p]).encode(),
    "string": lambda p: json.dumps("the teacher is thinking").encode(),
    "number": lambda p: b"42",
    "not_json": lambda p: b"<html><body>502 Bad Gateway</body></html>",
    "truncated": _truncated,
    "empty": lambda p: b"",
    "no_choices": _with(("choices",), []),
    "choices_not_list": _with(("choices",), {"0": "text"}),
    "message_not_object": _with(("choices", "0", "message"), "just text"),
    "content_not_text": _with(("choices", "0", "message", "content"), {"parts": ["a", "b"]}),
    "usage": _with(("usage",), "many"),
    "usage_tokens": _with(("usage", "completion_tokens"), "lots"),
    "logprobs": _with(("choices", "0", "logprobs"), {"content": "not a list"}),
}
"""Malformed 200 bodies :meth:`FaultPlan.malformed` can send, by name: each maps the real reply
(a chat-completion object) to the bytes sent instead."""


@dataclass
class Fault:
    """One injected failure: ``status`` (429, 500, 503...), ``slow``, ``drip``, ``drop`` or ``malformed``.

    `delay_s` is the wait of ``slow`` and the gap between bytes of ``drip``; `partial` makes a
    ``drop`` send the headers and half the body first; `body` names the :data:`MALFORMED` body.
    """

    kind: str
    status: int = 0
    retry_after: str | None = None
    delay_s: float = 0.0
    message: str = "injected fault"
    partial: bool = False
    body: str = ""


@dataclass(frozen=True)
class Poison:
    """Every request whose raw body contains `marker` is answered `status` with `message`."""

    marker: str
    status: int = 400
    message: str = "prompt too long"


class FaultPlan:
    """A queue of faults applied to the next chat-completion requests, in order (thread-safe),
    plus poison markers that apply to every matching request and consume no queued fault."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.served: list[Fault] = []
        self.poisons: list[Poison] = []
        self.poisoned = 0

    def fail(self, status: int = 500, times: int = 1, retry_after: float | str | None = None,
             message: str = "injected fault") -> FaultPlan:
        """Answer the next `times` requests with `status` (and a Retry-After header if given)."""
        ra = None if retry_after is None else (retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
        return self._add(Fault("status", status=status, retry_after=ra, message=message), times)

    def slow(self, delay_s: float, times: int = 1) -> FaultPlan:
        """Sleep `delay_s` before answering the next `times` requests (beyond a client timeout)."""
        return self._add(Fault("slow", delay_s=delay_s), times)

    def drop(self, times: int = 1, partial: bool = False) -> FaultPlan:
        """Close the connection without any response for the next `times` requests (`partial`:
        after the status line, the headers and half of the body)."""
        return self._add(Fault("drop", partial=partial), times)

    def drip(self, interval_s: float, times: int = 1) -> FaultPlan:
        """Answer the next `times` requests one byte every `interval_s` seconds (every single
        read is quick, so only a deadline on the whole reply stops the client)."""
        return self._add(Fault("drip", delay_s=interval_s), times)

    def malformed(self, body: str = "list", times: int = 1) -> FaultPlan:
        """Answer the next `times` requests 200 with a malformed body, named from :data:`MALFORMED`."""
        if body not in MALFORMED:
            raise GuardsmithError(f"unknown malformed body {body!r}; choose one of {', '.join(MALFORMED)}")
        return self._add(Fault("malformed", body=body), times)

    def poison(self, marker: str, status: int = 400, message: str = "prompt too long") -> FaultPlan:
        """Answer every request whose body contains `marker` with `status` and `message` (a bad row)."""
        if not marker:
            raise GuardsmithError("a poison marker must not be empty")
        with self._lock:
            self.poisons.append(Poison(marker, status, message))
        return self

    def poison_for(self, raw: bytes) -> Poison | None:
        """The poison rule matching a raw request body, or None (counts matches in `poisoned`)."""
        with self._lock:
            for rule in self.poisons:
                if rule.marker.encode() in raw or json.dumps(rule.marker)[1:-1].encode() in raw:
                    self.poisoned += 1
                    return rule
        return None

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

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None,
                   fault: Fault | None = None) -> None:
        """Send `payload` as JSON, or as `fault` says: malformed, dripped, or cut half way."""
        body = json.dumps(payload).encode()
        if fault is not None and fault.kind == "malformed":
            body = MALFORMED[fault.body](payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if fault is not None and fault.kind == "drop":
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self._hang_up()
            elif fault is not None and fault.kind == "drip":
                self.wfile.flush()
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    if self.server.owner._stopping.wait(fault.delay_s):
                        self._hang_up()
                        return
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None,
               kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def _authorised(self) -> bool:
        owner = self.server.owner
        wanted = []
        if owner.api_key is not None:
            wanted.append(f"Bearer {owner.api_key}")
        if owner.basic_auth is not None:
            wanted.append("Basic " + base64.b64encode(":".join(owner.basic_auth).encode()).decode())
        if not wanted:
            return True
        if self.headers.get("Authorization", "") in wanted:
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
            poison = owner.faults.poison_for(raw)
            if poison is not None:
                self._error(poison.status, poison.message)
                return
            fault = owner.faults.pop()
            if fault is not None and self._apply(fault):
                return
            if not self._authorised():
                return
            self._complete(raw, fault)
        finally:
            owner.stats.leave()

    def _apply(self, fault: Fault) -> bool:
        """Apply a fault; True when the request has been fully handled by it (``drip``,
        ``malformed`` and a partial ``drop`` shape the real reply instead)."""
        if fault.kind == "drop" and not fault.partial:
            self._hang_up()
            return True
        if fault.kind in ("drop", "drip", "malformed"):
            return False
        if fault.kind == "slow":
            self.server.owner._stopping.wait(fault.delay_s)
            return False
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        self._error(fault.status, fault.message, headers, kind="server_error" if fault.status >= 500 else "rate_limit")
        return True

    def _complete(self, raw: bytes, fault: Fault | None = None) -> None:
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
        except Rejected as exc:
            self._error(exc.status, str(exc))
            return
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
            choices.append({"index": i, "message": _message(text, owner.reasoning_field),
                            "finish_reason": reason, "logprobs": logprobs})
        self._send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model") or owner.model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, fault=fault)


_THINK = re.compile(r"^\s*<think>\n?(?P<reasoning>.*?)\n?</think>\s*", re.S)


def _message(text: str, reasoning_field: str | None) -> dict[str, Any]:
    """The assistant message of a reply; with ``reasoning_field`` a leading ``<think>`` block is moved
    into that field, as a server with a reasoning parser does (vLLM ``--reasoning-parser``)."""
    match = _THINK.match(text) if reasoning_field else None
    if match is None:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", reasoning_field: match.group("reasoning"), "content": text[match.end():]}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog (5) resets clients under real concurrency
    owner: ChatServer


class ChatServer:
    """A running server: `.url` (ends in ``/v1``), `.port`, `.stats`, `.faults`, `.stop()`; a context manager."""

    def __init__(self, responder: Responder | Callable[..., Any], host: str = "127.0.0.1", port: int = 0, *,
                 api_key: str | None = None, faults: FaultPlan | None = None, model: str = "guardsmith-local",
                 max_n: int | None = None, delay_s: float = 0.0, basic_auth: tuple[str, str] | None = None,
                 reasoning_field: str | None = None) -> None:
        self.responder = responder
        self.reasoning_field = reasoning_field
        self.api_key = api_key
        self.basic_auth = basic_auth
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
        auth = "on" if self.api_key or self.basic_auth else "off"
        return f"ChatServer(url={self.url!r}, model={self.model!r}, auth={auth})"

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
          model: str = "guardsmith-local", max_n: int | None = None, delay_s: float = 0.0,
          basic_auth: tuple[str, str] | None = None, reasoning_field: str | None = None) -> ChatServer:
    """Start a chat-completions server in a background thread and return it (running).

    `responder` defaults to echoing the last message. `port=0` picks a free port. An API key
    (given directly or read from `api_key_env`) makes the server answer 401 to other keys.
    `basic_auth` (user, password) accepts HTTP basic auth instead (or as well).
    `max_n` caps the choices per response (to exercise clients' top-up requests); `delay_s`
    delays every completion (to observe concurrency). `reasoning_field` (``reasoning_content`` or
    ``reasoning``) moves a reply's leading ``<think>`` block into that message field, as a server
    with a reasoning parser does.
    """
    if api_key is None and api_key_env:
        api_key = os.environ.get(api_key_env) or None
        if api_key is None:
            raise GuardsmithError(f"the API key variable ${api_key_env} is not set")
    if responder is None:
        responder = ScriptedResponder(echo_responder)
    return ChatServer(responder, host, port, api_key=api_key, faults=faults, model=model,
                      max_n=max_n, delay_s=delay_s, basic_auth=basic_auth, reasoning_field=reasoning_field).start()
