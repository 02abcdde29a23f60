"""FilteredSystem: refusal shown exactly when t >= tau, base system without a filter, ordering, checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from guardsmith.errors import GuardsmithError
from guardsmith.filtered_system import DEFAULT_REFUSAL, FilteredSystem, SystemOutput, check_scores
from guardsmith.inference import Backend, Generation

pytestmark = pytest.mark.timeout(60)


class Echo(Backend):
    """Answer j of a prompt is ``"<prompt> #j"``; latency 0.2 s per request; records requests."""

    kind = "echo"

    def __init__(self) -> None:
        self.requests: list = []
        self.params: list = []

    def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None):
        self.requests += requests
        self.params.append((n, temperature, top_p, max_tokens, seed))
        return [[Generation(f"{m[-1]['content']} #{j}", 5, 3, 0.2, "stop") for j in range(n)] for m in requests]


class TableScorer:
    """t from a fixed table keyed by response text; counts calls."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls = 0

    def score(self, prompts, responses):
        self.calls += 1
        assert len(prompts) == len(responses)
        return np.array([self.table[r] for r in responses])


TS = [0.0, 0.49, 0.5, 0.51, 1.0]
PROMPTS = [f"p{i}" for i in range(len(TS))]


def test_refusal_shown_exactly_when_t_reaches_tau():
    scorer = TableScorer({f"p{i} #0": t for i, t in enumerate(TS)})
    system = FilteredSystem(Echo(), scorer, tau=0.5)
    outs = system.respond(PROMPTS, temperature=0.7, top_p=0.9, max_tokens=12, seed=3)
    assert [o.t for o in outs] == TS
    assert [o.filtered for o in outs] == [False, False, True, True, True]
    for o in outs:
        assert o.raw_response == f"{o.prompt} #0"
        assert o.shown_text == (DEFAULT_REFUSAL if o.t >= 0.5 else o.raw_response)
        assert o.generation_latency_s == pytest.approx(0.2)
        assert o.latency_s == pytest.approx(o.generation_latency_s + o.guard_latency_s)
    assert system.generator.params == [(1, 0.7, 0.9, 12, 3)]
    assert scorer.calls == 1 and system.filter_on


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.51, 1.0])
def test_other_thresholds_and_refusal_text(tau):
    scorer = TableScorer({f"p{i} #0": t for i, t in enumerate(TS)})
    outs = FilteredSystem(Echo(), scorer, tau=tau, refusal="No.").respond(PROMPTS)
    assert [o.shown_text == "No." for o in outs] == [t >= tau for t in TS]


def test_without_filter_everything_is_shown():
    system = FilteredSystem(Echo(), None, system_prompt="Be brief.")
    outs = system.respond(["a", "b"], n=2)
    assert not system.filter_on
    assert [(o.prompt, o.sample_index, o.shown_text) for o in outs] == [
        ("a", 0, "a #0"), ("a", 1, "a #1"), ("b", 0, "b #0"), ("b", 1, "b #1")]
    assert all(o.t is None and not o.filtered and o.guard_latency_s == 0.0 for o in outs)
    assert outs[0].generation_latency_s == pytest.approx(0.1)  # the request's 0.2 s shared by n = 2
    assert system.generator.requests[0] == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "a"}]


def test_apply_and_unfiltered_view_share_generations():
    scorer = TableScorer({"x": 0.9, "y": 0.1})
    system = FilteredSystem(Echo(), scorer, tau=0.5, refusal="Refused.")
    gens = [[Generation("x", 1, 1, 0.4, "length")], [Generation("y", 1, 1, 0.4, "stop")]]
    outs = system.apply(["q1", "q2"], gens)
    assert [o.shown_text for o in outs] == ["Refused.", "y"] and outs[0].finish_reason == "length"
    base = outs[0].unfiltered()
    assert isinstance(base, SystemOutput)
    assert (base.shown_text, base.filtered, base.t, base.latency_s, base.guard_latency_s) == ("x", False, 0.9, 0.4, 0.0)
    assert system.respond([]) == []


@pytest.mark.parametrize("bad", [[0.1], [0.1, 0.2, 0.3], [0.1, math.nan], [0.1, 1.5], [-0.2, 0.1], ["a", "b"]])
def test_bad_scorer_output(bad):
    class Bad:
        def score(self, prompts, responses):
            return bad

    with pytest.raises(GuardsmithError, match="scorer"):
        FilteredSystem(Echo(), Bad()).respond(["a", "b"])


def test_bad_settings():
    for tau in (-0.1, 1.1, "0.5", True):
        with pytest.raises(GuardsmithError, match="tau"):
            FilteredSystem(Echo(), None, tau=tau)
    with pytest.raises(GuardsmithError, match="refusal"):
        FilteredSystem(Echo(), None, refusal="  ")
    with pytest.raises(GuardsmithError, match="prompt 1"):
        FilteredSystem(Echo(), None).respond(["ok", " "])
    assert check_scores(np.array([[0.2], [1.0000001]]), 2) == [0.2, 1.0]
