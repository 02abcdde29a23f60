"""guard_runner: N parsed samples per row from one pass, correctness rule, chunking, records."""
from __future__ import annotations

import importlib
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from guardsmith import tables  # noqa: E402
from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.guard import MODE_TAGS, GuardAnswer  # noqa: E402
from guardsmith.guard_runner import (  # noqa: E402
    GuardSample,
    is_correct,
    labelled_tasks,
    open_guard,
    run_guard,
)
from guardsmith.inference import Backend, Generation  # noqa: E402
from guardsmith.settings import BackendChoice, Sampling  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _row(i: int, **kw) -> dict:
    base = {"id": f"r{i}", "source": "hand", "taxonomy": "aegis2", "policy": None,
            "prompt": f"question number {i}", "response": None, "prompt_harm": "harmful",
            "response_harm": None, "response_refusal": None, "categories": []}
    return {**base, **kw}


class Scripted(Backend):
    """Returns ``script[prompt]`` (one text per sample); records the seeds and request sizes."""

    kind = "scripted"

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[int, int | None]] = []

    def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None):
        self.calls.append((len(requests), seed))
        out = []
        for messages in requests:
            prompt = re.search(r"<user_turn>\n(.*?)\n</user_turn>", messages[-1]["content"], re.S).group(1)
            texts = self.script[prompt]
            out.append([Generation(texts[i % len(texts)], 10, 5, 0.08, "stop") for i in range(n)])
        return out


def _sample(text: str) -> GuardSample:
    from guardsmith.guard import parse_guard_output

    return GuardSample(0, text, parse_guard_output(text), 1, 1, 0.1, "stop")


OK_PROMPT = "Prompt harm: harmful\nResponse harm: None\nResponse refusal: None"


def test_correct_rule_prompt_and_response_tasks():
    prompt_only = _row(0)
    assert labelled_tasks(prompt_only) == ["prompt_harm"]
    assert is_correct(prompt_only, _sample(OK_PROMPT))
    assert not is_correct(prompt_only, _sample(OK_PROMPT.replace(": harmful", ": unharmful")))
    assert not is_correct(prompt_only, _sample("no answer at all"))

    both = _row(1, response="Sure, here it is.", response_harm="harmful")
    assert labelled_tasks(both) == ["prompt_harm", "response_harm"]
    good = "<think>bad</think>\nPrompt harm: harmful\nResponse harm: harmful\nResponse refusal: compliance"
    assert is_correct(both, _sample(good))
    assert not is_correct(both, _sample(good.replace("Response harm: harmful", "Response harm: unharmful")))
    # a labelled response task answered with None counts as wrong
    assert not is_correct(both, _sample(OK_PROMPT))

    unlabelled = _row(2, prompt_harm=None)
    assert labelled_tasks(unlabelled) == [] and not is_correct(unlabelled, _sample(OK_PROMPT))
    with pytest.raises(GuardsmithError):
        labelled_tasks(both, ["prompt_refusal"])


def test_run_guard_chunks_order_seeds_and_latency():
    rows = [_row(i) for i in range(5)]
    backend = Scripted({r["prompt"]: [OK_PROMPT, "garbage"] for r in rows})
    results = list(run_guard(backend, iter(rows), mode="NR", sampling=Sampling(samples_per_row=3, seed=7), chunk_rows=2))
    assert [r.row["id"] for r in results] == [f"r{i}" for i in range(5)]
    assert backend.calls == [(2, 7), (2, 9), (1, 11)]  # one generate call per chunk, distinct seeds
    for r in results:
        assert [s.sample_index for s in r.samples] == [0, 1, 2]
        assert [s.answer.parse_ok for s in r.samples] == [True, False, True]
        assert all(s.latency_s == pytest.approx(0.08 / 3) for s in r.samples)
        assert r.messages[0]["role"] == "system"
    assert results[0].samples[0].prediction("prompt_harm") == "harmful"
    assert results[0].samples[0].prediction("response_harm") is None
    assert results[0].samples[1].prediction("prompt_harm") is None


def test_dual_mode_tag_and_generation_records():
    rows = [_row(0), _row(1, response="No.", response_harm="unharmful")]
    backend = Scripted({r["prompt"]: [OK_PROMPT] for r in rows})
    results = list(run_guard(backend, rows, mode="R", dual=True, sampling=Sampling(samples_per_row=2)))
    assert all(r.messages[-1]["content"].startswith(MODE_TAGS["R"]) for r in results)
    records = [s.generation_record(r.row["id"]) for r in results for s in r.samples]
    table = tables.from_records(records, "generations")
    assert table.num_rows == 4 and table.column("pred_prompt_harm").to_pylist() == ["harmful"] * 4


def test_bad_arguments():
    backend = Scripted({})
    with pytest.raises(GuardsmithError):
        list(run_guard(backend, [_row(0)], sampling=Sampling(samples_per_row=0)))
    with pytest.raises(GuardsmithError):
        list(run_guard(backend, [_row(0)], mode="X"))
    with pytest.raises(GuardsmithError, match="config.json"):
        open_guard("/nonexistent/guard-model")
    with pytest.raises(GuardsmithError):
        open_guard("/tmp", BackendChoice(backend="onnx"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    importlib.import_module("transformers")
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("runner") / "tiny-guard", seed=0)


def test_tiny_model_yields_n_parsed_samples_per_row(tiny_model):
    from guardsmith.standins.sample import load_sample

    rows = load_sample("test")[:3]
    with open_guard(str(tiny_model), BackendChoice(concurrency=2)) as backend:
        assert backend.batch_size == 2
        results = list(run_guard(backend, rows, mode="NR", sampling=Sampling(samples_per_row=3, max_tokens=8, seed=0),
                                 chunk_rows=2))
    assert [r.row["id"] for r in results] == [r["id"] for r in rows]
    for r in results:
        assert len(r.samples) == 3
        for s in r.samples:
            assert isinstance(s.answer, GuardAnswer) and isinstance(s.text, str)
            assert s.latency_s > 0 and 1 <= s.completion_tokens <= 8 and s.prompt_tokens > 0


def test_an_endpoint_guard_keeps_requests_in_flight_across_chunks():
    """Chunks of 3 rows against an endpoint: one rolling window (more than a chunk in flight at
    once), rows answered in input order, each answer the one written for that row."""
    from guardsmith.inference import open_backend
    from guardsmith.standins.chat_server import ScriptedResponder, serve

    def answer(messages, params):
        number = int(re.search(r"question number (\d+)", messages[-1]["content"]).group(1))
        return f"Prompt harm: {'harmful' if number % 2 else 'unharmful'}\nResponse harm: None\nResponse refusal: None"

    rows = [_row(i) for i in range(12)]
    with serve(ScriptedResponder(answer), delay_s=0.2) as server:
        backend = open_backend(f"openai:{server.url}?model=guardsmith-local", choice=BackendChoice(concurrency=8))
        try:
            got = list(run_guard(backend, rows, mode="NR", chunk_rows=3,
                                 sampling=Sampling(samples_per_row=1, temperature=0.0, max_tokens=32)))
        finally:
            backend.close()
        assert server.stats.max_in_flight > 3  # a later chunk was sent before the earlier one was back
    assert [g.row["id"] for g in got] == [r["id"] for r in rows]
    assert [g.samples[0].answer.prompt_harm for g in got] == ["harmful" if i % 2 else "unharmful" for i in range(12)]
