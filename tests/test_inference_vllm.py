"""vLLM mapping (pure functions) with fake objects shaped like vLLM's; the backend without vllm."""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from guardsmith.errors import GuardsmithError
from guardsmith.inference import make_backend
from guardsmith.inference.base import Backend, Generation, SamplingParams, normalise_groups
from guardsmith.inference.vllm_backend import (
    VLLMBackend,
    from_vllm_outputs,
    sum_prompt_logprobs,
    to_vllm_messages,
    to_vllm_sampling,
)


@dataclass
class FakeCompletion:  # vllm.outputs.CompletionOutput
    text: str
    token_ids: list[int]
    finish_reason: str | None = "stop"
    index: int = 0


@dataclass
class FakeLogprob:  # vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class FakeRequestOutput:  # vllm.outputs.RequestOutput
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]
    prompt_logprobs: list[dict[int, FakeLogprob] | None] | None = None
    request_id: str = "0"


def test_requests_and_params_mapping():
    reqs = [[{"role": "user", "content": "a", "extra": "x"}], [{"role": "system", "content": "s"},
                                                               {"role": "user", "content": "b"}]]
    assert to_vllm_messages(reqs) == [[{"role": "user", "content": "a"}],
                                      [{"role": "system", "content": "s"}, {"role": "user", "content": "b"}]]
    kws, rep = to_vllm_sampling(SamplingParams(n=4, temperature=0.7, top_p=0.9, max_tokens=32, seed=3), 2)
    assert rep == 1 and kws == [
        {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 3},
        {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 4}]
    kws, rep = to_vllm_sampling(SamplingParams(n=3, temperature=0.0, top_p=0.5), 1)
    assert rep == 3 and kws == [{"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 256}]


def test_outputs_mapping():
    outs = [FakeRequestOutput([1, 2, 3], [FakeCompletion("hi", [5, 6, 2]), FakeCompletion("yo", [7], "length")]),
            FakeRequestOutput([1], [FakeCompletion("z", [9], None)])]
    gens = from_vllm_outputs(outs, 1, 0.25)
    assert [[g.text for g in r] for r in gens] == [["hi", "yo"], ["z"]]
    assert (gens[0][0].prompt_tokens, gens[0][0].completion_tokens, gens[0][0].latency_s) == (3, 3, 0.25)
    assert [g.finish_reason for g in gens[0]] + [gens[1][0].finish_reason] == ["stop", "length", "stop"]
    rep = from_vllm_outputs(outs[1:], 3, 0.1)
    assert [g.text for g in rep[0]] == ["z"] * 3 and rep[0][0] is not rep[0][1]


def test_prompt_logprob_sum():
    out = FakeRequestOutput([4, 5, 6, 7], [], [None, {5: FakeLogprob(-0.1)}, {6: FakeLogprob(-0.5), 1: FakeLogprob(-2)},
                                                  {7: FakeLogprob(-1.0)}])
    assert sum_prompt_logprobs(out, [4, 5, 6, 7], 2) == pytest.approx(-1.5)
    with pytest.raises(GuardsmithError):
        sum_prompt_logprobs(out, [4, 5, 9, 7], 2)
    with pytest.raises(GuardsmithError):
        sum_prompt_logprobs(FakeRequestOutput([1], []), [1], 0)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_backend_without_vllm_says_install_extra(tmp_path):
    with pytest.raises(GuardsmithError, match="install the vllm extra"):
        VLLMBackend(tmp_path)
    with pytest.raises(GuardsmithError, match="install the vllm extra"):
        make_backend(f"vllm:{tmp_path}")


class FakeTokenizer:
    """Character-level tokenizer: one id per character."""

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")
        return self.encode(text) if tokenize else text

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


@dataclass
class FakeLLM:
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    calls: list = field(default_factory=list)

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []

    def get_tokenizer(self):
        return FakeTokenizer()

    def chat(self, conversations, sampling, use_tqdm=True, add_generation_prompt=True):
        self.calls.append(("chat", conversations, sampling))
        return [FakeRequestOutput([0] * len(conv), [FakeCompletion(f"{conv[-1]['content']}:{k}", [1, 2])
                                                    for k in range(sp.n)]) for conv, sp in zip(conversations, sampling)]

    def generate(self, prompts, sp, use_tqdm=True):
        self.calls.append(("generate", prompts, sp))
        outs = []
        for p in prompts:  # "h" (104) is likelier than "u" (117) as the first answer char; others p=1
            ids = p["prompt_token_ids"]
            plp = [None] + [{t: FakeLogprob({104: math.log(0.8), 117: math.log(0.2)}.get(t, 0.0))} for t in ids[1:]]
            outs.append(FakeRequestOutput(ids, [FakeCompletion("", [])], plp))
        return outs


def test_backend_class_with_fake_vllm(monkeypatch, tmp_path):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**{"n": 1, **kw})
    monkeypatch.setitem(sys.modules, "vllm", fake)
    be = make_backend(f"vllm:{tmp_path}", gpu_memory_utilization=0.5, max_model_len=512)
    assert be.llm.kwargs["gpu_memory_utilization"] == 0.5 and be.llm.kwargs["max_model_len"] == 512
    out = be.generate([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], n=2,
                      temperature=1.0, seed=7)
    assert [[g.text for g in r] for r in out] == [["a:0", "a:1"], ["b:0", "b:1"]]
    assert [sp.seed for sp in be.llm.calls[0][2]] == [7, 8]
    greedy = be.generate([[{"role": "user", "content": "c"}]], n=3)
    assert [g.text for g in greedy[0]] == ["c:0"] * 3
    probs = be.answer_probability([[{"role": "user", "content": "q"}]], "Prompt harm: ", ("harmful", "unharmful"))
    # harmful: p(h)=0.8; unharmful: p(u)*p(h)=0.2*0.8 (every other char has p=1)
    assert probs[0]["harmful"] == pytest.approx(0.8 / (0.8 + 0.16)) and sum(probs[0].values()) == pytest.approx(1.0)
    assert be.llm.calls[-1][2].prompt_logprobs == 1
    be.close()
    assert be.llm is None


def test_vllm_collect_reports_prompts_beyond_max_model_len(monkeypatch, tmp_path):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**{"n": 1, **kw})
    monkeypatch.setitem(sys.modules, "vllm", fake)
    be = make_backend(f"vllm:{tmp_path}")
    requests = [[{"role": "user", "content": c}] for c in ("a", "b" * 40, "c")]
    assert [[g.text for g in r] for r in be.generate(requests)] == [["a:0"], ["b" * 40 + ":0"], ["c:0"]]  # no limit known
    be.llm.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=30))
    out = be.generate(requests, n=2, temperature=1.0, on_error="collect")
    assert [g.text for g in out[0]] == ["a:0", "a:1"] and [g.text for g in out[2]] == ["c:0", "c:1"]
    long = len("<user>" + "b" * 40 + "<assistant>")
    assert [g.error for g in out[1]] == [f"too long: the prompt has {long} tokens, the model's context is 30"] * 2
    assert [c[0] for c in be.llm.calls[-1][1]] == [requests[0][0], requests[2][0]]  # only the fitting ones ran
    calls = len(be.llm.calls)
    with pytest.raises(GuardsmithError, match=rf"^request 1: the prompt has {long} tokens, more than the model's"):
        be.generate(requests)
    assert len(be.llm.calls) == calls  # refused before anything ran


# ------------------------------------------------------------------------------------ Backend base


class Counting(Backend):
    """Implements only `_generate`: the base class checks requests and builds the params."""

    kind = "counting"

    def __init__(self) -> None:
        self.seen: list[SamplingParams] = []

    def _generate(self, requests, params, on_error="raise"):
        self.seen.append(params)
        return [[Generation(str(i), 1, 1, 0.0, "stop")] * params.n for i, _ in enumerate(requests)]


def test_backend_base_checks_then_calls_the_hook():
    backend = Counting()
    out = backend.generate([[{"role": "user", "content": "a"}]], n=2, temperature=0.5, seed=7)
    assert [g.text for g in out[0]] == ["0", "0"]
    assert backend.seen == [SamplingParams(n=2, temperature=0.5, seed=7)]
    with pytest.raises(GuardsmithError, match="request 0 has no messages"):
        backend.generate([[]])
    with pytest.raises(GuardsmithError, match="top_p must be in"):
        backend.generate([[{"role": "user", "content": "a"}]], top_p=0.0)
    assert len(backend.seen) == 1
    with pytest.raises(GuardsmithError, match="answer words"):
        backend.answer_probability([[{"role": "user", "content": "a"}]], "Answer: ", ("yes",))
    with pytest.raises(NotImplementedError, match="counting backend cannot compute answer probabilities"):
        backend.answer_probability([[{"role": "user", "content": "a"}]], "Answer: ", ("yes", "no"))


def test_normalise_groups_splits_context_major_scores():
    out = normalise_groups([0.0, 0.0, math.log(3.0), 0.0], ("a", "b"))
    assert out[0] == pytest.approx({"a": 0.5, "b": 0.5})
    assert out[1] == pytest.approx({"a": 0.75, "b": 0.25})


def test_per_request_seeds_only_when_a_seed_asks_for_sampling():
    """vLLM samples seeded requests one generator each: no seed unless reproducibility asks, none for greedy."""
    unseeded, _ = to_vllm_sampling(SamplingParams(n=4, temperature=0.7, seed=None), 3)
    greedy, rep = to_vllm_sampling(SamplingParams(n=4, temperature=0.0, seed=5), 2)
    assert all("seed" not in kw for kw in unseeded + greedy) and rep == 4
    assert [kw["seed"] for kw in to_vllm_sampling(SamplingParams(n=2, temperature=1.0, seed=5), 3)[0]] == [5, 6, 7]
