"""report: the paper's Table-1 layout (checked against the paper's own Tables 1, 5, 6, 7), averages and
their std, latency relative to NR, size/budget curves, HTML embedding and escaping, the report step.

Every expected number below is worked out by hand in the comments, never by calling the report code.
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest

from guardsmith import storage, tables
from guardsmith.errors import GuardsmithError
from guardsmith.reporting import build_report, markdown_table, parse_count
from guardsmith.reporting.plots import attribute_points
from guardsmith.reporting.table1 import assemble, suite_of
from guardsmith.stages.evaluate import METRIC_EXTRAS
from guardsmith.stages.report import CONFIG, run


def _m(model: str, bench: str, task: str, f1: float, std: float = 0.01, *, latency: float = 0.02,
       support: int = 10, **extra) -> dict:
    return {"model": model, "benchmark": bench, "task": task, "k": 2, "f1_mean": f1, "f1_std": std,
            "precision_mean": f1, "recall_mean": f1, "support": support, "parse_error_rate": 0.1,
            "latency_s_mean": latency, **extra}


def _x(mode: str, kind: str, runs: list[float], size: int | None = None, budget: int | None = None,
       uri: str = "/m") -> dict:
    return {"mode": mode, "kind": kind, "positives": 5, "f1_runs": runs, "train_size": size, "budget": budget,
            "model_uri": uri}


def _write_rich(uri: str, records: list[dict]) -> str:
    schema = pa.schema(list(tables.schema("metrics")) + METRIC_EXTRAS)
    storage.write_table(uri, pa.Table.from_pylist(records, schema=schema), "metrics")
    return uri


def _cell(model: str, bench: str, task: str, f1: float, kind: str = "safety", **kw) -> dict:
    """A one-run cell (std 0) in R mode."""
    return _m(model, bench, task, f1, 0.0, **kw, **_x("R", kind, [f1], uri=f"/{model}"))


# The paper's L3.1-8B-WILDGUARDMIX-R (5k) row: per-benchmark cells from Tables 5 (prompt), 6 (response)
# and 7 (custom policy; DynaGuard as one figure over the whole test set, CoSA per scenario).
PAPER_5K = [
    *[("prompt_harm", b, f, "safety") for b, f in [("WildGuardTest", 0.869), ("Aegis 2.0 test", 0.849),
                                                   ("OpenAI Moderation", 0.791), ("SimpleSafetyTests", 1.000),
                                                   ("ToxicChat", 0.750)]],
    *[("response_harm", b, f, "safety") for b, f in [("XSTest", 0.921), ("JailbreakBench", 0.867),
                                                     ("WildGuardTest", 0.777), ("Aegis 2.0 test", 0.756)]],
    ("prompt_harm", "DynaGuard", 0.879, "custom"),
    *[("prompt_harm", f"CoSApien-{s}", f, "custom") for s, f in [("game", 0.813), ("prosecution", 0.783),
                                                                ("book", 0.900), ("language", 0.944),
                                                                ("film", 0.872)]],
]


class _Cells(HTMLParser):
    """Text of every <th> (with its colspan) and <td>, in order, and the <script> elements seen."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[tuple[str, int]] = []
        self.cells: list[str] = []
        self.scripts = 0
        self._into: str | None = None

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        if tag == "th":
            self.header.append(("", int(dict(attrs).get("colspan", 1))))
        elif tag == "td":
            self.cells.append("")
        self._into = tag if tag in ("th", "td") else self._into

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._into = None

    def handle_data(self, data):
        if self._into == "th":
            self.header[-1] = (self.header[-1][0] + data, self.header[-1][1])
        elif self._into == "td":
            self.cells[-1] += data


def test_table1_reproduces_the_papers_row(tmp_path):
    uri = _write_rich(str(tmp_path / "m"), [_cell("R 5k", b, t, f, kind) for t, b, f, kind in PAPER_5K])
    res = build_report(uri, str(tmp_path / "rep"), "Table 1")
    md = Path(res.markdown).read_text()
    assert "| model | prompt | response | safety avg | DynaGuard | CoSA | custom-policy avg |" in md
    # prompt   = (0.869 + 0.849 + 0.791 + 1.000 + 0.750) / 5 = 4.259 / 5 = 0.8518
    # response = (0.921 + 0.867 + 0.777 + 0.756) / 4       = 3.321 / 4 = 0.83025
    # safety   = all nine cells: 7.580 / 9 = 0.84222 (the paper's 0.842; (0.852+0.830)/2 would be 0.841)
    # CoSA     = (0.813 + 0.783 + 0.900 + 0.944 + 0.872) / 5 = 4.312 / 5 = 0.8624
    # custom   = (DynaGuard 0.879 + CoSA 0.8624) / 2 = 0.8707 -- the paper's Table 1 row reads
    #            0.852 0.830 0.842 | 0.879 0.862 0.871; one DynaGuard cell against five CoSA cells would
    #            give (0.879 + 4.312) / 6 = 0.8652 instead
    assert ("| R 5k | 0.852 ± 0.000 | 0.830 ± 0.000 | 0.842 ± 0.000 | 0.879 ± 0.000 | 0.862 ± 0.000 | "
            "0.871 ± 0.000 |") in md
    assert "0.865" not in md.split("## Harmful F1 per benchmark")[0]
    # per-benchmark table: safety prompt cells, safety response cells, then DynaGuard, then the CoSA scenarios
    assert ("| model | WildGuardTest (prompt) | Aegis 2.0 test (prompt) | OpenAI Moderation (prompt) | "
            "SimpleSafetyTests (prompt) | ToxicChat (prompt) | XSTest (response) | JailbreakBench (response) | "
            "WildGuardTest (response) | Aegis 2.0 test (response) | DynaGuard (prompt) | CoSApien-game (prompt) |"
            ) in md
    # HTML: the two column groups of the paper's Table 1 as a header row above the column names
    parser = _Cells()
    parser.feed(Path(res.html).read_text())
    assert parser.header[:10] == [("", 1), ("Safety benchmarks", 3), ("Custom policy", 3), ("model", 1),
                                  ("prompt", 1), ("response", 1), ("safety avg", 1), ("DynaGuard", 1),
                                  ("CoSA", 1), ("custom-policy avg", 1)]


def test_averages_std_over_runs_and_partial_rows(tmp_path):
    a = _x("R", "safety", [0.8, 0.9])
    uri = _write_rich(str(tmp_path / "m"), [
        _m("A", "WildGuardTest", "prompt_harm", 0.85, 0.05, **a),
        _m("A", "XSTest", "response_harm", 0.6, 0.0, **{**a, "f1_runs": [0.6, 0.6]}),
        _m("A", "XSTest", "response_refusal", 0.1, 0.0, **{**a, "f1_runs": [0.1, 0.1]}),
        _m("A", "DynaGuard", "prompt_harm", 0.8, 0.1, **{**a, "kind": "custom", "f1_runs": [0.9, 0.7]}),
        _m("A", "CoSApien-game", "prompt_harm", 0.7, 0.1, **{**a, "kind": "custom", "f1_runs": [0.6, 0.8]}),
        _m("A", "cosapien film", "prompt_harm", 0.8, 0.0, **{**a, "kind": "custom", "f1_runs": [0.8, 0.8]}),
        _m("A", "Acme policy", "prompt_harm", 0.5, 0.0, **{**a, "kind": "custom", "f1_runs": [0.5, 0.5]}),
        # B lacks the XSTest response cell and the DynaGuard suite
        _m("B", "WildGuardTest", "prompt_harm", 0.9, 0.0, **{**a, "f1_runs": [0.9, 0.9]}),
        _m("B", "CoSApien-game", "prompt_harm", 0.6, 0.0, **{**a, "kind": "custom", "f1_runs": [0.6, 0.6]}),
        _m("B", "cosapien film", "prompt_harm", 0.7, 0.0, **{**a, "kind": "custom", "f1_runs": [0.7, 0.7]}),
    ])
    md = Path(build_report(uri, str(tmp_path / "rep")).markdown).read_text()
    assert "| model | prompt | response | safety avg | DynaGuard | CoSA | Acme policy | custom-policy avg |" in md
    # A: safety per run ((0.8+0.6)/2, (0.9+0.6)/2) = (0.70, 0.75) -> 0.725 ± 0.025 (refusal not averaged);
    #    CoSA per run ((0.6+0.8)/2, (0.8+0.8)/2) = (0.70, 0.80) -> 0.750 ± 0.050;
    #    custom per run ((0.9+0.7+0.5)/3, (0.7+0.8+0.5)/3) = (0.7, 0.6667) -> 0.6833 ± 0.0167
    # (a column with a single value has no best: A's response, DynaGuard and Acme cells are not bold)
    assert ("| A | 0.850 ± 0.050 | 0.600 ± 0.000 | 0.725 ± 0.025 | 0.800 ± 0.100 | **0.750 ± 0.050** | "
            "0.500 ± 0.000 | **0.683 ± 0.017** |") in md
    # B: no response cell: safety = its one prompt cell, marked partial; CoSA (0.6+0.7)/2 = 0.65;
    #    custom = CoSA only (0.65), partial: the DynaGuard and Acme suites are missing
    assert "| B | **0.900 ± 0.000** | - | **0.900 ± 0.000 †** | - | 0.650 ± 0.000 | - | 0.650 ± 0.000 † |" in md
    assert "XSTest (refusal)" in md
    assert (suite_of("DynaBench"), suite_of("CoSA-book"), suite_of("Acme policy")) == ("DynaGuard", "CoSA",
                                                                                        "Acme policy")


@pytest.fixture
def latency_metrics(tmp_path) -> str:
    def cell(model, mode, uri, bench, task, latency, support):
        return _m(model, bench, task, 0.8, latency=latency, support=support, **_x(mode, "safety", [0.8], uri=uri))

    return _write_rich(str(tmp_path / "lat"), [
        # a dual model in both modes (evaluate names them "Dual (R)" / "Dual (NR)"), same folder
        cell("Dual (R)", "R", "/dual", "WildGuardTest", "prompt_harm", 0.04, 10),
        cell("Dual (R)", "R", "/dual", "XSTest", "response_harm", 0.06, 30),
        cell("Dual (NR)", "NR", "/dual", "WildGuardTest", "prompt_harm", 0.02, 10),
        cell("Dual (NR)", "NR", "/dual", "XSTest", "response_harm", 0.02, 30),
        # a non-reasoning guard, and R-only guards without an NR mode of their own
        cell("WGM NR", "NR", "/nr", "WildGuardTest", "prompt_harm", 0.019, 10),
        cell("WGM NR", "NR", "/nr", "XSTest", "response_harm", 0.02, 30),
        cell("R full", "R", "/full", "WildGuardTest", "prompt_harm", 0.051433, 10),
        cell("R full", "R", "/full", "ToxicChat", "prompt_harm", 1.0, 5),
        cell("R 1-sentence", "R", "/one", "WildGuardTest", "prompt_harm", 0.025631, 10),
        # no model_uri: the same model is the name without the mode suffix
        cell("g (R)", "R", "", "WildGuardTest", "prompt_harm", 0.03, 10),
        cell("g (NR)", "NR", "", "WildGuardTest", "prompt_harm", 0.01, 10),
    ])


def _latency_rows(md: str) -> dict[str, list[str]]:
    part = md.split("## Latency and parse errors")[1].split("##")[0]
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in part.splitlines() if line.startswith("| "))}


def _vs(rows: dict[str, list[str]], model: str) -> list[str]:
    """The NR reference and overhead shown for ``model``."""
    return [rows[model][1], rows[model][3]]


def test_latency_overhead_relative_to_nr(tmp_path, latency_metrics):
    res = run(CONFIG(metrics=[latency_metrics], output=str(tmp_path / "rep"), latency_baseline="WGM NR"))
    rows = _latency_rows(Path(res.markdown).read_text())
    assert rows["model"] == ["mode", "NR reference", "latency per sample (s)", "overhead vs NR", "parse-error rate"]
    # Dual R vs its own NR mode: (0.04*10 + 0.06*30)/40 = 0.055 vs 0.02 -> 0.055/0.02 - 1 = +175.0%
    assert rows["Dual (R)"] == ["R", "Dual (NR)", "0.0550", "+175.0%", "0.100"]
    # R full has no NR mode: the named baseline, on the one cell both have (WildGuardTest prompt):
    # 0.051433 / 0.019 - 1 = 1.7070 -> +170.7% (the paper's full-reasoning overhead); its latency over
    # all its cells is (0.051433*10 + 1.0*5)/15 = 0.36762
    assert rows["R full"] == ["R", "WGM NR", "0.3676", "+170.7%", "0.100"]
    # one-sentence reasoning: 0.025631 / 0.019 - 1 = 0.3490 -> +34.9%
    assert _vs(rows, "R 1-sentence") == ["WGM NR", "+34.9%"]
    # Dual NR is its model's NR row: compared with the baseline, (0.02*10+0.02*30)/40 = 0.02 vs
    # (0.019*10 + 0.02*30)/40 = 0.01975 -> +1.3%; the baseline itself has no reference
    assert _vs(rows, "Dual (NR)") == ["WGM NR", "+1.3%"]
    assert _vs(rows, "WGM NR") == ["-", "-"]
    # without model_uri: "g (R)" and "g (NR)" are one model: 0.03 / 0.01 - 1 = +200.0%
    assert _vs(rows, "g (R)") == ["g (NR)", "+200.0%"]


def test_latency_without_or_with_a_wrong_baseline(tmp_path, latency_metrics):
    rows = _latency_rows(Path(build_report(latency_metrics, str(tmp_path / "rep")).markdown).read_text())
    assert _vs(rows, "R full") == ["-", "-"] and _vs(rows, "Dual (R)") == ["Dual (NR)", "+175.0%"]
    for name in ("nope", "R full"):  # unknown, and a model without NR-mode metrics
        with pytest.raises(GuardsmithError, match=f"latency_baseline '{name}'.*WGM NR"):
            build_report(latency_metrics, str(tmp_path / "bad"), latency_baseline=name)
    assert not (tmp_path / "bad").exists()


@pytest.fixture
def metrics(tmp_path) -> list[str]:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _write_rich(a, [
        _m("R 0.5k", "WildGuardTest", "prompt_harm", 0.8, **_x("R", "safety", [0.79, 0.81], 500, 3)),
        _m("R 0.5k", "WildGuardTest", "response_harm", 0.6, **_x("R", "safety", [0.55, 0.65], 500, 3)),
        _m("R 0.5k", "DynaGuard", "prompt_harm", 0.7, **_x("R", "custom", [0.7, 0.7], 500, 3)),
        _m("R 5k", "WildGuardTest", "prompt_harm", 0.9, **_x("R", "safety", [0.9, 0.9], 5000, 1)),
        _m("R 5k", "WildGuardTest", "response_harm", 0.5, **_x("R", "safety", [0.5, 0.5], 5000, 1)),
        _m("R 5k", "DynaGuard", "prompt_harm", 0.75, **_x("R", "custom", [0.7, 0.8], 5000, 1)),
    ])
    # a plain metrics table (schema columns only, like the demo writes) from another run
    storage.write_table(b, tables.from_records([
        _m("baseline size=1000", "WildGuardTest", "prompt_harm", 0.4),
        _m("baseline size=1000", "XSTest", "response_harm", 0.3),
    ], "metrics"), "metrics")
    return [a, b]


def test_tables_plots_and_files(tmp_path, metrics):
    res = build_report(metrics, str(tmp_path / "rep"), "Suite")
    md = Path(res.markdown).read_text()
    assert md.startswith("# Suite")
    # R 0.5k: safety = (0.8 + 0.6)/2 = 0.7, per run ((0.79+0.55)/2, (0.81+0.65)/2) = (0.67, 0.73) -> std 0.03;
    # response runs (0.55, 0.65) -> std 0.05; best per column in bold
    # (ties too); the plain table has no kind (safety) and no per-run F1 (no std), size from the name;
    # it lacks WildGuardTest (response): † on its response and safety figures
    # (XSTest response is a column only the plain table has, so both R rows are partial there too)
    assert ("| R 0.5k | 0.800 ± 0.010 | **0.600 ± 0.050 †** | **0.700 ± 0.030 †** | 0.700 ± 0.000 | "
            "0.700 ± 0.000 |") in md
    assert ("| R 5k | **0.900 ± 0.000** | 0.500 ± 0.000 † | **0.700 ± 0.000 †** | **0.750 ± 0.050** | "
            "**0.750 ± 0.050** |") in md
    assert "| baseline size=1000 | 0.400 | 0.300 † | 0.350 † | - | - |" in md
    assert ("| model | WildGuardTest (prompt) | WildGuardTest (response) | XSTest (response) | DynaGuard (prompt) |"
            in md)
    assert "| R 5k | **0.900 ± 0.010** | 0.500 ± 0.010 | - | **0.750 ± 0.010** |" in md
    assert "latency per sample" in md and "![F1 vs training-set size](f1_vs_train_size.png)" in md
    html = Path(res.html).read_text()
    assert html.count("data:image/png;base64,") == 3 and "<td class=\"best\">" in html
    assert {Path(p).name for p in res.plots} == {"f1_per_benchmark.png", "f1_vs_train_size.png",
                                                 "f1_vs_budget.png"}
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in res.plots)
    assert res.models == 3 and res.columns == 4


def test_size_curve_averages_a_seed_sweep(tmp_path):
    recs = []
    for model, size, f1s in [("R 0.5k seed0", 500, (0.70, 0.80)), ("R 0.5k seed1", 500, (0.76, 0.90)),
                             ("R 5k seed0", 5000, (0.84, 0.84))]:
        recs += [_m(model, "WildGuardTest", "prompt_harm", f1s[0], 0.0, **_x("R", "safety", [f1s[0]], size, uri=model)),
                 _m(model, "XSTest", "response_harm", f1s[1], 0.0, **_x("R", "safety", [f1s[1]], size, uri=model))]
    data = assemble(recs, "t")
    # 500: safety avgs 0.75 and 0.83 -> mean 0.79, population std across the two seeds 0.04; 5000: one model
    (x0, y0, e0), (x1, y1, e1) = attribute_points(data, "train_size", "R", "safety")
    assert (x0, x1) == (500, 5000)
    assert (y0, e0, y1, e1) == pytest.approx((0.79, 0.04, 0.84, 0.0))
    assert attribute_points(data, "train_size", "R", "custom") == []
    res = build_report(_write_rich(str(tmp_path / "m"), recs), str(tmp_path / "rep"))
    assert {Path(p).name for p in res.plots} == {"f1_per_benchmark.png", "f1_vs_train_size.png"}


def test_later_table_wins_and_report_step(tmp_path, metrics):
    newer = _write_rich(str(tmp_path / "c"), [_m("R 5k", "WildGuardTest", "prompt_harm", 0.95,
                                                 **_x("R", "safety", [0.95, 0.95], 5000, 1))])
    res = run(CONFIG(metrics=[*metrics, newer], output=str(tmp_path / "rep2")))
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
    assert [h for h, _ in parser.header[:5]] == ["", "Safety benchmarks", "model", "prompt", "safety avg"]
    # Table 1 rows come first: the model name is read back unescaped, best cells flagged
    assert parser.cells[:6] == [evil, "0.800", "0.800", "plain", "0.600", "0.600"]
    assert page.count('<td class="best">') == 3  # Table 1: prompt and safety avg; per-benchmark: one cell
    # the Markdown keeps the name as text (pipes escaped in cells)
    assert f"| {evil} | **0.800** | **0.800** |" in Path(res.markdown).read_text()


def test_markdown_table_escapes_pipes_and_bolds_best_cells():
    assert markdown_table(["a", "b|c"], [["x", "1"]], [[False, True]]) == [
        "| a | b\\|c |", "|---|---:|", "| x | **1** |"]


def test_size_curves_never_join_an_sft_and_a_continual_guard(tmp_path):
    """One run's sft guard (223 rows) and continual guard (231 rows: train + difficult) are not two
    sizes of one curve; two runs of different sizes give one curve per stage."""
    from guardsmith.reporting.plots import compact, plot_attribute

    def run(stage: str, size: int, f1: float) -> dict:
        model = f"{stage} {size}"
        return _m(model, "WildGuardTest", "prompt_harm", f1, 0.0,
                  **_x("NR", "safety", [f1], size, uri=f"/runs/{size}/{stage}"), trained_by=stage)

    one_run = assemble([run("sft", 223, 0.80), run("continual", 231, 0.82)], "t")
    assert attribute_points(one_run, "train_size", "NR", "safety", "sft") == [(223, 0.80, 0.0)]
    assert plot_attribute(one_run, "train_size") is None  # no stage has two sizes: no curve at all
    sweep = assemble([run("sft", 500, 0.70), run("sft", 5000, 0.84), run("continual", 540, 0.72),
                      run("continual", 5100, 0.85)], "t")
    assert [p[0] for p in attribute_points(sweep, "train_size", "NR", "safety", "sft")] == [500, 5000]
    assert [p[0] for p in attribute_points(sweep, "train_size", "NR", "safety", "continual")] == [540, 5100]
    assert plot_attribute(sweep, "train_size").startswith(b"\x89PNG")
    assert [compact(v) for v in (500, 540, 2500, 5000, 5100, 223)] == ["500", "540", "2.5k", "5k", "5.1k", "223"]


def test_backticks_become_code_in_every_html_part():
    from guardsmith.reporting.render import Document, Section, Table, render_html

    doc = Document(title="t", notes=["see `report.md`"], sections=[Section(
        heading="Rows of `sft`", table=Table(["model `uri`", "F1"], [["`s3://b/m` <x>", "0.9"]]), notes=["a `b`"])])
    html = render_html(doc)
    assert "`" not in html.split("<body>")[-1]
    assert "<code>s3://b/m</code> &lt;x&gt;" in html and "<h2>Rows of <code>sft</code></h2>" in html
    assert "<th>model <code>uri</code></th>" in html


def test_report_plots_the_training_loss_of_guards_trained_here(tmp_path):
    from guardsmith.reporting.plots import training_curves
    from guardsmith.training import TrainingSummary

    model = tmp_path / "sft-model"
    model.mkdir()
    TrainingSummary(stage="sft", method="sft", output=str(model), base_model="base", examples=8, global_step=3,
                    train_rows=8, loss_history=[[1, 2.5], [2, 1.75], [3, 1.25]]).write(model)
    recs = [_m("sft", "WildGuardTest", "prompt_harm", 0.8, **_x("NR", "safety", [0.8], uri=str(model))),
            _m("other", "WildGuardTest", "prompt_harm", 0.7, **_x("NR", "safety", [0.7], uri=str(tmp_path / "none")))]
    assert training_curves(assemble(recs, "t")) == {"sft": [[1, 2.5], [2, 1.75], [3, 1.25]]}
    res = build_report(_write_rich(str(tmp_path / "m"), recs), str(tmp_path / "rep"))
    assert "training_loss.png" in {Path(p).name for p in res.plots}
    assert "training_loss.png" in Path(res.markdown).read_text()
