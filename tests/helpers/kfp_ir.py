"""Shared helpers for the tests on compiled KFP YAML (IR)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from guardsmith import kfp_support
from guardsmith.ops import images

FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEY0000TEST",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-Zq8mV2rX9pL4",
    "HF_TOKEN": "hf_fakeTokenQ7w3e9r",
    "OPENAI_API_KEY": "sk-fake-openai-5t6y7u",
    "GUARDSMITH_TEACHER_API_KEY": "fake-teacher-key-1a2b",
    "GUARDSMITH_JUDGE_API_KEY": "fake-judge-key-3c4d",
}
"""Secret values put in the environment at compile time: none may appear in any compiled YAML."""

CLEAN_ENV: dict[str, str | None] = {
    **{f"GUARDSMITH_IMAGE_{k.upper()}": None for k in images.IMAGE_KINDS},
    **{f"GUARDSMITH_SECRET_{k.upper()}": None for k in ("s3", "teacher", "judge", "hf")},
    kfp_support.KUEUE_ENV: None,
}
"""No compile-time overrides: what `guardsmith pipeline compile` writes by default."""

CUSTOM_ENV: dict[str, str | None] = {
    **CLEAN_ENV, **FAKE_SECRETS, kfp_support.KUEUE_ENV: "team-guard",
    "GUARDSMITH_IMAGE_TRAIN": "registry.local/guardsmith-train:dev",
}
"""A Kueue queue, an image override and fake secret values."""


def ir(root: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes executor configs) of a compiled pipeline under ``root``."""
    spec, platform = yaml.safe_load_all((root / "pipelines" / name / "pipeline.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
