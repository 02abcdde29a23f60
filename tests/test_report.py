"""report: Table 1 from several metrics tables, averages, plots, HTML embedding and escaping, report step."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest

from guardsmith import storage, tables
from guardsmith.errors import GuardsmithError
from guardsmith.reporting import build_report, html_page, html_table, markdown_table, parse_count
from guardsmith.stages.report import CONFIG, run
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


class _Cells(HTMLParser):
    """Text of every <th> and <td>, in order, and the <script> elements seen."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.cells: list[str] = []
        self.scripts = 0
        self._into: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self._into = self.header if tag == "th" else self.cells if tag == "td" else self._into
        if tag in ("th", "td"):
            self._into.append("")

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._into = None

    def handle_data(self, data):
        if self._into is not None:
            self._into[-1] += data


def test_html_parses_and_escapes_model_names(tmp_path):
    uri = str(tmp_path / "m")
    evil = "<script>alert(1)</script> & co"
    storage.write_table(uri, tables.from_records([
        _m(evil, "WildGuardTest", "prompt_harm", 0.8),
        _m("plain", "WildGuardTest", "prompt_harm", 0.6),
    ], "metrics"), "metrics")
    res = build_report(uri, str(tmp_path / "rep"), "Title <b>")
    page = Path(res.html).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<title>Title &lt;b&gt;</title>" in page
    parser = _Cells()
    parser.feed(page)
    parser.close()
    assert parser.scripts == 0
    assert parser.header[:3] == ["model", "WildGuardTest (prompt)", "safety avg"]
    # Table 1 rows come first: the model name is read back unescaped, best cell flagged
    assert parser.cells[:6] == [evil, "0.800 ± 0.010", "0.800", "plain", "0.600 ± 0.010", "0.600"]
    assert page.count('<td class="best">') == 2
    # the Markdown keeps the name as text (pipes escaped in cells)
    assert f"| {evil} | **0.800 ± 0.010** | **0.800** |" in Path(res.markdown).read_text()


def test_shared_table_helpers():
    assert markdown_table(["a", "b|c"], [["x", "1"]], [[False, True]]) == [
        "| a | b\\|c |", "|---|---:|", "| x | **1** |"]
    table = html_table(["h"], [["<i>"]], [[True]])
    assert '<td class="best">&lt;i&gt;</td>' in table and "<th>h</th>" in table
    page = html_page("T & U", [table])
    assert "<h1>T &amp; U</h1>" in page and table in page and page.startswith("<!DOCTYPE html>")
