"""Stage config machinery: YAML loading, type checks, CLI flags."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from click.testing import CliRunner

from guardsmith.config import field_help, load_config, option, stage_command
from guardsmith.errors import GuardsmithError


@dataclass
class DemoConfig:
    input: str = option(help="Input table URI.")
    steps: int = option(10, "Training steps.")
    lr: float = option(1e-3, "Learning rate.")
    mode: Literal["R", "NR", "dual"] = option("R", "Guard mode.")
    lora: bool = option(False, "Train LoRA adapters.")
    seeds: list[int] = option(help="Seeds.", factory=lambda: [0])
    note: str | None = option(None, "Free text.")


def test_every_field_has_help():
    assert all(field_help(DemoConfig).values())
    with pytest.raises(ValueError):
        option(1)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input: s3://b/x\nsteps: 5\nseeds: [1, 2]\nmode: NR\n")
    cfg = load_config(DemoConfig, path, {"lr": "0.5"})
    assert (cfg.input, cfg.steps, cfg.lr, cfg.mode, cfg.seeds, cfg.note) == ("s3://b/x", 5, 0.5, "NR", [1, 2], None)


@pytest.mark.parametrize("text, needle", [
    ("input: a\nstepz: 3\n", "unknown setting(s) stepz (--stepz)"),
    ("input: a\nsteps: many\n", "steps (--steps): expected int"),
    ("input: a\nsteps: 2.5\n", "steps (--steps): expected int"),
    ("input: a\nmode: fast\n", "mode (--mode): 'fast' is not one of R, NR, dual"),
    ("input: a\nlora: maybe\n", "lora (--lora): expected true/false"),
    ("steps: 3\n", "missing required setting(s) input (--input)"),
    ("- a\n- b\n", "must be a mapping"),
    ("input: [unclosed\n", "not valid YAML"),
])
def test_bad_config_names_file_and_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GuardsmithError) as err:
        load_config(DemoConfig, path)
    assert needle in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_stage_command_flags_override_file(tmp_path):
    seen = []
    cmd = stage_command("demo", DemoConfig, seen.append, "Run the demo stage.")
    path = tmp_path / "c.yaml"
    path.write_text("input: file:///x\nsteps: 5\n")
    result = CliRunner().invoke(cmd, ["--config", str(path), "--steps", "7", "--lora", "--seeds", "3,4"])
    assert result.exit_code == 0, result.output
    assert seen[0].steps == 7 and seen[0].lora is True and seen[0].seeds == [3, 4] and seen[0].input == "file:///x"
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert "Training steps." in help_text and "--no-lora" in help_text
    printed = CliRunner().invoke(cmd, ["--input", "a", "--print-config"]).output
    assert "steps: 10" in printed and not seen[1:]


def test_errors_name_settings_and_flags_not_classes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\n")
    with pytest.raises(GuardsmithError) as err:
        load_config(DemoConfig, path)
    assert "DemoConfig" not in str(err.value) and "--input" in str(err.value)


def test_print_config_works_with_a_preset_and_lists_what_is_still_required():
    from guardsmith.cli import main

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sft", "--preset", "tiny-cpu", "--print-config", "--output", "/tmp/x"]) == 0
    text = out.getvalue()
    first, _, body = text.partition("\n")
    assert first == "# still required: base_model (--base-model), train (--train)"
    import yaml

    shown = yaml.safe_load(body)
    assert shown["output"] == "/tmp/x" and shown["base_model"] is None and shown["train"] is None
    preset = yaml.safe_load(open(__import__("guardsmith.config", fromlist=["preset_path"]).preset_path("sft", "tiny-cpu")))
    assert all(shown[k] == v for k, v in preset.items())  # every preset value is what would run
