"""Test-side S3 environment isolation (the server itself is `guardsmith.standins.local_s3.LocalS3`)."""
from __future__ import annotations

import os

AWS_VARS = (
    "GUARDSMITH_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
    "GUARDSMITH_S3_CONNECT_TIMEOUT", "GUARDSMITH_S3_MAX_ATTEMPTS",
)
"""Variables that steer S3 access; tests replace all of them."""


def apply_s3_env(monkeypatch, env: dict[str, str]) -> None:  # noqa: ANN001 - pytest.MonkeyPatch
    """Replace every S3-related variable by ``env`` for one test (no ~/.aws files either)."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
