"""Shared settings groups: one name and help text per concept, prefixed copies, fallbacks, checks."""
from __future__ import annotations

import dataclasses

import pytest

from guardsmith import settings
from guardsmith.config import build_config, field_help
from guardsmith.errors import GuardsmithError
from guardsmith.inference import OpenAIBackend, open_backend
from guardsmith.stages import STAGES


@dataclasses.dataclass
class Demo(settings.sampling(samples_per_row=4), settings.backend(),
           settings.endpoint(prefix="judge_", timeout_s=None, max_retries=None), settings.endpoint()):
    name: str = "x"


def test_mixins_declare_fields_once_with_stage_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(Demo) if f.default is not dataclasses.MISSING}
    assert fields["samples_per_row"] == 4 and fields["temperature"] == 0.6 and fields["concurrency"] == 8
    assert fields["judge_timeout_s"] is None and fields["judge_api_key_env"] == "OPENAI_API_KEY"
    helps = field_help(Demo)
    assert helps["judge_max_retries"].startswith("Judge: retries") and "Unset: the max_retries" in helps["judge_max_retries"]
    assert settings.sampling(samples_per_row=4) is settings.sampling(samples_per_row=4)  # one class per variant
    with pytest.raises(TypeError, match="no field"):
        settings.sampling(n=4)


def test_group_values_checks_and_falls_back_to_the_unprefixed_group():
    cfg = build_config(Demo, {"timeout_s": 30, "max_retries": 1, "judge_api_key_env": "J"})
    judge = settings.group_values(cfg, settings.Endpoint, "judge_")
    assert (judge.api_key_env, judge.timeout_s, judge.max_retries) == ("J", 30.0, 1)
    assert settings.group_values(cfg, settings.Sampling).samples_per_row == 4
    with pytest.raises(GuardsmithError, match="judge_max_retries must be >= 0"):
        settings.group_values(dataclasses.replace(cfg, judge_max_retries=-1), settings.Endpoint, "judge_")
    with pytest.raises(GuardsmithError, match="samples_per_row must be at least 1"):
        settings.group_values(dataclasses.replace(cfg, samples_per_row=0), settings.Sampling)


def test_open_backend_fills_openai_options_the_spec_leaves_open():
    endpoint = settings.Endpoint(api_key_env="KEY", timeout_s=9, max_retries=2, retry_after_max_s=7)
    be = open_backend("openai:http://h:1/v1?model=m&max_retries=5", choice=settings.BackendChoice(concurrency=3),
                      endpoint=endpoint)
    assert isinstance(be, OpenAIBackend)
    assert (be.api_key_env, be.timeout_s, be.max_retries, be.retry_after_max_s, be.max_concurrency) == \
        ("KEY", 9.0, 5, 7.0, 3)  # the spec's own max_retries wins
    with pytest.raises(GuardsmithError, match="transformers or vllm"):
        open_backend("/m", choice=settings.BackendChoice(backend="onnx"))


def test_every_stage_uses_one_name_per_concept():
    old = {"n", "k", "num_generations", "max_completion_length"}  # subset's `n` (rows to pick) is another concept
    inference = {"mine", "evaluate", "boundary_eval"}  # their `batch_size` became `concurrency`
    for stage in STAGES.values():
        if stage.name == "subset":
            continue
        cls = stage.module().CONFIG
        names = {f.name for f in dataclasses.fields(cls)}
        stale = old | ({"batch_size"} if stage.name in inference else set())
        assert not names & stale, f"{stage.name} still has {names & stale}"
        if "samples_per_row" in names:
            assert field_help(cls)["samples_per_row"] == settings._HELP[settings.Sampling]["samples_per_row"]


def test_help_lists_the_stage_fields_before_the_shared_groups():
    """`guardsmith mine --help` starts with what a user must give (model, pool, output), not the
    inherited sampling and backend settings; --print-config follows the same order."""
    from click.testing import CliRunner

    from guardsmith.config import flag_order, stage_command

    cls = STAGES["mine"].module().CONFIG
    names = [f.name for f in flag_order(cls)]
    assert names[:3] == ["model", "pool", "output"]
    assert names.index("samples_per_row") > names.index("limit")
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(cls))
    cmd = stage_command("mine", cls, lambda cfg: None, "help")
    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert help_text.index("--model") < help_text.index("--pool") < help_text.index("--samples-per-row")
    printed = CliRunner().invoke(cmd, ["--model", "m", "--pool", "p", "--output", "o", "--print-config"]).output
    assert printed.splitlines()[0] == "model: m" and printed.index("samples_per_row:") > printed.index("limit:")
