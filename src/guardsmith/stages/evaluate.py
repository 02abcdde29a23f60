"""Guard evaluation (method A.8): harmful F1 per benchmark and task, mean ± std over k runs.

Each model (``name=uri``; options ``name[size=500;budget=3]=uri``) is run in each mode over
each benchmark (``name=uri`` of an interactions table) with ``k`` samples per row from one
prompt pass; sample ``r`` of every row forms run ``r``. Tasks: prompt harm on rows with a
``prompt_harm`` label, response harm on rows with a ``response_harm`` label (and refusal if
asked). Rows carrying a ``policy`` text are judged against it (custom-policy benchmarks).

Per run, F1 of the positive class (``harmful``; ``refusal`` for the refusal task) is computed
with :func:`guardsmith.metrics.harm_f1`: an output with no usable label for the task counts as
wrong. The metrics table holds the mean and population std over runs, precision, recall,
support (scored rows), parse-error rate and mean latency per sample.

Outputs under ``output``: ``predictions`` and ``metrics`` tables, and ``report/`` (see
:mod:`guardsmith.report`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from guardsmith.config import option
from guardsmith.errors import GuardsmithError
from guardsmith.guard_runner import open_backend, run_guard

HELP = (
    "Evaluate guard models on benchmark tables: k samples per row (temperature 0.6, top-p 0.95), "
    "harmful F1 per benchmark for the prompt and response tasks (mean ± std over the k runs), "
    "parse-error rate and latency per sample; writes predictions and metrics tables and a "
    "Markdown/HTML report with plots."
)

TASK_POSITIVE = {"prompt_harm": "harmful", "response_harm": "harmful", "response_refusal": "refusal"}

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
class EvaluateConfig:
    """Settings of the ``evaluate`` stage."""

    models: list[str] = option(help="Guard models: URI, or name=URI, or name[size=500;budget=3]=URI "
                                    "(options separated by ';'). openai:http://host/v1?model=M also works.")
    benchmarks: list[str] = option(help="Benchmarks: name=URI of an interactions table (or a URI; "
                                        "the name is then its last path component).")
    output: str = option(help="Output prefix URI: predictions, metrics and report/ are written under it.")
    modes: list[str] = option(help="Guard modes to evaluate: R and/or NR.", factory=lambda: ["R"])
    dual: bool = option(False, "Dual-mode guards: start each prompt with the mode tag.")
    k: int = option(4, "Generations per sample (runs).")
    temperature: float = option(0.6, "Sampling temperature.")
    top_p: float = option(0.95, "Nucleus sampling top-p.")
    max_tokens: int = option(512, "Maximum new tokens per sample.")
    seed: int = option(0, "Sampling seed.")
    tasks: list[str] = option(help="Tasks to score: prompt_harm, response_harm, response_refusal.",
                              factory=lambda: ["prompt_harm", "response_harm"])
    custom_benchmarks: list[str] | None = option(None, "Names of custom-policy benchmarks; default: "
                                                       "those whose rows carry a policy text.")
    limit: int | None = option(None, "Use at most this many rows per benchmark (quick runs).")
    title: str = option("Guard evaluation", "Report title.")
    backend: Literal["transformers", "vllm"] = option("transformers", "Inference backend for model folders.")
    batch_size: int = option(8, "Requests per generate call (transformers backend).")
    chunk_rows: int = option(256, "Rows sent to the backend at a time.")
    backend_options: dict[str, Any] | None = option(None, "Extra backend keywords (YAML only).")


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

    def __str__(self) -> str:
        lines = [f"{m['model']} / {m['benchmark']} / {m['task']}: F1 {m['f1_mean']:.3f} ± "
                 f"{m['f1_std']:.3f} (n {m['support']}, parse errors {m['parse_error_rate']:.3f})"
                 for m in self.summary]
        return "\n".join(lines + [f"predictions: {self.predictions}", f"metrics: {self.metrics}",
                                  f"report: {self.report_md}", f"html: {self.report_html}"])


@dataclass
class ModelSpec:
    """A model to evaluate: display name, URI and known attributes."""

    name: str
    uri: str
    options: dict[str, str] = field(default_factory=dict)
    train_size: int | None = None
    budget: int | None = None


_SPEC = re.compile(r"^(?P<name>[^=\[\]/:]+?)\s*(?:\[(?P<opts>[^\]]*)\])?\s*=(?P<uri>.+)$")


def _default_name(uri: str) -> str:
    return Path(str(uri).rstrip("/")).name or str(uri)


def parse_model_spec(spec: str) -> ModelSpec:
    """``uri`` | ``name=uri`` | ``name[k=v;k=v]=uri`` -> :class:`ModelSpec` (attributes from options)."""
    from guardsmith.report import parse_count

    text = str(spec).strip()
    m = _SPEC.match(text)
    if not m:
        if not text:
            raise GuardsmithError("empty model spec")
        return ModelSpec(name=_default_name(text), uri=text)
    options: dict[str, str] = {}
    for item in (m.group("opts") or "").split(";"):
        if not item.strip():
            continue
        if "=" not in item:
            raise GuardsmithError(f"model spec {spec!r}: option {item.strip()!r} is not key=value")
        key, value = (p.strip() for p in item.split("=", 1))
        options[key] = value
    out = ModelSpec(name=m.group("name").strip(), uri=m.group("uri").strip(), options=options)
    for key in ("size", "train_size"):
        if key in options:
            out.train_size = _count(options[key], spec, key, parse_count)
    if "budget" in options:
        out.budget = _count(options["budget"], spec, "budget", parse_count)
    return out


def _count(value: str, spec: str, key: str, parse: Any) -> int:
    count = parse(value)
    if count is None:
        raise GuardsmithError(f"model spec {spec!r}: {key}={value!r} is not a number")
    return count


def parse_benchmark_spec(spec: str) -> tuple[str, str]:
    """``name=uri`` or ``uri`` -> (name, uri)."""
    m = _SPEC.match(str(spec).strip())
    if m and not m.group("opts"):
        return m.group("name").strip(), m.group("uri").strip()
    if m:
        raise GuardsmithError(f"benchmark spec {spec!r}: options are not supported")
    return _default_name(str(spec).strip()), str(spec).strip()


_SIZE_KEYS = ("train_size", "subset", "subset_size", "train_used", "n_train", "train_examples",
              "num_train_examples", "n_examples", "num_examples", "examples", "size")
"""Keys read for the training-set size, in order (the sft stage's summary has ``subset`` and
``counts.train_used``); looked up at the top level and under ``guardsmith``/``training``/``config``/``counts``."""
_BUDGET_KEYS = ("budget", "sentence_budget")


def _pick(meta: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    from guardsmith.report import parse_count

    nested = ("guardsmith", "training", "config", "counts")
    scopes = [meta] + [meta[k] for k in nested if isinstance(meta.get(k), Mapping)]
    for key in keys:
        for scope in scopes:
            if key in scope:
                value = parse_count(scope[key])
                if value is not None:
                    return value
    return None


_CARD_ROW = re.compile(r"^\|\s*([A-Za-z_ ]+?)\s*\|\s*([0-9.]+[kK]?)\s*\|\s*$", re.MULTILINE)


def model_metadata(folder: Path) -> dict[str, int]:
    """``train_size`` / ``budget`` from ``guardsmith_training.json`` or the model card front matter."""
    metas: list[Mapping[str, Any]] = []
    info = folder / "guardsmith_training.json"
    if info.is_file():
        try:
            loaded = json.loads(info.read_text(encoding="utf-8"))
            if isinstance(loaded, Mapping):
                metas.append(loaded)
        except (OSError, ValueError):
            pass
    card = folder / "README.md"
    if card.is_file():
        try:
            import yaml

            text = card.read_text(encoding="utf-8")
            if text.startswith("---"):
                front = yaml.safe_load(text.split("---", 2)[1])
                if isinstance(front, Mapping):
                    metas.append(front)
            facts = dict(_CARD_ROW.findall(text))  # "| examples | 500 |" rows of the card's tables
            metas.append({k.strip(): v.strip() for k, v in facts.items()})
        except (OSError, ValueError, IndexError, yaml.YAMLError):
            pass
    out: dict[str, int] = {}
    for meta in metas:
        for name, keys in (("train_size", _SIZE_KEYS), ("budget", _BUDGET_KEYS)):
            if name not in out and (value := _pick(meta, keys)) is not None:
                out[name] = value
    return out


def check_config(cfg: EvaluateConfig) -> tuple[list[ModelSpec], list[tuple[str, str]]]:
    """Validate settings and parse the model and benchmark specs."""
    from guardsmith.tables import TASKS

    if cfg.k < 1:
        raise GuardsmithError(f"k must be at least 1, got {cfg.k}")
    if not cfg.modes or any(m not in ("R", "NR") for m in cfg.modes) or len(set(cfg.modes)) != len(cfg.modes):
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
    from guardsmith.report import build_report

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
            with open_backend(spec.uri, backend=cfg.backend, batch_size=cfg.batch_size,
                              options=cfg.backend_options) as backend:
                for mode in cfg.modes:
                    name = spec.name if len(cfg.modes) == 1 else f"{spec.name} ({mode})"
                    for bench, rows in benchmarks.items():
                        metric_records += _evaluate_one(cfg, backend, writer, spec, name, mode, bench,
                                                        rows, bench in custom, track)
        storage.write_table(metrics_uri, pa.Table.from_pylist(metric_records, schema=metric_schema),
                            "metrics")
    report = build_report([metrics_uri], report_uri, cfg.title)
    return EvaluateResult(predictions=pred_uri, metrics=metrics_uri, report_md=report.markdown,
                          report_html=report.html, plots=report.plots, summary=metric_records)


def _evaluate_one(cfg: EvaluateConfig, backend: Any, writer: Any, spec: ModelSpec, name: str, mode: str,
                  bench: str, rows: list[dict[str, Any]], is_custom: bool, track: Any) -> list[dict[str, Any]]:
    """Run one model/mode over one benchmark; write its predictions, return its metrics records."""
    groups = {t: {"labels": [], "preds": [[] for _ in range(cfg.k)], "oks": [[] for _ in range(cfg.k)],
                  "latency": []} for t in cfg.tasks}
    records: list[dict[str, Any]] = []
    results = run_guard(backend, rows, mode=mode, dual=cfg.dual, n=cfg.k, temperature=cfg.temperature,
                        top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed, chunk_rows=cfg.chunk_rows)
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
            "model": name, "benchmark": bench, "task": task, "k": cfg.k, "f1_mean": agg["f1_mean"],
            "f1_std": agg["f1_std"], "precision_mean": agg["precision_mean"],
            "recall_mean": agg["recall_mean"], "support": agg["n"],
            "parse_error_rate": agg["parse_error_rate"],
            "latency_s_mean": sum(group["latency"]) / len(group["latency"]),
            "mode": mode, "kind": "custom" if is_custom else "safety", "positives": agg["support"],
            "f1_runs": agg["f1_runs"], "train_size": spec.train_size, "budget": spec.budget,
            "model_uri": spec.uri,
        })
    return out
