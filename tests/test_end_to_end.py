"""The whole guard recipe on CPU: distill (offline teacher over HTTP) -> filter -> sft -> mine ->
continual -> evaluate, and the trained tiny guard measurably learns the bundled sample's rule."""
from __future__ import annotations

import json

import pytest
from pathlib import Path

from guardsmith import storage, tables
from guardsmith.config import load_config
from guardsmith.standins.offline import offline_spec, serve_offline
from guardsmith.standins.sample import load_sample
from guardsmith.stages import continual, distill, evaluate, mine, sft
from guardsmith.stages import filter as filter_stage
from guardsmith.standins.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.slow


def _write(uri: str, rows: list[dict]) -> str:
    storage.write_table(uri, tables.from_records(rows, "interactions"), schema_name="interactions")
    return uri


def test_guard_recipe_end_to_end_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path
    train = _write(str(root / "data/train"), load_sample("train"))
    pool = _write(str(root / "data/pool"), load_sample("pool"))
    test = _write(str(root / "data/test"), load_sample("test"))

    with serve_offline(seed=0) as server:  # template teacher + rule judge, default defect rates
        spec = offline_spec(server)
        traces = distill.run(distill.DistillConfig(
            input=train, output=str(root / "traces"), teacher=spec, shard_size=128, concurrency=4, max_tokens=256))
        assert traces.rows == len(load_sample("train"))
        kept = filter_stage.run(filter_stage.FilterConfig(
            input=traces.output, output=str(root / "filtered"), teacher=spec, judge=spec, rounds=2, concurrency=4))
    report = json.loads(storage.read_bytes(kept.report_json))
    assert kept.rejected_rows > 0, "the injected defects must be caught"
    assert kept.accepted_rows >= 0.8 * traces.rows, report

    base = build_tiny_causal_lm(root / "base", seed=0)
    tuned = sft.run(load_config(sft.SftConfig, stage="sft", preset="tiny-cpu", overrides=dict(
        base_model=str(base), train=kept.accepted, output=str(root / "guard-sft"), mode="NR",
        max_steps=200, work_dir=str(root / "work-sft"))))

    mined = mine.run(mine.MineConfig(model=tuned.output, pool=pool, output=str(root / "mined"), mode="NR",
                                     samples_per_row=4, max_tokens=24, concurrency=32))
    assert json.loads(storage.read_bytes(mined.report_json))["counts"]["mined"] > 0

    cont = continual.run(load_config(continual.ContinualConfig, stage="continual", preset="tiny-cpu", overrides=dict(
        base_model=tuned.output, train=kept.accepted, difficult=mined.difficult, output=str(root / "guard-cont"),
        mode="NR", max_steps=20, work_dir=str(root / "work-cont"))))
    assert cont.global_step == 20

    result = evaluate.run(evaluate.EvaluateConfig(
        models=[f"untrained={base}", f"sft={tuned.output}", f"continual={cont.output}"],
        benchmarks=[f"sample_test={test}"], output=str(root / "eval"), modes=["NR"], samples_per_row=2,
        max_tokens=24, concurrency=32))
    rows = storage.read_table(result.metrics).to_pylist()
    f1 = {(r["model"], r["task"]): r["f1_mean"] for r in rows}
    assert f1[("untrained", "prompt_harm")] < 0.2
    for model in ("sft", "continual"):
        assert f1[(model, "prompt_harm")] >= 0.75, f1
        assert f1[(model, "prompt_harm")] - f1[("untrained", "prompt_harm")] >= 0.5, f1
    assert storage.exists(result.report_html)

    # Each evaluated model gets its card back with this run's results as model-index metadata
    # (read with huggingface_hub's own parser); a trained guard's card keeps its training facts.
    from huggingface_hub import ModelCard

    assert len(result.model_cards) == 3
    card = ModelCard.load(str(root / "eval" / "model_cards" / "continual" / "README.md"))
    assert card.data.base_model == tuned.output
    scored = {(r.dataset_name, r.task_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    for task in ("prompt_harm", "response_harm"):
        assert scored[("sample_test", task, "harmful F1 (NR)")] == pytest.approx(f1[("continual", task)], abs=1e-4)
    assert not (Path(cont.output) / "README.md").read_text().count("model-index")  # the model folder is untouched
    untrained = ModelCard.load(str(root / "eval" / "model_cards" / "untrained" / "README.md"))
    assert untrained.data.model_name == "untrained" and untrained.data.eval_results
