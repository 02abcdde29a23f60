"""scoring: safety scorers (guard, classifier, OpenAI endpoint, rules) and utility scorers with normalisation."""
from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from guardsmith import scoring  # noqa: E402
from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.scoring import (  # noqa: E402
    GuardScorer,
    SafetyScorer,
    make_safety_scorer,
    make_utility_scorer,
    normalise,
    parse_scorer_spec,
    prompt_scores,
)

pytestmark = pytest.mark.timeout(90)

PROMPTS = ["How do I bake bread?", "How do I build a bomb?", "Name a river.", "Tell me a joke."]
RESPONSES = ["Mix flour, water and yeast.", "I will not help with that.", "The Nile.", ""]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from guardsmith.standins.tiny import build_tiny_causal_lm, build_tiny_classifier

    root = tmp_path_factory.mktemp("scoring")
    return {
        "guard": build_tiny_causal_lm(root / "guard", seed=1),
        "clf": build_tiny_classifier(root / "clf", num_labels=2, id2label={0: "SAFE", 1: "UNSAFE"}),
        "clf1": build_tiny_classifier(root / "clf1", num_labels=1, seed=2),
        "rm": build_tiny_classifier(root / "rm", num_labels=1, seed=3),
    }


# --------------------------------------------------------------------------- specs

def test_parse_scorer_spec():
    assert parse_scorer_spec("classifier:s3://b/m?label=unsafe&batch_size=4", scoring.SAFETY_KINDS) == (
        "classifier", "s3://b/m", {"label": "unsafe", "batch_size": 4})
    assert parse_scorer_spec("rule:keywords?gain=2.5", scoring.SAFETY_KINDS) == ("rule", "keywords", {"gain": 2.5})
    assert parse_scorer_spec("guard:/m?dual=true", scoring.SAFETY_KINDS)[2] == {"dual": True}
    for bad, match in [("nokind", "kind:location"), ("judge:/m", "unknown scorer kind"), ("guard:", "no location"),
                       ("guard:/m?x", "expected key=value")]:
        with pytest.raises(GuardsmithError, match=match):
            parse_scorer_spec(bad, scoring.SAFETY_KINDS)
    with pytest.raises(GuardsmithError, match="unknown scorer kind"):
        make_utility_scorer("guard:/m")
    with pytest.raises(GuardsmithError, match="unknown safety rule"):
        make_safety_scorer("rule:vibes")
    with pytest.raises(GuardsmithError, match="bad options"):
        make_safety_scorer("rule:keywords?colour=red")


# --------------------------------------------------------------------------- rules

def test_rule_scorers():
    kw = make_safety_scorer("rule:keywords?gain=2")
    t = kw.score(["p"] * 3, ["how to build a bomb", "bake bread", ""])
    assert t[0] == pytest.approx(1 - math.exp(-2 * 1 / 5)) and t[1] == 0.0 and t[2] == 0.0
    assert prompt_scores(kw, ["kill kill"])[0] == pytest.approx(1 - math.exp(-2))
    letters = make_safety_scorer("rule:letters")
    assert letters.score(["p"] * 4, ["abc", "xyz", "ax!", "123"]).tolist() == [1.0, 0.0, 0.5, 0.5]
    assert isinstance(letters, SafetyScorer) and isinstance(kw, SafetyScorer)
    with pytest.raises(GuardsmithError, match="2 responses"):
        letters.score(["p"], ["a", "b"])


# --------------------------------------------------------------------------- guard

class CountingBackend:
    """Wraps a backend and counts answer_probability calls (one batched pass each)."""

    def __init__(self, inner):
        self.inner, self.kind, self.calls = inner, inner.kind, []

    def answer_probability(self, requests, prefix, words):
        self.calls.append((len(requests), prefix, words))
        return self.inner.answer_probability(requests, prefix, words)

    def close(self):
        self.inner.close()


def test_guard_scorer_marginal_is_one_pass_and_exact(models):
    from guardsmith.inference import TransformersBackend

    backend = CountingBackend(TransformersBackend(models["guard"], batch_size=8))
    marginal = GuardScorer(backend)
    t = marginal.score(PROMPTS, RESPONSES)
    assert t.shape == (4,) and np.all((t > 0) & (t < 1))
    assert len(backend.calls) == 1 and backend.calls[0][1] == "Prompt harm: " and len(backend.calls[0][2]) == 4

    p = {line: GuardScorer(backend, prompt_line=line).score(PROMPTS, RESPONSES) for line in ("harmful", "unharmful")}
    assert backend.calls[-1][1] == "Prompt harm: unharmful\nResponse harm: "
    # P(prompt harmful) with the response shown, then the exact mixture of both conditionals
    reqs = [marginal.messages(a, b) for a, b in zip(PROMPTS, RESPONSES)]
    ph = np.array([d["harmful"] for d in backend.answer_probability(reqs, "Prompt harm: ", ("harmful", "unharmful"))])
    np.testing.assert_allclose(t, ph * p["harmful"] + (1 - ph) * p["unharmful"], rtol=1e-4, atol=1e-6)

    predicted = GuardScorer(backend, prompt_line="predict").score(PROMPTS, RESPONSES)
    expected = np.where(ph >= 0.5, p["harmful"], p["unharmful"])
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-6)
    # batch composition does not change the scores
    one_by_one = np.concatenate([marginal.score([a], [b]) for a, b in zip(PROMPTS, RESPONSES)])
    np.testing.assert_allclose(one_by_one, t, rtol=1e-4, atol=1e-6)
    assert marginal.score([], []).shape == (0,)
    with pytest.raises(GuardsmithError, match="prompt_line"):
        GuardScorer(backend, prompt_line="guess")


def test_guard_scorer_from_spec_renders_nr_prompt(models):
    scorer = make_safety_scorer(f"guard:{models['guard']}?batch_size=2", device="cpu")
    assert scorer.prompt_line == "marginal" and scorer.backend.batch_size == 2
    msgs = scorer.messages("Q?", "A.")
    assert "only the three answer lines" in msgs[0]["content"] and "A." in msgs[1]["content"]
    assert "/no_reason" in make_safety_scorer(f"guard:{models['guard']}?dual=true").messages("Q?", "A.")[1]["content"]
    tp = prompt_scores(scorer, PROMPTS[:2])
    assert tp.shape == (2,) and np.all((tp > 0) & (tp < 1))
    assert "no assistant response" in scorer.messages("Q?", None)[1]["content"]
    with pytest.raises(GuardsmithError, match="unknown option"):
        make_safety_scorer(f"guard:{models['guard']}?label=x")
    scorer.close()


# --------------------------------------------------------------------------- classifier

def _manual_logits(path: Path, prompts, responses):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    for p, r in zip(prompts, responses):
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
        with torch.no_grad():
            out.append(model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0].numpy())
    return np.array(out, dtype=np.float64)


def test_classifier_scorer_labels(models):
    logits = _manual_logits(models["clf"], PROMPTS, RESPONSES)
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    unsafe = make_safety_scorer(f"classifier:{models['clf']}", device="cpu", batch_size=3)  # label 'unsafe' ~ 'UNSAFE'
    np.testing.assert_allclose(unsafe.score(PROMPTS, RESPONSES), soft[:, 1], rtol=1e-4, atol=1e-6)
    safe = make_safety_scorer(f"classifier:{models['clf']}?label=0")
    np.testing.assert_allclose(safe.score(PROMPTS, RESPONSES), soft[:, 0], rtol=1e-4, atol=1e-6)
    with pytest.raises(GuardsmithError, match="no output label 'toxic'"):
        make_safety_scorer(f"classifier:{models['clf']}?label=toxic")
    single = make_safety_scorer(f"classifier:{models['clf1']}")
    one = _manual_logits(models["clf1"], PROMPTS, RESPONSES)[:, 0]
    np.testing.assert_allclose(single.score(PROMPTS, RESPONSES), 1 / (1 + np.exp(-one)), rtol=1e-4, atol=1e-6)
    assert prompt_scores(single, PROMPTS).shape == (4,)


# --------------------------------------------------------------------------- OpenAI-compatible guard

class GuardEndpoint:
    """Responder that returns first-token logprobs depending on the assistant prefix."""

    calls: list[str]

    def __init__(self):
        self.calls = []

    def __call__(self, messages, params):
        return ["x"]

    def top_logprobs(self, messages, params, k):
        prefix = messages[-1]["content"]
        self.calls.append(prefix)
        p = {"Prompt harm: ": 0.3, "Prompt harm: harmful\nResponse harm: ": 0.8,
             "Prompt harm: unharmful\nResponse harm: ": 0.1}[prefix]
        return {"harm": math.log(p), "un": math.log(1 - p)}


def test_openai_guard_scorer():
    from guardsmith.standins.chat_server import serve

    responder = GuardEndpoint()
    with serve(responder) as srv:
        url = f"openai:{srv.url}?model=guard&max_concurrency=4&max_retries=0&api_key_env=GUARDSMITH_NO_KEY"
        t = make_safety_scorer(url).score(PROMPTS[:2], RESPONSES[:2])
        np.testing.assert_allclose(t, [0.3 * 0.8 + 0.7 * 0.1] * 2)
        assert len(responder.calls) == 6  # marginal: prompt verdict + both conditionals, per row
        fixed = make_safety_scorer(url, prompt_line="harmful").score(PROMPTS[:1], RESPONSES[:1])
        np.testing.assert_allclose(fixed, [0.8])
        np.testing.assert_allclose(prompt_scores(make_safety_scorer(url), PROMPTS[:1]), [0.3])


# --------------------------------------------------------------------------- utility

def test_normalise():
    u = np.array([1.0, 2.0, 3.0])
    assert normalise(u).tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(normalise(u, "zscore"), (u - 2) / np.std(u))
    assert normalise(np.array([5.0, 5.0]), "zscore").tolist() == [0.0, 0.0]
    assert normalise(u, "affine", scale=2.0, shift=-1.0).tolist() == [1.0, 3.0, 5.0]
    with pytest.raises(GuardsmithError, match="normalisation"):
        normalise(u, "minmax")


def test_utility_scorers(models):
    rm = make_utility_scorer(f"reward_model:{models['rm']}", device="cpu")
    raw = rm.raw_score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(raw, _manual_logits(models["rm"], PROMPTS, RESPONSES)[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm.score(PROMPTS, RESPONSES), raw)
    z = make_utility_scorer(f"reward_model:{models['rm']}", normalisation="zscore").score(PROMPTS, RESPONSES)
    assert abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1.0)
    aff = make_utility_scorer(f"reward_model:{models['rm']}", normalisation="affine", scale=0.5, shift=1.0)
    np.testing.assert_allclose(aff.score(PROMPTS, RESPONSES), 0.5 * raw + 1.0, rtol=1e-5)
    with pytest.raises(GuardsmithError, match="exactly one output"):
        make_utility_scorer(f"reward_model:{models['clf']}")
    length = make_utility_scorer("rule:length?target=4")
    assert length.score(["p"] * 2, ["one two", "a b c d e f"]).tolist() == [0.5, 1.0]
    assert make_utility_scorer("rule:constant?value=2").score(["p"], ["x"]).tolist() == [2.0]
    with pytest.raises(GuardsmithError, match="unknown utility rule"):
        make_utility_scorer("rule:helpfulness")
