"""Guard evaluation (method A.8): harmful F1 per benchmark and task, mean ± std over k runs.

Each model (``name=uri``; options ``name[size=500;budget=3]=uri``; a guard format
``name=FORMAT:uri``) is run in each mode over
each benchmark (``name=uri`` of an interactions table) with ``samples_per_row`` (k) samples per
row from one prompt pass; sample ``r`` of every row forms run ``r``. Tasks: prompt harm on rows with a
``prompt_harm`` label, response harm on rows with a ``response_harm`` label (and refusal if
asked). Rows carrying a ``policy`` text are judged against it (custom-policy benchmarks).

Per run, F1 of the positive class (``harmful``; ``refusal`` for the refusal task) is computed
with :func:`guardsmith.metrics.harm_f1`: an output with no usable label for the task counts as
wrong. The metrics table holds the mean and population std over runs, precision, recall,
support (scored rows), parse-error rate and mean latency per sample.

Guard formats (:mod:`guardsmith.guard.formats`): each model is prompted and parsed in its format:
the one named in its spec, else the one recorded with a model trained here (its training summary;
``guardsmith`` unless it records another), else ``guardsmith`` (said in the log). Tasks the format
cannot answer are left out for that model (no metrics row, never guessed).

Scores: where the format has a single verdict token (``fmt.verdict(row)``) and the backend
implements ``answer_probability``, P(unsafe) of each row is written to the predictions
(``p_unsafe``, on the task the verdict answers) and the metrics get AUROC, AUPRC and a threshold
sweep (F1 / precision / recall at 0.05 .. 0.95), also written as ``threshold_sweep.json``.

Outputs under ``output``: ``predictions`` and ``metrics`` tables, ``threshold_sweep.json`` (when
any guard has scores) and ``report/`` (see :mod:`guardsmith.reporting`).

Re-runs: the predictions and metrics tables record the run's work identity
(:func:`evaluate_identity`: models and benchmarks by content, settings, guardsmith version); a
re-run recomputes and replaces every output atomically (an evaluation is a measurement: running
it again is how a changed model or serving stack is measured).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from guardsmith import settings
from guardsmith.config import option
from guardsmith.errors import GuardsmithError
from guardsmith.guard import has_response
from guardsmith.guard.formats import GuardFormat, get_format
from guardsmith.guard_runner import (
    RowScore, can_score, guard_scores, model_folder_uri, open_guard, recorded_format, run_guard,
)
from guardsmith.specs import ModelSpec, parse_benchmark_spec, parse_model_spec
from guardsmith.vocabulary import MODES, TASK_POSITIVE

HELP = (
    "Evaluate guard models on benchmark tables: k samples per row (temperature 0.6, top-p 0.95), "
    "harmful F1 per benchmark for the prompt and response tasks (mean ± std over the k runs), "
    "parse-error rate and latency per sample; writes predictions and metrics tables and a "
    "Markdown/HTML report with plots."
)


PREDICTION_EXTRAS = [
    pa.field("mode", pa.string(), nullable=False, metadata={"help": "guard mode, R or NR"}),
    pa.field("p_unsafe", pa.float64(), nullable=True,
             metadata={"help": "P(unsafe verdict) of the row from the guard's verdict token, on the task the "
                               "verdict answers; null where the format or backend gives none"}),
]
SWEEP_TYPE = pa.list_(pa.struct([pa.field("threshold", pa.float64()), pa.field("f1", pa.float64()),
                                 pa.field("precision", pa.float64()), pa.field("recall", pa.float64())]))
"""Type of the metrics column ``sweep``: one entry per threshold."""
METRIC_EXTRAS = [
    pa.field("mode", pa.string(), nullable=False, metadata={"help": "guard mode, R or NR"}),
    pa.field("kind", pa.string(), nullable=False,
             metadata={"help": "safety, or custom for custom-policy benchmarks"}),
    pa.field("positives", pa.int64(), nullable=False, metadata={"help": "rows whose label is the positive class"}),
    pa.field("f1_runs", pa.list_(pa.float64()), nullable=False, metadata={"help": "F1 of each run"}),
    pa.field("train_size", pa.int64(), nullable=True, metadata={"help": "training examples of the model, if known"}),
    pa.field("budget", pa.int64(), nullable=True, metadata={"help": "sentence budget of the model, if known"}),
    pa.field("trained_by", pa.string(), nullable=True,
             metadata={"help": "stage that trained the model (sft, continual), from its training summary; null if unknown"}),
    pa.field("model_uri", pa.string(), nullable=False, metadata={"help": "model URI"}),
    pa.field("format", pa.string(), nullable=True,
             metadata={"help": "guard format the model was prompted and parsed in (guardsmith.guard.formats)"}),
    pa.field("scored", pa.int64(), nullable=True,
             metadata={"help": "rows of the support with a P(unsafe) (null: no scores)"}),
    pa.field("auroc", pa.float64(), nullable=True,
             metadata={"help": "AUROC of P(unsafe) over the scored rows (null: no scores or one class only)"}),
    pa.field("auprc", pa.float64(), nullable=True,
             metadata={"help": "AUPRC (average precision) of P(unsafe) over the scored rows"}),
    pa.field("sweep", SWEEP_TYPE, nullable=True,
             metadata={"help": "F1, precision and recall when P(unsafe) >= threshold, thresholds 0.05 .. 0.95"}),
]
"""Extra columns ``evaluate`` appends to the ``predictions`` / ``metrics`` schemas."""


@dataclass
class EvaluateConfig(settings.sampling(samples_per_row=4), settings.backend()):
    """Settings of the ``evaluate`` stage."""

    models: list[str] = option(help="Guard models: URI, or name=URI, or name[size=500;budget=3]=URI "
                                    "(options separated by ';'); the URI may start with a guard format, "
                                    "name=FORMAT:URI (e.g. wg=wildguard:s3://b/wildguard). "
                                    "openai:http://host/v1?model=M also works.")
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
    unsafe_scores: bool = option(True, "Also compute P(unsafe) per row (AUROC, AUPRC, threshold sweep) where the "
                                "guard's format has a single verdict token and the backend can score "
                                "(transformers, vLLM; an openai endpoint must return logprobs).")


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
    sweep: str | None = None
    """``threshold_sweep.json`` (None when no guard had scores)."""

    def __str__(self) -> str:
        lines = []
        for m in self.summary:
            shown = m["model"] if m.get("format") in (None, "guardsmith") else f"{m['model']} [{m['format']}]"
            line = (f"{shown} / {m['benchmark']} / {m['task']}: "
                    f"F1 {m['f1_mean']:.3f} ± {m['f1_std']:.3f} (n {m['support']}, "
                    f"parse errors {m['parse_error_rate']:.3f})")
            if m.get("auroc") is not None:
                line += f", AUROC {m['auroc']:.3f}, AUPRC {m['auprc']:.3f} ({m['scored']} scored)"
            lines.append(line)
        return "\n".join(lines + [f"predictions: {self.predictions}", f"metrics: {self.metrics}",
                                  f"report: {self.report_md}", f"html: {self.report_html}"]
                         + ([f"threshold sweep: {self.sweep}"] if self.sweep else [])
                         + [f"model card: {uri}" for uri in self.model_cards])




def model_metadata(folder: Path) -> dict[str, Any]:
    """``train_size`` / ``budget`` / ``trained_by`` of a model trained by guardsmith, from its `TrainingSummary`.

    Empty for a model without one; a malformed summary is an error naming its file.
    """
    from guardsmith.training import TrainingSummary

    summary = TrainingSummary.find(folder)
    if summary is None:
        return {}
    known = {"train_size": summary.train_rows, "budget": summary.budget, "trained_by": summary.stage}
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
    models = [parse_model_spec(s, strict_format=True) for s in cfg.models]
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


TEMPLATES = ("own", "format")
"""Model option ``template``: ``own`` sends a format with ``own_template`` (Llama Guard, Qwen3Guard)
the plain conversation for the checkpoint's chat template to build the prompt; ``format`` sends the
format's prompt text (``messages()``). Default: ``own`` unless the model was trained here."""


def log(message: str) -> None:
    """One line on stderr for the user (the CLI and KFP logs show it)."""
    print(f"[guardsmith] evaluate: {message}", file=sys.stderr, flush=True)


def resolve_models(models: list[ModelSpec]) -> list[ModelSpec]:
    """Check every model folder exists (downloading S3 models), fill in card attributes and
    decide each model's guard format: the one named in the spec; else the one recorded with a
    model trained here; else ``guardsmith``, said in the log."""
    from guardsmith.errors import redact
    from guardsmith.model_store import local_model

    for spec in models:
        folder = model_folder_uri(spec.uri)
        path = local_model(folder) if folder is not None else None
        recorded = recorded_format(path) if path is not None else None
        if spec.format is None:
            spec.format = recorded or "guardsmith"
            if recorded is None:
                log(f"model {spec.name} ({redact(spec.uri)}): no format named and no training summary; "
                    f"using the guardsmith format (name one with {spec.name}=FORMAT:URI)")
        elif recorded is not None and recorded != spec.format:
            log(f"model {spec.name}: trained to speak the {recorded} format; evaluating it in the "
                f"{spec.format} format as the spec asks")
        fmt = get_format(spec.format)
        template = spec.options.get("template")
        if template not in (None, *TEMPLATES):
            raise GuardsmithError(f"model spec {spec.name}: template={template!r}; expected one of {', '.join(TEMPLATES)}")
        if template is None and fmt.own_template:
            template = "format" if recorded is not None else "own"
            log(f"model {spec.name} ({fmt.name}): " + (
                "sending the plain conversation (the checkpoint's own chat template builds the prompt); "
                "add [template=format] to the name to send the format's prompt text" if template == "own" else
                "sending the format's prompt text (a model trained here)"))
        spec.options["template"] = template or "format"
        if path is None:
            continue
        meta = model_metadata(path)
        if spec.train_size is None:
            spec.train_size = meta.get("train_size")
        if spec.budget is None:
            spec.budget = meta.get("budget")
        spec.trained_by = meta.get("trained_by")
    return models


def score_group(labels: list[str], preds: list[list[str | None]], oks: list[list[bool]],
                positive: str) -> dict[str, Any]:
    """Per-run F1 for one (model, mode, benchmark, task) group and its aggregate."""
    from guardsmith.metrics import aggregate_runs, harm_f1

    runs = [harm_f1(labels, p, ok, positive=positive) for p, ok in zip(preds, oks)]
    agg = aggregate_runs(runs)
    return {**agg, "f1_runs": [r.f1 for r in runs]}


def evaluate_identity(cfg: EvaluateConfig, models: list[ModelSpec], benchmarks: list[tuple[str, str]]):
    """The work identity of an evaluation (recorded in its predictions and metrics tables): each
    model (its folder's content; a backend spec by name) and benchmark table by content, with its
    name and options, the settings and the guardsmith version."""
    from guardsmith.identity import work_identity
    from guardsmith.teacher import model_location

    inputs = {f"model {spec.name}": model_location(spec.uri) or spec.uri for spec in models}
    inputs.update({f"benchmark {name}": uri for name, uri in benchmarks})
    return work_identity("evaluate", cfg, inputs, exclude=("models", "benchmarks", "output"),
                         extra={"model_specs": sorted(str(m) for m in cfg.models)})


def run(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate every model in every mode on every benchmark; write tables and the report."""
    from guardsmith import storage, tables
    from guardsmith.progress import track
    from guardsmith.reporting import build_report

    models, bench_specs = check_config(cfg)
    benchmarks = {name: load_benchmark(name, uri, cfg.tasks, cfg.limit) for name, uri in bench_specs}
    custom = set(cfg.custom_benchmarks) if cfg.custom_benchmarks is not None else {
        name for name, rows in benchmarks.items() if any(r.get("policy") for r in rows)}
    identity = evaluate_identity(cfg, models, bench_specs)
    resolve_models(models)
    pred_uri, metrics_uri = storage.join(cfg.output, "predictions"), storage.join(cfg.output, "metrics")
    report_uri = storage.join(cfg.output, "report")
    pred_schema = pa.schema(list(tables.schema("predictions")) + PREDICTION_EXTRAS,
                            metadata=tables.schema("predictions").metadata)
    metric_schema = pa.schema(list(tables.schema("metrics")) + METRIC_EXTRAS,
                              metadata=tables.schema("metrics").metadata)
    metric_records: list[dict[str, Any]] = []
    with storage.TableWriter(pred_uri, pred_schema, "predictions", identity=identity) as writer:
        for spec in models:
            fmt = get_format(spec.format or "guardsmith")
            left_out = [t for t in cfg.tasks if t not in fmt.tasks]
            if left_out:
                log(f"model {spec.name}: the {fmt.name} format does not answer {', '.join(left_out)}; "
                    f"not scored for it")
            with open_guard(spec.uri, settings.group_values(cfg, settings.BackendChoice)) as backend:
                scoring = cfg.unsafe_scores and type(fmt).verdict is not GuardFormat.verdict and can_score(backend)
                if cfg.unsafe_scores and type(fmt).verdict is not GuardFormat.verdict and not scoring:
                    log(f"model {spec.name}: the {backend.kind} backend gives no answer probabilities; no P(unsafe)")
                for mode in cfg.modes:
                    name = spec.name if len(cfg.modes) == 1 else f"{spec.name} ({mode})"
                    for bench, rows in benchmarks.items():
                        metric_records += _evaluate_one(cfg, backend, writer, spec, fmt, name, mode, bench,
                                                        rows, bench in custom, track, scoring)
        storage.write_table(metrics_uri, pa.Table.from_pylist(metric_records, schema=metric_schema),
                            "metrics", identity=identity)
    sweep_uri = write_sweep(metric_records, storage.join(cfg.output, SWEEP_FILE))
    report = build_report([metrics_uri], report_uri, cfg.title)
    cards = write_model_cards(models, metric_records, storage.join(cfg.output, "model_cards"))
    return EvaluateResult(predictions=pred_uri, metrics=metrics_uri, report_md=report.markdown,
                          report_html=report.html, plots=report.plots, summary=metric_records,
                          model_cards=cards, sweep=sweep_uri)


SWEEP_FILE = "threshold_sweep.json"
"""File under ``output`` with AUROC, AUPRC and the threshold sweep of every scored metrics cell."""


def write_sweep(records: list[dict[str, Any]], uri: str) -> str | None:
    """Write the scored cells (model, mode, format, benchmark, task, scored, auroc, auprc, sweep)
    as a JSON list to ``uri``; None (nothing written) when no cell has scores."""
    from guardsmith import storage

    keys = ("model", "mode", "format", "benchmark", "task", "scored", "auroc", "auprc", "sweep")
    scored = [{k: r[k] for k in keys} for r in records if r.get("sweep")]
    if not scored:
        return None
    storage.write_json_atomic(uri, scored)
    return uri


def write_model_cards(models: list[ModelSpec], records: list[dict[str, Any]], out_uri: str) -> list[str]:
    """For each evaluated model folder, its model card with the harmful F1 results of this run as
    model-index metadata, at ``<out_uri>/<name>/README.md`` (the model folder is left as it was)."""
    from guardsmith import storage
    from guardsmith.model_card import CARD_FILE, evaluated_card, guard_eval_result
    from guardsmith.model_store import local_model

    written = []
    for spec in models:
        folder = model_folder_uri(spec.uri)
        if folder is None:
            continue
        results = [guard_eval_result(r["benchmark"], r["task"], r["f1_mean"], mode=r["mode"])
                   for r in records if r["model_uri"] == spec.uri and r["f1_mean"] is not None]
        if not results:
            continue
        uri = storage.join(out_uri, spec.name, CARD_FILE)
        storage.write_bytes_atomic(uri, evaluated_card(local_model(folder), results, spec.name).encode())
        written.append(uri)
    return written


def score_cells(labels: list[str], scores: list[float | None], positive: str) -> dict[str, Any]:
    """``scored``, ``auroc``, ``auprc`` and ``sweep`` of one metrics cell from its rows' P(unsafe)
    (None entries: rows without a score); all None when no row has one."""
    from guardsmith.metrics import score_metrics, threshold_sweep

    pairs = [(y, p) for y, p in zip(labels, scores) if p is not None]
    if not pairs:
        return {"scored": None, "auroc": None, "auprc": None, "sweep": None}
    ys, ps = [y for y, _ in pairs], [p for _, p in pairs]
    ranked = score_metrics(ys, ps, positive)
    return {"scored": len(pairs), "auroc": ranked.auroc, "auprc": ranked.auprc,
            "sweep": threshold_sweep(ys, ps, positive)}


def plan_requests(fmt: GuardFormat, rows: list[dict[str, Any]],
                  tasks: list[str]) -> list[tuple[dict[str, Any], dict[str, Any], list[str]]]:
    """The requests that answer every labelled task of ``rows`` in ``fmt``: (row to ask about,
    benchmark row, tasks read from the answer), in row order.

    A row is asked as it is for the tasks ``fmt.row_tasks(row)`` covers. A single-verdict format
    (Llama Guard, ShieldGemma, Qwen3Guard) judges only the last turn, so a row with a response and a
    prompt-harm label is asked a second time without its response for the prompt task. A labelled
    task no request answers stays with the first request: no answer, counted as a parse failure.
    """
    plan = []
    for row in rows:
        labelled = [t for t in tasks if row.get(t) is not None]
        if not labelled:
            continue
        covered = set(fmt.row_tasks(row))
        extra: list[str] = []
        if has_response(row) and any(t not in covered for t in labelled):
            alone = {**row, "response": None, "response_harm": None, "response_refusal": None}
            extra = [t for t in labelled if t not in covered and t in fmt.row_tasks(alone)]
        first = [t for t in labelled if t not in extra]
        if first:
            plan.append((row, row, first))
        if extra:
            plan.append((alone, row, extra))
    return plan


def _evaluate_one(cfg: EvaluateConfig, backend: Any, writer: Any, spec: ModelSpec, fmt: GuardFormat, name: str,
                  mode: str, bench: str, rows: list[dict[str, Any]], is_custom: bool, track: Any,
                  scoring: bool = False) -> list[dict[str, Any]]:
    """Run one model/mode over one benchmark in the model's format; write its predictions (with
    P(unsafe) when ``scoring``), return its metrics records."""
    k = cfg.samples_per_row
    tasks = [t for t in cfg.tasks if t in fmt.tasks]
    groups = {t: {"labels": [], "preds": [[] for _ in range(k)], "oks": [[] for _ in range(k)],
                  "latency": [], "scores": []} for t in tasks}
    records: list[dict[str, Any]] = []
    plan = plan_requests(fmt, rows, tasks)
    asked = [request for request, _, _ in plan]
    own = spec.options.get("template") == "own"
    row_scores: list[RowScore | None] = [None] * len(asked)
    if scoring and any(fmt.verdict(r) is not None for r in asked):
        row_scores = guard_scores(backend, asked, fmt, mode=mode, dual=cfg.dual, chunk_rows=cfg.chunk_rows,
                                  own_template=own)
    results = run_guard(backend, asked, mode=mode, dual=cfg.dual, sampling=settings.group_values(cfg, settings.Sampling),
                        chunk_rows=cfg.chunk_rows, fmt=fmt, own_template=own)
    for index, result in enumerate(track(results, f"evaluate {name} on {bench}", total=len(asked))):
        _, row, answered = plan[index]
        score = row_scores[index]
        for task in answered:
            label = row[task]
            group = groups[task]
            group["labels"].append(label)
            p_unsafe = score.p_unsafe if score is not None and score.task == task else None
            group["scores"].append(p_unsafe)
            for r, sample in enumerate(result.samples):
                pred = sample.prediction(task)
                group["preds"][r].append(pred)
                group["oks"][r].append(pred is not None)
                group["latency"].append(sample.latency_s)
                records.append({"model": name, "benchmark": bench, "task": task, "run": r,
                                "id": str(row["id"]), "label": label, "prediction": pred,
                                "parse_ok": pred is not None, "latency_s": sample.latency_s, "mode": mode,
                                "p_unsafe": p_unsafe})
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
            "f1_runs": agg["f1_runs"], "train_size": spec.train_size, "budget": spec.budget, "trained_by": spec.trained_by,
            "model_uri": spec.uri, "format": fmt.name,
            **score_cells(group["labels"], group["scores"], positive),
        })
    return out
