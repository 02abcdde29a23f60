"""Shared fixtures: a real SeaweedFS S3 server for the session, and its environment per test.

``s3``        session-scoped :class:`guardsmith.standins.local_s3.LocalS3` (``weed mini`` on 127.0.0.1 with
              random free ports and random credentials; bucket ``s3.bucket`` created).
``s3_env``    applies ``s3.env()`` with monkeypatch (``GUARDSMITH_S3_ENDPOINT``, ``AWS_*``) and
              hides other AWS settings; returns the server.
``s3_prefix`` a fresh ``s3://bucket/<unique>`` URI under which a test may write (needs s3_env).
Mark tests that use them ``@pytest.mark.s3``.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from guardsmith.standins.local_s3 import LocalS3
from helpers.s3env import apply_s3_env

SeaweedS3 = LocalS3


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    """A SeaweedFS S3 server for the whole session, stopped by pid at the end."""
    with LocalS3(bucket=f"gs-{uuid.uuid4().hex[:8]}") as server:
        yield server


@pytest.fixture
def s3_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    """Point guardsmith at the session's S3 server for this test."""
    apply_s3_env(monkeypatch, s3.env())
    return s3


@pytest.fixture
def s3_prefix(s3_env: SeaweedS3) -> str:
    """A unique, empty ``s3://`` prefix for this test."""
    return s3_env.uri(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def compiled_fresh(tmp_path_factory: pytest.TempPathFactory):
    """Every component and pipeline compiled now with default settings (no overrides)."""
    from guardsmith.ops import pipelines
    from helpers.kfp_ir import CLEAN_ENV

    out = tmp_path_factory.mktemp("compiled-fresh")
    pipelines.compile_all(out, CLEAN_ENV)
    return out


@pytest.fixture(scope="session")
def compiled_custom(tmp_path_factory: pytest.TempPathFactory):
    """Every component and pipeline compiled with a Kueue queue, an image override and fake secrets."""
    from guardsmith.ops import pipelines
    from helpers.kfp_ir import CUSTOM_ENV

    out = tmp_path_factory.mktemp("compiled-custom")
    pipelines.compile_all(out, CUSTOM_ENV)
    return out
