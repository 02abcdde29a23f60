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
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
# The pointer and the versions use storage's folder layout (storage.upload_dir writes the same);
# the conditional pointer write is storage's commit (its manifest helpers, one writer per URI).

KEEP_VERSIONS = 3
"""Versions a promotion keeps at a served URI: the current one and the last ones it replaced."""

VERSIONS = "versions"
HISTORY = 20  # pointer switches remembered for rollback (versions no longer kept are skipped)


@dataclass(frozen=True)
class ModelVersion:
    """One kept version of a served model URI."""

    id: str
    uri: str  # <uri>/versions/<id>: this version as a model URI of its own ("" when not addressable)
    current: bool
    promoted_at: str
    source: str  # where it was promoted from (redacted); "" when it was uploaded in place
    total_bytes: int


@dataclass(frozen=True)
class Promotion:
    """What a promotion or rollback did."""

    uri: str
    current: str
    previous: str | None
    copied_from: str | None = None
    removed: tuple[str, ...] = field(default_factory=tuple)
    rollback: bool = False

    def __str__(self) -> str:
        if self.rollback:
            lines = [f"{redact(self.uri)}: current version {self.current} (rolled back from {self.previous})"]
        else:
            lines = [f"{redact(self.uri)}: current version {self.current}"
                     + (f" (copied from {redact(self.copied_from)})" if self.copied_from else ""),
                     f"replaced version: {self.previous or '-'} (back to it: guardsmith models rollback {redact(self.uri)})"]
        if self.removed:
            lines.append(f"removed old versions: {', '.join(self.removed)}")
        lines.append("servers read the pointer at start: kubectl rollout restart the guard deployments")
        return "\n".join(lines)


def _now_precise() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _version_uri(uri: str, vid: str) -> str:
    from guardsmith import storage

    return storage.join(str(uri), VERSIONS, vid)


def _read_pointer(uri: str) -> tuple[dict[str, Any] | None, str | None]:
    """The pointer manifest of a served URI and its tag (what the switch is conditional on)."""
    from guardsmith import storage

    manifest, tag = storage._read_manifest_tagged(storage.resolve(uri))
    if manifest is not None and manifest.get("format") != storage.FOLDER_FORMAT:
        raise GuardsmithError(f"{redact(uri)} is a guardsmith table, not a model folder")
    return manifest, tag


def _write_pointer(uri: str, manifest: dict[str, Any], seen: str | None) -> None:
    """Switch the pointer: storage's conditional commit (ConcurrentWriteError when another writer
    switched it since ``seen`` was read)."""
    from guardsmith import storage

    loc = storage.resolve(uri)
    data = storage._manifest_bytes(manifest)
    if loc.is_s3:
        storage._put_manifest_s3(loc, data, seen)
        return
    with storage._local_commit_lock(loc.path):
        storage._check_unchanged_local(loc, seen)
        storage.write_bytes_atomic(storage.join(str(uri), storage.MANIFEST), data)


def _read_version(uri: str, vid: str) -> dict[str, Any] | None:
    from guardsmith import storage

    manifest = storage._read_manifest(storage.resolve(_version_uri(uri, vid)))
    return manifest if manifest and manifest.get("format") == storage.FOLDER_FORMAT else None


def _write_version_record(uri: str, vid: str, manifest: dict[str, Any]) -> None:
    """The version's own manifest (flat: the files beside it), which makes it a model URI."""
    from guardsmith import storage

    record = {k: v for k, v in manifest.items() if k not in ("root", "history")}
    record["attempt"] = vid
    storage.write_bytes_atomic(storage.join(_version_uri(uri, vid), storage.MANIFEST), storage._manifest_bytes(record))


def _current_id(pointer: dict[str, Any] | None) -> str | None:
    root = (pointer or {}).get("root") or ""
    return root.split("/", 1)[1] if root.startswith(VERSIONS + "/") else None


def _listed_versions(uri: str) -> list[str]:
    from guardsmith import storage

    where = storage.join(str(uri), VERSIONS)
    if not storage.exists(where):
        return []
    return [n for n in storage.list_dir(where) if ".tmp-" not in n]


def model_versions(uri: str) -> list[ModelVersion]:
    """The versions kept at ``uri``, oldest first (by promotion time), the current one marked."""
    pointer, _ = _read_pointer(uri)
    if pointer is None:
        raise GuardsmithError(f"{redact(uri)} holds no committed model (no pointer manifest)")
    current = _current_id(pointer)
    out = []
    for vid in _listed_versions(uri):
        record = _read_version(uri, vid)
        info = record or (pointer if vid == current else {})
        out.append(ModelVersion(id=vid, uri=_version_uri(uri, vid) if record else "", current=vid == current,
                                promoted_at=str(info.get("promoted_at") or info.get("created") or ""),
                                source=str(info.get("promoted_from") or ""),
                                total_bytes=int(info.get("total_bytes") or 0)))
    if current is None:  # a folder committed flat (before versions): the files beside the pointer
        out.append(ModelVersion(id="(flat)", uri="", current=True, promoted_at=str(pointer.get("created") or ""),
                                source="", total_bytes=int(pointer.get("total_bytes") or 0)))
    return sorted(out, key=lambda v: (v.promoted_at, v.id))


def _copy_into_version(source: str, uri: str, vid: str, origin: str | None = None) -> dict[str, Any]:
    """Copy the model at ``source`` into ``<uri>/versions/<vid>/`` and write its record; returns the
    version manifest. S3 to S3: server-side copies of the files its manifest lists; otherwise from a
    local folder (an S3 source is downloaded into the cache first)."""
    from guardsmith import storage

    dst = storage.resolve(_version_uri(uri, vid))
    src = storage.resolve(source) if is_remote(source) else None
    config = storage.default_transfer_config() if dst.is_s3 else None
    if dst.is_s3 and src is not None:
        src_manifest = storage._read_manifest(src)
        if src_manifest is None or src_manifest.get("format") != storage.FOLDER_FORMAT:
            raise GuardsmithError(f"{redact(source)} is not a committed model folder (no manifest): "
                                  "an upload may not have finished")
        files = list(src_manifest.get("files") or [])
        if not any(f.get("path") == "config.json" for f in files):
            raise GuardsmithError(f"{redact(source)} is not a model folder (no config.json)")
        root = src_manifest.get("root")
        base = src.child(storage._safe_name(root, src)) if root else src
        (sb, sp), (db, dp) = base.bucket_key, dst.bucket_key
        client = storage._client(dst)

        def put(f: dict[str, Any]) -> None:
            rel = storage._safe_name(f["path"], src)
            client.copy({"Bucket": sb, "Key": f"{sp}/{rel}" if sp else rel}, db, f"{dp}/{rel}", Config=config)
        identity = src_manifest.get("identity")
    else:
        folder = local_model(source)
        entries = storage._scan_folder(str(folder))
        files = [f for f in entries if not f["path"].startswith(VERSIONS + "/")]
        identity = storage.recorded_identity(str(folder))
        if dst.is_s3:
            (db, dp), client = dst.bucket_key, storage._client(dst)

            def put(f: dict[str, Any]) -> None:
                client.upload_file(str(folder / f["path"]), db, f"{dp}/{f['path']}", Config=config)
        else:
            def put(f: dict[str, Any]) -> None:
                target = Path(dst.path) / f["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / f["path"], target)
    try:
        with storage._boto_io(dst, "copy a model into") if dst.is_s3 else storage._io(dst, "write"):
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(put, files))
        manifest = storage._folder_manifest([{k: f[k] for k in ("path", "size", "sha256") if k in f} for f in files])
        if isinstance(identity, dict):
            manifest["identity"] = identity
        manifest.update(promoted_from=redact(source if origin is None else origin), promoted_at=_now_precise())
        _write_version_record(uri, vid, manifest)
    except BaseException:
        storage.remove(_version_uri(uri, vid))
        raise
    return manifest


def _remove_flat_files(uri: str, pointer: dict[str, Any]) -> None:
    """After a flat folder was moved into a version: delete its files beside the pointer."""
    from guardsmith import storage

    loc = storage.resolve(uri)
    parents = set()
    for f in pointer.get("files") or []:
        rel = storage._safe_name(f.get("path"), loc)
        if not rel.startswith(VERSIONS + "/"):
            storage.remove(storage.join(str(uri), rel))
            parents.update(Path(rel).parents)
    if not loc.is_s3:  # folders the files left empty (S3 has none)
        for rel in sorted((p for p in parents if str(p) != "."), key=lambda p: -len(p.parts)):
            try:
                os.rmdir(Path(loc.path) / rel)
            except OSError:
                pass


def _switch(uri: str, target: str, target_manifest: dict[str, Any], pointer: dict[str, Any] | None,
            seen: str | None, history: list[str]) -> None:
    new = {k: v for k, v in target_manifest.items() if k != "history"}
    new.update(root=f"{VERSIONS}/{target}", history=history)
    _write_pointer(uri, new, seen)
    if pointer is not None and _current_id(pointer) is None:
        _remove_flat_files(uri, pointer)


def _adopt_current(uri: str, pointer: dict[str, Any] | None) -> str | None:
    """Make the current version a kept, addressable one before the pointer moves away from it: write
    its record when it has none (uploaded by storage.upload_dir), or copy a flat folder into a
    version. Returns its id (None when nothing is committed)."""
    if pointer is None:
        return None
    current = _current_id(pointer)
    if current is None:
        current = uuid.uuid4().hex[:12]
        _copy_into_version(str(uri), str(uri), current, origin="")
    elif _read_version(uri, current) is None:
        _write_version_record(uri, current, {**pointer, "promoted_at": pointer.get("created", "")})
    return current


def promote_model(uri: str, *, source: str | None = None, version: str | None = None,
                  keep: int = KEEP_VERSIONS) -> Promotion:
    """Point the served model ``uri`` at a new version: a copy of the model at ``source`` (a new
    version), or the kept version ``version``. The replaced version stays kept (rollback);
    after a copy, versions beyond the ``keep`` newest (current and rollback history) are removed."""
    from guardsmith import storage

    if (source is None) == (version is None):
        raise GuardsmithError("promote needs exactly one of --from SOURCE (a new version) or --version ID (a kept one)")
    if keep < 2:
        raise GuardsmithError(f"--keep must be at least 2 (the current version and one to roll back to), got {keep}")
    pointer, seen = _read_pointer(uri)
    at_start = set(_listed_versions(uri))
    if version is not None:
        record = _read_version(uri, version)
        if record is None:
            kept = ", ".join(v.id for v in model_versions(uri)) if pointer else "none"
            raise GuardsmithError(f"{redact(uri)} keeps no version {version!r} (kept: {kept})")
        previous = _adopt_current(uri, pointer)
        if previous == version:
            return Promotion(uri=str(uri), current=version, previous=None)
        history = [h for h in [previous, *(pointer or {}).get("history", [])] if h and h != version]
        _switch(uri, version, record, pointer, seen, history[:HISTORY])
        return Promotion(uri=str(uri), current=version, previous=previous)

    assert source is not None
    if storage.resolve(source).uri.rstrip("/") == storage.resolve(uri).uri.rstrip("/"):
        raise GuardsmithError(f"--from {redact(source)} is the served URI itself")
    previous = _adopt_current(uri, pointer)
    vid = uuid.uuid4().hex[:12]
    manifest = _copy_into_version(source, str(uri), vid)
    history = [h for h in [previous, *(pointer or {}).get("history", [])] if h][:keep - 1]
    try:
        _switch(uri, vid, manifest, pointer, seen, history)
    except BaseException:
        storage.remove(_version_uri(uri, vid))
        raise
    stale = sorted(at_start - {vid, *history})
    for old in stale:
        storage.remove(_version_uri(uri, old))
    return Promotion(uri=str(uri), current=vid, previous=previous, copied_from=source, removed=tuple(stale))


def rollback_model(uri: str) -> Promotion:
    """Point the served model ``uri`` back at the version that was current before the last
    promotion or rollback target switch (the first kept one of the pointer's history)."""
    pointer, seen = _read_pointer(uri)
    if pointer is None:
        raise GuardsmithError(f"{redact(uri)} holds no committed model (no pointer manifest)")
    current = _current_id(pointer)
    history = [h for h in pointer.get("history") or [] if h != current]
    for i, vid in enumerate(history):
        record = _read_version(uri, vid)
        if record is not None:
            _adopt_current(uri, pointer)
            _switch(uri, vid, record, pointer, seen, history[i + 1:])
            return Promotion(uri=str(uri), current=vid, previous=current, rollback=True)
    raise GuardsmithError(f"{redact(uri)} has no earlier version to roll back to "
                          "(promotions record one; see guardsmith models versions)")
