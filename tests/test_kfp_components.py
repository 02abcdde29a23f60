"""KFP components: thin shells in sync with the stage configs, no run-time installs, images by kind."""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import typing
from pathlib import Path

import pytest

importlib.import_module("kfp")

from guardsmith import __version__, kfp_support, storage, tables  # noqa: E402
from guardsmith.ops import images  # noqa: E402
from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.ops.pipelines import components_dir, load_component  # noqa: E402
from guardsmith.stages import STAGES as REGISTRY, stage_module  # noqa: E402

KINDS = {"data_import": "cpu", "subset": "cpu", "distill": "cpu", "filter": "cpu", "sft": "train",
         "continual": "train", "mine": "infer", "evaluate": "infer", "report": "cpu"}


def available(stage: str) -> bool:
    return importlib.util.find_spec(REGISTRY[stage].module_name) is not None


STAGES = [s.name for s in REGISTRY.values() if s.recipe == "guard" and available(s.name)]


def component_params(stage: str) -> dict[str, inspect.Parameter]:
    """The component function's parameters, KFP output artifacts left out."""
    fn = load_component(stage).python_func
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if typing.get_origin(p.annotation) is not typing.Annotated}


@pytest.mark.parametrize("stage", STAGES)
def test_component_parameters_mirror_stage_config(stage: str) -> None:
    cls = stage_module(stage).CONFIG
    hints = typing.get_type_hints(cls)
    params = component_params(stage)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(params) == set(fields), f"{stage}: component and {cls.__name__} differ"
    for name, f in fields.items():
        p = params[name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty, f"{stage}.{name} should be required"
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if default is None and kfp_support._optional_inner(hints[name]) is int:
            assert p.default == 0, f"{stage}.{name}: optional int is 0 (= unset) in the component"
        else:
            assert p.default == default, f"{stage}.{name}: default {p.default!r} != {default!r}"


@pytest.mark.parametrize("stage", STAGES)
def test_committed_component_yaml_installs_nothing_and_uses_its_image(stage: str) -> None:
    text = (components_dir() / stage / "component.yaml").read_text()
    assert "pip install" not in text
    assert f"image: {images.IMAGE_REPOSITORY}/guardsmith-{KINDS[stage]}:" in text


@pytest.mark.parametrize("stage", STAGES)
def test_readme_lists_every_input(stage: str) -> None:
    readme = (components_dir() / stage / "README.md").read_text()
    missing = [n for n in component_params(stage) if f"`{n}`" not in readme]
    assert not missing, f"components/{stage}/README.md does not list {missing}"


def test_image_override_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kfp_support.image("train").endswith("/guardsmith-train:" + __version__)
    monkeypatch.setenv("GUARDSMITH_IMAGE_TRAIN", "registry.local/train:dev")
    assert kfp_support.image("train") == "registry.local/train:dev"
    with pytest.raises(Exception, match="unknown image kind"):
        kfp_support.image("gpu")


def test_unset_markers_become_none() -> None:
    from guardsmith.stages.mine import MineConfig

    values = kfp_support.stage_values(MineConfig, {"model": "m", "pool": "p", "output": "o", "exclude": "",
                                                   "limit": 0, "samples_per_row": 0, "scores": object()})
    assert values == {"model": "m", "pool": "p", "output": "o", "exclude": None, "limit": None, "samples_per_row": 0}


def _interactions(uri: str, n: int) -> None:
    from guardsmith.standins.sample import load_sample

    storage.write_table(uri, tables.from_records(load_sample()[:n], "interactions"), schema_name="interactions")


def test_subset_component_runs_the_stage(tmp_path: Path) -> None:
    _interactions(str(tmp_path / "in"), 40)
    run = load_component("subset").python_func
    out = run(input=str(tmp_path / "in"), output=str(tmp_path / "out"), n=10, seed=7)
    assert out == (str(tmp_path / "out"), 40, 10, 0)
    ids = storage.read_table(str(tmp_path / "out"), "interactions").column("id").to_pylist()
    again = run(input=str(tmp_path / "in"), output=str(tmp_path / "again"), n=10, seed=7)
    assert again[2] == 10 and storage.read_table(str(tmp_path / "again")).column("id").to_pylist() == ids
    everything = storage.read_table(str(tmp_path / "in")).column("id").to_pylist()
    assert ids == [i for i in everything if i in set(ids)]  # input order kept
    assert run(input=str(tmp_path / "in"), output=str(tmp_path / "all"), n=0)[2] == 40


def test_subset_holds_apart_rows_of_excluded_tables(tmp_path: Path) -> None:
    """Boundary Guidance prompts held apart from a guard's training rows: same id, or the same
    prompt under another id (re-imported elsewhere, other case and spacing)."""
    from guardsmith.standins.sample import load_sample

    rows = load_sample()[:30]
    _interactions(str(tmp_path / "in"), 30)
    trained = [dict(r) for r in rows[:8]]  # 8 rows the guard trained on, 2 of them under another id
    for r in trained[6:]:
        r["id"] = "elsewhere:" + r["id"]
        r["prompt"] = "  " + r["prompt"].upper().replace(" ", "   ") + " "
    storage.write_table(str(tmp_path / "trained"), tables.from_records(trained, "interactions"), schema_name="interactions")
    run = load_component("subset").python_func
    out = run(input=str(tmp_path / "in"), output=str(tmp_path / "out"), n=0, exclude=[str(tmp_path / "trained")])
    kept = storage.read_table(str(tmp_path / "out")).column("id").to_pylist()
    expected_apart = {r["id"] for r in rows[:8]} | {r["id"] for r in rows if r["prompt"] in {t["prompt"] for t in rows[:8]}}
    assert out[1:] == (30, 30 - len(expected_apart), len(expected_apart))
    assert not set(kept) & expected_apart and len(kept) == 30 - len(expected_apart)
    some = run(input=str(tmp_path / "in"), output=str(tmp_path / "some"), n=5, seed=1, exclude=[str(tmp_path / "trained")])
    assert some[2] == 5 and not set(storage.read_table(str(tmp_path / "some")).column("id").to_pylist()) & expected_apart
    with pytest.raises(GuardsmithError, match="held apart"):
        run(input=str(tmp_path / "in"), output=str(tmp_path / "none"), n=0, exclude=[str(tmp_path / "in")])


def test_split_and_merge_round_trip(tmp_path: Path) -> None:
    _interactions(str(tmp_path / "in"), 11)
    parts = kfp_support.split_table(str(tmp_path / "in"), str(tmp_path / "parts"), 4)
    sizes = [storage.read_table(p).num_rows for p in parts]
    assert sizes == [3, 3, 3, 2]
    rows = kfp_support.merge_tables(list(reversed(parts)), str(tmp_path / "merged"), "interactions")
    assert rows == 11
    assert storage.read_table(str(tmp_path / "merged")).column("id").to_pylist() == \
        storage.read_table(str(tmp_path / "in")).column("id").to_pylist()
    assert len(kfp_support.split_table(str(tmp_path / "in"), str(tmp_path / "few"), 50)) == 11
    # a retried merge of the same parts is a no-op; other parts into the finished output are refused
    before = storage.read_bytes(str(tmp_path / "merged" / "_SUCCESS"))
    assert kfp_support.merge_tables(parts, str(tmp_path / "merged"), "interactions") == 11
    assert storage.read_bytes(str(tmp_path / "merged" / "_SUCCESS")) == before
    with pytest.raises(GuardsmithError, match="other work: input part-"):
        kfp_support.merge_tables(parts[:2], str(tmp_path / "merged"), "interactions")


def test_merge_also_merges_failed_rows(tmp_path: Path) -> None:
    from guardsmith.teacher import Failure, failed_table

    _interactions(str(tmp_path / "in"), 6)
    parts = kfp_support.split_table(str(tmp_path / "in"), str(tmp_path / "parts"), 2)
    storage.write_table(parts[1] + ".failed", failed_table([Failure("x1", "distill", 0, "request_failed", "HTTP 400")]),
                        "failed")
    assert kfp_support.merge_tables(parts, str(tmp_path / "merged"), "interactions", failed_suffix=".failed") == 6
    failed = storage.read_table(str(tmp_path / "merged") + ".failed", "failed")
    assert failed.column("id").to_pylist() == ["x1"] and failed.column("detail").to_pylist() == ["HTTP 400"]


def test_data_import_of_the_bundled_sample(tmp_path: Path) -> None:
    out = load_component("data_import").python_func(source="sample", split="test", output=str(tmp_path / "t"),
                                                    from_uri="")
    assert out[0] == str(tmp_path / "t") and out[1] == storage.read_table(out[0], "interactions").num_rows > 0


def test_preflight_checks_inputs_and_work_root(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    ok = kfp_support.preflight(str(tmp_path / "work"), [f"R-5k[size=5000]={tmp_path / 'model'}", "hf", "",
                                                        "g=openai:http://h:8000/v1?model=m"])
    assert "1 input(s) found" in ok and not (tmp_path / "work" / "_preflight.json").exists()
    with pytest.raises(Exception, match="does not exist"):
        kfp_support.preflight(str(tmp_path / "work"), [f"guard={tmp_path / 'missing'}"])
    # a baseline guard given by format (evaluation pipeline's models): the folder after FORMAT: is checked
    assert "1 input(s) found" in kfp_support.preflight(str(tmp_path / "work"), [f"wg=wildguard:{tmp_path / 'model'}"])
    with pytest.raises(Exception, match=f"input {tmp_path / 'nope'} does not exist"):
        kfp_support.preflight(str(tmp_path / "work"), [f"lg=llama-guard:{tmp_path / 'nope'}"])


def test_confusion_matrix_artifact_is_the_shipped_guard(tmp_path: Path) -> None:
    """guard_training lists sft, then continual: the KFP confusion matrix is the continual guard's."""
    from types import SimpleNamespace

    rows = []
    for model, preds in (("sft", ["harmful", "harmful", None]), ("continual", ["harmful", "unharmful", "unharmful"])):
        for i, (label, pred) in enumerate(zip(["harmful", "unharmful", "unharmful"], preds)):
            rows.append({"model": model, "benchmark": "b", "task": "prompt_harm", "id": f"r{i}", "run": 0,
                         "label": label, "prediction": pred, "parse_ok": pred is not None, "latency_s": 0.1})
    rows.append({**rows[0], "task": "response_refusal", "label": "refusal", "prediction": "refusal"})
    storage.write_table(str(tmp_path / "p"), tables.from_records(rows, "predictions"), "predictions")

    class Artifact:
        def __init__(self) -> None:
            self.metadata, self.logged = {}, []

        def log_confusion_matrix(self, categories, matrix):
            self.logged.append((categories, matrix))

        def log_metric(self, name, value):
            self.logged.append((name, value))

    confusion, metrics = Artifact(), Artifact()
    kfp_support.log_evaluation(SimpleNamespace(summary=[], predictions=str(tmp_path / "p")), metrics, confusion)
    ((categories, matrix),) = confusion.logged
    assert categories == ["harmful", "unharmful", "no answer"] and confusion.metadata["model"] == "continual"
    assert matrix == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]  # continual: all three right; sft would show a miss
