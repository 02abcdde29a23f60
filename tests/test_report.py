"""report: Table 1 from several metrics tables, averages, plots, HTML embedding, report step."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from guardsmith import storage, tables
from guardsmith.errors import GuardsmithError
from guardsmith.report import CONFIG, build_report, parse_count, run
from guardsmith.stages.evaluate import METRIC_EXTRAS


def _m(model: str, bench: str, task: str, f1: float, std: float = 0.01, **extra) -> dict:
    return {"model": model, "benchmark": bench, "task": task, "k": 2, "f1_mean": f1, "f1_std": std,
            "precision_mean": f1, "recall_mean": f1, "support": 10, "parse_error_rate": 0.1,
            "latency_s_mean": 0.02, **extra}


def _write_rich(uri: str, records: list[dict]) -> None:
    schema = pa.schema(list(tables.schema("metrics")) + METRIC_EXTRAS)
    storage.write_table(uri, pa.Table.from_pylist(records, schema=schema), "metrics")


def _extras(mode: str, kind: str, runs: list[float], size: int | None = None, budget: int | None = None) -> dict:
    return {"mode": mode, "kind": kind, "positives": 5, "f1_runs": runs, "train_size": size, "budget": budget,
            "model_uri": "/m"}


@pytest.fixture
def metrics(tmp_path) -> list[str]:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _write_rich(a, [
        _m("R 0.5k", "WildGuardTest", "prompt_harm", 0.8, **_extras("R", "safety", [0.79, 0.81], 500, 3)),
        _m("R 0.5k", "WildGuardTest", "response_harm", 0.6, **_extras("R", "safety", [0.55, 0.65], 500, 3)),
        _m("R 0.5k", "DynaGuard", "prompt_harm", 0.7, **_extras("R", "custom", [0.7, 0.7], 500, 3)),
        _m("R 5k", "WildGuardTest", "prompt_harm", 0.9, **_extras("R", "safety", [0.9, 0.9], 5000, 1)),
        _m("R 5k", "WildGuardTest", "response_harm", 0.5, **_extras("R", "safety", [0.5, 0.5], 5000, 1)),
        _m("R 5k", "DynaGuard", "prompt_harm", 0.75, **_extras("R", "custom", [0.7, 0.8], 5000, 1)),
    ])
    # a plain metrics table (schema columns only, like the demo writes) from another run
    storage.write_table(b, tables.from_records([
        _m("baseline size=1000", "WildGuardTest", "prompt_harm", 0.4),
        _m("baseline size=1000", "XSTest", "response_harm", 0.3),
    ], "metrics"), "metrics")
    return [a, b]


def test_table1_averages_and_files(tmp_path, metrics):
    res = build_report(metrics, str(tmp_path / "rep"), "Suite")
    md = Path(res.markdown).read_text()
    assert md.startswith("# Suite")
    header = ("| model | WildGuardTest (prompt) | WildGuardTest (response) | XSTest (response) | "
              "DynaGuard (prompt) | safety avg | custom-policy avg |")
    assert header in md
    # safety avg of "R 0.5k" = (0.8 + 0.6) / 2, std over per-run averages (0.67, 0.73) = 0.03
    # best per column in bold (ties too; a column with one value has no best)
    assert ("| R 0.5k | 0.800 ± 0.010 | **0.600 ± 0.010** | - | 0.700 ± 0.010 | **0.700 ± 0.030 †** | "
            "0.700 ± 0.000 |") in md
    assert "| R 5k | **0.900 ± 0.010** | 0.500 ± 0.010 | - | **0.750 ± 0.010** | **0.700 ± 0.000 †** |" in md
    # a plain metrics table: no kind (safety), no per-run F1 (average without std), size from the name
    assert "| baseline size=1000 | 0.400 ± 0.010 | - | 0.300 ± 0.010 | - | 0.350 † | - |" in md
    assert "latency per sample" in md and "![F1 vs training-set size](f1_vs_train_size.png)" in md
    html = Path(res.html).read_text()
    assert html.count("data:image/png;base64,") == 3 and "<td class=\"best\">" in html
    assert {Path(p).name for p in res.plots} == {"f1_per_benchmark.png", "f1_vs_train_size.png",
                                                 "f1_vs_budget.png"}
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in res.plots)
    assert res.models == 3 and res.columns == 4


def test_later_table_wins_and_report_step(tmp_path, metrics):
    newer = str(tmp_path / "c")
    _write_rich(newer, [_m("R 5k", "WildGuardTest", "prompt_harm", 0.95,
                           **_extras("R", "safety", [0.95, 0.95], 5000, 1))])
    cfg = CONFIG(metrics=[*metrics, newer], output=str(tmp_path / "rep2"))
    res = run(cfg)
    assert "| R 5k | **0.950 ± 0.010** |" in Path(res.markdown).read_text()
    assert "report:" in str(res)


def test_errors_and_counts(tmp_path):
    with pytest.raises(GuardsmithError):
        build_report([], str(tmp_path / "r"))
    empty = str(tmp_path / "empty")
    storage.write_table(empty, tables.empty_table("metrics"), "metrics")
    with pytest.raises(GuardsmithError, match="no rows"):
        build_report(empty, str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    assert (parse_count("2.5k"), parse_count("500"), parse_count(7), parse_count("x")) == (2500, 500, 7, None)
