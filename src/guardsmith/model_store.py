"""Models by URI: resolve a model URI to a local folder, and publish a local folder to a URI.

Training and inference need a local folder; models live in object storage between stages.
S3 models are downloaded once into a cache (`GUARDSMITH_CACHE`, default ~/.cache/guardsmith)
keyed by URI; a local path or `file://` URI is used in place.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from guardsmith.errors import GuardsmithError


def cache_root() -> Path:
    return Path(os.environ.get("GUARDSMITH_CACHE", Path.home() / ".cache" / "guardsmith"))


def is_remote(uri: str) -> bool:
    return str(uri).startswith("s3://")


def local_path(uri: str | Path) -> Path:
    """The local folder path of a `file://` URI or plain path."""
    text = str(uri)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def local_model(uri: str | Path, refresh: bool = False) -> Path:
    """A local folder holding the model at ``uri`` (downloaded and cached when it is on S3)."""
    from guardsmith import storage

    if not is_remote(str(uri)):
        path = local_path(uri)
        if not (path / "config.json").exists():
            raise GuardsmithError(f"{uri} is not a model folder (no config.json)")
        return path
    digest = hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    target = cache_root() / "models" / digest
    if refresh or not (target / "config.json").exists():
        storage.download_dir(str(uri), target)
    return target


def publish_model(local_dir: str | Path, uri: str | Path) -> str:
    """Copy a finished model folder to ``uri`` atomically (upload to S3 or copy locally)."""
    from guardsmith import storage

    storage.upload_dir(Path(local_dir), str(uri))
    return str(uri)
