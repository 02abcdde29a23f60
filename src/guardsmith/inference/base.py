"""The one inference interface every backend implements, plus small shared helpers."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from guardsmith.errors import GuardsmithError

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass
class Generation:
    """One sampled completion.

    `latency_s` is the request's share of the wall time (batch time / batch size for batched
    local backends, the HTTP round trip including retries for remote ones). `finish_reason` is
    ``"stop"`` (end of turn) or ``"length"`` (hit `max_tokens`), or what the server reported.
    `error` is set only by ``generate(..., on_error="collect")`` for a request that failed on its
    own (rejected by the endpoint, unparseable reply, longer than the model's context): then
    `text` is empty, `finish_reason` is ``"error"`` and `error` is one line,
    ``"<HTTP status or 'malformed reply' or 'too long'>: <cause>"``.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str
    error: str | None = None


OnError = Literal["raise", "collect"]
"""What `Backend.generate` does with a request that fails on its own: raise naming the request's
index, or return `n` error `Generation`s for it and complete the others."""


def failed(n: int, error: str, latency_s: float = 0.0, prompt_tokens: int = 0) -> list[Generation]:
    """The `n` error generations that stand for one failed request in ``on_error="collect"`` mode."""
    return [Generation(text="", prompt_tokens=prompt_tokens, completion_tokens=0, latency_s=latency_s,
                       finish_reason="error", error=" ".join(str(error).split())) for _ in range(n)]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings shared by all backends; temperature 0 means greedy decoding."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise GuardsmithError(f"n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise GuardsmithError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GuardsmithError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise GuardsmithError(f"max_tokens must be at least 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        """True when decoding is greedy (temperature 0)."""
        return self.temperature == 0


class Backend:
    """A text generator over chat requests. Use as a context manager or call `close()`.

    A backend implements `_generate` (and, when it can, `_answer_probability`); the public
    methods check the requests and the sampling settings once for every backend.
    """

    kind: str = "base"

    def generate(
        self,
        requests: list[list[Message]],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int | None = None,
        on_error: OnError = "raise",
    ) -> list[list[Generation]]:
        """Generate `n` completions per request; outer list follows `requests`, inner has `n` items.

        ``on_error="raise"``: a request that fails on its own (the endpoint rejects it, its reply
        cannot be parsed, it does not fit the model's context) raises a one-line GuardsmithError
        naming the request's index. ``"collect"``: that request yields `n` generations with
        `error` set (see `Generation`) and the others complete. Infrastructure failures (an
        endpoint that stays unreachable, overloaded or slow after every retry) raise either way.
        """
        check_requests(requests)
        if on_error not in ("raise", "collect"):
            raise GuardsmithError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        return self._generate(requests, params, on_error)

    def answer_probability(
        self, requests: list[list[Message]], prefix: str, words: tuple[str, ...]
    ) -> list[dict[str, float]]:
        """Probability of each answer word right after the assistant `prefix`, normalised over `words`."""
        check_requests(requests)
        return self._answer_probability(requests, prefix, check_words(words))

    def _generate(self, requests: list[list[Message]], params: SamplingParams,
                  on_error: OnError = "raise") -> list[list[Generation]]:
        raise NotImplementedError(f"the {self.kind} backend cannot generate")

    def _answer_probability(
        self, requests: list[list[Message]], prefix: str, words: tuple[str, ...]
    ) -> list[dict[str, float]]:
        raise NotImplementedError(f"the {self.kind} backend cannot compute answer probabilities")

    def close(self) -> None:
        """Release resources (models, connections). Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plain_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """A request as plain ``{"role", "content"}`` dicts (what chat templates and servers take)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def model_folder(model_path: str | Path) -> Path:
    """The local model folder a backend loads; a missing folder is a GuardsmithError."""
    path = Path(model_path)
    if not path.is_dir():
        raise GuardsmithError(f"model folder {path} does not exist; download the model first "
                              "(guardsmith.storage.download_dir) and pass the local folder")
    return path


def check_requests(requests: Sequence[Sequence[Mapping[str, str]]]) -> None:
    """Raise GuardsmithError unless every request is a non-empty list of role/content messages."""
    for i, request in enumerate(requests):
        if not request:
            raise GuardsmithError(f"request {i} has no messages")
        for message in request:
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise GuardsmithError(f"request {i}: every message needs 'role' and 'content', got {message!r:.120}")


def fit_context(
    requests: list[list[Message]], lengths: Sequence[int], limit: int | None, params: SamplingParams,
    on_error: OnError, run: Callable[[list[list[Message]]], list[list[Generation]]],
) -> list[list[Generation]]:
    """``run`` on the requests whose prompt (``lengths[i]`` tokens) leaves room for one new token
    in a context of ``limit`` tokens (None: no limit). The others raise naming the first one
    (``on_error="raise"``) or yield `failed` generations (``"collect"``); order is kept."""
    too_long = {i: n for i, n in enumerate(lengths) if limit is not None and n >= limit}
    if not too_long:
        return run(requests)
    if on_error == "raise":
        i, n = next(iter(too_long.items()))
        raise GuardsmithError(f"request {i}: the prompt has {n} tokens, more than the model's context of "
                              f"{limit} tokens allows ({len(too_long)} such request(s))")
    done = iter(run([r for i, r in enumerate(requests) if i not in too_long]))
    return [failed(params.n, f"too long: the prompt has {too_long[i]} tokens, the model's context is {limit}",
                   prompt_tokens=too_long[i]) if i in too_long else next(done) for i in range(len(requests))]


def check_words(words: Sequence[str]) -> tuple[str, ...]:
    """Validate answer words: at least two, non-empty, distinct."""
    words = tuple(words)
    if len(words) < 2 or len(set(words)) != len(words) or not all(words):
        raise GuardsmithError(f"answer words must be at least two distinct non-empty strings, got {words!r}")
    return words


def normalise_logprobs(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Turn per-word log-probabilities into probabilities that sum to 1 (softmax, stable)."""
    finite = [v for v in logprobs.values() if v != -math.inf]
    if not finite:
        raise GuardsmithError("none of the answer words has any probability")
    top = max(finite)
    exp = {k: (math.exp(v - top) if v != -math.inf else 0.0) for k, v in logprobs.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def answer_token_spans(
    encode: Callable[[str], list[int]], context: str, words: Sequence[str]
) -> tuple[list[list[int]], int]:
    """Token ids of ``context + word`` for each word, and the position where scoring starts.

    Byte-level BPE merges across the boundary (a trailing space in the prefix joins the word's
    first token), so the word is not tokenised alone: each ``context + word`` is tokenised whole
    and scoring starts at the first position where any of them departs from the context's own
    tokens. Every word is then scored from the same position, so the probabilities compare.
    """
    ctx = encode(context)
    full = [encode(context + w) for w in words]
    start = len(ctx)
    for ids in full:
        common = 0
        for a, b in zip(ids, ctx):
            if a != b:
                break
            common += 1
        start = min(start, common)
    if start < 1:
        raise GuardsmithError("the answer prompt is empty; cannot score answer words")
    for w, ids in zip(words, full):
        if len(ids) <= start:
            raise GuardsmithError(f"answer word {w!r} adds no tokens after the prefix")
    return full, start


def answer_rows(
    encode: Callable[[str], list[int]], contexts: Sequence[str], words: Sequence[str]
) -> list[tuple[list[int], int]]:
    """``(token ids, scoring start)`` of ``context + word`` for every context and word, context-major."""
    rows: list[tuple[list[int], int]] = []
    for context in contexts:
        full, start = answer_token_spans(encode, context, words)
        rows.extend((ids, start) for ids in full)
    return rows


def normalise_groups(scores: Sequence[float], words: Sequence[str]) -> list[dict[str, float]]:
    """Split context-major word log-probabilities into one normalised dict per context."""
    k = len(words)
    return [normalise_logprobs(dict(zip(words, scores[i:i + k]))) for i in range(0, len(scores), k)]
