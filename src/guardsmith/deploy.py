"""Deployment helpers: the CI quality gate, production-baseline comparison, image-digest pinning,
and the KFP upload/submit entry points that the Helm chart's hook Job and CronJob run.

Gate expressions (``--gate "METRIC OP VALUE"``)
-----------------------------------------------
``OP`` is one of ``>=``, ``>``, ``<=``, ``<``, ``==`` (``==`` compares with a 1e-9 tolerance).
``VALUE`` is a number, or ``baseline`` (the same metric measured on a baseline metrics file),
optionally shifted: ``baseline-0.01``, ``baseline+0.02`` or scaled: ``baseline*0.98``.
Several gates may be given (repeat ``--gate``, or separate them with ``;``); all must pass.

``METRIC`` names a number in the run's metrics. Against the rows of a metrics table (the
``evaluate`` stage's ``metrics`` table: one row per model, benchmark and task, with columns
``f1_mean``, ``precision_mean``, ``recall_mean``, ``parse_error_rate``, ``support``, ``mode``,
``kind``, ...) it is a *selector*::

    COLUMN[KEY=VALUE, KEY=VALUE|VALUE, ...]          exactly one row must match
    AGG(COLUMN[KEY=VALUE, ...])                      AGG: mean, min, max, sum, count
    ALIAS[KEY=VALUE, ...]                            a named selector (below), narrowed

e.g. ``f1_mean[benchmark=aegis2_test, task=prompt_harm]``, ``min(f1_mean[task=response_harm])``,
``harmful_f1_avg[benchmark=wildguardtest]``. Filter keys are column names; values are compared
as text and ``|`` separates alternatives. Aliases (:data:`ALIASES`):

============================  ===============================================================
``harmful_f1_avg``            ``mean(f1_mean[task=prompt_harm|response_harm])``
``harmful_f1_min``            ``min(f1_mean[task=prompt_harm|response_harm])``
``prompt_harm_f1_avg``        ``mean(f1_mean[task=prompt_harm])``
``response_harm_f1_avg``      ``mean(f1_mean[task=response_harm])``
``refusal_f1_avg``            ``mean(f1_mean[task=response_refusal])``
``parse_error_rate_max``      ``max(parse_error_rate)``
============================  ===============================================================

A metrics table may hold several models (``guard_training`` evaluates ``sft`` and
``continual``). A gate must see one model: pass ``model=`` (the CLI's ``--gate-model``; for
``guard_training`` runs it defaults to ``continual``, the guard the pipeline ships) or put
``model=NAME`` in the selector; rows of several models are never averaged silently. Baseline
values are computed with the same selector on the baseline file, with any model filter replaced
by ``baseline_model`` (when the baseline holds one model, none is needed).

Against a flat mapping ``{name: number}`` (a JSON/YAML file or a dict, e.g. a recorded
production baseline ``{"harmful_f1_avg": 0.83}`` or KFP metric names such as
``f1/continual/R/aegis2_test/prompt_harm``) ``METRIC`` is looked up by its exact name (spaces
ignored).

A metric that cannot be computed (no matching row, several rows without an aggregate, several
models, a missing key, NaN) makes its gate fail with the reason; a malformed expression is a
:class:`~guardsmith.errors.GuardsmithError` at parse time, before anything is submitted.

Image digests
-------------
``images/digests.yaml`` records, per image kind (``cpu``, ``train``, ``infer``; the kinds of
:data:`guardsmith.kfp_support.IMAGE_KINDS`), the repository, tag and pushed digest written by
``scripts/build_images.sh``. :func:`image_env` turns it into the compile-time variables
``GUARDSMITH_IMAGE_<KIND>=repo@sha256:...`` (``repo:tag`` while a digest is still a placeholder).

KFP entry points (``python -m guardsmith.deploy ...``)
------------------------------------------------------
``upload`` uploads every ``<dir>/<name>/pipeline.yaml`` as a new version (named by content hash,
reused when unchanged; the same names as ``guardsmith pipeline submit``); ``submit`` starts a run
from ``<dir>/<name>/presets/<preset>.yaml`` (``{timestamp}`` / ``{date}`` in ``--set`` values are
expanded, so a scheduled run gets a fresh ``work_root``); ``gate`` evaluates gates on a metrics
table or file; ``image-env`` prints the pinned compile-time image variables.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from guardsmith.errors import GuardsmithError

# =========================================================================== gate expressions

OPERATORS = (">=", "<=", "==", ">", "<")
AGGREGATES = ("mean", "min", "max", "sum", "count")
HARM_TASKS = ("prompt_harm", "response_harm")

ALIASES: dict[str, str] = {
    "harmful_f1_avg": "mean(f1_mean[task=prompt_harm|response_harm])",
    "harmful_f1_min": "min(f1_mean[task=prompt_harm|response_harm])",
    "prompt_harm_f1_avg": "mean(f1_mean[task=prompt_harm])",
    "response_harm_f1_avg": "mean(f1_mean[task=response_harm])",
    "refusal_f1_avg": "mean(f1_mean[task=response_refusal])",
    "parse_error_rate_max": "max(parse_error_rate)",
}
"""Named selectors over the ``metrics`` table (see the module docstring)."""

GATE_EXAMPLE = 'e.g. "harmful_f1_avg>=0.80" or "f1_mean[benchmark=aegis2_test,task=prompt_harm]>=baseline-0.01"'
_NAME = re.compile(r"^[A-Za-z_][\w./\-]*$")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RHS = re.compile(rf"^(?:(?P<num>{_NUMBER})|baseline(?:(?P<bop>[-+*])(?P<bnum>{_NUMBER}))?)$")


@dataclass(frozen=True)
class Selector:
    """Which rows of a metrics table, which column, and how several rows are combined."""

    column: str
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    agg: str | None = None

    def filter_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.filters)

    def with_filter(self, key: str, values: tuple[str, ...] | None) -> "Selector":
        """A copy with filter ``key`` set to ``values`` (removed when None)."""
        rest = [(k, v) for k, v in self.filters if k != key]
        if values is not None:
            rest.append((key, values))
        return Selector(self.column, tuple(sorted(rest)), self.agg)

    def __str__(self) -> str:
        inner = self.column
        if self.filters:
            inner += "[" + ",".join(f"{k}={'|'.join(v)}" for k, v in self.filters) + "]"
        return f"{self.agg}({inner})" if self.agg else inner


@dataclass(frozen=True)
class Gate:
    """One parsed gate: ``metric op threshold`` (threshold a number or relative to a baseline)."""

    text: str
    metric: str
    selector: Selector
    op: str
    number: float | None = None
    baseline_op: str | None = None
    baseline_number: float | None = None

    @property
    def uses_baseline(self) -> bool:
        return self.number is None

    def threshold_text(self) -> str:
        if self.number is not None:
            return _fmt(self.number)
        return "baseline" + (f"{self.baseline_op}{_fmt(self.baseline_number)}" if self.baseline_op else "")

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold_text()}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan"


def _bad(text: str, why: str) -> GuardsmithError:
    return GuardsmithError(f"bad gate {text!r}: {why} ({GATE_EXAMPLE}; operators: {', '.join(OPERATORS)})")


def _split_operator(text: str) -> tuple[str, str, str]:
    """Split at the comparison operator that is outside brackets and parentheses."""
    depth = 0
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif depth == 0 and ch in "<>=":
            op = text[i:i + 2] if text[i:i + 2] in (">=", "<=", "==") else ch
            found.append((i, op))
            i += len(op)
            continue
        i += 1
    for wrong, right in (("=>", ">="), ("=<", "<="), ("!=", None)):
        if wrong in text:
            raise _bad(text, f"'{wrong}' is not an operator" + (f"; did you mean '{right}'?" if right else ""))
    if not found:
        raise _bad(text, "no comparison operator")
    if len(found) > 1:
        raise _bad(text, f"more than one comparison operator ({', '.join(op for _, op in found)})")
    pos, op = found[0]
    if op == "=":
        raise _bad(text, "'=' is not a comparison; use '==' (or '>=' / '<=')")
    return text[:pos], op, text[pos + len(op):]


def _parse_filters(text: str, body: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    filters: dict[str, tuple[str, ...]] = {}
    for part in body.split(","):
        if not part.strip():
            raise _bad(text, "empty filter in [...]")
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not key or not value:
            raise _bad(text, f"filter {part.strip()!r} must be KEY=VALUE")
        if not _NAME.match(key):
            raise _bad(text, f"filter key {key!r} is not a column name")
        if key in filters:
            raise _bad(text, f"filter key {key!r} given twice")
        values = tuple(v.strip() for v in value.split("|"))
        if any(not v for v in values):
            raise _bad(text, f"empty alternative in filter {part!r}")
        filters[key] = values
    return tuple(sorted(filters.items()))


def parse_selector(metric: str, text: str | None = None) -> Selector:
    """Parse ``[AGG(]NAME[[filters]][)]``; aliases are expanded."""
    text = text or metric
    metric = metric.strip()
    agg = None
    match = re.fullmatch(r"(\w+)\s*\((.*)\)", metric)
    if match:
        agg, metric = match.group(1), match.group(2).strip()
        if agg not in AGGREGATES:
            raise _bad(text, f"unknown aggregate {agg!r}; use one of {', '.join(AGGREGATES)}")
    match = re.fullmatch(r"([^\[\]()\s]+)\s*(?:\[([^\[\]]*)\])?", metric)
    if not match or not _NAME.match(match.group(1)):
        raise _bad(text, f"cannot read metric {metric!r}")
    name, body = match.group(1), match.group(2)
    filters = _parse_filters(text, body) if body is not None else ()
    if name in ALIASES:
        if agg is not None:
            raise _bad(text, f"{name} already aggregates ({ALIASES[name]}); use its column instead")
        base = parse_selector(ALIASES[name])
        merged = base.filter_dict()
        merged.update(dict(filters))
        return Selector(base.column, tuple(sorted(merged.items())), base.agg)
    return Selector(name, filters, agg)


def parse_gate(text: str) -> Gate:
    """Parse one ``METRIC OP VALUE`` expression."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty expression")
    lhs, op, rhs = (x.strip() for x in _split_operator(text.strip()))
    if not lhs:
        raise _bad(text, "no metric before the operator")
    if not rhs:
        raise _bad(text, "no value after the operator")
    selector = parse_selector(lhs, text)
    match = _RHS.match(re.sub(r"\s+", "", rhs))
    if not match:
        raise _bad(text, f"value {rhs!r} must be a number or baseline[+-*NUMBER]")
    if match.group("num") is not None:
        number = float(match.group("num"))
        if not math.isfinite(number):
            raise _bad(text, "value must be finite")
        return Gate(text.strip(), lhs, selector, op, number=number)
    bnum = float(match.group("bnum")) if match.group("bnum") is not None else None
    return Gate(text.strip(), lhs, selector, op, baseline_op=match.group("bop"), baseline_number=bnum)


def parse_gates(items: str | Iterable[str]) -> list[Gate]:
    """Parse gate expressions; each item may hold several separated by ``;``."""
    if isinstance(items, str):
        items = [items]
    gates = [parse_gate(part) for item in items for part in str(item).split(";") if part.strip()]
    if not gates:
        raise GuardsmithError(f"no gate expression given ({GATE_EXAMPLE})")
    return gates


# =========================================================================== metrics sources

@dataclass
class Metrics:
    """Metrics to gate on: table rows (dicts) or a flat ``name -> number`` mapping."""

    origin: str
    rows: list[dict[str, Any]] | None = None
    flat: dict[str, float] | None = None


def _from_object(obj: Any, origin: str) -> Metrics:
    if isinstance(obj, Metrics):
        return obj
    if isinstance(obj, Mapping):
        if isinstance(obj.get("rows"), list):
            return _from_object(obj["rows"], origin)
        flat: dict[str, float] = {}
        for key, value in obj.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise GuardsmithError(f"{origin}: metric {key!r} is not a number ({value!r}); a flat "
                                      "metrics mapping holds name: number pairs")
            flat[re.sub(r"\s+", "", str(key))] = float(value)
        return Metrics(origin, flat=flat)
    if isinstance(obj, list):
        if not all(isinstance(r, Mapping) for r in obj):
            raise GuardsmithError(f"{origin}: a metrics list must hold one mapping per row")
        return Metrics(origin, rows=[dict(r) for r in obj])
    raise GuardsmithError(f"{origin}: metrics must be a table, a list of rows or a name: number mapping")


def load_metrics(source: Any) -> Metrics:
    """Metrics from a dict, a list of row dicts, a JSON/YAML file (path or URI), or a metrics table URI."""
    if not isinstance(source, (str, os.PathLike)):
        return _from_object(source, "metrics")
    uri = os.fspath(source)
    from guardsmith import storage

    if uri.lower().endswith((".json", ".yaml", ".yml")):
        import yaml

        try:
            raw = storage.read_bytes(uri)
        except GuardsmithError:
            raise
        except Exception as exc:  # pragma: no cover - storage maps its own errors
            raise GuardsmithError(f"cannot read metrics file {uri}: {exc}") from None
        try:
            obj = json.loads(raw) if uri.lower().endswith(".json") else yaml.safe_load(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise GuardsmithError(f"{uri} is not valid {'JSON' if uri.lower().endswith('.json') else 'YAML'}: "
                                  f"{str(exc).splitlines()[0]}") from None
        return _from_object(obj, uri)
    return Metrics(uri, rows=storage.read_table(uri).to_pylist())


# =========================================================================== evaluation

@dataclass
class GateResult:
    """The outcome of one gate."""

    gate: Gate
    passed: bool
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    reason: str = ""

    def detail(self) -> str:
        """``gate: value op threshold (baseline b)`` or ``gate: why it has no value``."""
        if self.value is None or self.threshold is None:
            return f"{self.gate}: {self.reason}"
        text = f"{self.gate}: {_fmt(self.value)} {self.gate.op if self.passed else _negated(self.gate.op)} {_fmt(self.threshold)}"
        if self.baseline is not None:
            text += f" (baseline {_fmt(self.baseline)})"
        return text + (f"; {self.reason}" if self.reason else "")

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.detail()}"


def _negated(op: str) -> str:
    return {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}[op]


@dataclass
class GateReport:
    """All gate outcomes; ``passed`` when every gate passed."""

    results: list[GateResult] = field(default_factory=list)
    origin: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    @property
    def message(self) -> str:
        """One line: ``gate passed (n/n)`` or ``gate failed: <first failure> (+k more)``."""
        n = len(self.results)
        if self.passed:
            return f"gate passed ({n}/{n}) on {self.origin}"
        first = self.failures[0]
        more = len(self.failures) - 1
        return f"gate failed on {self.origin}: {first.detail()}" + (f" (+{more} more failed)" if more else "")

    def __str__(self) -> str:
        return "\n".join([*(str(r) for r in self.results), self.message])

    def raise_for_failure(self) -> "GateReport":
        if not self.passed:
            raise GuardsmithError(self.message)
        return self


def _compare(value: float, op: str, threshold: float) -> bool:
    """``value op threshold``; equality (also inside >= and <=) allows 1e-9 relative rounding."""
    equal = math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)
    if op == "==":
        return equal
    if op == ">=":
        return value >= threshold or equal
    if op == "<=":
        return value <= threshold or equal
    return (value > threshold if op == ">" else value < threshold) and not equal


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def measure(selector: Selector, metrics: Metrics, model: str | None = None, metric_name: str | None = None) -> float:
    """The value of ``selector`` on ``metrics``; a :class:`GuardsmithError` says why when there is none.

    ``model`` filters rows by model unless the selector names ``model`` itself.
    """
    if metrics.flat is not None:
        key = re.sub(r"\s+", "", metric_name or str(selector))
        if key in metrics.flat:
            return metrics.flat[key]
        known = ", ".join(sorted(metrics.flat)[:12]) or "none"
        raise GuardsmithError(f"{key} is not in {metrics.origin} (names: {known})")
    rows = metrics.rows or []
    columns = sorted({k for r in rows for k in r})
    filters = selector.filter_dict()
    if model is not None and "model" not in filters:
        filters["model"] = (model,)
    for key in [selector.column, *filters]:
        if rows and key not in columns:
            raise GuardsmithError(f"column {key!r} is not in {metrics.origin} (columns: {', '.join(columns)})")
    matched = [r for r in rows if all(str(r.get(k)) in vals for k, vals in filters.items())]
    if not matched:
        hints = "; ".join(f"{k}: {', '.join(sorted({str(r.get(k)) for r in rows})[:12])}" for k in filters)
        raise GuardsmithError(f"no rows match {_describe(selector, filters)} in {metrics.origin}"
                              + (f" (values: {hints})" if hints else ""))
    models = sorted({str(r.get("model")) for r in matched if "model" in r})
    if len(models) > 1:
        raise GuardsmithError(f"{_describe(selector, filters)} matches rows of {len(models)} models "
                              f"({', '.join(models)}); choose one with --gate-model NAME or model=NAME")
    if selector.agg == "count":
        return float(len(matched))
    values = [_as_float(r.get(selector.column)) for r in matched]
    if any(v is None for v in values):
        raise GuardsmithError(f"column {selector.column!r} is not numeric in every matched row of {metrics.origin}")
    nums = [v for v in values if v is not None]
    if selector.agg is None:
        if len(nums) != 1:
            raise GuardsmithError(f"{_describe(selector, filters)} matches {len(nums)} rows; wrap it in "
                                  "mean(...), min(...) or max(...), or narrow it (e.g. benchmark=..., task=...)")
        value = nums[0]
    elif selector.agg == "mean":
        value = sum(nums) / len(nums)
    elif selector.agg == "min":
        value = min(nums)
    elif selector.agg == "max":
        value = max(nums)
    else:
        value = sum(nums)
    if not math.isfinite(value):
        raise GuardsmithError(f"{_describe(selector, filters)} is {value} in {metrics.origin}")
    return value


def _describe(selector: Selector, filters: Mapping[str, tuple[str, ...]]) -> str:
    return str(Selector(selector.column, tuple(sorted(filters.items())), selector.agg))


def _threshold(gate: Gate, base: float | None) -> float:
    if gate.number is not None:
        return gate.number
    assert base is not None
    if gate.baseline_op is None:
        return base
    n = gate.baseline_number or 0.0
    return {"+": base + n, "-": base - n, "*": base * n}[gate.baseline_op]


def evaluate_gates(gates: Sequence[Gate | str] | str, metrics: Any, *, baseline: Any = None,
                   model: str | None = None, baseline_model: str | None = None) -> GateReport:
    """Evaluate ``gates`` on ``metrics`` (see :func:`load_metrics`); returns a :class:`GateReport`.

    ``baseline`` (same forms as ``metrics``) is needed by gates whose value names ``baseline``.
    ``model`` selects the candidate's rows, ``baseline_model`` the baseline's.
    """
    parsed = parse_gates(gates) if isinstance(gates, str) else [g if isinstance(g, Gate) else parse_gate(g) for g in gates]
    if not parsed:
        raise GuardsmithError(f"no gate expression given ({GATE_EXAMPLE})")
    if any(g.uses_baseline for g in parsed) and baseline is None:
        names = ", ".join(str(g) for g in parsed if g.uses_baseline)
        raise GuardsmithError(f"gate {names} compares with a baseline; pass a baseline metrics file (--baseline)")
    cand = load_metrics(metrics)
    base = load_metrics(baseline) if baseline is not None else None
    report = GateReport(origin=cand.origin)
    for gate in parsed:
        try:
            value = measure(gate.selector, cand, model, gate.metric)
        except GuardsmithError as exc:
            report.results.append(GateResult(gate, False, reason=str(exc)))
            continue
        base_value = None
        if gate.uses_baseline:
            assert base is not None
            sel = gate.selector.with_filter("model", None)
            try:
                base_value = measure(sel, base, baseline_model, gate.metric)
            except GuardsmithError as exc:
                report.results.append(GateResult(gate, False, value=value, reason=f"baseline: {exc}"))
                continue
        threshold = _threshold(gate, base_value)
        report.results.append(GateResult(gate, _compare(value, gate.op, threshold), value, threshold, base_value))
    return report


def check_gates(gates: Sequence[Gate | str] | str, metrics: Any, **kwargs: Any) -> GateReport:
    """:func:`evaluate_gates`, raising a :class:`GuardsmithError` with the report's message on failure."""
    return evaluate_gates(gates, metrics, **kwargs).raise_for_failure()


def compare_to_baseline(metrics: Any, baseline: Any, names: Sequence[str] = ("harmful_f1_avg",), *,
                        tolerance: float = 0.0, higher_is_better: bool = True, model: str | None = None,
                        baseline_model: str | None = None) -> GateReport:
    """Is the candidate not worse than the production baseline on each metric in ``names``?

    Each name becomes ``NAME >= baseline-tolerance`` (``<= baseline+tolerance`` when lower is
    better, e.g. parse-error rates).
    """
    if tolerance < 0:
        raise GuardsmithError("tolerance must be >= 0")
    sign, op = ("-", ">=") if higher_is_better else ("+", "<=")
    gates = [f"{name}{op}baseline{sign}{tolerance!r}" for name in names]
    return evaluate_gates(gates, metrics, baseline=baseline, model=model, baseline_model=baseline_model)


# =========================================================================== gating a pipeline run

PIPELINE_GATE_MODEL: dict[str, str | None] = {"guard_training": "continual", "evaluation": None}
"""Default ``model`` of a pipeline's gate: guard_training ships its ``continual`` guard."""


def run_metrics_uri(work_root: str) -> str:
    """Where a pipeline run's ``evaluate`` task writes its metrics table."""
    from guardsmith import storage

    return storage.join(str(work_root), "evaluate", "metrics")


def gate_run(pipeline: str, work_root: str, gates: Sequence[Gate | str] | str, *, baseline: Any = None,
             model: str | None = None, baseline_model: str | None = None) -> GateReport:
    """Evaluate ``gates`` on the metrics a finished run of ``pipeline`` wrote under ``work_root``."""
    chosen = model if model is not None else PIPELINE_GATE_MODEL.get(pipeline)
    return evaluate_gates(gates, run_metrics_uri(work_root), baseline=baseline, model=chosen,
                          baseline_model=baseline_model)


# =========================================================================== image digests

IMAGE_KINDS = ("cpu", "train", "infer")
IMAGE_DIRS = {"cpu": "base", "train": "train", "infer": "infer"}
"""Image kind -> folder under ``images/`` holding its Dockerfile."""
DIGESTS_ENV = "GUARDSMITH_IMAGE_DIGESTS"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[\w][\w.\-]{0,127}$")
_REPOSITORY = re.compile(r"^(?:[A-Za-z0-9.\-]+(?::\d+)?/)?[a-z0-9]+(?:[._\-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._\-]+[a-z0-9]+)*)*$")


def repo_root() -> Path:
    """The source checkout this module lives in (``src/guardsmith/deploy.py`` -> repo root)."""
    return Path(__file__).resolve().parents[2]


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

    The compile-time default of :func:`guardsmith.kfp_support.image` (after ``GUARDSMITH_IMAGE_<KIND>``):
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
        "# `guardsmith.deploy.image_env()` pins compiled pipelines to repository@digest; an empty",
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


def record_digest(kind: str, repository: str, tag: str, digest: str, path: str | Path | None = None) -> ImageRecord:
    """Record a pushed image in ``images/digests.yaml`` (other kinds are kept)."""
    path = Path(path) if path is not None else digests_path()
    if kind not in IMAGE_KINDS:
        raise GuardsmithError(f"unknown image kind {kind!r}; use one of {', '.join(IMAGE_KINDS)}")
    if not _DIGEST.match(digest):
        raise GuardsmithError(f"digest {digest!r} must be sha256:<64 hex>")
    records, bases = load_digests(path), load_bases(path)
    records[kind] = ImageRecord(kind, repository, tag, digest)
    _write_digests(path, records, bases)
    return records[kind]


def record_base_digest(kind: str, digest: str, path: str | Path | None = None) -> str:
    """Record the digest the base image tag of ``kind`` resolved to; returns ``tag@digest``."""
    path = Path(path) if path is not None else digests_path()
    if kind not in IMAGE_KINDS:
        raise GuardsmithError(f"unknown image kind {kind!r}; use one of {', '.join(IMAGE_KINDS)}")
    if not _DIGEST.match(digest):
        raise GuardsmithError(f"digest {digest!r} must be sha256:<64 hex>")
    records, bases = load_digests(path), load_bases(path)
    bases[kind] = (bases[kind][0], digest)
    _write_digests(path, records, bases)
    return f"{bases[kind][0]}@{digest}"


# =========================================================================== KFP upload and submit

KFP_TOKEN_ENV = "GUARDSMITH_KFP_TOKEN"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def kfp_client(host: str, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host``, authenticated when credentials are around.

    ``$GUARDSMITH_KFP_TOKEN`` (a bearer token, e.g. from CI) wins; otherwise a projected
    service-account token at ``$KF_PIPELINES_SA_TOKEN_PATH`` (default
    ``/var/run/secrets/kubeflow/pipelines/token``: multi-user Kubeflow in-cluster) is used when
    it exists; otherwise no credentials (single-user KFP, port-forward).
    """
    import kfp

    token = os.environ.get(KFP_TOKEN_ENV, "").strip()
    if token:
        return kfp.Client(host=host, namespace=namespace, existing_token=token)
    token_path = os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_PATH
    if Path(token_path).is_file():
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        return kfp.Client(host=host, namespace=namespace,
                          credentials=ServiceAccountTokenVolumeCredentials(token_path))
    return kfp.Client(host=host, namespace=namespace)


def pipeline_display_name(name: str) -> str:
    """KFP pipeline name of pipeline ``name`` (as ``guardsmith pipeline submit`` names it)."""
    return f"guardsmith-{name.replace('_', '-')}"


def package_version_name(name: str, package: Path) -> str:
    """Version name of a compiled package: the pipeline name plus 12 hex of its sha256."""
    return f"{pipeline_display_name(name)}-{hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]}"


def upload_version(client: Any, name: str, package: str | Path, namespace: str | None = None) -> dict[str, Any]:
    """Upload ``package`` as a version of pipeline ``name`` unless a version with its content hash exists."""
    package = Path(package)
    display = pipeline_display_name(name)
    version_name = package_version_name(name, package)
    pipeline_id = client.get_pipeline_id(display)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=display, namespace=namespace).pipeline_id
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]})
    found = client.list_pipeline_versions(pipeline_id, filter=flt).pipeline_versions or []
    if found:
        return {"pipeline": display, "pipeline_id": pipeline_id, "version": version_name,
                "version_id": found[0].pipeline_version_id, "created": False}
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    return {"pipeline": display, "pipeline_id": pipeline_id, "version": version_name,
            "version_id": version.pipeline_version_id, "created": True}


def discover_packages(root: str | Path) -> dict[str, Path]:
    """``name -> <root>/<name>/pipeline.yaml`` for every compiled package under ``root``."""
    root = Path(root)
    found = {p.parent.name: p for p in sorted(root.glob("*/pipeline.yaml"))}
    if not found:
        raise GuardsmithError(f"no compiled pipelines (<name>/pipeline.yaml) under {root}")
    return found


def upload_all(client: Any, root: str | Path, namespace: str | None = None,
               names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Upload every (or the named) compiled package under ``root``; returns one record per pipeline."""
    packages = discover_packages(root)
    unknown = sorted(set(names) - set(packages))
    if unknown:
        raise GuardsmithError(f"no package for {', '.join(unknown)} under {root}; found {', '.join(packages)}")
    return [upload_version(client, n, p, namespace) for n, p in packages.items() if not names or n in names]


def package_parameters(package: str | Path) -> dict[str, Any]:
    """Root input parameters of a compiled package: name -> default (``...`` when required)."""
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(package).read_text(encoding="utf-8")) if d]
    spec = docs[0] if docs else {}
    params = (((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})
    return {k: (v or {}).get("defaultValue", ...) for k, v in params.items()}


LOCAL_MARKERS = ("tiny:causal-lm", "offline:teacher")


def expand_placeholders(value: Any, now: float | None = None) -> Any:
    """Replace ``{timestamp}`` (YYYYmmdd-HHMMSS, UTC) and ``{date}`` (YYYYmmdd) in strings, recursively."""
    stamp = time.gmtime(now if now is not None else time.time())
    repl = {"{timestamp}": time.strftime("%Y%m%d-%H%M%S", stamp), "{date}": time.strftime("%Y%m%d", stamp)}
    if isinstance(value, str):
        for key, sub in repl.items():
            value = value.replace(key, sub)
        return value
    if isinstance(value, list):
        return [expand_placeholders(v, now) for v in value]
    if isinstance(value, dict):
        return {k: expand_placeholders(v, now) for k, v in value.items()}
    return value


def preset_parameters(root: str | Path, name: str, preset: str, overrides: Mapping[str, Any] | None = None,
                      now: float | None = None) -> dict[str, Any]:
    """A preset's parameters from ``<root>/<name>/presets/<preset>.yaml`` plus ``overrides``, checked
    against the compiled package's parameters; placeholders expanded."""
    import yaml

    root = Path(root)
    package = discover_packages(root).get(name)
    if package is None:
        raise GuardsmithError(f"no compiled package {root}/{name}/pipeline.yaml")
    path = root / name / "presets" / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (root / name / "presets").glob("*.yaml"))
        raise GuardsmithError(f"unknown preset {preset!r} for {name}; presets: {', '.join(known) or 'none'}")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise GuardsmithError(f"{path} must be a mapping of parameter: value")
    values.update(overrides or {})
    known = package_parameters(package)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise GuardsmithError(f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = expand_placeholders(values, now)
    text = json.dumps(values)
    for marker in LOCAL_MARKERS:
        if marker in text:
            raise GuardsmithError(f"{marker!r} exists only in local runs; set a model/endpoint URI with --set")
    if "work_root" not in values:
        raise GuardsmithError("work_root is not set: pass --set work_root=s3://bucket/prefix")
    return values


def submit_from_dir(client: Any, root: str | Path, name: str, preset: str, *,
                    overrides: Mapping[str, Any] | None = None, namespace: str | None = None,
                    experiment: str = "guardsmith", cache: bool = True, run_name: str | None = None,
                    now: float | None = None) -> dict[str, Any]:
    """Upload (or reuse) ``<root>/<name>/pipeline.yaml`` and start a run with a preset's parameters."""
    params = preset_parameters(root, name, preset, overrides, now)
    uploaded = upload_version(client, name, Path(root) / name / "pipeline.yaml", namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name or f"{name}-{preset}-{stamp}",
                              params=params, pipeline_id=uploaded["pipeline_id"],
                              version_id=uploaded["version_id"], enable_caching=cache)
    return {"run_id": run.run_id, "pipeline_id": uploaded["pipeline_id"], "version_id": uploaded["version_id"],
            "version": uploaded["version"], "work_root": params["work_root"]}


def wait_for_run(client: Any, run_id: str, timeout_s: int) -> str:
    """Block until the run ends; returns its state, raises unless it succeeded."""
    done = client.wait_for_run_completion(run_id, timeout=timeout_s)
    state = str(getattr(done, "state", done))
    if state != "SUCCEEDED":
        raise GuardsmithError(f"run {run_id} ended in state {state}")
    return state


# =========================================================================== command line

deploy_app = typer.Typer(help="Deployment helpers: quality gates, image pinning, KFP upload and submit.",
                         no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise GuardsmithError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out


@deploy_app.command("gate")
def gate_cmd(
    metrics: str = typer.Option(..., "--metrics", help="Metrics table URI (e.g. <work_root>/evaluate/metrics) or a JSON/YAML file."),
    gate: list[str] = typer.Option(..., "--gate", help='Gate "METRIC OP VALUE", e.g. "harmful_f1_avg>=baseline-0.01"; repeatable.'),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline metrics (table URI or JSON/YAML file) for 'baseline' values."),
    model: Optional[str] = typer.Option(None, "--gate-model", help="Model whose rows are gated (metrics tables with several models)."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model", help="Model whose rows form the baseline."),
) -> None:
    """Evaluate gates on a metrics table or file; exit 1 when one fails."""
    report = evaluate_gates(parse_gates(gate), metrics, baseline=baseline, model=model, baseline_model=baseline_model)
    for result in report.results:
        typer.echo(str(result))
    report.raise_for_failure()
    typer.echo(report.message)


@deploy_app.command("image-env")
def image_env_cmd(
    digests: Optional[Path] = typer.Option(None, "--digests", help="Digests file (default images/digests.yaml)."),
    require_digest: bool = typer.Option(False, "--require-digest", help="Fail when an image has no recorded digest."),
) -> None:
    """Print GUARDSMITH_IMAGE_<KIND>=ref lines (for `export`, or $GITHUB_ENV) from the digests file."""
    for key, value in image_env(digests, require_digest=require_digest).items():
        typer.echo(f"{key}={value}")


@deploy_app.command("record-digest")
def record_digest_cmd(
    kind: str = typer.Argument(..., help="Image kind: cpu, train or infer."),
    repository: str = typer.Option(..., "--repository", help="Repository the image was pushed to."),
    tag: str = typer.Option(..., "--tag", help="Tag pushed."),
    digest: str = typer.Option(..., "--digest", help="Pushed manifest digest, sha256:..."),
    digests: Optional[Path] = typer.Option(None, "--digests", help="Digests file (default images/digests.yaml)."),
) -> None:
    """Record a pushed image's digest in images/digests.yaml (scripts/build_images.sh calls this)."""
    rec = record_digest(kind, repository, tag, digest, digests)
    typer.echo(f"{kind}: {rec.ref}")


@deploy_app.command("base-image")
def base_image_cmd(
    kind: str = typer.Argument(..., help="Image kind: cpu, train or infer."),
    digests: Optional[Path] = typer.Option(None, "--digests", help="Digests file (default images/digests.yaml)."),
    bare: bool = typer.Option(False, "--tag-only", help="Print the tag even when a digest is recorded."),
) -> None:
    """Print the base image of KIND: tag@sha256:... once its digest is recorded, else the tag."""
    if kind not in IMAGE_KINDS:
        raise GuardsmithError(f"unknown image kind {kind!r}; use one of {', '.join(IMAGE_KINDS)}")
    typer.echo(load_bases(digests)[kind][0] if bare else base_image_ref(kind, digests))


@deploy_app.command("record-base")
def record_base_cmd(
    kind: str = typer.Argument(..., help="Image kind: cpu, train or infer."),
    digest: str = typer.Option(..., "--digest", help="Digest the base tag resolved to, sha256:..."),
    digests: Optional[Path] = typer.Option(None, "--digests", help="Digests file (default images/digests.yaml)."),
) -> None:
    """Record the digest of KIND's base image tag (scripts/build_images.sh calls this once)."""
    typer.echo(record_base_digest(kind, digest, digests))


@deploy_app.command("upload")
def upload_cmd(
    host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint."),
    pipelines_dir: Path = typer.Option(..., "--dir", help="Folder with <name>/pipeline.yaml packages."),
    namespace: Optional[str] = typer.Option(None, "--namespace", envvar="KFP_NAMESPACE", help="Kubeflow profile namespace."),
    name: list[str] = typer.Option([], "--name", help="Only these pipelines; repeatable."),
) -> None:
    """Upload every compiled package as a new pipeline version (unchanged packages are reused)."""
    for rec in upload_all(kfp_client(host, namespace or None), pipelines_dir, namespace or None, name):
        typer.echo(f"{rec['pipeline']}: version {rec['version']} ({'uploaded' if rec['created'] else 'unchanged'}) "
                   f"id {rec['version_id']}")


def enforce_gates(pipeline: str, work_root: str, gates: Sequence[Gate], *, baseline: Any = None,
                model: str | None = None, baseline_model: str | None = None) -> None:
    """Evaluate ``gates`` on a finished run, print each result, raise GuardsmithError on a failure."""
    report = gate_run(pipeline, work_root, gates, baseline=baseline, model=model, baseline_model=baseline_model)
    for line in report.results:
        typer.echo(str(line))
    report.raise_for_failure()
    typer.echo(report.message)


@deploy_app.command("submit")
def submit_cmd(
    name: str = typer.Argument(..., help="Pipeline name (folder under --dir)."),
    host: str = typer.Option(..., "--host", envvar="KFP_HOST", help="KFP API endpoint."),
    pipelines_dir: Path = typer.Option(..., "--dir", help="Folder with <name>/pipeline.yaml and <name>/presets/."),
    preset: str = typer.Option(..., "--preset", help="Preset name."),
    namespace: Optional[str] = typer.Option(None, "--namespace", envvar="KFP_NAMESPACE", help="Kubeflow profile namespace."),
    experiment: str = typer.Option("guardsmith", "--experiment", help="Experiment (created when missing)."),
    set_: list[str] = typer.Option([], "--set", help="Override: key=value (YAML value; {timestamp} and {date} expanded); repeatable."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Let KFP reuse cached results."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run; exit 1 unless it succeeded."),
    timeout: int = typer.Option(86400, "--timeout", help="Seconds to wait with --wait."),
    gate: list[str] = typer.Option([], "--gate", help="Gate on the run's metrics (needs --wait); repeatable."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline metrics for 'baseline' gate values."),
    model: Optional[str] = typer.Option(None, "--gate-model", help="Model gated (default: continual for guard_training)."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model", help="Model whose rows form the baseline."),
) -> None:
    """Start a run from a folder of compiled packages and presets (what the chart's CronJob runs)."""
    gates = parse_gates(gate) if gate else []
    if gates and not wait:
        raise GuardsmithError("--gate needs --wait")
    client = kfp_client(host, namespace or None)
    result = submit_from_dir(client, pipelines_dir, name, preset, overrides=_parse_sets(set_),
                             namespace=namespace or None, experiment=experiment, cache=cache)
    for key, value in result.items():
        typer.echo(f"{key}: {value}")
    if wait:
        typer.echo(f"state: {wait_for_run(client, result['run_id'], timeout)}")
    if gates:
        enforce_gates(name, result["work_root"], gates, baseline=baseline, model=model, baseline_model=baseline_model)


def main(argv: list[str] | None = None) -> int:
    """``python -m guardsmith.deploy``: user errors print one line and exit 1."""
    from guardsmith.cli import invoke

    return invoke(typer.main.get_command(deploy_app), argv, "guardsmith-deploy")


if __name__ == "__main__":
    sys.exit(main())
