"""OpenAI wire shapes shared by the guard service and the gateway: errors, chat-request checks, SSE.

Errors are :class:`APIError` (status, message, type, param, code) and reach the client as
``{"error": {"message", "type", "param", "code"}}``, the shape the official ``openai`` SDK turns
into ``BadRequestError`` (400), ``NotFoundError`` (404), ... A chat request is checked once by
:func:`chat_request`: a parameter we do not implement is a 400 naming it (``param``), never
silently ignored.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardsmith.errors import GuardsmithError


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    """A 400 naming the parameter."""
    return APIError(400, message, param=param, code=code)


def unknown_model(name: Any, served: Sequence[str]) -> APIError:
    """A 404 for a model name this server does not serve (OpenAI's ``model_not_found``)."""
    return APIError(404, f"The model {name!r} does not exist; this server serves {', '.join(map(repr, served))}",
                    param="model", code="model_not_found")


CHAT_ACCEPTED = frozenset({
    "model", "messages", "n", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop",
    "stream", "stream_options", "logprobs", "top_logprobs", "user", "metadata", "store",
    # vLLM's extras, sent by guardsmith's own `openai:` answer-probability client
    "continue_final_message", "add_generation_prompt",
})
"""Chat parameters the services implement; any other one is a 400 naming it."""

NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "parallel_tool_calls": None, "tool_choice": "none",
           "logit_bias": None, "response_format": None}
"""Parameters accepted only at their neutral value (what SDKs and proxies may send by default)."""

MAX_N = 16
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completion request."""

    model: str
    messages: list[dict[str, str]]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    continue_final_message: bool = False


def _number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad(f"{key} must be a number from {low:g} to {high:g}, got {value!r}", key)
    return float(value)


def _integer(body: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{key} must be an integer from {low} to {high}, got {value!r}", key)
    return int(value)


def content_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}: only text content is supported, got a {dict(part).get('type') if isinstance(part, Mapping) else type(part).__name__!r} part", where)
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where}: content must be a string or a list of text parts", where)


def chat_messages(value: Any, param: str = "messages") -> list[dict[str, str]]:
    """Checked chat messages -> plain ``{"role", "content"}`` dicts."""
    if not isinstance(value, list) or not value:
        raise bad(f"'{param}' must be a non-empty list of messages", param)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise bad(f"{param}[{i}] needs a role of system, developer, user or assistant", f"{param}[{i}].role")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content_text(m.get("content") or "", f"{param}[{i}].content")})
    return out


def chat_request(body: Any) -> ChatRequest:
    """Check a chat-completion body; APIError 400 naming the first bad or unsupported parameter."""
    if not isinstance(body, Mapping):
        raise bad("the request body must be a JSON object")
    for key, value in body.items():
        if key in CHAT_ACCEPTED:
            continue
        if key in NEUTRAL and (value == NEUTRAL[key] or value is None or
                               (key == "response_format" and isinstance(value, Mapping) and value.get("type") == "text")):
            continue
        raise bad(f"parameter {key!r} is not supported by this server", key, "unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required", "model")
    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(stop)
    elif stop is not None:
        raise bad("stop must be a string or a list of at most 4 strings", "stop")
    if any(not s for s in stops):
        raise bad("stop strings must not be empty", "stop")
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise bad("logprobs must be true or false", "logprobs")
    top = _integer(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
    if top and not logprobs:
        raise bad("top_logprobs needs logprobs: true", "top_logprobs")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, Mapping) or set(options) - {"include_usage"}):
        raise bad("stream_options may only hold include_usage", "stream_options")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("stream must be true or false", "stream")
    if options is not None and not stream:
        raise bad("stream_options needs stream: true", "stream_options")
    max_tokens = _integer(body, "max_completion_tokens", None, 1, 1 << 20)
    max_tokens = _integer(body, "max_tokens", max_tokens if max_tokens is not None else 256, 1, 1 << 20)
    cont = bool(body.get("continue_final_message"))
    messages = chat_messages(body.get("messages"))
    if cont and messages[-1]["role"] != "assistant":
        raise bad("continue_final_message needs a final assistant message", "continue_final_message")
    return ChatRequest(
        model=model, messages=messages, n=int(_integer(body, "n", 1, 1, MAX_N)),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0), top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        max_tokens=int(max_tokens), seed=_integer(body, "seed", None, -(1 << 63), (1 << 63) - 1),
        stop=stops, stream=bool(stream), include_usage=bool((options or {}).get("include_usage")),
        logprobs=bool(logprobs), top_logprobs=int(top or 0), continue_final_message=cont)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string (excluded) and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass
class Choice:
    """One finished answer: text, finish reason and, when asked, OpenAI ``logprobs.content`` entries."""

    text: str
    finish_reason: str = "stop"
    logprobs: list[dict[str, Any]] | None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(model: str, choices: Sequence[Choice], prompt_tokens: int, completion_tokens: int,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                     "logprobs": None if c.logprobs is None else {"content": c.logprobs}} for i, c in enumerate(choices)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        **(extra or {}),
    }


def pieces(text: str) -> list[str]:
    """Split text into stream deltas: words with the whitespace that follows them (concatenation is exact)."""
    out, start = [], 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (text[i - 1].isspace() and not text[i].isspace()):
            out.append(text[start:i])
            start = i
    return out


def sse_chunks(model: str, choices: Sequence[Choice], prompt_tokens: int, completion_tokens: int,
               include_usage: bool = False) -> Iterator[bytes]:
    """A finished completion as ``chat.completion.chunk`` server-sent events, then ``[DONE]``.

    Per choice: a role delta, content deltas (one per word; with logprobs, one per token), the
    finish reason; with ``include_usage`` a last chunk with empty choices and the usage."""
    cid, created = completion_id(), int(time.time())

    def event(choices_: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": choices_, **extra}
        return f"data: {json.dumps(obj)}\n\n".encode()

    for i, c in enumerate(choices):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}])
        if c.logprobs is not None:
            # one delta per token, carrying that token's logprobs; the remainder (a stop cut) as text
            sent = ""
            for entry in c.logprobs:
                if not c.text.startswith(sent + entry["token"]):
                    break
                sent += entry["token"]
                yield event([{"index": i, "delta": {"content": entry["token"]}, "finish_reason": None,
                              "logprobs": {"content": [entry]}}])
            rest = [c.text[len(sent):]] if len(sent) < len(c.text) else []
        else:
            rest = pieces(c.text)
        for piece in rest:
            yield event([{"index": i, "delta": {"content": piece}, "finish_reason": None, "logprobs": None}])
        yield event([{"index": i, "delta": {}, "finish_reason": c.finish_reason, "logprobs": None}])
    if include_usage:
        yield event([], usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens})
    yield b"data: [DONE]\n\n"


def api_error_from(exc: BaseException) -> APIError:
    """An exception as the APIError sent to the client: a GuardsmithError is the client's (400)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GuardsmithError):
        return APIError(400, str(exc))
    return APIError(500, f"internal error: {type(exc).__name__}")
