"""Local pipeline runs: the real pipeline graph through ``kfp.local`` (subprocess runner, this
interpreter), with objects in a throw-away SeaweedFS S3 (or a local folder) and the local-only
preset values (:data:`guardsmith.ops.presets.LOCAL_MARKERS`) resolved: tiny models built for the
run and the offline teacher served on 127.0.0.1. ``guardsmith pipeline run --local`` and
``guardsmith demo`` run this.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.ops import pipelines, presets
from guardsmith.standins.local_s3 import patched_env

LOCAL_BUCKET = "guardsmith"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_local(name: str, preset: str, store: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Run pipeline ``name`` with ``preset`` through ``kfp.local`` and return where the report is.

    Objects go to a SeaweedFS S3 started and stopped for the run, or under ``store`` (a local
    folder) when given. ``out`` (default: ``store``, else ``demo-out``) receives the KFP local
    pipeline root, the tiny models and a copy of the report. Returns ``report_md`` /
    ``report_html`` (local copies), ``report_uri``, ``work_root``, ``pipeline_root`` and ``seconds``.
    """
    params = presets.load_preset(name, preset, overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out or store or "demo-out").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if store is None:
            from guardsmith.standins.local_s3 import LocalS3

            s3 = stack.enter_context(LocalS3(bucket=LOCAL_BUCKET))
            stack.enter_context(patched_env(s3.env()))
            root = f"s3://{LOCAL_BUCKET}"
        else:
            root = str(Path(store).resolve())
            Path(root).mkdir(parents=True, exist_ok=True)
        stack.enter_context(patched_env({"GUARDSMITH_CACHE": os.environ.get("GUARDSMITH_CACHE") or str(out_dir / "cache")}))
        params.setdefault("work_root", f"{root}/runs/{name}-{stamp}")
        params = resolve_local_markers(params, root, out_dir, stack)
        result = _run_graph(name, params, out_dir / "kfp-root")
        report = _mirror_report(result, out_dir / "report" / f"{name}-{stamp}")
    report.update(work_root=params["work_root"], pipeline_root=str(out_dir / "kfp-root"),
                  seconds=round(time.monotonic() - start, 1))
    return report


def _build_tiny(marker: str, local: Path) -> None:
    from guardsmith.standins.tiny import build_tiny_causal_lm, build_tiny_classifier

    if marker == presets.TINY_MODEL:
        build_tiny_causal_lm(local)
    else:
        build_tiny_classifier(local, num_labels=1 if marker == presets.TINY_REWARD_MODEL else 2)


def resolve_local_markers(params: dict[str, Any], root: str, out_dir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Replace the ``tiny:*`` markers and ``offline:teacher`` by built model URIs and a served endpoint."""
    repl: dict[str, str] = {}
    for marker, folder in presets.TINY_MODELS.items():
        if not presets.uses(params, marker):
            continue
        from guardsmith import storage

        local = out_dir / "models" / folder
        if not (local / "config.json").exists():
            _build_tiny(marker, local)
        uri = str(local)
        if root.startswith("s3://"):
            uri = f"{root}/models/{folder}"
            storage.upload_dir(str(local), uri)
        repl[marker] = uri
    if presets.uses(params, presets.OFFLINE_TEACHER):
        from guardsmith.standins.offline import offline_spec, serve_offline

        server = serve_offline(seed=0)
        stack.callback(server.stop)
        repl[presets.OFFLINE_TEACHER] = offline_spec(server)

    def sub(text: str) -> str:
        for marker, value in repl.items():
            text = text.replace(marker, value)
        return text

    return presets.walk(params, sub)


def _run_graph(name: str, params: dict[str, Any], pipeline_root: Path) -> Any:
    """Execute the compiled-from-source pipeline graph locally; a failed task is a GuardsmithError."""
    import warnings

    from kfp import local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    pipeline = pipelines.load_pipeline(name)
    with warnings.catch_warnings():
        # expected locally: pod settings are no-ops and the task images are not used
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        try:
            return pipeline(**params)
        except RuntimeError as exc:
            first = _ANSI.sub("", str(exc).splitlines()[0])
            raise GuardsmithError(f"local {name} run failed: {first}") from None


def _mirror_report(run: Any, target: Path) -> dict[str, Any]:
    """Copy the report folder (pipeline output: report.md URI) next to the local outputs."""
    from guardsmith import storage

    report_uri = str(run.output)
    folder = report_uri.rsplit("/", 1)[0]
    target.mkdir(parents=True, exist_ok=True)
    for entry in storage.list_dir(folder):
        base = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if base.endswith((".md", ".html", ".png", ".json")):
            (target / base).write_bytes(storage.read_bytes(storage.join(folder, base)))
    return {"report_md": str(target / "report.md"), "report_html": str(target / "report.html"),
            "report_uri": report_uri}
