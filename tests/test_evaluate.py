"""evaluate: F1 recomputed from predictions, k-run mean/std, parse errors, latency, report, bad input."""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from guardsmith import storage, tables  # noqa: E402
from guardsmith.errors import DataError, GuardsmithError  # noqa: E402
from guardsmith.inference import Backend, Generation  # noqa: E402
from guardsmith.metrics import harm_f1, mean_std  # noqa: E402
from guardsmith.stages import evaluate  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _row(rid: str, **kw) -> dict:
    base = {"id": rid, "source": "hand", "taxonomy": "wildguard", "policy": None, "prompt": f"prompt of {rid}",
            "response": None, "prompt_harm": None, "response_harm": None, "response_refusal": None,
            "categories": []}
    return {**base, **kw}


def _answer(p: str, r: str = "None") -> str:
    return f"<think>ok</think>\nPrompt harm: {p}\nResponse harm: {r}\nResponse refusal: None"


SAFETY = [
    _row("s1", prompt_harm="harmful"),
    _row("s2", prompt_harm="harmful"),
    _row("s3", prompt_harm="unharmful"),
    _row("s4", prompt_harm="unharmful", response="Here you go.", response_harm="unharmful"),
    _row("s5", prompt_harm="harmful", response="Sure, step one.", response_harm="harmful"),
]
POLICY = [
    _row("c1", taxonomy="custom:bank", policy="Never discuss crypto.", prompt_harm="harmful"),
    _row("c2", taxonomy="custom:bank", policy="Never discuss crypto.", prompt_harm="unharmful"),
]
# per row: the text of runs 0, 1, 2
SCRIPT = {
    "s1": [_answer("harmful"), _answer("harmful"), "garbage"],
    "s2": [_answer("harmful"), _answer("unharmful"), _answer("harmful")],
    "s3": [_answer("unharmful"), _answer("harmful"), _answer("unharmful")],
    "s4": [_answer("unharmful", "unharmful"), _answer("unharmful", "harmful"), _answer("unharmful", "None")],
    "s5": [_answer("harmful", "harmful"), _answer("harmful", "harmful"), _answer("harmful", "unharmful")],
    "c1": [_answer("harmful"), _answer("unharmful"), _answer("harmful")],
    "c2": [_answer("unharmful"), _answer("unharmful"), _answer("harmful")],
}


class Scripted(Backend):
    """Sample i of a row is ``SCRIPT[id][i]``; remembers the prompts it saw."""

    kind = "scripted"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None):
        out = []
        for messages in requests:
            self.prompts.append(messages[-1]["content"])
            rid = re.search(r"prompt of (\S+)\n</user_turn>", messages[-1]["content"]).group(1)
            out.append([Generation(SCRIPT[rid][i], 40, 12, 0.03, "stop") for i in range(n)])
        return out


def _fake_model(path: Path, summary: dict | None = None) -> str:
    """A model folder; `summary` fields (beside required defaults) become its training summary."""
    from guardsmith.training import TrainingSummary

    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if summary is not None:
        base = {"stage": "sft", "method": "sft", "output": str(path), "base_model": "base", "examples": 0,
                "global_step": 1, "train_rows": 0}
        TrainingSummary(**{**base, **summary}).write(path)
    return str(path)


@pytest.fixture
def bench(tmp_path) -> dict[str, str]:
    uris = {"Safe": str(tmp_path / "safe"), "Policy": str(tmp_path / "policy")}
    storage.write_table(uris["Safe"], tables.from_records(SAFETY, "interactions"), "interactions")
    storage.write_table(uris["Policy"], tables.from_records(POLICY, "interactions"), "interactions")
    return uris


def test_scripted_metrics_match_recomputation(tmp_path, bench, monkeypatch):
    backend = Scripted()
    monkeypatch.setattr(evaluate, "open_guard", lambda *a, **k: backend)
    m1 = _fake_model(tmp_path / "m1", {"examples": 5200, "subset": None, "stage": "sft", "train_rows": 5000,
                                       "counts": {"train_read": 9000, "train_used": 5000}})
    m2 = _fake_model(tmp_path / "m2", {"train_rows": 0})  # sft too; its size and budget given in the name
    cfg = evaluate.EvaluateConfig(
        models=[f"big={m1}", f"small[size=0.5k;budget=3]={m2}"],
        benchmarks=[f"Safe={bench['Safe']}", f"Policy={bench['Policy']}"],
        output=str(tmp_path / "out"), samples_per_row=3, title="Scripted eval")
    res = evaluate.run(cfg)
    assert any("Never discuss crypto." in p for p in backend.prompts)  # custom policy in the prompt

    preds = storage.read_table(res.predictions, "predictions").to_pylist()
    # per model: Safe 5 prompt + 2 response labels, Policy 2 prompt labels; x 3 runs
    assert len(preds) == 2 * 9 * 3
    metrics = storage.read_table(res.metrics, "metrics").to_pylist()
    assert len(metrics) == 2 * 3
    for m in metrics:
        runs = []
        for r in range(3):
            rows = sorted((p for p in preds if (p["model"], p["benchmark"], p["task"], p["run"])
                           == (m["model"], m["benchmark"], m["task"], r)), key=lambda p: p["id"])
            runs.append(harm_f1([p["label"] for p in rows], [p["prediction"] for p in rows],
                                [p["parse_ok"] for p in rows]))
        mean, std = mean_std([x.f1 for x in runs])
        assert m["f1_mean"] == pytest.approx(mean) and m["f1_std"] == pytest.approx(std)
        assert m["f1_runs"] == pytest.approx([x.f1 for x in runs])
        assert m["k"] == 3 and m["support"] == runs[0].n
        assert m["parse_error_rate"] == pytest.approx(sum(x.parse_error_rate for x in runs) / 3)
        assert m["latency_s_mean"] == pytest.approx(0.01) and m["latency_s_mean"] > 0
        assert m["kind"] == ("custom" if m["benchmark"] == "Policy" else "safety")

    by = {(m["model"], m["benchmark"], m["task"]): m for m in metrics}
    safe_prompt = by[("big", "Safe", "prompt_harm")]
    # run 0 perfect (F1 1); run 1: tp s1,s5 fn s2 fp s3 -> 2/3... ; run 2: s1 unparsable -> fn
    assert safe_prompt["f1_runs"] == pytest.approx([1.0, 4 / 6, 4 / 5])
    assert safe_prompt["parse_error_rate"] == pytest.approx(1 / 15)
    assert safe_prompt["f1_std"] > 0
    resp = by[("big", "Safe", "response_harm")]
    assert resp["support"] == 2 and resp["parse_error_rate"] == pytest.approx(1 / 6)  # s4 run 2 says None
    assert by[("big", "Safe", "prompt_harm")]["train_size"] == 5000
    assert by[("small", "Safe", "prompt_harm")]["train_size"] == 500
    assert by[("small", "Safe", "prompt_harm")]["budget"] == 3
    assert {m["trained_by"] for m in metrics} == {"sft"}  # both guards were trained by sft: one size curve

    md = Path(res.report_md).read_text()
    assert "# Scripted eval" in md and "| model | Safe (prompt) | Safe (response) | Policy (prompt) |" in md
    assert "safety avg" in md and "custom-policy avg" in md
    assert f"{safe_prompt['f1_mean']:.3f} ± {safe_prompt['f1_std']:.3f}" in md
    assert "![F1 per benchmark](f1_per_benchmark.png)" in md
    html = Path(res.report_html).read_text()
    assert "data:image/png;base64," in html and "Policy (prompt)" in html
    names = {Path(p).name for p in res.plots}
    assert names == {"f1_per_benchmark.png", "f1_vs_train_size.png"}  # one budget value only
    for p in res.plots:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "big / Safe / prompt_harm" in str(res)


def test_two_modes_name_models_by_mode(tmp_path, bench, monkeypatch):
    monkeypatch.setattr(evaluate, "open_guard", lambda *a, **k: Scripted())
    model = _fake_model(tmp_path / "m")
    res = evaluate.run(evaluate.EvaluateConfig(models=[f"g={model}"], benchmarks=[bench["Policy"]],
                                               output=str(tmp_path / "out"), samples_per_row=1, modes=["R", "NR"],
                                               dual=True))
    metrics = storage.read_table(res.metrics, "metrics").to_pylist()
    assert {(m["model"], m["mode"], m["benchmark"]) for m in metrics} == {("g (R)", "R", "policy"),
                                                                           ("g (NR)", "NR", "policy")}


def test_spec_parsing():
    spec = evaluate.parse_model_spec("R 0.5k[size=0.5k; budget=3]=s3://bucket/models/r")
    assert (spec.name, spec.uri, spec.train_size, spec.budget) == ("R 0.5k", "s3://bucket/models/r", 500, 3)
    spec = evaluate.parse_model_spec("s3://bucket/models/guard-nr/")
    assert (spec.name, spec.uri) == ("guard-nr", "s3://bucket/models/guard-nr/")
    spec = evaluate.parse_model_spec("served=openai:http://127.0.0.1:8000/v1?model=g")
    assert (spec.name, spec.uri) == ("served", "openai:http://127.0.0.1:8000/v1?model=g")
    assert evaluate.parse_benchmark_spec("XSTest=/data/xstest") == ("XSTest", "/data/xstest")
    assert evaluate.parse_benchmark_spec("/data/toxicchat") == ("toxicchat", "/data/toxicchat")
    with pytest.raises(GuardsmithError):
        evaluate.parse_model_spec("x[size=lots]=/m")


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("problem", ["label", "column", "model", "duplicate", "unlabelled"])
def test_bad_input_writes_nothing(tmp_path, bench, monkeypatch, problem):
    monkeypatch.setattr(evaluate, "open_guard", lambda *a, **k: Scripted())
    model = _fake_model(tmp_path / "m")
    table = tables.from_records(SAFETY, "interactions")
    if problem == "label":
        table = table.set_column(table.schema.get_field_index("prompt_harm"), "prompt_harm",
                                 pa.array(["harmful", "unsafe", None, "harmful", "harmful"]))
    elif problem == "column":
        table = table.drop_columns(["taxonomy"])
    elif problem == "unlabelled":
        table = tables.from_records([_row("x")], "interactions")
    storage.write_table(str(tmp_path / "b2"), table)
    models = [str(tmp_path / "missing-model")] if problem == "model" else [f"g={model}"]
    benchmarks = [f"A={bench['Safe']}", f"A={bench['Policy']}"] if problem == "duplicate" else \
        [f"Safe={bench['Safe']}", f"B2={tmp_path / 'b2'}"]
    with pytest.raises(GuardsmithError) as err:
        evaluate.run(evaluate.EvaluateConfig(models=models, benchmarks=benchmarks,
                                             output=str(tmp_path / "out"), samples_per_row=2))
    if problem in ("label", "column"):
        assert isinstance(err.value, DataError)
        assert ("'unsafe'" if problem == "label" else "'taxonomy'") in str(err.value)
    assert _files(tmp_path / "out") == []


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    importlib.import_module("transformers")
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("evaluate") / "tiny-guard", seed=0)


def test_tiny_model_end_to_end(tmp_path, tiny_model):
    from guardsmith.standins.sample import load_sample

    rows = [r for r in load_sample("test") if r["response_harm"] is not None][:3] + \
        [r for r in load_sample("test") if r["response"] is None][:3]
    storage.write_table(str(tmp_path / "t"), tables.from_records(rows, "interactions"), "interactions")
    res = evaluate.run(evaluate.EvaluateConfig(models=[f"tiny={tiny_model}"], benchmarks=[f"T={tmp_path / 't'}"],
                                               output=str(tmp_path / "out"), samples_per_row=2, max_tokens=8, modes=["NR"]))
    preds = storage.read_table(res.predictions, "predictions")
    labelled = sum(r["prompt_harm"] is not None for r in rows) + sum(r["response_harm"] is not None for r in rows)
    assert preds.num_rows == labelled * 2
    assert min(preds.column("latency_s").to_pylist()) > 0
    for m in storage.read_table(res.metrics, "metrics").to_pylist():
        rows_t = [p for p in preds.to_pylist() if p["task"] == m["task"]]
        per_run = [[p for p in rows_t if p["run"] == r] for r in range(2)]
        runs = [harm_f1([p["label"] for p in ps], [p["prediction"] for p in ps], [p["parse_ok"] for p in ps])
                for ps in per_run]
        assert m["f1_mean"] == pytest.approx(mean_std([x.f1 for x in runs])[0])
        assert 0 <= m["parse_error_rate"] <= 1 and m["latency_s_mean"] > 0
    assert Path(res.report_md).exists() and Path(res.report_html).exists()
    assert "tiny" in Path(res.report_md).read_text()


@pytest.mark.s3
def test_scripted_on_s3(tmp_path, s3_prefix, monkeypatch):
    monkeypatch.setattr(evaluate, "open_guard", lambda *a, **k: Scripted())
    bench_uri = f"{s3_prefix}/bench/policy"
    storage.write_table(bench_uri, tables.from_records(POLICY, "interactions"), "interactions")
    res = evaluate.run(evaluate.EvaluateConfig(models=[f"g={_fake_model(tmp_path / 'm')}"],
                                               benchmarks=[f"Policy={bench_uri}"], output=f"{s3_prefix}/eval", samples_per_row=3))
    assert res.report_md == f"{s3_prefix}/eval/report/report.md"
    assert "| g |" in storage.read_bytes(res.report_md).decode()
    assert storage.read_bytes(res.plots[0]).startswith(b"\x89PNG")
    assert storage.read_table(res.metrics, "metrics").num_rows == 1
