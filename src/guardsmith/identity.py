"""Work identity: what made an output, so that a re-run skips identical work and refuses different work.

Kubernetes and KFP run a task at least once (retries, preemption, overlapping scheduled runs).
Every stage output records a :class:`WorkIdentity`: the stage, the effective config (without the
fields that only say *how* to run, such as ``overwrite`` or a scratch folder), the identity of each
input (the commit manifest of a table or model folder, or the content hash of a plain file), and
the guardsmith version. Before a stage writes ``output`` it calls :func:`decide`:

- nothing committed at ``output``: ``"run"``;
- committed with the same identity: ``"skip"`` (the KFP-caching meaning: the result is there);
- committed with another identity: a one-line :class:`GuardsmithError` naming what differs, unless
  ``overwrite`` (then ``"run"``, and the new output replaces the old one when it commits).

Partial work (distill shards, filter rounds, training checkpoints) carries the identity of its run
and is resumed only by the same one. The identity is stored in the output's commit manifest
(``storage.TableWriter(..., identity=...)`` / ``storage.upload_dir(..., identity=...)``) and read
back with ``storage.recorded_identity(uri)``. See docs/storage.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from guardsmith import __version__
from guardsmith.errors import GuardsmithError, redact

RUN_ONLY_FIELDS: frozenset[str] = frozenset({
    "overwrite", "keep_shards", "keep_rounds", "work_dir", "resume", "logging_steps", "save_steps",
    "save_total_limit", "checkpoint_uri", "examples_output", "rewards_log", "concurrency", "chunk_rows",
    "api_key_env", "judge_api_key_env", "timeout_s", "judge_timeout_s", "max_retries", "judge_max_retries",
    "retry_after_max_s", "judge_retry_after_max_s", "judge_concurrency", "gpus", "distributed",
    "scorer_device", "scorer_batch_size", "score_concurrently", "backend_options", "title",
    "max_failed_fraction", "report_to", "logs_uri",
})
"""Config fields that change how a stage runs, never what it writes; left out of the identity.
(Output URIs are left out too: the identity is recorded *at* the output.)"""


def _canonical(value: Any) -> Any:
    """JSON-stable form: dataclasses and mappings sorted, tuples as lists, floats as repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return float(repr(value))
    return value


def digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``value``."""
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class WorkIdentity:
    """What made an output: stage, effective config, input identities and guardsmith version."""

    stage: str
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str | None] = field(default_factory=dict)
    version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "config": _canonical(self.config), "inputs": _canonical(self.inputs),
                "version": self.version, "digest": self.digest}

    @property
    def digest(self) -> str:
        return digest({"stage": self.stage, "config": self.config, "inputs": self.inputs, "version": self.version})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkIdentity":
        return cls(stage=str(data.get("stage", "")), config=dict(data.get("config") or {}),
                   inputs=dict(data.get("inputs") or {}), version=str(data.get("version", "")))

    def differences(self, other: "WorkIdentity") -> list[str]:
        """Human names of what differs from ``other``: ``stage``, ``config.<field>``,
        ``input <name>`` (:func:`input_name`) and ``guardsmith version``; empty when the two are the same work."""
        out = []
        if self.stage != other.stage:
            out.append("stage")
        mine, theirs = _canonical(self.config), _canonical(other.config)
        out += [f"config.{k}" for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        out += [input_name(k) for k in sorted(set(self.inputs) | set(other.inputs))
                if self.inputs.get(k) != other.inputs.get(k)]
        if self.version != other.version:
            out.append(f"guardsmith version ({other.version} -> {self.version})")
        return out


def input_name(name: str) -> str:
    """How a difference names an input: ``input train``; the stages' ``input`` is named by its flag,
    ``input table (--input)``."""
    return "input table (--input)" if name == "input" else f"input {name}"


def input_id(uri: str | None) -> str | None:
    """The identity of an input: the digest of a committed table's or folder's manifest (its parts,
    sizes and row counts, not its commit time), else the sha256 of a plain file's bytes. None for
    no input; a value that is not a location (a backend spec such as ``openai:...``, ``hf``) is
    its own identity."""
    if uri is None or uri == "":
        return None
    from guardsmith import storage

    text = str(uri)
    if not storage.is_location(text):
        return f"spec:{text}"
    return storage.content_id(text)


def config_values(cfg: Any, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of a config dataclass that determine its outputs (see :data:`RUN_ONLY_FIELDS`)."""
    skip = RUN_ONLY_FIELDS | set(exclude)
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip}


def work_identity(stage: str, cfg: Any, inputs: Mapping[str, str | None], *,
                  exclude: Iterable[str] = (), extra: Mapping[str, Any] | None = None) -> WorkIdentity:
    """The identity of running ``stage`` with ``cfg`` on ``inputs`` (name -> URI).

    ``exclude`` names more config fields to leave out (output URIs, input URIs already in
    ``inputs``); ``extra`` adds facts that are not config fields (e.g. a teacher's model name).
    """
    values = config_values(cfg, exclude)
    values.update(extra or {})
    return WorkIdentity(stage=stage, config=values, inputs={k: input_id(v) for k, v in inputs.items()})


def decide(output: str, identity: WorkIdentity, overwrite: bool = False) -> Literal["run", "skip"]:
    """``"skip"`` when ``output`` is committed by the same work, ``"run"`` when it is not committed
    (or ``overwrite``); a committed output made by other work is a one-line error naming the
    difference."""
    from guardsmith import storage

    if not storage.is_committed(output):
        return "run"
    recorded = storage.recorded_identity(output)
    reason = why_not_reused(recorded, identity)
    if reason is None:
        return "skip"
    if overwrite:
        return "run"
    why = ("records no work identity (written by an older guardsmith or by hand)" if recorded is None
           else f"was made by other work: {reason}")
    raise GuardsmithError(f"{redact(output)} {why}; use the same inputs and config to reuse it, "
                          "or --overwrite to replace it")


def why_not_reused(recorded: Mapping[str, Any] | None, identity: WorkIdentity) -> str | None:
    """None when partial work recording ``recorded`` belongs to ``identity`` (it may be resumed);
    else what differs, e.g. ``config.mode, input train`` or ``no work identity``."""
    if recorded is None:
        return "no work identity (an older guardsmith)"
    theirs = WorkIdentity.from_json(recorded)
    if theirs.digest == identity.digest:
        return None
    diff = identity.differences(theirs) or ["work identity"]
    return ", ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")


def foreign_parts(uris: Iterable[str], identity: WorkIdentity) -> dict[str, str]:
    """The committed ones among ``uris`` (shards, rounds, checkpoints) that other work made:
    uri -> what differs (see :func:`why_not_reused`). Uncommitted uris are ignored."""
    from guardsmith import storage

    out = {}
    for uri in uris:
        if storage.is_committed(uri):
            why = why_not_reused(storage.recorded_identity(uri), identity)
            if why is not None:
                out[uri] = why
    return out
