"""Models by URI: resolve a model URI to a local folder, and publish a local folder to a URI.

Training and inference need a local folder; models live in object storage between stages.
S3 models are downloaded once into a cache (`GUARDSMITH_CACHE`, default ~/.cache/guardsmith)
keyed by the content of the committed manifest (`storage.content_id`: the files' paths, sizes and
sha256), not by the URI: a model republished at the same URI is downloaded again, an unchanged one
is not. A local path or `file://` URI is used in place.
"""
from __future__ import annotations

import os
import shutil
import uuid
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
    models = cache_root() / "models"
    target = models / storage.content_id(str(uri))[:32]  # one small read: the manifest
    if refresh or not (target / "config.json").exists():
        # download beside the cache, then file it under the content it really has (the model may
        # be republished between the two reads)
        models.mkdir(parents=True, exist_ok=True)
        staging = models / f".download-{uuid.uuid4().hex[:12]}"
        try:
            storage.download_dir(str(uri), str(staging))
            target = models / storage.content_id(str(staging))[:32]
            if refresh and target.exists():
                shutil.rmtree(target, ignore_errors=True)
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "config.json").exists():  # another process filed it meanwhile
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def publish_model(local_dir: str | Path, uri: str | Path, identity: object = None) -> str:
    """Copy a finished model folder to ``uri`` as a new version, atomically (upload to S3 or copy
    locally), recording ``identity`` (a WorkIdentity) in its manifest."""
    from guardsmith import storage

    storage.upload_dir(str(local_dir), str(uri), identity=identity)
    return str(uri)
