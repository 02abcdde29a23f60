"""Local pipeline runs: the real pipeline graph through ``kfp.local`` (subprocess runner, this
interpreter), with objects in a throw-away SeaweedFS S3 (or a local folder) and the local-only
preset values (:data:`guardsmith.ops.presets.LOCAL_MARKERS`) resolved: tiny models built for the
run and the offline teacher served on 127.0.0.1. ``guardsmith pipeline run --local`` and
``guardsmith demo`` run this.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.ops import pipelines, presets
from guardsmith.standins.local_s3 import patched_env

LOCAL_BUCKET = "guardsmith"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_local(name: str, preset: str, store: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, out: str | Path | None = None, *,
              discard: bool = False, verbose: bool = True, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run pipeline ``name`` with ``preset`` through ``kfp.local`` and return where the report is.

    Objects (tables, models, reports) are kept under ``store``, by default ``<out>/store``, so the
    report's links and the trained models are there after the run; ``discard`` puts them in a
    SeaweedFS S3 started for the run and removed with it instead. ``out`` (default: ``store``, else
    ``demo-out``) receives the KFP local pipeline root, the tiny models, a copy of the report and,
    unless ``verbose``, one log file per task under ``logs/`` (the console then shows one line per
    task through ``echo``). Returns ``report_md`` / ``report_html`` (local copies), ``report_uri``,
    ``work_root``, ``pipeline_root``, ``logs``, ``seconds``, ``results`` (lines of the results table)
    and ``models`` (where the trained models are).
    """
    params = presets.load_preset(name, preset, overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out or store or "demo-out").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if store is None and not discard:
        store = out_dir / "store"
    logs = out_dir / "logs" / f"{name}-{stamp}"
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
        if verbose:
            result = _run_graph(name, params, out_dir / "kfp-root")
        else:
            with TaskLog(logs, echo or print) as console:
                stack.callback(console.close)
                result = _run_graph(name, params, out_dir / "kfp-root", console)
        report = _mirror_report(result, out_dir / "report" / f"{name}-{stamp}")
        report.update(results=results_table(params["work_root"]), models=trained_models(params["work_root"]))
    report.update(work_root=params["work_root"], pipeline_root=str(out_dir / "kfp-root"),
                  seconds=round(time.monotonic() - start, 1), **({} if verbose else {"logs": str(logs)}))
    return report


class TaskLog(io.TextIOBase):
    """Stands in for stdout while kfp.local runs: every line goes to ``<folder>/<task>.log`` (the
    task whose lines they are; ``pipeline.log`` between tasks) and the console gets one line per
    finished task (name, status, duration)."""

    _START = re.compile(r"Executing task '([^']+)'")
    _END = re.compile(r"Task '([^']+)' finished with status (\w+)")

    def __init__(self, folder: Path, echo: Callable[[str], None]) -> None:
        super().__init__()
        self.folder = folder
        self.echo = echo
        self.pending = ""
        self.task: str | None = None
        self.started = 0.0
        self.files: dict[str, Any] = {}
        self.failed: list[str] = []
        self.saved: Any = sys.stdout

    def __enter__(self) -> TaskLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.saved = sys.stdout
        sys.stdout = self
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout = self.saved
        self.close()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line)
        start, end = self._START.search(plain), self._END.search(plain)
        if start:
            self.task, self.started = start.group(1), time.monotonic()
        self._file(self.task or "pipeline").write(plain + "\n")
        if end:
            status, seconds = end.group(2), time.monotonic() - self.started
            if status != "SUCCESS":
                self.failed.append(end.group(1))
            with contextlib.redirect_stdout(self.saved):  # the console, not this log
                self.echo(f"  {end.group(1):<42} {status.lower():<8} {seconds:7.1f} s")
            self.task = None

    def _file(self, task: str) -> Any:
        if task not in self.files:
            self.files[task] = open(self.folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', task)}.log", "a", encoding="utf-8")
        return self.files[task]

    def close(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = ""
        for handle in self.files.values():
            handle.close()
        self.files = {}


def results_table(work_root: str) -> list[str]:
    """The run's headline numbers as text lines: harmful F1 per model, mode and benchmark (guard
    pipelines) and the filtered systems' helpfulness / harmfulness (Boundary Guidance)."""
    from guardsmith import storage

    lines: list[str] = []
    metrics = storage.join(work_root, "evaluate", "metrics")
    if storage.is_committed(metrics):
        rows = storage.read_table(metrics).to_pylist()
        lines.append(f"{'model':<14} {'mode':<5} {'benchmark':<18} {'task':<16} {'F1':>7} {'± std':>6} {'parse err':>9}")
        for r in sorted(rows, key=lambda r: (r["model"], r.get("mode") or "", r["benchmark"], r["task"])):
            lines.append(f"{r['model']:<14} {r.get('mode') or '-':<5} {r['benchmark']:<18} {r['task']:<16} "
                         f"{r['f1_mean']:7.3f} {r['f1_std']:6.3f} {r['parse_error_rate']:9.3f}")
    boundary = storage.join(work_root, "boundary", "eval", "metrics")
    if storage.is_committed(boundary):
        rows = [r for r in storage.read_table(boundary).to_pylist() if r["prompt_set"] == "all"]
        lines.append(f"{'system':<28} {'helpfulness':>11} {'harmfulness':>11} {'filtered':>8}")
        for r in rows:
            def num(v: Any) -> str:
                return "-" if v is None else f"{v:.2f}"
            lines.append(f"{r['system']:<28} {num(r['helpfulness_mean']):>11} {num(r['harmfulness_mean']):>11} "
                         f"{r['filter_rate']:8.2f}")
    return lines


def trained_models(work_root: str) -> dict[str, str]:
    """Name -> URI of the models the run trained (the folders that exist under ``work_root``)."""
    from guardsmith import storage

    found = {}
    for name, parts in (("sft guard", ("sft", "model")), ("continual guard (shipped)", ("continual", "model"))):
        uri = storage.join(work_root, *parts)
        if storage.exists(storage.folder_file(uri, "config.json")):
            found[name] = uri
    generators = storage.join(work_root, "boundary", "generators")
    if storage.exists(generators):
        for entry in storage.list_dir(generators):
            reward = str(entry).rstrip("/").rsplit("/", 1)[-1]
            found[f"generator ({reward})"] = storage.join(generators, reward)
    return found


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


def _run_graph(name: str, params: dict[str, Any], pipeline_root: Path, console: TaskLog | None = None) -> Any:
    """Execute the compiled-from-source pipeline graph locally; a failed task is a GuardsmithError
    (naming its log file when the output goes to per-task logs)."""
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
            where = ""
            if console is not None:
                console.close()
                failed = console.failed[-1] if console.failed else console.task
                if failed:
                    where = f"; see {console.folder / (re.sub(r'[^A-Za-z0-9._-]+', '-', failed) + '.log')}"
            raise GuardsmithError(f"local {name} run failed: {first}{where}") from None


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
