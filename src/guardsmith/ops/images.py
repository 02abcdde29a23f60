"""Container images: the image kinds, the digest records of ``images/digests.yaml``, the pinned
compile-time image of each component kind, and the pinned base images of the Dockerfiles.

``images/digests.yaml`` records, per image kind (``cpu``, ``train``, ``infer``: :data:`IMAGE_KINDS`),
the repository, tag and pushed digest written by ``scripts/build_images.sh``. :func:`image_env`
turns it into the compile-time variables ``GUARDSMITH_IMAGE_<KIND>=repo@sha256:...``
(``repo:tag`` while a digest is still a placeholder); :func:`component_image` is what a component
is compiled with.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from guardsmith import __version__
from guardsmith.errors import GuardsmithError

IMAGE_KINDS = ("cpu", "train", "infer")
"""Kinds of component image (what a component runs on)."""
IMAGE_REPOSITORY = "ghcr.io/guardsmith"
"""Registry path of the images built from ``images/`` (guardsmith-cpu, -train, -infer)."""
IMAGE_DIRS = {"cpu": "base", "train": "train", "infer": "infer"}
"""Image kind -> folder under ``images/`` holding its Dockerfile."""
DIGESTS_ENV = "GUARDSMITH_IMAGE_DIGESTS"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[\w][\w.\-]{0,127}$")
_REPOSITORY = re.compile(r"^(?:[A-Za-z0-9.\-]+(?::\d+)?/)?[a-z0-9]+(?:[._\-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._\-]+[a-z0-9]+)*)*$")


def repo_root() -> Path:
    """The source checkout this module lives in (``src/guardsmith/ops/images.py`` -> repo root)."""
    return Path(__file__).resolve().parents[3]


def digests_path() -> Path:
    """``$GUARDSMITH_IMAGE_DIGESTS`` or ``<repo>/images/digests.yaml``."""
    return Path(os.environ.get(DIGESTS_ENV) or repo_root() / "images" / "digests.yaml")


@dataclass(frozen=True)
class ImageRecord:
    """One built image: ``repository``, ``tag`` and the pushed ``digest`` ("" until built)."""

    kind: str
    repository: str
    tag: str
    digest: str = ""

    @property
    def pinned(self) -> bool:
        return bool(self.digest)

    @property
    def ref(self) -> str:
        """``repository@sha256:...`` when built, else ``repository:tag``."""
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag}"


def load_digests(path: str | Path | None = None) -> dict[str, ImageRecord]:
    """Read and check ``images/digests.yaml``; returns kind -> :class:`ImageRecord`."""
    import yaml

    path = Path(path) if path is not None else digests_path()
    if not path.exists():
        raise GuardsmithError(f"{path} is missing (it records the images built by scripts/build_images.sh)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise GuardsmithError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise GuardsmithError(f"{path}: expected a mapping 'images: {{cpu: ..., train: ..., infer: ...}}'")
    out: dict[str, ImageRecord] = {}
    for kind in IMAGE_KINDS:
        entry = images.get(kind)
        if not isinstance(entry, dict):
            raise GuardsmithError(f"{path}: images.{kind} is missing")
        repo, tag, digest = (str(entry.get(k) or "") for k in ("repository", "tag", "digest"))
        if not _REPOSITORY.match(repo):
            raise GuardsmithError(f"{path}: images.{kind}.repository {repo!r} must be a repository without tag or digest")
        if not _TAG.match(tag):
            raise GuardsmithError(f"{path}: images.{kind}.tag {tag!r} is not a valid tag")
        if digest and not _DIGEST.match(digest):
            raise GuardsmithError(f"{path}: images.{kind}.digest {digest!r} must be sha256:<64 hex> or empty")
        out[kind] = ImageRecord(kind, repo, tag, digest)
    unknown = sorted(set(images) - set(IMAGE_KINDS))
    if unknown:
        raise GuardsmithError(f"{path}: unknown image kind(s) {', '.join(unknown)}")
    return out


def load_bases(path: str | Path | None = None) -> dict[str, tuple[str, str]]:
    """kind -> (base image tag, recorded digest or "") from the ``bases:`` section of the digests file.

    The base image of each Dockerfile is an exact tag (``ARG BASE_IMAGE``); the digest that tag
    resolved to on the first build is recorded here and passed back on later builds.
    """
    import yaml

    path = Path(path) if path is not None else digests_path()
    load_digests(path)
    bases = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("bases") or {}
    out: dict[str, tuple[str, str]] = {}
    for kind in IMAGE_KINDS:
        entry = bases.get(kind) if isinstance(bases, dict) else None
        if not isinstance(entry, dict) or not entry.get("image"):
            raise GuardsmithError(f"{path}: bases.{kind}.image is missing")
        image, digest = str(entry["image"]), str(entry.get("digest") or "")
        if "@" in image or ":" not in image.rsplit("/", 1)[-1]:
            raise GuardsmithError(f"{path}: bases.{kind}.image {image!r} must be an exact tag (name:tag, no digest)")
        if digest and not _DIGEST.match(digest):
            raise GuardsmithError(f"{path}: bases.{kind}.digest {digest!r} must be sha256:<64 hex> or empty")
        out[kind] = (image, digest)
    return out


def base_image_ref(kind: str, path: str | Path | None = None) -> str:
    """The pinned base of ``kind``: ``tag@sha256:...`` once recorded, else the bare tag."""
    image, digest = load_bases(path)[kind]
    return f"{image}@{digest}" if digest else image


def image_refs(path: str | Path | None = None, *, require_digest: bool = False) -> dict[str, str]:
    """kind -> image reference (``repo@sha256:...``; ``repo:tag`` for an unbuilt image unless ``require_digest``)."""
    records = load_digests(path)
    missing = [k for k, r in records.items() if not r.pinned]
    if require_digest and missing:
        raise GuardsmithError(f"no digest recorded for image(s) {', '.join(missing)} in "
                              f"{path or digests_path()}; run `make images` first")
    return {kind: rec.ref for kind, rec in records.items()}


def image_env(path: str | Path | None = None, *, require_digest: bool = False) -> dict[str, str]:
    """The compile-time variables ``GUARDSMITH_IMAGE_<KIND>`` that pin the recorded images."""
    return {f"GUARDSMITH_IMAGE_{kind.upper()}": ref
            for kind, ref in image_refs(path, require_digest=require_digest).items()}


def pinned_image(kind: str, path: str | Path | None = None) -> str | None:
    """``repository@sha256:...`` of ``kind`` when ``images/digests.yaml`` exists and records a digest, else None.

    The compile-time default of :func:`component_image` (after ``GUARDSMITH_IMAGE_<KIND>``):
    once ``make images`` has recorded digests, ``guardsmith pipeline compile`` pins them. Outside a
    source checkout (no digests file) it is None.
    """
    path = Path(path) if path is not None else digests_path()
    if not path.exists():
        return None
    record = load_digests(path).get(kind)
    return record.ref if record is not None and record.pinned else None


def render_digests(records: Mapping[str, ImageRecord], bases: Mapping[str, tuple[str, str]]) -> str:
    """The text of ``images/digests.yaml`` (stable layout, comments included)."""
    lines = [
        "# Images built from images/<dir>/Dockerfile by scripts/build_images.sh (`make images`).",
        "# `guardsmith.ops.images.image_env()` pins compiled pipelines to repository@digest; an empty",
        "# digest is a placeholder (not built yet): compiles then use repository:tag. The Helm chart's",
        "# values (helm/guardsmith/values.yaml, images:) are synced from this file by",
        "# scripts/sync_chart_files.py.",
        "images:",
    ]
    for kind in IMAGE_KINDS:
        rec = records[kind]
        lines += [f"  {kind}:",
                  f"    dockerfile: images/{IMAGE_DIRS[kind]}/Dockerfile",
                  f"    repository: {rec.repository}",
                  f'    tag: "{rec.tag}"',
                  f'    digest: "{rec.digest}"']
    lines += ["# Base images: the exact tag each Dockerfile's ARG BASE_IMAGE names, and the digest it",
              "# resolved to on the first build (builds then use tag@digest). Empty digest: not resolved yet.",
              "bases:"]
    for kind in IMAGE_KINDS:
        image, digest = bases[kind]
        lines += [f"  {kind}:", f"    image: {image}", f'    digest: "{digest}"']
    return "\n".join(lines) + "\n"


def _write_digests(path: Path, records: Mapping[str, ImageRecord], bases: Mapping[str, tuple[str, str]]) -> None:
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(render_digests(records, bases), encoding="utf-8")
    try:
        load_bases(tmp)
    except GuardsmithError:
        tmp.unlink()
        raise
    tmp.replace(path)


def check_kind(kind: str) -> str:
    """``kind`` when it is one of :data:`IMAGE_KINDS`, else a one-line error."""
    if kind not in IMAGE_KINDS:
        raise GuardsmithError(f"unknown image kind {kind!r}; use one of {', '.join(IMAGE_KINDS)}")
    return kind


def component_image(kind: str) -> str:
    """Base image of a component kind at compile time: ``$GUARDSMITH_IMAGE_<KIND>``, else the pinned
    image recorded in ``images/digests.yaml`` (:func:`pinned_image`), else the release tag."""
    check_kind(kind)
    return (os.environ.get(f"GUARDSMITH_IMAGE_{kind.upper()}") or pinned_image(kind)
            or f"{IMAGE_REPOSITORY}/guardsmith-{kind}:{__version__}")


def _update(kind: str, digest: str, path: str | Path | None,
            change: Callable[[dict[str, ImageRecord], dict[str, tuple[str, str]]], None]) -> None:
    """Check ``kind`` and ``digest``, apply ``change`` to the records and bases, and rewrite the file."""
    check_kind(kind)
    if not _DIGEST.match(digest):
        raise GuardsmithError(f"digest {digest!r} must be sha256:<64 hex>")
    path = Path(path) if path is not None else digests_path()
    records, bases = load_digests(path), load_bases(path)
    change(records, bases)
    _write_digests(path, records, bases)


def record_digest(kind: str, repository: str, tag: str, digest: str, path: str | Path | None = None) -> ImageRecord:
    """Record a pushed image in ``images/digests.yaml`` (other kinds are kept)."""
    record = ImageRecord(kind, repository, tag, digest)
    _update(kind, digest, path, lambda records, bases: records.__setitem__(kind, record))
    return record


def record_base_digest(kind: str, digest: str, path: str | Path | None = None) -> str:
    """Record the digest the base image tag of ``kind`` resolved to; returns ``tag@digest``."""
    image: list[str] = []

    def change(records: dict[str, ImageRecord], bases: dict[str, tuple[str, str]]) -> None:
        image.append(bases[kind][0])
        bases[kind] = (bases[kind][0], digest)

    _update(kind, digest, path, change)
    return f"{image[0]}@{digest}"
