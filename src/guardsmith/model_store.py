"""Models by URI: resolve a model URI to a local folder, and publish a local folder to a URI.

Training and inference need a local folder; models live in object storage between stages.
S3 models are downloaded once into a cache (`GUARDSMITH_CACHE`, default ~/.cache/guardsmith)
keyed by the content of the committed manifest (`storage.content_id`: the files' paths, sizes and
sha256), not by the URI: a model republished at the same URI is downloaded again, an unchanged one
is not. A local path or `file://` URI is used in place (a versioned local folder: its current
version).

Promotion (what the served guard reads): a served model URI holds kept versions
``<uri>/versions/<id>/`` (each a committed folder of its own, so ``<uri>/versions/<id>`` is a model
URI too) behind the pointer ``<uri>/_SUCCESS``, the manifest every reader follows.
:func:`promote_model` copies a model (server-side on S3) into a new version and switches the
pointer with one conditional write, or switches it to a kept version; :func:`rollback_model`
switches back to the version that was current before the last switch; :func:`model_versions`
lists them. Servers read the pointer when they start (``kubectl rollout restart`` picks up a
promotion).
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from guardsmith.errors import GuardsmithError, redact


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
        if (path / storage.MANIFEST).exists() and not (path / "config.json").exists():
            path = local_path(storage.folder_file(str(path), "config.json")).parent  # a versioned folder
        if not (path / "config.json").exists():
            from guardsmith.model_files import hub_hint

            raise GuardsmithError(f"{uri} is not a model folder (no config.json){hub_hint(uri)}")
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


# --------------------------------------------------------------------------- promotion
# Served model URIs, their versions and the pointer switch live in guardsmith.storage (the module
# that owns the folder layout and the conditional commit); re-exported here for callers of models.
from guardsmith.storage import (  # noqa: E402
    KEEP_VERSIONS,
    ModelVersion,
    Promotion,
    model_versions,
    promote_model,
    rollback_model,
)

__all__ = ["KEEP_VERSIONS", "ModelVersion", "Promotion", "cache_root", "is_remote", "local_model", "local_path",
           "model_versions", "promote_model", "publish_model", "push_model", "rollback_model"]


def push_model(uri: str, repo_id: str, *, private: bool = True, dry_run: bool = False) -> list[str]:
    """Upload the model at ``uri`` (its current version) to the Hugging Face Hub repository
    ``repo_id`` (created when missing, private by default) with huggingface_hub; returns the files
    sent. The token comes from ``HF_TOKEN`` or the huggingface-cli login, never from a flag. A
    folder without its model card (README.md) is refused: the card carries the base model,
    data sets, license and evaluation results. ``dry_run`` only lists the files."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", repo_id):
        raise GuardsmithError(f"--to {repo_id!r}: expected a hub repository id owner/name")
    folder = local_model(uri)
    if not (folder / "README.md").is_file():
        raise GuardsmithError(f"{uri} has no model card (README.md); models trained by guardsmith have one")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "versions" not in p.parts)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", ignore_patterns=["versions/*"],
                          commit_message=f"guardsmith: upload {redact(str(uri))}")
    except Exception as exc:  # noqa: BLE001 - network, auth or hub errors: one line
        raise GuardsmithError(f"push to {repo_id} failed: {str(exc).splitlines()[0][:300]}") from None
    return files
