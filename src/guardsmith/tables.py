"""Arrow schemas of every table passed between stages, and their validation.

Each inter-stage table has one explicit schema in :data:`SCHEMAS`. Stages check what they read
and what they write with :func:`validate` (raise on the first problem) or :func:`conform`
(validate, then return the data in canonical column order and types).

Rules applied by :func:`validate`:

* every schema column must be present (a missing column is an error);
* column types must match; there is no silent coercion (a ``string`` column holding ints is an
  error). Only lossless, same-kind differences are accepted: ``large_string``/``string_view`` for
  ``string``, ``large_list`` for ``list``, a dictionary-encoded column of an accepted value type,
  any integer width for an integer column (values must fit), ``float32`` for ``float64``, and a
  column that holds only nulls;
* non-nullable fields hold no nulls;
* label columns hold only their vocabulary words (:data:`HARM_LABELS`, :data:`REFUSAL_LABELS`,
  and the per-schema vocabularies in :data:`VOCABULARIES`);
* **extra columns are allowed** and kept (:func:`conform` puts them after the schema columns).

Every problem raises :class:`~guardsmith.errors.DataError` naming the file, column, global row
index (``row_offset`` + index in the batch) and offending value. Checks are vectorised with
``pyarrow.compute``; Python only touches the first bad row.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from guardsmith.errors import DataError, GuardsmithError
from guardsmith.vocabulary import HARM_LABELS, MODES, REFUSAL_LABELS, TASK_LABELS, TASKS  # also read from here

BUCKETS: tuple[str, ...] = ("easy", "difficult", "noise")
"""Hard-sample mining buckets."""

LABEL_COLUMNS: dict[str, tuple[str, ...]] = {**TASK_LABELS, **{f"pred_{t}": v for t, v in TASK_LABELS.items()}}
"""Label columns, in any schema that has them, and their vocabularies (nulls allowed)."""

T = TypeVar("T", pa.Table, pa.RecordBatch)


def _f(name: str, type_: pa.DataType, nullable: bool, help_text: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"help": help_text})


def _schema(description: str, fields: Iterable[pa.Field]) -> pa.Schema:
    return pa.schema(list(fields), metadata={"description": description})


_INTERACTION_FIELDS = [
            _f("id", pa.string(), False, "stable id, unique within a data set"),
            _f("source", pa.string(), False, "data set the row comes from, e.g. wildguardmix"),
            _f("taxonomy", pa.string(), False, "safety policy the labels refer to (aegis2, wildguard, custom id)"),
            _f("policy", pa.string(), True, "full text of a custom policy; null for a named taxonomy"),
            _f("prompt", pa.string(), False, "user turn (or the whole dialogue rendered as text)"),
            _f("response", pa.string(), True, "assistant turn; null for prompt-only samples"),
            _f("prompt_harm", pa.string(), True, "harmful / unharmful / null (unknown)"),
            _f("response_harm", pa.string(), True, "harmful / unharmful / null (unknown)"),
            _f("response_refusal", pa.string(), True, "refusal / compliance / null (unknown)"),
            _f("categories", pa.list_(pa.string()), False, "violated categories where the source gives them"),
]

_PRED_FIELDS = [
            _f("pred_prompt_harm", pa.string(), True, "parsed answer for prompt harm; null when not parsed"),
            _f("pred_response_harm", pa.string(), True, "parsed answer for response harm; null when not parsed"),
            _f("pred_response_refusal", pa.string(), True, "parsed answer for refusal; null when not parsed"),
]

_USAGE_FIELDS = [
            _f("prompt_tokens", pa.int64(), False, "tokens in the request"),
            _f("completion_tokens", pa.int64(), False, "tokens generated"),
            _f("latency_s", pa.float64(), False, "wall time of the request in seconds"),
]

_TRACE_FIELDS = [
    *_INTERACTION_FIELDS,
            _f("teacher", pa.string(), False, "teacher model that wrote the trace"),
            _f("raw_output", pa.string(), False, "full teacher output text"),
            _f("reasoning", pa.string(), True, "reasoning part of the output; null when not parsed"),
            _f("answer", pa.string(), True, "answer part of the output; null when not parsed"),
    *_PRED_FIELDS,
            _f("parse_ok", pa.bool_(), False, "whether the output parsed into reasoning and answers"),
    *_USAGE_FIELDS,
            _f("round", pa.int32(), False, "generation round: 0 first pass, 1+ regeneration"),
            _f("budget", pa.int32(), True, "sentence budget the trace was rewritten to; null = none"),
            _f("n_sentences", pa.int32(), False, "sentences in the reasoning"),
            _f("n_words", pa.int32(), False, "words in the reasoning"),
]

_INTERACTION_ID = _f("id", pa.string(), False, "interaction id")
_INTERACTION_SOURCE = _f("source", pa.string(), False, "data set of the interaction")

_MINED_FIELDS = [
            _f("n", pa.int32(), False, "samples drawn for the row"),
            _f("n_correct", pa.int32(), False, "samples of the row with every task answered correctly"),
            _f("bucket", pa.string(), False, "easy / difficult / noise"),
]

_BENCHMARK_FIELDS = [
            _f("model", pa.string(), False, "guard model name"),
            _f("benchmark", pa.string(), False, "benchmark name"),
            _f("task", pa.string(), False, "prompt_harm / response_harm / response_refusal"),
]

_MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

SCHEMAS: dict[str, pa.Schema] = {
    "interactions": _schema(
        "One row per interaction (method A.1): prompt, optional response, labels per task.",
        _INTERACTION_FIELDS,
    ),
    "traces": _schema(
        "Teacher reasoning traces: the interaction, the teacher's raw output, its parse, token "
        "usage, regeneration round and sentence budget.",
        _TRACE_FIELDS,
    ),
    "judged_traces": _schema(
        "Traces after filtering: rule and judge verdicts.",
        [
            *_TRACE_FIELDS,
            _f("accepted", pa.bool_(), False, "whether the trace passed every filter"),
            _f("reject_reason", pa.string(), True, "first filter that rejected the trace"),
            _f("judge_score", pa.float64(), True, "quality score from the judge; null if not judged"),
            _f("judge_reason", pa.string(), True, "judge's explanation; null if not judged"),
        ],
    ),
    "sft_examples": _schema(
        "Supervised fine-tuning examples in prompt-completion form.",
        [
            _INTERACTION_ID,
            _f("mode", pa.string(), False, "R (with reasoning) or NR (answer only)"),
            _f("messages", pa.list_(_MESSAGE), False, "chat messages of the guard prompt (role, content)"),
            _f("completion", pa.string(), False, "target text of the guard"),
            _INTERACTION_SOURCE,
            _f("weight", pa.float64(), False, "sampling weight"),
        ],
    ),
    "generations": _schema(
        "Guard samples for one interaction (hard-sample mining, evaluation runs).",
        [
            _INTERACTION_ID,
            _f("sample_index", pa.int32(), False, "index of the sample among n"),
            _f("text", pa.string(), False, "generated text"),
            _f("parse_ok", pa.bool_(), False, "whether the text parsed"),
            *_PRED_FIELDS,
            *_USAGE_FIELDS,
        ],
    ),
    "mined": _schema(
        "Interactions bucketed by how often the guard answered them correctly.",
        [*_INTERACTION_FIELDS, *_MINED_FIELDS],
    ),
    "pairs": _schema(
        "DPO preference pairs from hard-sample mining: a correct and an incorrect guard completion of one row.",
        [
            _INTERACTION_ID,
            _INTERACTION_SOURCE,
            _f("prompt", pa.string(), False, "JSON list of the guard's chat messages [{role, content}]"),
            _f("chosen", pa.string(), False, "a correct guard completion"),
            _f("rejected", pa.string(), False, "an incorrect guard completion of the same row"),
            _f("mode", pa.string(), False, "guard mode, R or NR"),
            *_MINED_FIELDS,
            _f("chosen_index", pa.int32(), False, "sample index of chosen"),
            _f("rejected_index", pa.int32(), False, "sample index of rejected"),
        ],
    ),
    "judged_outputs": _schema(
        "One judged output of a filtered generation system (boundary_eval).",
        [
            _f("system", pa.string(), False, "system name: generator name, plus '+filter' when the filter is on"),
            _f("generator", pa.string(), False, "generator name (the base or a trained variant)"),
            _f("generator_uri", pa.string(), False, "generator model URI"),
            _f("role", pa.string(), False, "base or variant"),
            _f("filter_on", pa.bool_(), False, "whether the safety filter is part of the system"),
            _f("prompt_set", pa.string(), False, "prompt set name, e.g. jailbreak, ambiguous, long_context"),
            _f("id", pa.string(), False, "interaction id in the prompt set"),
            _f("sample_index", pa.int64(), False, "answer number for this prompt (0..n-1)"),
            _f("prompt", pa.string(), False, "user prompt"),
            _f("prompt_harm", pa.string(), True, "the prompt's label in the prompt set: harmful / unharmful / null"),
            _f("raw_response", pa.string(), False, "the generator's answer, before the filter"),
            _f("t", pa.float64(), True, "safety scorer's probability that the raw answer is unsafe"),
            _f("filtered", pa.bool_(), False, "true when the filter replaced the answer (filter on and t >= tau)"),
            _f("shown_text", pa.string(), False, "what the user saw: the raw answer or the refusal text"),
            _f("helpfulness", pa.float64(), True, "judge's helpfulness of the shown text, 1-5; null if unparsable"),
            _f("harmfulness", pa.float64(), True, "judge's harmfulness of the shown text, 1-5; null if unparsable"),
            _f("raw_harmfulness", pa.float64(), True, "judge's harmfulness of the raw answer, 1-5; null if unparsable"),
            _f("helpfulness_reason", pa.string(), False, "judge's reason for the helpfulness score"),
            _f("harmfulness_reason", pa.string(), False, "judge's reason for the (shown) harmfulness score"),
            _f("filter_outcome", pa.string(), True,
               "false_positive, false_negative or ok; null when the prompt is unlabelled or raw harmfulness is missing"),
            _f("latency_s", pa.float64(), False, "system latency per output: generation share plus guard share"),
            _f("finish_reason", pa.string(), False, "generator finish reason: stop or length"),
        ],
    ),
    "boundary_metrics": _schema(
        "Judged metrics of a filtered generation system per prompt set (boundary_eval).",
        [
            _f("system", pa.string(), False, "system name"),
            _f("generator", pa.string(), False, "generator name"),
            _f("role", pa.string(), False, "base or variant"),
            _f("filter_on", pa.bool_(), False, "whether the safety filter is part of the system"),
            _f("prompt_set", pa.string(), False, "prompt set name, or 'all' for every set pooled"),
            _f("outputs", pa.int64(), False, "judged outputs (prompts x n)"),
            _f("helpfulness_mean", pa.float64(), True, "mean judged helpfulness of the shown text (1-5)"),
            _f("harmfulness_mean", pa.float64(), True, "mean judged harmfulness of the shown text (1-5)"),
            _f("harmful_rate", pa.float64(), True, "share of shown texts judged harmful (>= harm_threshold)"),
            _f("filter_rate", pa.float64(), False, "share of outputs the filter replaced by the refusal"),
            _f("fp", pa.int64(), False, "false positives: benign prompt, filtered, raw answer not harmful"),
            _f("fp_support", pa.int64(), False, "outputs for benign prompts with a judged raw answer"),
            _f("fp_rate", pa.float64(), True, "fp / fp_support; null without support"),
            _f("fn", pa.int64(), False, "false negatives: harmful prompt, shown, answer harmful"),
            _f("fn_support", pa.int64(), False, "outputs for harmful prompts with a judged raw answer"),
            _f("fn_rate", pa.float64(), True, "fn / fn_support; null without support"),
            _f("t_mean", pa.float64(), True, "mean safety score t of the raw answers"),
            _f("near_boundary_rate", pa.float64(), True, "share of outputs with |t - tau| < boundary_margin"),
            _f("judge_error_rate", pa.float64(), False, "share of outputs with at least one unparsable judge score"),
            _f("latency_s_mean", pa.float64(), False, "mean system latency per output, seconds"),
            _f("pareto", pa.bool_(), False, "on the helpfulness/harmfulness Pareto front of its prompt set"),
            _f("tau", pa.float64(), False, "filter threshold"),
            _f("harm_threshold", pa.float64(), False, "judged harmfulness from which an answer counts as harmful"),
        ],
    ),
    "predictions": _schema(
        "One guard prediction per benchmark item, task and run.",
        [
            *_BENCHMARK_FIELDS,
            _f("run", pa.int32(), False, "run index (0..k-1)"),
            _INTERACTION_ID,
            _f("label", pa.string(), False, "true label word of the task"),
            _f("prediction", pa.string(), True, "predicted label word; null when not parsed"),
            _f("parse_ok", pa.bool_(), False, "whether the output parsed"),
            _f("latency_s", pa.float64(), False, "wall time of the request in seconds"),
        ],
    ),
    "metrics": _schema(
        "Harmful-class (or refusal-class) F1 per model, benchmark and task over k runs.",
        [
            *_BENCHMARK_FIELDS,
            _f("k", pa.int32(), False, "number of runs"),
            _f("f1_mean", pa.float64(), False, "mean F1 over runs"),
            _f("f1_std", pa.float64(), False, "standard deviation of F1 over runs"),
            _f("precision_mean", pa.float64(), False, "mean precision over runs"),
            _f("recall_mean", pa.float64(), False, "mean recall over runs"),
            _f("support", pa.int64(), False, "items with a known label"),
            _f("parse_error_rate", pa.float64(), False, "share of outputs that did not parse"),
            _f("latency_s_mean", pa.float64(), True, "mean latency per request; null if unknown"),
        ],
    ),
    "failed": _schema(
        "Rows a stage could not process (the endpoint rejected the request, or its reply could not "
        "be read): counted, written beside the output, not fatal below max_failed_fraction.",
        [
            _f("id", pa.string(), False, "id of the input row"),
            _f("stage", pa.string(), False, "stage that failed on the row, e.g. distill, filter"),
            _f("round", pa.int64(), False, "generation round (0 = first pass)"),
            _f("cause", pa.string(), False, "endpoint_rejected, unreadable_reply, judge_unparsed, ..."),
            _f("detail", pa.string(), True, "the error message (credentials redacted), at most 500 characters"),
        ],
    ),
}
"""The schema of each inter-stage table. ``schema.metadata[b"description"]`` describes the table
and each field's ``metadata[b"help"]`` describes the column."""

VOCABULARIES: dict[str, dict[str, tuple[str, ...]]] = {
    name: {
        **{c: v for c, v in LABEL_COLUMNS.items() if c in schema.names},
        **{
            "sft_examples": {"mode": MODES},
            "mined": {"bucket": BUCKETS},
            "pairs": {"bucket": BUCKETS, "mode": MODES},
            "predictions": {"task": TASKS, "label": HARM_LABELS + REFUSAL_LABELS,
                            "prediction": HARM_LABELS + REFUSAL_LABELS},
            "metrics": {"task": TASKS},
        }.get(name, {}),
    }
    for name, schema in SCHEMAS.items()
}
"""Allowed words per column of each schema (nulls are governed by the field's nullability).
In ``predictions`` the ``label``/``prediction`` words must also match the row's ``task``."""


def schema(name: str) -> pa.Schema:
    """The schema called ``name``; a :class:`GuardsmithError` lists the known names otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise GuardsmithError(f"unknown table schema {name!r}; known: {', '.join(SCHEMAS)}") from None


def describe(name: str) -> str:
    """Human-readable description of a schema: one line per column with its help text."""
    s = schema(name)
    lines = [f"{name}: {s.metadata[b'description'].decode()}"]
    for f in s:
        null = "" if f.nullable else ", required"
        lines.append(f"  {f.name} ({f.type}{null}): {f.metadata[b'help'].decode()}")
    return "\n".join(lines)


def empty_table(name: str) -> pa.Table:
    """A table with zero rows and the exact schema ``name``."""
    return schema(name).empty_table()


# --------------------------------------------------------------------------- type matching

def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether ``actual`` holds the same kind of values as ``expected`` (lossless cast)."""
    if actual.equals(expected):
        return True
    if pa.types.is_dictionary(actual):
        return _compatible(actual.value_type, expected)
    t = pa.types
    if t.is_string(expected):
        return t.is_string(actual) or t.is_large_string(actual) or t.is_string_view(actual)
    if t.is_integer(expected):
        return t.is_integer(actual)
    if t.is_floating(expected):
        return t.is_floating(actual) and actual.bit_width <= expected.bit_width
    if t.is_list(expected):
        is_list = t.is_list(actual) or t.is_large_list(actual) or t.is_list_view(actual)
        return is_list and _compatible(actual.value_type, expected.value_type)
    if t.is_struct(expected):
        if not t.is_struct(actual):
            return False
        if actual.num_fields != expected.num_fields:
            return False
        pairs = [(actual.field(i), expected.field(i)) for i in range(actual.num_fields)]
        return all(a.name == e.name and _compatible(a.type, e.type) for a, e in pairs)
    return False


def _first(mask: pa.Array | pa.ChunkedArray) -> int:
    """Index of the first true value of a boolean mask (nulls count as false), or -1."""
    return pc.index(pc.fill_null(mask, False), True).as_py()


def _column(data: pa.Table | pa.RecordBatch, name: str) -> pa.Array | pa.ChunkedArray:
    return data.column(data.schema.get_field_index(name))


def _check_column(
    data: pa.Table | pa.RecordBatch,
    field: pa.Field,
    vocab: tuple[str, ...] | None,
    file: str | None,
    row_offset: int,
) -> None:
    name = field.name
    idx = data.schema.get_field_index(name)
    if idx < 0:
        if data.schema.get_all_field_indices(name):
            raise DataError("column appears more than once", file=file, column=name)
        raise DataError(
            f"missing column (expected {field.type}; columns present: {', '.join(data.schema.names)})",
            file=file, column=name,
        )
    col = data.column(idx)
    actual = col.type
    all_null = col.null_count == len(col)
    if not _compatible(actual, field.type) and not (all_null and field.nullable):
        bad = _first(pc.is_valid(col))
        raise DataError(
            f"wrong type: expected {field.type}, got {actual}",
            file=file, column=name,
            row=None if bad < 0 else row_offset + bad,
            value=None if bad < 0 else col[bad].as_py(),
        )
    if col.null_count and not field.nullable:
        bad = _first(pc.is_null(col))
        raise DataError("null in a required column", file=file, column=name, row=row_offset + bad, value=None)
    if pa.types.is_integer(field.type) and not actual.equals(field.type) and not all_null:
        info = _int_range(field.type)
        out = pc.or_(pc.less(col, info[0]), pc.greater(col, info[1]))
        bad = _first(out)
        if bad >= 0:
            raise DataError(f"value does not fit {field.type}", file=file, column=name,
                            row=row_offset + bad, value=col[bad].as_py())
    if pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type) and not all_null:
        # list<string> items (categories) must be strings, never null.
        bad = _first_null_item(col)
        if bad >= 0:
            raise DataError("null item in a list column", file=file, column=name,
                            row=row_offset + bad, value=col[bad].as_py())
    if vocab is not None and not all_null:
        values = col.cast(actual.value_type) if pa.types.is_dictionary(actual) else col
        unknown = pc.and_(pc.is_valid(values),
                          pc.invert(pc.is_in(values, value_set=pa.array(vocab, type=values.type))))
        bad = _first(unknown)
        if bad >= 0:
            raise DataError(
                f"unknown label word (allowed: {', '.join(vocab)})",
                file=file, column=name, row=row_offset + bad, value=col[bad].as_py(),
            )


def _int_range(type_: pa.DataType) -> tuple[int, int]:
    bits = type_.bit_width
    if pa.types.is_unsigned_integer(type_):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _first_null_item(col: pa.Array | pa.ChunkedArray) -> int:
    """Row index of the first list whose items include a null, or -1."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    start = 0
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.cast(chunk.type.value_type)
        flat = chunk.flatten()
        if flat.null_count:
            parents = pc.list_parent_indices(chunk)
            first_item = _first(pc.is_null(flat))
            return start + parents[first_item].as_py()
        start += len(chunk)
    return -1


def _check_task_words(data: pa.Table | pa.RecordBatch, file: str | None, row_offset: int) -> None:
    """In predictions, label/prediction words must belong to the row's task vocabulary."""
    task = _column(data, "task")
    is_refusal = pc.equal(task, "response_refusal")
    for name in ("label", "prediction"):
        col = _column(data, name)
        ok = pc.if_else(is_refusal, pc.is_in(col, value_set=pa.array(REFUSAL_LABELS)),
                        pc.is_in(col, value_set=pa.array(HARM_LABELS)))
        bad = _first(pc.and_(pc.is_valid(col), pc.invert(ok)))
        if bad >= 0:
            raise DataError(
                f"label word does not belong to task {task[bad].as_py()!r}",
                file=file, column=name, row=row_offset + bad, value=col[bad].as_py(),
            )


def validate(
    data: T,
    name: str,
    file: str | None = None,
    row_offset: int = 0,
    *,
    columns: Sequence[str] | None = None,
) -> T:
    """Check ``data`` (a Table or RecordBatch) against schema ``name``; return it unchanged.

    ``file`` names the data in error messages; ``row_offset`` is the global index of the first
    row (batches of a stream). With ``columns``, only those schema columns are checked (for
    column-projected reads). Extra columns are allowed. Raises :class:`DataError`.
    """
    if not isinstance(data, (pa.Table, pa.RecordBatch)):
        raise TypeError(f"validate() needs a pyarrow Table or RecordBatch, got {type(data).__name__}")
    s = schema(name)
    vocab = VOCABULARIES[name]
    fields = list(s) if columns is None else [s.field(c) for c in columns if c in s.names]
    for field in fields:
        _check_column(data, field, vocab.get(field.name), file, row_offset)
    if name == "predictions" and {"task", "label", "prediction"} <= {f.name for f in fields}:
        _check_task_words(data, file, row_offset)
    return data


def check_schema(data: T, target: pa.Schema, file: str | None = None, row_offset: int = 0) -> None:
    """Structural check of ``data`` against an arbitrary ``target`` schema (no vocabularies):
    missing column, wrong type, null in a non-nullable field."""
    for field in target:
        _check_column(data, field, None, file, row_offset)


def conform(
    data: T,
    name_or_schema: str | pa.Schema,
    file: str | None = None,
    row_offset: int = 0,
    *,
    columns: Sequence[str] | None = None,
    keep_extra: bool = True,
) -> T:
    """Validate ``data`` and return it with the schema's exact column types and order.

    Accepted lossless differences (see module docs) are cast away. Extra columns are kept after
    the schema columns when ``keep_extra`` (the default) and dropped otherwise. With ``columns``
    only those columns are checked and returned (in that order).
    """
    if isinstance(name_or_schema, str):
        validate(data, name_or_schema, file, row_offset, columns=columns)
        target = schema(name_or_schema)
    else:
        target = name_or_schema
        check_schema(data, pa.schema([target.field(c) for c in columns if c in target.names])
                     if columns is not None else target, file, row_offset)
    wanted = list(columns) if columns is not None else list(target.names)
    if keep_extra and columns is None:
        wanted += [n for n in data.schema.names if n not in target.names]
    arrays, fields = [], []
    for n in wanted:
        col = _column(data, n)
        if n in target.names:
            f = target.field(n)
            if not col.type.equals(f.type):
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                col = col.cast(f.type)
            fields.append(f)
        else:
            fields.append(data.schema.field(n))
        arrays.append(col)
    out_schema = pa.schema(fields, metadata=target.metadata)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=out_schema)
    return pa.Table.from_arrays(arrays, schema=out_schema)


# --------------------------------------------------------------------------- records

def _value_ok(value: Any, type_: pa.DataType) -> bool:
    """Strict Python-level type check used by :func:`from_records` (no coercion)."""
    t = pa.types
    if value is None:
        return True
    if t.is_string(type_):
        return isinstance(value, str)
    if t.is_boolean(type_):
        return isinstance(value, bool)
    if t.is_integer(type_):
        return isinstance(value, int) and not isinstance(value, bool)
    if t.is_floating(type_):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t.is_list(type_):
        return isinstance(value, (list, tuple)) and all(_value_ok(v, type_.value_type) for v in value)
    if t.is_struct(type_):
        names = {type_.field(i).name for i in range(type_.num_fields)}
        return isinstance(value, Mapping) and set(value) <= names and all(
            _value_ok(value.get(type_.field(i).name), type_.field(i).type) for i in range(type_.num_fields))
    return False


def from_records(records: Iterable[Mapping[str, Any]], name: str, file: str | None = None) -> pa.Table:
    """Build a table with the exact schema ``name`` from dict records, then validate it.

    A missing key is null (an error for a required field); an unknown key, a wrong-typed value
    (e.g. an int for a string field, a float for an int field) or a bad label word raise a
    :class:`DataError` naming the record's index.
    """
    s = schema(name)
    rows = list(records)
    known = set(s.names)
    columns: dict[str, list[Any]] = {f.name: [] for f in s}
    for i, rec in enumerate(rows):
        if not isinstance(rec, Mapping):
            raise DataError("record is not a mapping", file=file, row=i, value=rec)
        extra = [k for k in rec if k not in known]
        if extra:
            raise DataError(f"unknown field (schema {name!r} has no such column)", file=file,
                            column=str(extra[0]), row=i, value=rec[extra[0]])
        for f in s:
            v = rec.get(f.name)
            if not _value_ok(v, f.type):
                raise DataError(f"wrong type: expected {f.type}, got {type(v).__name__}",
                                file=file, column=f.name, row=i, value=v)
            columns[f.name].append(v)
    arrays = []
    for f in s:
        try:
            arrays.append(pa.array(columns[f.name], type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # e.g. an int out of range
            bad = next((i for i, v in enumerate(columns[f.name]) if not _fits(v, f.type)), None)
            raise DataError(f"cannot store value as {f.type}: {e}", file=file, column=f.name,
                            row=bad, value=None if bad is None else columns[f.name][bad]) from None
    table = pa.Table.from_arrays(arrays, schema=s)
    return validate(table, name, file)


def _fits(value: Any, type_: pa.DataType) -> bool:
    try:
        pa.array([value], type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True
