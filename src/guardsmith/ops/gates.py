"""Quality gates: gate expressions, metrics loading, evaluation, baseline comparison and gating a
finished pipeline run (``guardsmith deploy gate``, ``guardsmith pipeline submit --gate``).

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
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardsmith.errors import GuardsmithError

# =========================================================================== gate expressions

OPERATORS = (">=", "<=", "==", ">", "<")
AGGREGATES = ("mean", "min", "max", "sum", "count")

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
