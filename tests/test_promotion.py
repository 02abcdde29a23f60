"""Promotion of a served model (guardsmith.storage.promote_model / rollback_model, re-exported by guardsmith.model_store, and the
`guardsmith models promote|rollback|versions` commands) on a local folder and on SeaweedFS: what
every reader of the served URI (local_model, download_dir, a version's own URI) sees after each
switch, which versions are kept, and the one-line errors."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from guardsmith import model_store, storage
from guardsmith.errors import GuardsmithError


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_prefix")


def make_model(folder: Path, tag: str) -> Path:
    """A minimal model folder whose config.json says which one it is."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "tag": tag}))
    (folder / "model.safetensors").write_bytes(tag.encode() * 1000)
    (folder / "tokenizer" / "vocab.txt").parent.mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text(f"vocab of {tag}\n")
    return folder


def published(base: str, tmp_path: Path, tag: str) -> str:
    """A candidate model published where a training run would write it."""
    uri = storage.join(base, f"runs/{tag}/continual/model")
    storage.upload_dir(str(make_model(tmp_path / f"src-{tag}", tag)), uri)
    return uri


def served_tag(uri: str, tmp_path: Path) -> str:
    """The tag every reader sees: local_model and a fresh download must agree."""
    via_model = json.loads((model_store.local_model(uri) / "config.json").read_text())["tag"]
    dest = tmp_path / f"dl-{uuid.uuid4().hex[:6]}"
    storage.download_dir(uri, str(dest))
    via_download = json.loads((dest / "config.json").read_text())["tag"]
    assert via_model == via_download
    assert (dest / "tokenizer" / "vocab.txt").read_text() == f"vocab of {via_model}\n"
    return via_model


def test_promote_rollback_and_pin(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSMITH_CACHE", str(tmp_path / "cache"))
    served = storage.join(base, "production/guard")
    a, b, c = (published(base, tmp_path, t) for t in "ABC")

    first = model_store.promote_model(served, source=a)
    assert first.previous is None and served_tag(served, tmp_path) == "A"
    second = model_store.promote_model(served, source=b)
    assert second.previous == first.current and served_tag(served, tmp_path) == "B"
    third = model_store.promote_model(served, source=c)
    assert served_tag(served, tmp_path) == "C"

    versions = model_store.model_versions(served)
    assert [v.id for v in versions] == [first.current, second.current, third.current]
    assert [v.current for v in versions] == [False, False, True]
    assert versions[2].source == c and versions[2].total_bytes == 1000 + len('{"model_type": "llama", "tag": "C"}') + len("vocab of C\n")
    # every kept version is a model URI of its own (what serving.guard.modelVersion pins)
    assert served_tag(versions[0].uri, tmp_path) == "A"

    back = model_store.rollback_model(served)
    assert (back.current, back.previous) == (second.current, third.current) and served_tag(served, tmp_path) == "B"
    back = model_store.rollback_model(served)
    assert back.current == first.current and served_tag(served, tmp_path) == "A"
    with pytest.raises(GuardsmithError, match="no earlier version to roll back to"):
        model_store.rollback_model(served)

    # re-point at a kept version, then roll back to where it was
    pinned = model_store.promote_model(served, version=third.current)
    assert pinned.previous == first.current and served_tag(served, tmp_path) == "C"
    assert model_store.rollback_model(served).current == first.current and served_tag(served, tmp_path) == "A"


def test_keep_removes_the_oldest_versions(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSMITH_CACHE", str(tmp_path / "cache"))
    served = storage.join(base, "production/guard")
    ids = [model_store.promote_model(served, source=published(base, tmp_path, t), keep=2).current for t in "ABC"]
    kept = [v.id for v in model_store.model_versions(served)]
    assert kept == ids[1:]  # C current, B to roll back to; A removed
    assert not storage.exists(storage.join(served, "versions", ids[0]))
    assert model_store.rollback_model(served).current == ids[1] and served_tag(served, tmp_path) == "B"
    with pytest.raises(GuardsmithError, match="no earlier version"):
        model_store.rollback_model(served)


def test_a_folder_uploaded_in_place_becomes_a_rollback_target(base: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A served URI first filled with `guardsmith models upload` (flat locally, one version on S3)."""
    monkeypatch.setenv("GUARDSMITH_CACHE", str(tmp_path / "cache"))
    served = storage.join(base, "production/guard")
    storage.upload_dir(str(make_model(tmp_path / "first", "OLD")), served)
    promoted = model_store.promote_model(served, source=published(base, tmp_path, "NEW"))
    assert served_tag(served, tmp_path) == "NEW"
    versions = model_store.model_versions(served)
    assert len(versions) == 2 and versions[0].source == "" and versions[1].current
    if "://" not in served:  # the flat files moved into a version: only the pointer and versions/ remain
        assert sorted(p.name for p in Path(served).iterdir()) == ["_SUCCESS", "versions"]
    assert model_store.rollback_model(served).previous == promoted.current
    assert served_tag(served, tmp_path) == "OLD"


def test_bad_requests_are_one_line_errors(base: str, tmp_path: Path) -> None:
    served = storage.join(base, "production/guard")
    with pytest.raises(GuardsmithError, match="exactly one of --from SOURCE"):
        model_store.promote_model(served)
    with pytest.raises(GuardsmithError, match="no committed model"):
        model_store.rollback_model(served)
    with pytest.raises(GuardsmithError, match="not a (committed )?model folder"):
        model_store.promote_model(served, source=storage.join(base, "missing/model"))
    model_store.promote_model(served, source=published(base, tmp_path, "A"))
    with pytest.raises(GuardsmithError, match="keeps no version 'nope' \\(kept: [0-9a-f]{12}\\)"):
        model_store.promote_model(served, version="nope")
    with pytest.raises(GuardsmithError, match="at least 2"):
        model_store.promote_model(served, source=published(base, tmp_path, "B"), keep=1)
    with pytest.raises(GuardsmithError, match="the served URI itself"):
        model_store.promote_model(served, source=served)
    assert served_tag(served, tmp_path) == "A"


def test_a_concurrent_switch_loses_cleanly(base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pointer moved between this promotion's read and its switch: ConcurrentWriteError, the
    other writer's pointer intact, this attempt's version removed."""
    monkeypatch.setenv("GUARDSMITH_CACHE", str(tmp_path / "cache"))
    served = storage.join(base, "production/guard")
    model_store.promote_model(served, source=published(base, tmp_path, "A"))
    b = published(base, tmp_path, "B")
    real_copy = storage._copy_into_version

    def copy_then_race(source: str, uri: str, vid: str, origin: str | None = None) -> dict:
        out = real_copy(source, uri, vid, origin)
        monkeypatch.setattr(storage, "_copy_into_version", real_copy)
        model_store.promote_model(served, source=b)  # the other writer wins meanwhile
        return out

    monkeypatch.setattr(storage, "_copy_into_version", copy_then_race)
    with pytest.raises(storage.ConcurrentWriteError):
        model_store.promote_model(served, source=published(base, tmp_path, "C"))
    assert served_tag(served, tmp_path) == "B"
    assert [v.source for v in model_store.model_versions(served)][-1] == b
    assert len(model_store.model_versions(served)) == 2


def test_cli_promote_versions_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guardsmith.cli import main

    served, cand = str(tmp_path / "served"), str(make_model(tmp_path / "cand", "A"))
    assert main(["models", "promote", served, "--from", cand]) == 0
    assert main(["models", "promote", served, "--from", str(make_model(tmp_path / "cand2", "B"))]) == 0
    out = capsys.readouterr().out
    assert "current version" in out and "guardsmith models rollback" in out
    assert main(["models", "versions", served]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("* ") and not lines[0].startswith("*")
    assert main(["models", "rollback", served]) == 0
    assert "rolled back from" in capsys.readouterr().out
    assert json.loads((model_store.local_model(served) / "config.json").read_text())["tag"] == "A"
    assert main(["models", "rollback", served]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no earlier version" in err[0]


def test_retrain_workflow_promotes_the_gated_model_after_the_gate() -> None:
    import yaml

    root = Path(__file__).resolve().parents[1]
    wf = yaml.safe_load((root / ".github" / "workflows" / "retrain.yml").read_text())
    steps = wf["jobs"]["retrain"]["steps"]
    names = [s.get("name", "") for s in steps]
    gate, promote, restart = (names.index(n) for n in ("Submit, wait and gate", "Promote the gated guard",
                                                        "Restart the served guard (roll back when it does not become ready)"))
    assert gate < promote < restart
    assert "if" not in steps[gate] and "always()" not in steps[promote]["if"]  # runs only when the gate passed
    run = steps[promote]["run"]
    assert 'guardsmith models promote "$SERVED_GUARD" --from "$WORK_ROOT/${GATE_MODEL:-continual}/model"' in run
    # the gated model is where guard_training writes it
    pipeline = (root / "pipelines" / "guard_training" / "pipeline.py").read_text()
    assert 'output=f"{p.work_root}/continual/model"' in pipeline and 'output=f"{p.work_root}/sft/model"' in pipeline
    assert "guardsmith models rollback" in steps[restart]["run"]
    manual = yaml.safe_load((root / ".github" / "workflows" / "promote.yml").read_text())
    scripts = "\n".join(s.get("run", "") for s in manual["jobs"]["promote"]["steps"])
    assert "guardsmith models rollback" in scripts and "guardsmith models promote" in scripts
    for job in (wf["jobs"]["retrain"], manual["jobs"]["promote"]):
        assert "${{" not in "\n".join(s.get("run", "") for s in job["steps"])
