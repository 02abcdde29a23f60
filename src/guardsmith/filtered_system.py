"""The filtered generation system (method B.1): generator -> safety scorer -> refusal at t >= tau.

A generator answers each prompt; a safety scorer gives t(x, y) in [0, 1], the probability that
the answer is unsafe. The user is shown the answer when ``t < tau`` and the system's refusal
text otherwise. With ``scorer=None`` the filter is off: every answer is shown and t is None
(the *base system*).

:meth:`FilteredSystem.respond` samples ``n`` answers per prompt and returns one
:class:`SystemOutput` per answer, prompt-major (answer ``j`` of prompt ``i`` at ``i * n + j``).
:meth:`FilteredSystem.apply` filters answers generated elsewhere, and
:meth:`SystemOutput.unfiltered` gives the same answer as the base system would show it, so a
base and a filtered system can share one set of generations.

Latency per output = the generator's time for the request divided by ``n`` (the ``n`` answers of
a prompt come from one pass) plus, with the filter on, the scorer's wall time divided by the
number of answers it scored in that call.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from guardsmith.errors import GuardsmithError
from guardsmith.inference.base import Backend, Generation, Message

DEFAULT_REFUSAL = "I'm sorry, but I can't help with that. If there is a safe part of your request, I'm glad to help with it."
"""The text shown in place of a filtered answer, unless another is configured."""


class Scorer(Protocol):
    """What the system needs of a safety scorer (``guardsmith.scoring.SafetyScorer`` fits)."""

    def score(self, prompts: list[str], responses: list[str]) -> Any:
        """Probability that each response is unsafe, one value in [0, 1] per (prompt, response)."""


@dataclass(frozen=True)
class SystemOutput:
    """One answer of the system to one prompt: what was generated, what the filter did, what was shown."""

    prompt: str
    sample_index: int
    raw_response: str
    t: float | None
    filtered: bool
    shown_text: str
    latency_s: float
    generation_latency_s: float
    guard_latency_s: float
    finish_reason: str = "stop"

    def unfiltered(self) -> SystemOutput:
        """The same answer as the system without a filter shows it (t kept, never filtered)."""
        return replace(self, filtered=False, shown_text=self.raw_response,
                       latency_s=self.generation_latency_s, guard_latency_s=0.0)


def check_tau(tau: float) -> float:
    """Validate a filter threshold: a number in [0, 1]."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= float(tau) <= 1.0:
        raise GuardsmithError(f"the filter threshold tau must be a number from 0 to 1, got {tau!r}")
    return float(tau)


def check_scores(values: Any, expected: int) -> list[float]:
    """Scorer output -> list of floats; GuardsmithError unless ``expected`` finite values in [0, 1]."""
    import numpy as np

    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise GuardsmithError(f"the safety scorer returned {type(values).__name__}, not numbers") from None
    if arr.shape[0] != expected:
        raise GuardsmithError(f"the safety scorer returned {arr.shape[0]} scores for {expected} responses")
    bad = [i for i, v in enumerate(arr.tolist()) if not math.isfinite(v) or not -1e-6 <= v <= 1 + 1e-6]
    if bad:
        raise GuardsmithError(f"the safety scorer returned {arr[bad[0]]!r} at position {bad[0]}; "
                              "scores must be probabilities in [0, 1]")
    return [min(1.0, max(0.0, v)) for v in arr.tolist()]


class FilteredSystem:
    """Generator plus optional safety filter: shows an answer when t < tau, else ``refusal``.

    ``generator`` is any :class:`~guardsmith.inference.Backend`; ``scorer`` has
    ``score(prompts, responses) -> array`` (e.g. from ``guardsmith.scoring.make_safety_scorer``),
    or is None for a system without a filter. ``system_prompt`` (optional) is sent before each
    user prompt.
    """

    def __init__(self, generator: Backend, scorer: Scorer | None = None, tau: float = 0.5,
                 refusal: str = DEFAULT_REFUSAL, system_prompt: str | None = None) -> None:
        if not isinstance(refusal, str) or not refusal.strip():
            raise GuardsmithError("the refusal text must be a non-empty string")
        self.generator = generator
        self.scorer = scorer
        self.tau = check_tau(tau)
        self.refusal = refusal
        self.system_prompt = system_prompt or None

    @property
    def filter_on(self) -> bool:
        """True when a scorer is set."""
        return self.scorer is not None

    def is_filtered(self, t: float) -> bool:
        """The filter decision for one score: filtered exactly when ``t >= tau``."""
        return t >= self.tau

    def messages(self, prompt: str) -> list[Message]:
        """The chat request sent to the generator for ``prompt``."""
        user = [{"role": "user", "content": prompt}]
        return [{"role": "system", "content": self.system_prompt}, *user] if self.system_prompt else user

    def respond(self, prompts: Sequence[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                max_tokens: int = 256, seed: int | None = None) -> list[SystemOutput]:
        """Sample ``n`` answers per prompt, score and filter them; one output per answer, prompt-major."""
        prompts = _check_prompts(prompts)
        if not prompts:
            return []
        generations = self.generator.generate([self.messages(p) for p in prompts], n=n,
                                              temperature=temperature, top_p=top_p,
                                              max_tokens=max_tokens, seed=seed)
        if len(generations) != len(prompts) or any(len(g) != n for g in generations):
            raise GuardsmithError(f"the generator returned {len(generations)} result lists for "
                                  f"{len(prompts)} prompts (expected {n} answers each)")
        return self.apply(prompts, generations)

    def apply(self, prompts: Sequence[str], generations: Sequence[Sequence[Generation]]) -> list[SystemOutput]:
        """Score and filter answers generated elsewhere (``generations[i]`` answers ``prompts[i]``)."""
        prompts = _check_prompts(prompts)
        if len(generations) != len(prompts):
            raise GuardsmithError(f"{len(generations)} answer lists for {len(prompts)} prompts")
        flat = [(p, j, g, len(gens)) for p, gens in zip(prompts, generations) for j, g in enumerate(gens)]
        scores: list[float | None] = [None] * len(flat)
        guard_share = 0.0
        if self.scorer is not None and flat:
            start = time.perf_counter()
            raw = self.scorer.score([p for p, *_ in flat], [g.text or "" for _, _, g, _ in flat])
            guard_share = (time.perf_counter() - start) / len(flat)
            scores = list(check_scores(raw, len(flat)))
        out: list[SystemOutput] = []
        for (prompt, j, gen, n), t in zip(flat, scores):
            text = gen.text or ""
            filtered = t is not None and self.is_filtered(t)
            gen_latency = float(gen.latency_s) / max(n, 1)
            out.append(SystemOutput(
                prompt=prompt, sample_index=j, raw_response=text, t=t, filtered=filtered,
                shown_text=self.refusal if filtered else text,
                latency_s=gen_latency + (guard_share if t is not None else 0.0),
                generation_latency_s=gen_latency, guard_latency_s=guard_share if t is not None else 0.0,
                finish_reason=gen.finish_reason))
        return out


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise GuardsmithError(f"prompt {i} is empty or not text: {p!r:.80}")
    return prompts


__all__ = ["DEFAULT_REFUSAL", "FilteredSystem", "Scorer", "SystemOutput", "check_scores", "check_tau"]
