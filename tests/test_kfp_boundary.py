"""Boundary Guidance on KFP: components `boundary` / `boundary_eval` in sync with their stage
configs, pipelines `boundary_guidance` / `guard_then_boundary` (compiled IR: GPU pod settings also
inside ParallelFor, Kueue, secrets; committed YAML in sync; presets; wiring of the trained guard),
local-only markers, and a local run of `boundary_guidance` on tiny models with the offline judge."""
from __future__ import annotations

import importlib
import contextlib
import dataclasses
import inspect
import json
import re
import time
import typing
from pathlib import Path
from typing import Any

import pytest

importlib.import_module("kfp")
yaml = importlib.import_module("yaml")

from guardsmith import kfp_support, storage  # noqa: E402
from guardsmith.ops import images  # noqa: E402
from guardsmith.cli.pipeline import pipeline_app  # noqa: E402
from guardsmith.ops import local, pipelines, presets  # noqa: E402
from guardsmith.stages import STAGES as REGISTRY  # noqa: E402

GUARD_PIPELINES = [n for n, recipe in pipelines.PIPELINES.items() if recipe == "guard"]
BOUNDARY_PIPELINES = [n for n, recipe in pipelines.PIPELINES.items() if recipe == "boundary"]
BOUNDARY_COMPONENTS = [s.name for s in REGISTRY.values() if s.recipe == "boundary"]
from guardsmith.errors import GuardsmithError  # noqa: E402
from helpers.kfp_ir import ir  # noqa: E402

KINDS = {"boundary": "train", "boundary_eval": "infer"}
GPU_EXECUTORS = {
    "boundary_guidance": {"exec-boundary", "exec-boundary-eval"},
    "guard_then_boundary": {"exec-boundary", "exec-boundary-eval", "exec-sft", "exec-continual", "exec-mine",
                            "exec-evaluate"},
}
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


@pytest.fixture
def fresh(compiled_fresh: Path) -> Path:
    return compiled_fresh


@pytest.fixture
def custom(compiled_custom: Path) -> Path:
    return compiled_custom


def dag_tasks(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(DAG component name, its spec, task name, task spec) for the root DAG and every sub-DAG (loops)."""
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    return [(dn, d, tn, t) for dn, d in dags.items() for tn, t in d["dag"]["tasks"].items()]


# --------------------------------------------------------------------------- components

def component_params(comp: str) -> dict[str, inspect.Parameter]:
    fn = pipelines.load_component(comp).python_func
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if typing.get_origin(p.annotation) is not typing.Annotated}


@pytest.mark.parametrize("comp", list(BOUNDARY_COMPONENTS))
def test_component_parameters_mirror_stage_config(comp: str) -> None:
    cls = REGISTRY[comp].module().CONFIG
    hints = typing.get_type_hints(cls)
    params = component_params(comp)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(params) == set(fields), f"{comp}: component and {cls.__name__} differ: {set(params) ^ set(fields)}"
    for name, f in fields.items():
        p = params[name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty, f"{comp}.{name} should be required"
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if default is None and kfp_support._optional_inner(hints[name]) is int:
            assert p.default == 0, f"{comp}.{name}: optional int is 0 (= unset) in the component"
        else:
            assert p.default == default, f"{comp}.{name}: default {p.default!r} != {default!r}"


@pytest.mark.parametrize("comp", list(BOUNDARY_COMPONENTS))
def test_component_yaml_installs_nothing_uses_its_image_and_readme_lists_inputs(comp: str) -> None:
    text = (pipelines.components_dir() / comp / "component.yaml").read_text()
    assert "pip install" not in text
    assert f"image: {images.IMAGE_REPOSITORY}/guardsmith-{KINDS[comp]}:" in text
    readme = (pipelines.components_dir() / comp / "README.md").read_text()
    missing = [n for n in component_params(comp) if f"`{n}`" not in readme]
    assert not missing, f"components/{comp}/README.md does not list {missing}"


# --------------------------------------------------------------------------- compiling

def test_compile_command_writes_every_registered_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(pipeline_app, ["compile", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml")}
    assert written == {f"components/{c}/component.yaml" for c in pipelines.COMPONENTS} | \
        {f"pipelines/{n}/pipeline.yaml" for n in pipelines.PIPELINES}


@pytest.mark.parametrize("name", BOUNDARY_PIPELINES)
def test_every_gpu_task_has_accelerator_placement_and_shm(fresh: Path, name: str) -> None:
    spec, k8s = ir(fresh, name)
    executors = spec["deploymentSpec"]["executors"]
    gpu = {e for e, x in executors.items() if "accelerator" in x["container"].get("resources", {})}
    assert gpu == GPU_EXECUTORS[name]
    for ex in gpu:
        acc = executors[ex]["container"]["resources"]["accelerator"]
        assert acc["resourceType"] and acc["resourceCount"], ex
        cfg = k8s[ex]
        assert cfg["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector"), ex
        assert cfg["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("gpu_tolerations"), ex
        assert {"mountPath": "/dev/shm", "medium": "Memory"}.items() <= cfg["emptyDirMounts"][0].items(), ex
    # every placeholder of a GPU task's resources resolves: inside a ParallelFor the loop must receive it
    gpu_components = {c for c, x in spec["components"].items() if x.get("executorLabel") in gpu}
    checked = 0
    for dag_name, dag, task_name, task in dag_tasks(spec):
        if task["componentRef"]["name"] not in gpu_components:
            continue
        inputs = task["inputs"]["parameters"]
        for key in ("accelerator_type", "accelerator_count"):
            for channel in PLACEHOLDER.findall(inputs[key]["runtimeValue"]["constant"]):
                assert channel in inputs, (task_name, channel)
                if dag_name != "root":
                    assert channel in dag["inputDefinitions"]["parameters"], (dag_name, channel)
                checked += 1
    assert checked >= 2 * len(gpu)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["defaultValue"] == kfp_support.DEFAULT_GPU_NODE_SELECTOR
    assert params["gpu_tolerations"]["defaultValue"] == kfp_support.DEFAULT_GPU_TOLERATIONS
    assert params["gpu_accelerator"]["defaultValue"] == "nvidia.com/gpu"


def test_boundary_secrets_arrive_as_env(custom: Path) -> None:
    texts = {p: p.read_text() for p in custom.rglob("*.yaml")}
    credential = re.compile(r"(^|_)(api_key|key|token|password|secret|access_key)(_|$)")
    for name in BOUNDARY_PIPELINES:
        spec, k8s = ir(custom, name)
        for ex, cfg in k8s.items():
            assert "guardsmith-s3" in {s["secretName"] for s in cfg["secretAsEnv"]}, ex
        judge = [s for s in k8s["exec-boundary-eval"]["secretAsEnv"] if s["secretName"] == "guardsmith-judge"]
        assert judge and judge[0]["keyToEnv"] == [{"envVar": kfp_support.JUDGE_KEY_ENV, "secretKey": "api_key"}]
        assert not [p for p in spec["root"]["inputDefinitions"]["parameters"] if credential.search(p)]
        (evaluated,) = [t for _, _, n, t in dag_tasks(spec) if n == "boundary-eval"]
        assert evaluated["inputs"]["parameters"]["judge_api_key_env"]["runtimeValue"]["constant"] == kfp_support.JUDGE_KEY_ENV
    assert "registry.local/guardsmith-train:dev" in texts[custom / "components" / "boundary" / "component.yaml"]


def test_caching_off_for_training_and_evaluation(fresh: Path) -> None:
    for name in BOUNDARY_PIPELINES:
        spec, _ = ir(fresh, name)
        tasks = {n: t for _, _, n, t in dag_tasks(spec)}
        for sampling in ("boundary", "boundary-eval"):
            assert not tasks[sampling]["cachingOptions"].get("enableCache"), (name, sampling)
            assert "retryPolicy" not in tasks[sampling]


def test_guard_then_boundary_uses_the_trained_guard_as_the_filter(fresh: Path) -> None:
    spec, _ = ir(fresh, "guard_then_boundary")
    tasks = {n: t for _, _, n, t in dag_tasks(spec)}
    guard = "guard:{{$.inputs.parameters['pipelinechannel--continual-output']}}" \
            "{{$.inputs.parameters['pipelinechannel--safety_options']}}"
    assert tasks["boundary-eval"]["inputs"]["parameters"]["scorer"]["runtimeValue"]["constant"] == guard
    assert tasks["plan-variants"]["inputs"]["parameters"]["safety"]["runtimeValue"]["constant"] == guard
    for task in ("boundary-eval", "plan-variants"):
        assert tasks[task]["inputs"]["parameters"]["pipelinechannel--continual-output"]["taskOutputParameter"] == \
            {"outputParameterKey": "output", "producerTask": "continual"}
    assert tasks["boundary"]["inputs"]["parameters"]["safety"]["parameterExpressionSelector"] == \
        'parseJson(string_value)["safety"]'
    assert "preflight" in tasks and "boundary-preflight" in tasks["preflight"]["dependentTasks"]
    # the RL prompts are held apart from the guard's training rows (subset) and difficult set (mine)
    (held,) = [t for t in tasks.values() if t["taskInfo"]["name"] == "hold prompts apart from guard data"]
    params = held["inputs"]["parameters"]
    assert params["exclude"]["runtimeValue"]["constant"] == [
        "{{$.inputs.parameters['pipelinechannel--subset-output']}}",
        "{{$.inputs.parameters['pipelinechannel--mine-difficult']}}"]
    assert params["pipelinechannel--mine-difficult"]["taskOutputParameter"] == {
        "outputParameterKey": "difficult", "producerTask": "mine"}
    assert held["cachingOptions"].get("enableCache") is not True


# --------------------------------------------------------------------------- parameters and presets

def test_guard_then_boundary_parameters_are_the_two_pipelines() -> None:
    guard = inspect.signature(pipelines.load_pipeline("guard_training").pipeline_func).parameters
    boundary = inspect.signature(pipelines.load_pipeline("boundary_guidance").pipeline_func).parameters
    both = inspect.signature(pipelines.load_pipeline("guard_then_boundary").pipeline_func).parameters
    expected = (set(guard) | set(boundary) | {"safety_options"}) - {"safety"}
    assert set(both) == expected
    for name, p in [*guard.items(), *boundary.items()]:
        if name != "safety":
            assert (both[name].default, both[name].annotation) == (p.default, p.annotation), name
    assert [n for n, p in both.items() if p.default is inspect.Parameter.empty] == \
        ["work_root", "sft_base_model", "distill_teacher", "generator", "utility", "judge"]


@pytest.mark.parametrize("name", BOUNDARY_PIPELINES)
def test_presets(name: str) -> None:
    assert set(presets.preset_names(name)) == {"paper-qwen2.5", "tiny-cpu"}
    paper = presets.load_preset(name, "paper-qwen2.5")
    presets.check_submittable(paper)
    assert paper["tau"] == 0.5 and "Qwen2.5" in paper["generator"] and "boundary" in paper["rewards"]
    tiny = presets.load_preset(name, "tiny-cpu", {"work_root": "s3://b/x"})
    with pytest.raises(GuardsmithError, match="only in local runs"):
        presets.check_submittable(tiny)
    readme = (pipelines.pipelines_dir() / name / "README.md").read_text()
    assert all(f"`{p}`" in readme for p in presets.preset_names(name))
    if name == "boundary_guidance":
        missing = [p for p in pipelines.pipeline_parameters(name) if f"`{p}`" not in readme]
        assert not missing, f"pipelines/{name}/README.md does not list {missing}"


def test_local_only_markers_are_refused_remotely_and_built_locally(tmp_path: Path) -> None:
    for marker in ("tiny:reward-model", "tiny:classifier"):
        with pytest.raises(GuardsmithError, match="only in local runs"):
            presets.check_submittable({"work_root": "s3://b/x", "utility": f"reward_model:{marker}"})
    with contextlib.ExitStack() as stack:
        out = local.resolve_local_markers({"safety": "classifier:tiny:classifier?label=unsafe"}, str(tmp_path),
                                        tmp_path, stack)
    built = tmp_path / "models" / "tiny-classifier"
    assert out == {"safety": f"classifier:{built}?label=unsafe"}
    assert json.loads((built / "config.json").read_text())["id2label"] == {"0": "safe", "1": "unsafe"}


def test_support_helpers() -> None:
    assert kfp_support.scorer_locations(["guard:s3://b/g?dual=true", "classifier:/m/c?label=unsafe", "rule:keywords",
                                         "reward_model:s3://b/rm", "openai:http://h/v1?model=m", "", "s3://b/x"]) == \
        ["s3://b/g", "/m/c", "s3://b/rm", "s3://b/x"]
    kfp_support.check_rewards(["boundary", "filter_avoid"])
    for bad, match in (([], "empty"), (["boundary", "nope"], "unknown"), (["boundary", "boundary"], "twice")):
        with pytest.raises(GuardsmithError, match=match):
            kfp_support.check_rewards(bad)


# --------------------------------------------------------------------------- local run

@pytest.mark.slow
def test_local_boundary_guidance_run_on_tiny_models(tmp_path: Path) -> None:
    """The real graph through kfp.local: tiny generator (also the guard), tiny reward model, offline judge."""
    from guardsmith.standins.local_s3 import weed_binary

    try:
        weed_binary()
        store = None
    except Exception:
        store = tmp_path / "store"
    start = time.monotonic()
    result = local.run_local("boundary_guidance", "tiny-cpu", store=store, out=tmp_path / "out", discard=store is None)
    seconds = time.monotonic() - start
    assert seconds < 120, f"local boundary_guidance run took {seconds:.0f} s"
    assert result["report_uri"].startswith("s3://" if store is None else str(store))
    assert result["report_uri"].endswith("/boundary/eval/report/report.md")
    report = Path(result["report_md"]).read_text()
    assert "tiny-cpu Boundary Guidance" in report
    for system in ("| base |", "| base+filter |", "| boundary+filter |", "| filter_avoid+filter |"):
        assert system in report, system
    assert (Path(result["report_md"]).parent / "pareto.png").exists()
    assert Path(result["report_html"]).read_text().lstrip().startswith("<")

    (run,) = list((tmp_path / "out" / "kfp-root").iterdir())
    trained = sorted(run.glob("for-loop-*-iteration-*/boundary/executor_output.json"))
    assert len(trained) == 2
    outputs = [json.loads(p.read_text()) for p in trained]
    assert {o["parameterValues"]["output"].rsplit("/", 1)[-1] for o in outputs} == {"boundary", "filter_avoid"}
    for out in outputs:
        meta = out["artifacts"]["rewards"]["artifacts"][0]["metadata"]
        assert meta["global_step"] == 2 and {"first/reward_mean", "last/safety_mean", "last/filter_rate"} <= set(meta)
    evaluated = json.loads((run / "boundary-eval" / "executor_output.json").read_text())["artifacts"]
    scores = evaluated["scores"]["artifacts"][0]["metadata"]
    assert {"helpfulness_mean/base", "harmfulness_mean/boundary+filter", "filter_rate/base+filter"} <= set(scores)
    assert scores["filter_rate/base"] == 0.0 and scores["filter_rate/base+filter"] > 0.0
    assert (run / "boundary-eval" / "summary").read_text().startswith("# tiny-cpu Boundary Guidance")
    assert (run / "boundary-eval" / "summary_html").read_text().lstrip().startswith("<")


@pytest.mark.slow
def test_local_guard_then_boundary_uses_the_trained_guard_as_filter(tmp_path: Path) -> None:
    """guard_training's steps, then Boundary Guidance whose safety scorer is that run's guard."""
    result = local.run_local("guard_then_boundary", "tiny-cpu", store=tmp_path / "store", out=tmp_path / "out")
    work_root = result["work_root"]
    (run,) = list((tmp_path / "out" / "kfp-root").iterdir())
    plan = json.loads((run / "plan-variants" / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert {item["reward"] for item in plan} == {"boundary", "filter_avoid"}
    assert {item["safety"] for item in plan} == {f"guard:{work_root}/continual/model"}
    assert (run / "continual" / "executor_output.json").exists()
    trained = set(storage.read_table(f"{work_root}/subset").column("id").to_pylist())
    prompts = storage.read_table(f"{work_root}/boundary/prompts/train").column("id").to_pylist()
    held = set(storage.read_table(f"{work_root}/boundary/prompts/held_apart").column("id").to_pylist())
    assert trained & set(prompts) and not trained & held and held  # the overlap was there, and is gone
    report = Path(result["report_md"]).read_text()
    for system in ("| base+filter |", "| boundary+filter |", "| filter_avoid+filter |"):
        assert system in report, system
