"""guardsmith.ops: one preset loader and one local-only check behind every submit path.

`guardsmith pipeline submit|schedule` (the installed pipelines and the CI workflow),
`guardsmith deploy submit --dir` (the Helm CronJob, over the ConfigMap of compiled packages) and
the library's submit and schedule functions (guardsmith.ops.kfp) all refuse a preset holding any
local-only value, alone or inside a longer value, before anything is uploaded or submitted; the
commands refuse it before they even connect to KFP. (The chart's hook Job only uploads packages.)"""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from guardsmith.cli import main
from guardsmith.errors import GuardsmithError
from guardsmith.ops import kfp, pipelines, presets

ROOT = Path(__file__).resolve().parents[1]
LOCAL_VALUES = [*presets.LOCAL_MARKERS, "guard:tiny:classifier", "name=tiny:causal-lm",
                "reward_model:tiny:reward-model", "judge=offline:teacher"]


class RecordingClient:
    """A fake kfp.Client that records every call that would change the server."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, Any]] = []

    def get_pipeline_id(self, name: str) -> str | None:
        return None

    def upload_pipeline(self, path: str, pipeline_name: str, namespace: str | None = None) -> Any:
        self.changes.append(("upload_pipeline", pipeline_name))
        return SimpleNamespace(pipeline_id=f"p-{pipeline_name}")

    def list_pipeline_versions(self, pipeline_id: str, filter: str) -> Any:
        return SimpleNamespace(pipeline_versions=None)

    def upload_pipeline_version(self, path: str, name: str, pipeline_id: str) -> Any:
        self.changes.append(("upload_pipeline_version", name))
        return SimpleNamespace(pipeline_version_id=f"v-{name}")

    def create_experiment(self, name: str, namespace: str | None = None) -> Any:
        self.changes.append(("create_experiment", name))
        return SimpleNamespace(experiment_id=f"e-{name}")

    def run_pipeline(self, **kw: Any) -> Any:
        self.changes.append(("run_pipeline", kw))
        return SimpleNamespace(run_id="r-1")

    def create_recurring_run(self, **kw: Any) -> Any:
        self.changes.append(("create_recurring_run", kw))
        return SimpleNamespace(recurring_run_id="j-1")


@pytest.fixture()
def client(monkeypatch: pytest.MonkeyPatch) -> RecordingClient:
    fake = RecordingClient()
    monkeypatch.setattr(kfp, "kfp_client", lambda host, namespace=None: fake)
    return fake


def chart_dir(tmp_path: Path, preset: dict[str, Any]) -> Path:
    """A folder laid out like the chart's ConfigMap: the compiled evaluation package and one preset."""
    folder = tmp_path / "pipelines" / "evaluation"
    (folder / "presets").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / "evaluation" / "pipeline.yaml", folder / "pipeline.yaml")
    (folder / "presets" / "nightly.yaml").write_text(json.dumps(preset))
    return tmp_path / "pipelines"


def test_one_definition_of_the_local_only_values() -> None:
    assert set(presets.LOCAL_MARKERS) == {"tiny:causal-lm", "tiny:reward-model", "tiny:classifier", "offline:teacher"}
    assert set(presets.TINY_MODELS) == set(presets.LOCAL_MARKERS) - {"offline:teacher"}


@pytest.mark.parametrize("value", LOCAL_VALUES)
def test_check_refuses_local_only_values_anywhere(value: str) -> None:
    for params in ({"work_root": "s3://b/x", "models": [value]}, {"work_root": "s3://b/x", "x": {"y": value}}):
        with pytest.raises(GuardsmithError, match="only in local runs"):
            presets.check_submittable(params)
    with pytest.raises(GuardsmithError, match="work_root is not set"):
        presets.check_submittable({"models": ["m=s3://b/m"]})
    assert presets.check_submittable({"work_root": "s3://b/x", "models": ["m=s3://b/m"]})


@pytest.mark.parametrize("value", LOCAL_VALUES)
@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_pipeline_submit_and_schedule_refuse_local_only_values(
        value: str, command: str, client: RecordingClient, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--cron", "0 0 3 * * *"] if command == "schedule" else []
    argv = ["pipeline", command, "evaluation", "--host", "http://kfp", "--preset", "paper-gemma3-4b",
            "--set", f"models={json.dumps([value])}", *extra]
    assert main(argv) == 1
    assert "only in local runs" in capsys.readouterr().err
    assert client.changes == []


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_pipeline_submit_and_schedule_refuse_the_tiny_preset(command: str, client: RecordingClient,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--cron", "0 0 3 * * *"] if command == "schedule" else []
    argv = ["pipeline", command, "evaluation", "--host", "http://kfp", "--preset", "tiny-cpu",
            "--set", "work_root=s3://b/x", *extra]
    assert main(argv) == 1
    assert "only in local runs" in capsys.readouterr().err and client.changes == []


@pytest.mark.parametrize("value", LOCAL_VALUES)
def test_deploy_submit_from_a_folder_refuses_local_only_values(
        value: str, tmp_path: Path, client: RecordingClient, capsys: pytest.CaptureFixture[str]) -> None:
    """The CronJob path: a preset in a --dir holding e.g. `tiny:reward-model` (the drift bug) is refused."""
    root = chart_dir(tmp_path, {"work_root": "s3://b/evals/{date}", "models": [value]})
    argv = ["deploy", "submit", "evaluation", "--host", "http://kfp", "--dir", str(root), "--preset", "nightly"]
    assert main(argv) == 1
    assert "only in local runs" in capsys.readouterr().err
    assert client.changes == []


@pytest.mark.parametrize("argv", [
    ["pipeline", "submit", "evaluation", "--preset", "tiny-cpu", "--set", "work_root=s3://b/x"],
    ["pipeline", "schedule", "evaluation", "--preset", "tiny-cpu", "--cron", "0 0 3 * * *"],
    ["deploy", "submit", "evaluation", "--preset", "nightly", "--dir", "{root}"],
])
def test_local_only_values_are_refused_before_connecting(argv: list[str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal does not wait for a reachable KFP: no client is ever made."""
    def no_client(host: str, namespace: str | None = None) -> Any:
        raise AssertionError("connected to KFP before checking the preset")

    monkeypatch.setattr(kfp, "kfp_client", no_client)
    root = chart_dir(tmp_path, {"work_root": "s3://b/x", "models": ["tiny:classifier"]})
    argv = [str(root) if a == "{root}" else a for a in argv] + ["--host", "http://127.0.0.1:9"]
    assert main(argv) == 1
    assert "only in local runs" in capsys.readouterr().err


@pytest.mark.parametrize("value", LOCAL_VALUES)
def test_library_submit_and_schedule_refuse_local_only_values(value: str, tmp_path: Path) -> None:
    """guardsmith.ops.kfp.submit / schedule over a folder (what the CronJob's command calls) upload nothing."""
    root = chart_dir(tmp_path, {"work_root": "s3://b/x", "models": ["prod=s3://b/m"]})
    fake = RecordingClient()
    with pytest.raises(GuardsmithError, match="only in local runs"):
        kfp.submit(fake, "evaluation", "nightly", root=root, overrides={"models": [value]})
    with pytest.raises(GuardsmithError, match="only in local runs"):
        kfp.schedule(fake, "evaluation", "nightly", "0 0 3 * * *", root=root, overrides={"models": [value]})
    assert fake.changes == []


def test_tiny_reward_model_preset_in_a_folder_is_refused(tmp_path: Path) -> None:
    """The drift the issue found: the folder path knew only two of the four local-only values."""
    root = chart_dir(tmp_path, {"work_root": "s3://b/x", "models": ["guard=tiny:reward-model"]})
    with pytest.raises(GuardsmithError, match="'tiny:reward-model' exists only in local runs"):
        presets.submit_parameters("evaluation", "nightly", root=root)
    assert presets.load_preset("evaluation", "nightly", root=root)["models"] == ["guard=tiny:reward-model"]


def test_a_clean_folder_preset_is_submitted(tmp_path: Path, client: RecordingClient,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = chart_dir(tmp_path, {"work_root": "s3://b/evals/{date}", "models": ["prod=s3://b/m"]})
    argv = ["deploy", "submit", "evaluation", "--host", "http://kfp/", "--dir", str(root), "--preset", "nightly",
            "--set", "work_root=s3://b/evals/x-{timestamp}", "--no-cache"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    (run,) = [kw for what, kw in client.changes if what == "run_pipeline"]
    assert run["params"]["models"] == ["prod=s3://b/m"] and run["enable_caching"] is False
    assert "{timestamp}" not in run["params"]["work_root"] and f"work_root: {run['params']['work_root']}" in out
    assert "run_id: r-1" in out and "url: http://kfp/#/runs/details/r-1" in out


def test_missing_work_root_and_gate_without_wait(tmp_path: Path, client: RecordingClient,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = chart_dir(tmp_path, {"models": ["prod=s3://b/m"]})
    assert main(["deploy", "submit", "evaluation", "--host", "h", "--dir", str(root), "--preset", "nightly"]) == 1
    assert "work_root is not set" in capsys.readouterr().err
    assert main(["pipeline", "submit", "evaluation", "--host", "h", "--preset", "paper-gemma3-4b",
                 "--gate", "harmful_f1_avg>=0.8"]) == 1
    assert "--gate needs --wait" in capsys.readouterr().err
    assert client.changes == []


def test_one_preset_loader_for_both_folders(tmp_path: Path) -> None:
    """The installed folder and a copy of it give the same parameters."""
    copy = tmp_path / "pipelines"
    shutil.copytree(ROOT / "pipelines" / "evaluation", copy / "evaluation")
    for preset in presets.preset_names("evaluation"):
        assert presets.load_preset("evaluation", preset, now=0) == presets.load_preset("evaluation", preset, root=copy, now=0)
    assert presets.preset_names("evaluation", copy) == presets.preset_names("evaluation")
    with pytest.raises(GuardsmithError, match="unknown preset 'nope'"):
        presets.load_preset("evaluation", "nope", root=copy)
    with pytest.raises(GuardsmithError, match="no compiled package"):
        presets.load_preset("guard_training", "tiny-cpu", root=copy)
    assert presets.parse_sets(["a=1", "b=[x, y]", "c="]) == {"a": 1, "b": ["x", "y"], "c": ""}
    with pytest.raises(GuardsmithError, match="key=value"):
        presets.parse_sets(["novalue"])
    assert presets.expand_placeholders({"w": ["r-{date}", "{timestamp}"]}, now=0) == {"w": ["r-19700101", "19700101-000000"]}


def test_registry_comes_from_the_stages() -> None:
    from guardsmith.stages import STAGES

    assert list(pipelines.COMPONENTS) == list(STAGES)
    assert pipelines.COMPONENTS["filter"] == "filter_traces"
    for name in STAGES:
        assert (pipelines.components_dir() / name / "component.py").exists(), name
    assert all((pipelines.pipelines_dir() / n / "pipeline.py").exists() for n in pipelines.PIPELINES)
    assert set(pipelines.PIPELINES.values()) == {s.recipe for s in STAGES.values()}


def test_python_m_guardsmith_is_the_cli() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "guardsmith", "deploy", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: guardsmith deploy" in done.stdout or "Usage: python -m guardsmith deploy" in done.stdout


def test_old_modules_are_gone() -> None:
    for name in ("guardsmith.deploy", "guardsmith.pipeline_cli", "guardsmith.demo"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


@pytest.mark.parametrize("value", ["./tickets.csv", "../data/eval.csv", "~/mapping.yaml"])
def test_relative_local_paths_are_refused_for_a_cluster(value: str, client: RecordingClient,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A user preset that works locally (`import_from: ./tickets.csv`) names files a pod cannot read."""
    benchmarks = json.dumps([{"benchmark": "own", "source": "table", "split": "all", "files": value}])
    argv = ["pipeline", "submit", "evaluation", "--host", "http://kfp", "--preset", "paper-gemma3-4b",
            "--set", "work_root=s3://b/x", "--set", f"benchmarks={benchmarks}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "benchmarks:" in err and value in err and "s3://" in err
    assert client.changes == []
