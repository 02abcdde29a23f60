"""Guard evaluation (method A.8): harmful F1 per benchmark and task, mean ± std over k runs.

Each model (``name=uri``; options ``name[size=500;budget=3]=uri``) is run in each mode over
each benchmark (``name=uri`` of an interactions table) with ``samples_per_row`` (k) samples per
row from one prompt pass; sample ``r`` of every row forms run ``r``. Tasks: prompt harm on rows with a
``prompt_harm`` label, response harm on rows with a ``response_harm`` label (and refusal if
asked). Rows carrying a ``policy`` text are judged against it (custom-policy benchmarks).

Per run, F1 of the positive class (``harmful``; ``refusal`` for the refusal task) is computed
with :func:`guardsmith.metrics.harm_f1`: an output with no usable label for the task counts as
wrong. The metrics table holds the mean and population std over runs, precision, recall,
support (scored rows), parse-error rate and mean latency per sample.

Outputs under ``output``: ``predictions`` and ``metrics`` tables, and ``report/`` (see
:mod:`guardsmith.reporting`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from guardsmith import settings
from guardsmith.config import option
from guardsmith.errors import GuardsmithError
from guardsmith.guard_runner import open_guard, run_guard
from guardsmith.specs import ModelSpec, parse_benchmark_spec, parse_model_spec
from guardsmith.vocabulary import MODES, TASK_POSITIVE

HELP = (
    "Evaluate guard models on benchmark tables: k samples per row (temperature 0.6, top-p 0.95), "
    "harmful F1 per benchmark for the prompt and response tasks (mean ± std over the k runs), "
    "parse-error rate and latency per sample; writes predictions and metrics tables and a "
    "Markdown/HTML report with plots."
)


PREDICTION_EXTRAS = [pa.field("mode", pa.string(), nullable=False, metadata={"help": "guard mode, R or NR"})]
METRIC_EXTRAS = [
    pa.field("mode", pa.string(), nullable=False, metadata={"help": "guard mode, R or NR"}),
    pa.field("kind", pa.string(), nullable=False,
             metadata={"help": "safety, or custom for custom-policy benchmarks"}),
    pa.field("positives", pa.int64(), nullable=False, metadata={"help": "rows whose label is the positive class"}),
    pa.field("f1_runs", pa.list_(pa.float64()), nullable=False, metadata={"help": "F1 of each run"}),
    pa.field("train_size", pa.int64(), nullable=True, metadata={"help": "training examples of the model, if known"}),
    pa.field("budget", pa.int64(), nullable=True, metadata={"help": "sentence budget of the model, if known"}),
    pa.field("model_uri", pa.string(), nullable=False, metadata={"help": "model URI"}),
]
"""Extra columns ``evaluate`` appends to the ``predictions`` / ``metrics`` schemas."""


@dataclass
class EvaluateConfig(settings.sampling(samples_per_row=4), settings.backend()):
    """Settings of the ``evaluate`` stage."""

    models: list[str] = option(help="Guard models: URI, or name=URI, or name[size=500;budget=3]=URI "
                                    "(options separated by ';'). openai:http://host/v1?model=M also works.")
    benchmarks: list[str] = option(help="Benchmarks: name=URI of an interactions table (or a URI; "
                                        "the name is then its last path component).")
    output: str = option(help="Output prefix URI: predictions, metrics and report/ are written under it.")
    modes: list[str] = option(help="Guard modes to evaluate: R and/or NR.", factory=lambda: ["R"])
    dual: bool = option(False, "Dual-mode guards: start each prompt with the mode tag.")
    tasks: list[str] = option(help="Tasks to score: prompt_harm, response_harm, response_refusal.",
                              factory=lambda: ["prompt_harm", "response_harm"])
    custom_benchmarks: list[str] | None = option(None, "Names of custom-policy benchmarks; default: "
                                                       "those whose rows carry a policy text.")
    limit: int | None = option(None, "Use at most this many rows per benchmark (quick runs).")
    title: str = option("Guard evaluation", "Report title.")


CONFIG = EvaluateConfig


@dataclass
class EvaluateResult:
    """Output URIs and the headline numbers of an ``evaluate`` run."""

    predictions: str
    metrics: str
    report_md: str
    report_html: str
    plots: list[str]
    summary: list[dict[str, Any]] = field(default_factory=list)
    model_cards: list[str] = field(default_factory=list)
    """Model cards with this run's results (``<output>/model_cards/<name>/README.md``)."""

    def __str__(self) -> str:
        lines = [f"{m['model']} / {m['benchmark']} / {m['task']}: F1 {m['f1_mean']:.3f} ± "
                 f"{m['f1_std']:.3f} (n {m['support']}, parse errors {m['parse_error_rate']:.3f})"
                 for m in self.summary]
        return "\n".join(lines + [f"predictions: {self.predictions}", f"metrics: {self.metrics}",
                                  f"report: {self.report_md}", f"html: {self.report_html}"]
                         + [f"model card: {uri}" for uri in self.model_cards])




def model_metadata(folder: Path) -> dict[str, int]:
    """``train_size`` / ``budget`` of a model trained by guardsmith, from its `TrainingSummary`.

    Empty for a model without one; a malformed summary is an error naming its file.
    """
    from guardsmith.training import TrainingSummary

    summary = TrainingSummary.find(folder)
    if summary is None:
        return {}
    known = {"train_size": summary.train_rows, "budget": summary.budget}
    return {k: v for k, v in known.items() if v is not None}


def check_config(cfg: EvaluateConfig) -> tuple[list[ModelSpec], list[tuple[str, str]]]:
    """Validate settings and parse the model and benchmark specs."""
    from guardsmith.vocabulary import TASKS

    settings.group_values(cfg, settings.Sampling)
    settings.group_values(cfg, settings.BackendChoice)
    if not cfg.modes or any(m not in MODES for m in cfg.modes) or len(set(cfg.modes)) != len(cfg.modes):
        raise GuardsmithError(f"modes must be distinct values among R, NR; got {cfg.modes}")
    bad = [t for t in cfg.tasks if t not in TASKS]
    if not cfg.tasks or bad:
        raise GuardsmithError(f"tasks must be among {', '.join(TASKS)}; got {cfg.tasks}")
    if cfg.limit is not None and cfg.limit < 1:
        raise GuardsmithError(f"limit must be at least 1, got {cfg.limit}")
    models = [parse_model_spec(s) for s in cfg.models]
    benchmarks = [parse_benchmark_spec(s) for s in cfg.benchmarks]
    if not models or not benchmarks:
        raise GuardsmithError("give at least one model and one benchmark")
    for what, names in (("model", [m.name for m in models]), ("benchmark", [b[0] for b in benchmarks])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise GuardsmithError(f"duplicate {what} name(s) {', '.join(dup)}; name them with name=URI")
    unknown = sorted(set(cfg.custom_benchmarks or []) - {b[0] for b in benchmarks})
    if unknown:
        raise GuardsmithError(f"custom_benchmarks names no benchmark: {', '.join(unknown)}")
    return models, benchmarks


def load_benchmark(name: str, uri: str, tasks: list[str], limit: int | None) -> list[dict[str, Any]]:
    """All rows of a benchmark table (validated), at most ``limit``; error if none is labelled."""
    from guardsmith import storage

    rows: list[dict[str, Any]] = []
    for batch in storage.iter_batches(uri, schema_name="interactions"):
        rows.extend(batch.to_pylist())
    if limit is not None:
        rows = rows[:limit]
    if not any(r.get(t) is not None for r in rows for t in tasks):
        raise GuardsmithError(f"benchmark {name} ({uri}) has no row labelled for {', '.join(tasks)}")
    return rows


def resolve_models(models: list[ModelSpec]) -> list[ModelSpec]:
    """Check every model folder exists (downloading S3 models) and fill in card attributes."""
    from guardsmith.model_store import local_model

    for spec in models:
        if spec.uri.startswith("openai:"):
            continue
        meta = model_metadata(local_model(spec.uri))
        if spec.train_size is None:
            spec.train_size = meta.get("train_size")
        if spec.budget is None:
            spec.budget = meta.get("budget")
    return models


def score_group(labels: list[str], preds: list[list[str | None]], oks: list[list[bool]],
                positive: str) -> dict[str, Any]:
    """Per-run F1 for one (model, mode, benchmark, task) group and its aggregate."""
    from guardsmith.metrics import aggregate_runs, harm_f1

    runs = [harm_f1(labels, p, ok, positive=positive) for p, ok in zip(preds, oks)]
    agg = aggregate_runs(runs)
    return {**agg, "f1_runs": [r.f1 for r in runs]}


def run(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate every model in every mode on every benchmark; write tables and the report."""
    from guardsmith import storage, tables
    from guardsmith.progress import track
    from guardsmith.reporting import build_report

    models, bench_specs = check_config(cfg)
    benchmarks = {name: load_benchmark(name, uri, cfg.tasks, cfg.limit) for name, uri in bench_specs}
    custom = set(cfg.custom_benchmarks) if cfg.custom_benchmarks is not None else {
        name for name, rows in benchmarks.items() if any(r.get("policy") for r in rows)}
    resolve_models(models)
    pred_uri, metrics_uri = storage.join(cfg.output, "predictions"), storage.join(cfg.output, "metrics")
    report_uri = storage.join(cfg.output, "report")
    pred_schema = pa.schema(list(tables.schema("predictions")) + PREDICTION_EXTRAS,
                            metadata=tables.schema("predictions").metadata)
    metric_schema = pa.schema(list(tables.schema("metrics")) + METRIC_EXTRAS,
                              metadata=tables.schema("metrics").metadata)
    metric_records: list[dict[str, Any]] = []
    with storage.TableWriter(pred_uri, pred_schema, "predictions") as writer:
        for spec in models:
            with open_guard(spec.uri, settings.group_values(cfg, settings.BackendChoice)) as backend:
                for mode in cfg.modes:
                    name = spec.name if len(cfg.modes) == 1 else f"{spec.name} ({mode})"
                    for bench, rows in benchmarks.items():
                        metric_records += _evaluate_one(cfg, backend, writer, spec, name, mode, bench,
                                                        rows, bench in custom, track)
        storage.write_table(metrics_uri, pa.Table.from_pylist(metric_records, schema=metric_schema),
                            "metrics")
    report = build_report([metrics_uri], report_uri, cfg.title)
    cards = write_model_cards(models, metric_records, storage.join(cfg.output, "model_cards"))
    return EvaluateResult(predictions=pred_uri, metrics=metrics_uri, report_md=report.markdown,
                          report_html=report.html, plots=report.plots, summary=metric_records,
                          model_cards=cards)


def write_model_cards(models: list[ModelSpec], records: list[dict[str, Any]], out_uri: str) -> list[str]:
    """For each evaluated model folder, its model card with the harmful F1 results of this run as
    model-index metadata, at ``<out_uri>/<name>/README.md`` (the model folder is left as it was)."""
    from guardsmith import storage
    from guardsmith.model_card import CARD_FILE, evaluated_card, guard_eval_result
    from guardsmith.model_store import local_model

    written = []
    for spec in models:
        if spec.uri.startswith("openai:"):
            continue
        results = [guard_eval_result(r["benchmark"], r["task"], r["f1_mean"], mode=r["mode"])
                   for r in records if r["model_uri"] == spec.uri and r["f1_mean"] is not None]
        if not results:
            continue
        uri = storage.join(out_uri, spec.name, CARD_FILE)
        storage.write_bytes_atomic(uri, evaluated_card(local_model(spec.uri), results, spec.name).encode())
        written.append(uri)
    return written


def _evaluate_one(cfg: EvaluateConfig, backend: Any, writer: Any, spec: ModelSpec, name: str, mode: str,
                  bench: str, rows: list[dict[str, Any]], is_custom: bool, track: Any) -> list[dict[str, Any]]:
    """Run one model/mode over one benchmark; write its predictions, return its metrics records."""
    k = cfg.samples_per_row
    groups = {t: {"labels": [], "preds": [[] for _ in range(k)], "oks": [[] for _ in range(k)],
                  "latency": []} for t in cfg.tasks}
    records: list[dict[str, Any]] = []
    results = run_guard(backend, rows, mode=mode, dual=cfg.dual, sampling=settings.group_values(cfg, settings.Sampling),
                        chunk_rows=cfg.chunk_rows)
    for result in track(results, f"evaluate {name} on {bench}", total=len(rows)):
        row = result.row
        for task in cfg.tasks:
            label = row.get(task)
            if label is None:
                continue
            group = groups[task]
            group["labels"].append(label)
            for r, sample in enumerate(result.samples):
                pred = sample.prediction(task)
                group["preds"][r].append(pred)
                group["oks"][r].append(pred is not None)
                group["latency"].append(sample.latency_s)
                records.append({"model": name, "benchmark": bench, "task": task, "run": r,
                                "id": str(row["id"]), "label": label, "prediction": pred,
                                "parse_ok": pred is not None, "latency_s": sample.latency_s, "mode": mode})
        if len(records) >= 4096:
            writer.write(pa.Table.from_pylist(records, schema=writer.schema))
            records = []
    if records:
        writer.write(pa.Table.from_pylist(records, schema=writer.schema))
    out = []
    for task, group in groups.items():
        if not group["labels"]:
            continue
        positive = TASK_POSITIVE[task]
        agg = score_group(group["labels"], group["preds"], group["oks"], positive)
        out.append({
            "model": name, "benchmark": bench, "task": task, "k": k, "f1_mean": agg["f1_mean"],
            "f1_std": agg["f1_std"], "precision_mean": agg["precision_mean"],
            "recall_mean": agg["recall_mean"], "support": agg["n"],
            "parse_error_rate": agg["parse_error_rate"],
            "latency_s_mean": sum(group["latency"]) / len(group["latency"]),
            "mode": mode, "kind": "custom" if is_custom else "safety", "positives": agg["support"],
            "f1_runs": agg["f1_runs"], "train_size": spec.train_size, "budget": spec.budget,
            "model_uri": spec.uri,
        })
    return out
