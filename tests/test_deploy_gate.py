"""The CI quality gate (guardsmith.ops.gates): expression parsing, pass/fail against metrics tables,
row lists, flat mappings and files, production-baseline comparison, clear errors, the
`guardsmith deploy` entry points, image-digest records (guardsmith.ops.images) and KFP
upload/submit naming (guardsmith.ops.kfp)."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from guardsmith.cli import main
from guardsmith.errors import GuardsmithError
from guardsmith.ops import gates, images, kfp, pipelines


def deploy_main(argv: list[str]) -> int:
    """``guardsmith deploy ARGV`` (what the chart, CI and scripts run as ``python -m guardsmith deploy``)."""
    return main(["deploy", *argv])


def metric_rows() -> list[dict[str, Any]]:
    """Rows shaped like the evaluate stage's metrics table: two models, two benchmarks, two tasks."""
    f1 = {("sft", "aegis2_test", "prompt_harm"): 0.80, ("sft", "aegis2_test", "response_harm"): 0.70,
          ("sft", "wildguardtest", "prompt_harm"): 0.84, ("sft", "wildguardtest", "response_harm"): 0.74,
          ("continual", "aegis2_test", "prompt_harm"): 0.86, ("continual", "aegis2_test", "response_harm"): 0.78,
          ("continual", "wildguardtest", "prompt_harm"): 0.88, ("continual", "wildguardtest", "response_harm"): 0.76}
    return [{"model": m, "benchmark": b, "task": t, "mode": "R", "kind": "safety", "k": 4, "f1_mean": v,
             "f1_std": 0.01, "precision_mean": v, "recall_mean": v, "support": 100,
             "parse_error_rate": 0.02 if m == "sft" else 0.01, "latency_s_mean": None}
            for (m, b, t), v in f1.items()]


def one(gate: str, metrics: Any = None, **kw: Any) -> gates.GateResult:
    report = gates.evaluate_gates([gate], metric_rows() if metrics is None else metrics, **kw)
    assert len(report.results) == 1
    return report.results[0]


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text,column,filters,agg,op", [
    ("harmful_f1_avg>=0.8", "f1_mean", {"task": ("prompt_harm", "response_harm")}, "mean", ">="),
    ("  harmful_f1_min  >  0.5 ", "f1_mean", {"task": ("prompt_harm", "response_harm")}, "min", ">"),
    ("f1_mean[benchmark=aegis2_test, task=prompt_harm] <= 1", "f1_mean",
     {"benchmark": ("aegis2_test",), "task": ("prompt_harm",)}, None, "<="),
    ("max(parse_error_rate[task=prompt_harm|response_harm])<0.05", "parse_error_rate",
     {"task": ("prompt_harm", "response_harm")}, "max", "<"),
    ("harmful_f1_avg[benchmark=wildguardtest]==0.82", "f1_mean",
     {"benchmark": ("wildguardtest",), "task": ("prompt_harm", "response_harm")}, "mean", "=="),
    ("harmful_f1_avg[task=prompt_harm]>=0.8", "f1_mean", {"task": ("prompt_harm",)}, "mean", ">="),
    ("count(f1_mean[model=X (R)])>=1", "f1_mean", {"model": ("X (R)",)}, "count", ">="),
])
def test_expressions_parse(text: str, column: str, filters: dict, agg: str | None, op: str) -> None:
    gate = gates.parse_gate(text)
    assert gate.selector.column == column
    assert gate.selector.filter_dict() == filters
    assert gate.selector.agg == agg
    assert gate.op == op


@pytest.mark.parametrize("text,number,bop,bnum", [
    ("harmful_f1_avg>=0.8", 0.8, None, None),
    ("harmful_f1_avg>=-1e-3", -0.001, None, None),
    ("harmful_f1_avg>=baseline", None, None, None),
    ("harmful_f1_avg >= baseline - 0.01", None, "-", 0.01),
    ("harmful_f1_avg>=baseline*0.98", None, "*", 0.98),
    ("parse_error_rate_max<=baseline+.005", None, "+", 0.005),
])
def test_values_parse(text: str, number: float | None, bop: str | None, bnum: float | None) -> None:
    gate = gates.parse_gate(text)
    assert (gate.number, gate.baseline_op, gate.baseline_number) == (number, bop, bnum)
    assert gate.uses_baseline == (number is None)


def test_several_gates_in_one_argument_and_repeated() -> None:
    parsed = gates.parse_gates(["harmful_f1_avg>=0.8; parse_error_rate_max<0.05", "harmful_f1_min>0.7"])
    assert [str(g) for g in parsed] == ["harmful_f1_avg >= 0.8", "parse_error_rate_max < 0.05", "harmful_f1_min > 0.7"]


@pytest.mark.parametrize("text,needle", [
    ("harmful_f1_avg", "no comparison operator"),
    ("harmful_f1_avg => 0.8", "did you mean '>='"),
    ("harmful_f1_avg = 0.8", "'=' is not a comparison"),
    ("harmful_f1_avg != 0.8", "'!=' is not an operator"),
    ("harmful_f1_avg >= ", "no value after the operator"),
    (">= 0.8", "no metric before the operator"),
    ("harmful_f1_avg >= high", "must be a number or baseline"),
    ("harmful_f1_avg >= baseline-", "must be a number or baseline"),
    ("a >= 1 >= 2", "more than one comparison operator"),
    ("median(f1_mean) > 0.1", "unknown aggregate 'median'"),
    ("max(harmful_f1_avg) > 0.1", "already aggregates"),
    ("f1_mean[task] > 0.1", "must be KEY=VALUE"),
    ("f1_mean[task=a,,b=c] > 0.1", "empty filter"),
    ("f1_mean[task=a|] > 0.1", "empty alternative"),
    ("f1_mean[task=a,task=b] > 0.1", "given twice"),
    ("f1 mean > 0.1", "cannot read metric"),
    ("", "empty expression"),
])
def test_bad_expressions_give_a_clear_error(text: str, needle: str) -> None:
    with pytest.raises(GuardsmithError) as err:
        gates.parse_gate(text)
    message = str(err.value)
    assert needle in message
    assert "harmful_f1_avg>=0.80" in message or text == ""  # every syntax error shows an example
    assert "\n" not in message


def test_no_gate_at_all_is_an_error() -> None:
    with pytest.raises(GuardsmithError, match="no gate expression"):
        gates.parse_gates([" ; "])


# --------------------------------------------------------------------------- pass / fail on rows

def test_alias_passes_and_fails_for_the_chosen_model() -> None:
    ok = one("harmful_f1_avg>=0.82", model="continual")
    assert ok.passed and ok.value == pytest.approx((0.86 + 0.78 + 0.88 + 0.76) / 4)
    bad = one("harmful_f1_avg>=0.82", model="sft")
    assert not bad.passed and bad.value == pytest.approx(0.77)
    assert str(bad).startswith("FAIL harmful_f1_avg >= 0.82: 0.77 < 0.82")


@pytest.mark.parametrize("gate,passed", [
    ("f1_mean[benchmark=aegis2_test,task=prompt_harm]>=0.86", True),   # equal counts for >=
    ("f1_mean[benchmark=aegis2_test,task=prompt_harm]>0.86", False),
    ("f1_mean[benchmark=aegis2_test,task=prompt_harm]==0.86", True),
    ("f1_mean[benchmark=aegis2_test,task=prompt_harm]<=0.86", True),
    ("f1_mean[benchmark=aegis2_test,task=prompt_harm]<0.86", False),
    ("min(f1_mean[task=response_harm])>=0.77", False),
    ("max(f1_mean[task=response_harm])>=0.77", True),
    ("harmful_f1_min>0.75", True),
    ("prompt_harm_f1_avg>=0.87", True),
    ("response_harm_f1_avg>=0.77", True),
    ("parse_error_rate_max<=0.01", True),
    ("count(f1_mean)==4", True),
    ("sum(support[task=prompt_harm])==200", True),
])
def test_operators_and_aggregates(gate: str, passed: bool) -> None:
    assert one(gate, model="continual").passed is passed


def test_model_filter_in_the_selector_wins_over_the_default_model() -> None:
    assert one("f1_mean[model=sft,benchmark=aegis2_test,task=prompt_harm]==0.80", model="continual").passed


def test_rows_of_several_models_are_never_averaged() -> None:
    result = one("harmful_f1_avg>=0.5")
    assert not result.passed
    assert "2 models (continual, sft)" in result.reason and "--gate-model" in result.reason


def test_several_rows_without_an_aggregate_fail_with_advice() -> None:
    result = one("f1_mean[task=prompt_harm]>=0.5", model="continual")
    assert not result.passed and "matches 2 rows" in result.reason and "mean(...)" in result.reason


def test_no_matching_rows_and_unknown_columns_fail_with_the_known_values() -> None:
    none = one("f1_mean[benchmark=xstest,task=prompt_harm]>=0.5", model="continual")
    assert not none.passed and "no rows match" in none.reason and "aegis2_test" in none.reason
    col = one("f2_mean[task=prompt_harm]>=0.5", model="continual")
    assert not col.passed and "column 'f2_mean'" in col.reason and "f1_mean" in col.reason


def test_nan_and_non_numeric_values_fail() -> None:
    rows = metric_rows()
    rows[4]["f1_mean"] = float("nan")
    assert not one("harmful_f1_avg>=0.1", rows, model="continual").passed
    assert not one("max(kind)>=0", model="continual").passed


def test_report_message_and_raise() -> None:
    report = gates.evaluate_gates(["harmful_f1_avg>=0.8", "harmful_f1_min>=0.8", "parse_error_rate_max<=0.01"],
                                   metric_rows(), model="continual")
    assert not report.passed and len(report.failures) == 1
    assert report.message.startswith("gate failed on metrics: harmful_f1_min >= 0.8: 0.76 < 0.8")
    with pytest.raises(GuardsmithError, match="gate failed"):
        report.raise_for_failure()
    good = gates.check_gates("harmful_f1_avg>=0.8", metric_rows(), model="continual")
    assert good.passed and good.message == "gate passed (1/1) on metrics"


# --------------------------------------------------------------------------- baseline

def test_gate_against_a_production_baseline_table() -> None:
    prod = [dict(r, model="production") for r in metric_rows() if r["model"] == "sft"]  # baseline avg 0.77
    assert one("harmful_f1_avg>=baseline", model="continual", baseline=prod).passed
    worse = one("harmful_f1_avg>=baseline", model="sft", baseline=[dict(r, f1_mean=r["f1_mean"] + 0.02) for r in prod])
    assert not worse.passed and worse.baseline == pytest.approx(0.79)
    assert "(baseline 0.79)" in str(worse)
    tolerated = one("harmful_f1_avg>=baseline-0.03", model="sft",
                    baseline=[dict(r, f1_mean=r["f1_mean"] + 0.02) for r in prod])
    assert tolerated.passed and tolerated.threshold == pytest.approx(0.76)
    scaled = one("harmful_f1_avg>=baseline*0.99", model="continual", baseline=prod)
    assert scaled.threshold == pytest.approx(0.77 * 0.99)


def test_baseline_model_is_chosen_separately() -> None:
    both = metric_rows()
    result = one("harmful_f1_avg>=baseline", model="continual", baseline=both, baseline_model="sft")
    assert result.passed and result.baseline == pytest.approx(0.77)
    ambiguous = one("harmful_f1_avg>=baseline", model="continual", baseline=both)
    assert not ambiguous.passed and ambiguous.reason.startswith("baseline: ")


def test_baseline_as_a_flat_mapping() -> None:
    result = one("harmful_f1_avg>=baseline-0.01", model="continual", baseline={"harmful_f1_avg": 0.83})
    assert result.passed and result.threshold == pytest.approx(0.82)
    missing = one("harmful_f1_min>=baseline", model="continual", baseline={"harmful_f1_avg": 0.83})
    assert not missing.passed and "harmful_f1_min is not in" in missing.reason


def test_a_baseline_gate_without_a_baseline_is_an_error() -> None:
    with pytest.raises(GuardsmithError, match="--baseline"):
        gates.evaluate_gates(["harmful_f1_avg>=baseline"], metric_rows(), model="continual")


def test_compare_to_baseline() -> None:
    prod = {"harmful_f1_avg": 0.80, "parse_error_rate_max": 0.02}
    report = gates.compare_to_baseline(metric_rows(), prod, model="continual")
    assert report.passed and [str(r.gate) for r in report.results] == ["harmful_f1_avg >= baseline-0"]
    worse = gates.compare_to_baseline(metric_rows(), {"harmful_f1_avg": 0.85}, tolerance=0.01, model="continual")
    assert not worse.passed
    lower = gates.compare_to_baseline(metric_rows(), prod, ["parse_error_rate_max"], higher_is_better=False,
                                       model="continual")
    assert lower.passed and lower.results[0].gate.op == "<="
    with pytest.raises(GuardsmithError, match="tolerance"):
        gates.compare_to_baseline(metric_rows(), prod, tolerance=-1)


# --------------------------------------------------------------------------- sources

def test_flat_metrics_by_exact_name() -> None:
    flat = {"f1/continual/R/aegis2_test/prompt_harm": 0.86, "harmful_f1_avg": 0.81}
    assert one("f1/continual/R/aegis2_test/prompt_harm>=0.85", flat).passed
    assert not one("harmful_f1_avg>=0.85", flat).passed
    missing = one("harmful_f1_min>=0.1", flat)
    assert not missing.passed and "names: f1/continual" in missing.reason
    with pytest.raises(GuardsmithError, match="not a number"):
        gates.load_metrics({"harmful_f1_avg": "high"})


def test_metrics_from_files_and_from_a_table(tmp_path: Path) -> None:
    from guardsmith import storage

    (tmp_path / "rows.json").write_text(json.dumps({"rows": metric_rows()}))
    (tmp_path / "flat.yaml").write_text("harmful_f1_avg: 0.9\n")
    (tmp_path / "broken.json").write_text("{not json")
    import pyarrow as pa

    storage.write_table(str(tmp_path / "metrics"), pa.Table.from_pylist(metric_rows()))
    for source in (tmp_path / "rows.json", str(tmp_path / "metrics"), f"file://{tmp_path / 'metrics'}"):
        assert one("harmful_f1_avg>=0.82", str(source), model="continual").passed
    assert one("harmful_f1_avg>=0.82", str(tmp_path / "flat.yaml")).passed
    with pytest.raises(GuardsmithError, match="not valid JSON"):
        gates.load_metrics(str(tmp_path / "broken.json"))
    with pytest.raises(GuardsmithError):
        gates.load_metrics(str(tmp_path / "missing-table"))


def test_gate_run_reads_the_evaluate_metrics_of_a_work_root(tmp_path: Path) -> None:
    import pyarrow as pa

    from guardsmith import storage

    storage.write_table(str(tmp_path / "evaluate" / "metrics"), pa.Table.from_pylist(metric_rows()))
    assert gates.run_metrics_uri("s3://b/runs/1") == "s3://b/runs/1/evaluate/metrics"
    report = gates.gate_run("guard_training", str(tmp_path), ["harmful_f1_avg>=0.82"])  # default model: continual
    assert report.passed
    assert not gates.gate_run("guard_training", str(tmp_path), ["harmful_f1_avg>=0.82"], model="sft").passed
    assert not gates.gate_run("evaluation", str(tmp_path), ["harmful_f1_avg>=0.5"]).passed  # ambiguous model


# --------------------------------------------------------------------------- command line

def test_cli_gate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "metrics.json"
    rows.write_text(json.dumps(metric_rows()))
    base = tmp_path / "prod.json"
    base.write_text(json.dumps({"harmful_f1_avg": 0.80}))
    args = ["gate", "--metrics", str(rows), "--gate-model", "continual", "--baseline", str(base)]
    assert deploy_main([*args, "--gate", "harmful_f1_avg>=baseline", "--gate", "harmful_f1_min>0.7"]) == 0
    out = capsys.readouterr().out
    assert "PASS harmful_f1_avg >= baseline" in out and "gate passed (2/2)" in out
    assert deploy_main([*args, "--gate", "harmful_f1_avg>=baseline+0.05"]) == 1
    captured = capsys.readouterr()
    assert "FAIL harmful_f1_avg" in captured.out
    assert captured.err.startswith("guardsmith: error: gate failed on ")
    assert deploy_main([*args, "--gate", "harmful_f1_avg => 0.8"]) == 1
    assert "did you mean '>='" in capsys.readouterr().err


# --------------------------------------------------------------------------- image digests

def test_digest_records_and_pinning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "digests.yaml"
    path.write_text(images.digests_path().read_text())
    monkeypatch.setenv(images.DIGESTS_ENV, str(path))
    records = images.load_digests()
    assert set(records) == set(images.IMAGE_KINDS)
    with pytest.raises(GuardsmithError, match="run `make images`"):
        images.image_refs(require_digest=True)
    digest = "sha256:" + "ab" * 32
    images.record_digest("train", "registry.example.com:5000/ml/guardsmith-train", "1.2.3", digest)
    refs = images.image_refs()
    assert refs["train"] == f"registry.example.com:5000/ml/guardsmith-train@{digest}"
    assert refs["cpu"] == f"{records['cpu'].repository}:{records['cpu'].tag}"
    env = images.image_env()
    assert env["GUARDSMITH_IMAGE_TRAIN"] == refs["train"] and set(env) == {
        "GUARDSMITH_IMAGE_CPU", "GUARDSMITH_IMAGE_TRAIN", "GUARDSMITH_IMAGE_INFER"}
    assert images.record_base_digest("cpu", digest).endswith(f"@{digest}")
    assert images.base_image_ref("cpu").endswith(f"@{digest}")
    assert images.load_digests()["train"].tag == "1.2.3"  # a second write keeps the first
    with pytest.raises(GuardsmithError, match="sha256"):
        images.record_digest("cpu", "x/y", "1", "sha256:short")
    with pytest.raises(GuardsmithError, match="unknown image kind"):
        images.record_digest("gpu", "x/y", "1", digest)
    path.write_text(path.read_text().replace("registry.example.com:5000/ml/guardsmith-train", "bad repo@x"))
    with pytest.raises(GuardsmithError, match="repository"):
        images.load_digests()


def test_cli_image_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy_main(["image-env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "GUARDSMITH_IMAGE_CPU", "GUARDSMITH_IMAGE_TRAIN", "GUARDSMITH_IMAGE_INFER"]


# --------------------------------------------------------------------------- KFP upload / submit

class FakeClient:
    """The kfp.Client calls guardsmith.ops.kfp makes, recorded."""

    def __init__(self) -> None:
        self.pipelines: dict[str, str] = {}
        self.versions: dict[str, list[str]] = {}
        self.runs: list[dict[str, Any]] = []

    def get_pipeline_id(self, name: str) -> str | None:
        return self.pipelines.get(name)

    def upload_pipeline(self, path: str, pipeline_name: str, namespace: str | None = None) -> Any:
        self.pipelines[pipeline_name] = f"p-{pipeline_name}"
        self.versions[f"p-{pipeline_name}"] = [pipeline_name]
        return SimpleNamespace(pipeline_id=f"p-{pipeline_name}")

    def list_pipeline_versions(self, pipeline_id: str, filter: str) -> Any:
        wanted = json.loads(filter)["predicates"][0]["stringValue"]
        found = [SimpleNamespace(pipeline_version_id=f"v-{n}") for n in self.versions[pipeline_id] if n == wanted]
        return SimpleNamespace(pipeline_versions=found or None)

    def upload_pipeline_version(self, path: str, name: str, pipeline_id: str) -> Any:
        self.versions[pipeline_id].append(name)
        return SimpleNamespace(pipeline_version_id=f"v-{name}")

    def create_experiment(self, name: str, namespace: str | None = None) -> Any:
        return SimpleNamespace(experiment_id=f"e-{name}")

    def run_pipeline(self, **kw: Any) -> Any:
        self.runs.append(kw)
        return SimpleNamespace(run_id=f"r-{len(self.runs)}")


def repo_pipelines() -> Path:
    return images.repo_root() / "pipelines"


def test_upload_names_match_the_installed_packages_and_are_reused() -> None:
    client = FakeClient()
    first = kfp.upload_all(client, repo_pipelines())
    assert {r["pipeline"] for r in first} == {f"guardsmith-{n.replace('_', '-')}" for n in pipelines.PIPELINES}
    assert all(r["created"] for r in first)
    again = kfp.upload_all(client, repo_pipelines())
    assert not any(r["created"] for r in again)
    # `guardsmith pipeline submit` (the installed packages, root None) finds the same versions
    for rec in first:
        name = rec["pipeline"].removeprefix("guardsmith-").replace("-", "_")
        mine = kfp.upload_version(client, name, pipelines.package_path(name))
        assert (mine["pipeline_id"], mine["version_id"], mine["created"]) == (rec["pipeline_id"], rec["version_id"], False)
    with pytest.raises(GuardsmithError, match="no package for nope"):
        kfp.upload_all(client, repo_pipelines(), names=["nope"])


def test_submit_from_a_folder_expands_placeholders_and_checks_parameters() -> None:
    client = FakeClient()
    now = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    result = kfp.submit(client, "evaluation", "paper-llama3.1-8b", root=repo_pipelines(),
                        overrides={"work_root": "s3://b/evals/nightly-{timestamp}", "evaluate_samples_per_row": 2},
                        experiment="nightly", cache=False, now=now)
    run = client.runs[0]
    assert result["work_root"] == run["params"]["work_root"] == "s3://b/evals/nightly-20270115-080000"
    assert run["params"]["evaluate_samples_per_row"] == 2 and run["enable_caching"] is False
    assert run["experiment_id"] == "e-nightly" and run["job_name"] == "evaluation-paper-llama3.1-8b-20270115-080000"
    with pytest.raises(GuardsmithError, match="unknown parameter"):
        kfp.submit(client, "evaluation", "paper-llama3.1-8b", root=repo_pipelines(), overrides={"evaluate_kk": 1})
    with pytest.raises(GuardsmithError, match="only in local runs"):
        kfp.submit(client, "evaluation", "tiny-cpu", root=repo_pipelines(), overrides={"work_root": "s3://b/x"})
    with pytest.raises(GuardsmithError, match="unknown preset"):
        kfp.submit(client, "evaluation", "nope", root=repo_pipelines())


def test_kfp_client_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kfp_lib = importlib.import_module("kfp")
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(kfp_lib, "Client", lambda **kw: seen.append(kw) or kw)  # the real one calls the server
    monkeypatch.delenv(kfp.KFP_TOKEN_ENV, raising=False)
    monkeypatch.setenv(kfp.SA_TOKEN_ENV, str(tmp_path / "absent"))
    assert kfp.kfp_client("http://kfp:8888", "team") == {"host": "http://kfp:8888", "namespace": "team"}
    token = tmp_path / "token"
    token.write_text("projected")
    monkeypatch.setenv(kfp.SA_TOKEN_ENV, str(token))
    projected = kfp.kfp_client("http://kfp:8888")
    assert type(projected["credentials"]).__name__ == "ServiceAccountTokenVolumeCredentials"
    monkeypatch.setenv(kfp.KFP_TOKEN_ENV, "ci-token")
    assert kfp.kfp_client("http://kfp:8888")["existing_token"] == "ci-token"


def test_pinned_image_default(tmp_path: Path) -> None:
    path = tmp_path / "digests.yaml"
    path.write_text(images.digests_path().read_text())
    assert images.pinned_image("cpu", path) is None  # placeholder: compile keeps repository:tag
    digest = "sha256:" + "d" * 64
    images.record_digest("cpu", "registry.example.com/ml/guardsmith-cpu", "0.1.0", digest, path)
    assert images.pinned_image("cpu", path) == f"registry.example.com/ml/guardsmith-cpu@{digest}"
    assert images.pinned_image("cpu", tmp_path / "absent.yaml") is None


def test_retrain_workflow() -> None:
    import yaml

    wf = yaml.safe_load((images.repo_root() / ".github" / "workflows" / "retrain.yml").read_text())
    on = wf[True]  # YAML 1.1 reads the key `on` as True
    assert "data/**.yaml" in on["push"]["paths"] and "pipelines/*/presets/*.yaml" in on["push"]["paths"]
    assert "workflow_dispatch" in on and wf["permissions"] == {"contents": "read"}
    job = wf["jobs"]["retrain"]
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert "guardsmith pipeline compile" in scripts and "guardsmith deploy upload" in scripts
    assert "guardsmith pipeline submit" in scripts and "--wait" in scripts and "--gate" in scripts
    assert "${{" not in scripts, "inputs and secrets reach scripts through env, never inline"
    assert job["env"]["GUARDSMITH_KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
