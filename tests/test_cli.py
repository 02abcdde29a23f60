"""The `guardsmith` command line, run as users run it: a subprocess of the installed entry point."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardsmith import storage
from guardsmith.errors import GuardsmithError
from guardsmith.cli import build_cli, main
from guardsmith.stages import STAGES

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
GUARDSMITH = str(Path(sys.executable).with_name("guardsmith"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GUARDSMITH, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = list(_commands(build_cli()))
    generated = {s.name for s in STAGES.values() if s.command}
    assert generated == set(STAGES) - {"data_import"}  # data_import is `guardsmith data import`
    assert {"data", "tiny", "serve", "models", "pipeline", "deploy", "demo", *generated} <= {p[0] for p in paths}
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        assert "Usage: guardsmith " + " ".join(path) in capsys.readouterr().out, path


def test_data_import_prints_counts_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "aegis-test"
    done = cli("data", "import", "aegis2", "--split", "test", "--from", str(FIXTURES / "test.json"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "prompt_harm" in done.stdout and f"wrote {out}" in done.stdout
    rows = storage.read_table(str(out), schema_name="interactions").num_rows
    shown = cli("data", "show", str(out), "--schema", "interactions", "--limit", "1")
    assert shown.returncode == 0 and f"{rows} rows, valid interactions table" in shown.stdout


def test_data_sources_lists_own_and_hub_split_names(capsys: pytest.CaptureFixture[str]) -> None:
    """Every registered source is listed with the split names `data import --split` accepts."""
    from guardsmith.sources import SOURCES

    assert main(["data", "sources"]) == 0
    listed = {line.split(":", 1)[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(SOURCES) <= set(listed)
    assert "judge_comparison/test" in listed["jbb"] and "prompts" in listed["xstest"]


@pytest.mark.parametrize("args, needle", [
    (["data", "import", "nosuch", "--split", "test", "--from", "x", "--out", "y"], "nosuch"),
    (["data", "show", "/nonexistent/table"], "/nonexistent/table"),
    (["tiny", "build", "TMP", "--kind", "giant"], "unknown --kind 'giant'"),
    (["sft", "--train", "/nonexistent/t", "--base-model", "/nonexistent/m", "--output", "TMP", "--mode", "XR"], "mode"),
])
def test_user_errors_exit_1_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    done = cli(*[str(tmp_path / "o") if a == "TMP" else a for a in args])
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guardsmith: error: ") and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_data_sample_then_tiny_build(tmp_path: Path) -> None:
    done = cli("data", "sample", "--out", str(tmp_path / "sample"), "--split", "pool")
    assert done.returncode == 0, done.stderr
    assert storage.read_table(str(tmp_path / "sample"), schema_name="interactions").num_rows > 50
    built = cli("tiny", "build", str(tmp_path / "tiny"), "--kind", "classifier", "--num-labels", "2")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "tiny" / "config.json").exists()


def test_demo_runs_what_make_demo_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`guardsmith demo --out DIR` is `guardsmith pipeline run guard_training --local --preset tiny-cpu --out DIR`."""
    from guardsmith.ops import local

    calls: list[tuple] = []
    fake = {"report_md": "r.md", "report_html": "r.html", "work_root": "w", "seconds": 1.0, "logs": "l",
            "results": ["model  F1"], "models": {"continual guard (shipped)": "w/continual/model"}}
    monkeypatch.setattr(local, "run_local", lambda *a, **kw: calls.append((a, kw)) or dict(fake))
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert main(["pipeline", "run", "guard_training", "--local", "--preset", "tiny-cpu", "--out", str(tmp_path)]) == 0
    (demo_args, demo_kw), (run_args, run_kw) = calls
    assert demo_args[:2] == run_args[:2] == ("guard_training", "tiny-cpu")
    assert Path(demo_args[4]) == Path(run_args[4]) == tmp_path
    assert demo_kw == run_kw == {"discard": False, "verbose": False, "echo": demo_kw["echo"]}
    out = capsys.readouterr().out
    assert out.count("report: r.html") == 2 and out.count("continual guard (shipped): w/continual/model") == 2
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "guardsmith pipeline run guard_training --local --preset tiny-cpu --out demo-out" in makefile


def test_a_hub_id_as_model_is_explained(tmp_path, monkeypatch, capsys):
    """A Hugging Face hub id where a model folder is expected: one line saying how to get the model."""
    from guardsmith.model_store import local_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(GuardsmithError) as err:
        local_model("Qwen/Qwen2.5-0.5B-Instruct")
    text = str(err.value)
    assert "\n" not in text and "hub id" in text and "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct" in text
    with pytest.raises(GuardsmithError) as err:
        local_model(str(tmp_path / "no-such-model"))
    assert "hub id" not in str(err.value)  # a path is not a hub id


def test_submit_to_an_unreachable_host_is_one_line(capsys):
    assert main(["pipeline", "submit", "evaluation", "--host", "http://127.0.0.1:1", "--preset", "paper-gemma3-4b"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "127.0.0.1:1" in err and "guardsmith: error:" in err


def test_commands_are_kebab_case_and_stage_names_still_work(capsys):
    group = build_cli()
    listed = [name for name, cmd in group.commands.items() if not getattr(cmd, "hidden", False)]
    assert not [n for n in listed if "_" in n], listed
    assert "boundary-eval" in listed and group.commands["boundary_eval"].hidden
    assert main(["boundary_eval", "--preset", "offline", "--print-config"]) == 0
    old = capsys.readouterr().out
    assert main(["boundary-eval", "--preset", "offline", "--print-config"]) == 0
    assert capsys.readouterr().out == old and "still required" in old


def test_models_push_dry_run_lists_the_card_and_weights(tmp_path, capsys):
    """No network in tests: the dry run shows what would go to the hub; a folder without a card is refused."""
    from guardsmith.standins.tiny import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "m")
    assert main(["models", "push", str(model), "--to", "me/tiny-guard", "--dry-run"]) == 1  # no card yet
    assert "no model card" in capsys.readouterr().err
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n", encoding="utf-8")
    assert main(["models", "push", str(model), "--to", "me/tiny-guard", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would send") and "README.md" in out and "config.json" in out
    assert main(["models", "push", str(model), "--to", "not a repo id", "--dry-run"]) == 1
    assert "owner/name" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["data", "import", "--help"], ["pipeline", "run", "--help"],
                                  ["subset", "--help"], ["boundary-eval", "--help"], ["serve", "guard", "--help"]])
def test_one_help_style_for_every_command(argv, capsys):
    """Typer's groups and the generated stage commands print the same plain help (no rich panels)."""
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: ") and "\nOptions:\n" in out
    assert not any(ch in out for ch in "╭╮╰╯│─")
