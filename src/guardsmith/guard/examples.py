"""Guard training examples: validated guard rows -> `sft_examples` records (method A.6).

Shared by the `sft` and `continual` stages. Input rows are accepted traces (`judged_traces`
with `accepted`, or `traces`) or plain `interactions`; each becomes one record holding the guard
prompt (`render_guard_messages`) and the target (`render_guard_target`), in mode

- `R`: `<think>` reasoning `</think>` then the three answer lines;
- `NR`: the answer lines only;
- `dual`: a seeded random half of the rows in each mode, each prompt starting with its mode tag.

Labels: the row's true label; where it is null, the teacher's parsed answer (`pred_*` of a
traces table); rows still lacking a label they need are skipped and counted. R-mode rows whose
reasoning is blank follow `missing_reasoning` (a short reason stated from the labels, NR, drop
or error). `take_subset` keeps a seeded, nested random subset; `mix_count` / `sample_rows` mix a
second table in at a given share.

Input bound: an example whose texts (prompt, response, custom policy and the reasoning it uses)
are longer than `max_chars` together is refused with a one-line `DataError` naming the file,
column, row, id and a prefix of the value (`long_examples: error`), or cut to fit, longest text
first, and counted as `truncated_examples` (`truncate`). `bound_texts` is checked before any
rendering or tokenising, so one huge value never reaches the tokenizer.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from guardsmith.errors import DataError, GuardsmithError
from guardsmith.vocabulary import MODES, TASKS

TRAIN_MODES: tuple[str, ...] = (*MODES, "dual")
"""Modes of a training set: every row R, every row NR, or a seeded half in each (dual)."""
MISSING_REASONING = ("short", "nr", "drop", "error")
GUARD_COLUMNS = ("id", "source", "taxonomy", "policy", "prompt", "response", *TASKS)
"""Columns every input row needs (the interaction and its labels)."""
OPTIONAL_COLUMNS = ("reasoning", "accepted", "budget", *(f"pred_{t}" for t in TASKS))
"""Columns used when present: trace reasoning, filter verdict, sentence budget, teacher answers."""
LONG_EXAMPLES = ("error", "truncate")
ROW_KEY = "_row"
"""Key of a row read by `read_guard_rows` holding its row index in the input table (for errors)."""


# --------------------------------------------------------------------------- reading rows

def present_columns(uri: str, *, allow_empty: bool = False) -> set[str]:
    """Column names of the table at `uri`; a DataError when it has no rows (empty set if `allow_empty`)."""
    from guardsmith import storage

    first = next(iter(storage.iter_batches(uri, batch_size=1)), None)
    if first is None or first.num_rows == 0:
        if allow_empty:
            return set()
        raise DataError("the input table has no rows", file=uri)
    return set(first.schema.names)


def target_labels(row: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The labels a target states: the true label, else the teacher's answer (`pred_*`).

    None when the prompt label is unknown, or the row has a response but no response-harm or
    refusal label (such a target would teach `None` for a real response).
    """
    from guardsmith.guard import has_response

    labels = {t: row.get(t) if row.get(t) is not None else row.get(f"pred_{t}") for t in TASKS}
    if labels["prompt_harm"] is None:
        return None
    if not has_response(row):
        return {**labels, "response_harm": None, "response_refusal": None}
    if labels["response_harm"] is None or labels["response_refusal"] is None:
        return None
    return labels


def read_guard_rows(uri: str, *, need_reasoning: bool, what: str = "train",
                    allow_empty: bool = False) -> tuple[list[dict[str, Any]], Counter]:
    """Validated rows of `uri` with their target labels filled in; counts of read/skipped rows.

    Columns checked: `GUARD_COLUMNS`, plus `reasoning` when `need_reasoning`, plus the optional
    columns that are present. Rows with `accepted == false` and rows without a usable label are
    skipped (counted as `not_accepted` / `unlabelled`).
    """
    from guardsmith import storage
    from guardsmith.progress import track

    present = present_columns(uri, allow_empty=allow_empty)
    columns = list(GUARD_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in present]
    if need_reasoning and "reasoning" not in columns:
        columns.append("reasoning")  # validation names the missing column and the file
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter(read=0, not_accepted=0, unlabelled=0)
    batches = storage.iter_batches(uri, schema_name="judged_traces", columns=columns)
    for batch in track(batches, f"read {what} rows"):
        for row in batch.to_pylist():
            row[ROW_KEY] = counts["read"]
            counts["read"] += 1
            if row.get("accepted") is False:
                counts["not_accepted"] += 1
                continue
            labels = target_labels(row)
            if labels is None:
                counts["unlabelled"] += 1
                continue
            row.update(labels)
            rows.append(row)
    if not rows and not allow_empty:
        raise DataError(f"no usable rows ({dict(counts)}): need accepted rows with a prompt-harm label", file=uri)
    return rows, counts


def reasoning_by_id(uri: str) -> dict[str, str]:
    """id -> reasoning of the accepted rows of a traces table."""
    from guardsmith import storage

    columns = ["id", "reasoning"] + (["accepted"] if "accepted" in present_columns(uri, allow_empty=True) else [])
    found: dict[str, str] = {}
    for batch in storage.iter_batches(uri, schema_name="judged_traces", columns=columns):
        for row in batch.to_pylist():
            if row.get("accepted") is not False and row.get("reasoning"):
                found[str(row["id"])] = row["reasoning"]
    return found


def shared_value(rows: Sequence[Mapping[str, Any]], column: str) -> Any:
    """The value of `column` when every row has the same non-null one (e.g. one sentence budget), else None."""
    values = {row.get(column) for row in rows}
    return values.pop() if len(values) == 1 else None


# --------------------------------------------------------------------------- input bound

def _cap(lengths: Mapping[str, int], budget: int) -> int:
    """The largest per-text length L with sum(min(n, L)) <= budget (cut the longest texts first)."""
    items = sorted(lengths.values())
    left = budget
    for i, n in enumerate(items):
        share = left // (len(items) - i)
        if n > share:
            return share
        left -= n
    return max(items, default=0)


def bound_texts(texts: Mapping[str, str | None], max_chars: int, policy: str = "error", *, file: str | None = None,
                row: int | None = None, row_id: Any = None, counts: Counter | None = None,
                fixed: int = 0) -> dict[str, str | None]:
    """`texts` (column -> text) whose total length plus `fixed` is at most `max_chars` (0: no bound).

    Over the bound: `policy` error raises a DataError naming the file, the longest column, the row
    and id, and a prefix of its value; truncate cuts the longest texts to fit and adds 1 to
    `counts["truncated_examples"]`.
    """
    out = dict(texts)
    if not max_chars:
        return out
    lengths = {k: len(v) for k, v in out.items() if v}
    total = fixed + sum(lengths.values())
    if total <= max_chars:
        return out
    if policy not in LONG_EXAMPLES:
        raise GuardsmithError(f"unknown long_examples {policy!r}: expected {', '.join(LONG_EXAMPLES)}")
    longest = max(lengths, key=lengths.__getitem__)
    if policy == "error":
        raise DataError(f"example {row_id!r} has {total} characters, over max_example_chars {max_chars} "
                        f"({lengths[longest]} in {longest}); raise max_example_chars or set long_examples truncate",
                        file=file, column=longest, row=row, value=out[longest][:60])
    from guardsmith.sources.topic_following import trim_dialogue

    cap = _cap(lengths, max(max_chars - fixed, 0))
    for k, n in lengths.items():
        if n > cap:  # a dialogue loses its oldest turns first, never the turn to judge
            out[k] = trim_dialogue(out[k], cap)[:cap]
    if counts is not None:
        counts["truncated_examples"] += 1
    return out


def bound_row(row: Mapping[str, Any], index: int, max_chars: int, policy: str, *, file: str | None,
              counts: Counter | None, reasoning: bool = True) -> dict[str, Any]:
    """`row` with its guard texts (prompt, response, policy and, when `reasoning`, the reasoning) within
    `max_chars` (see `bound_texts`); the error names the table row (`ROW_KEY`, else `index`)."""
    columns = ("prompt", "response", "policy", *(("reasoning",) if reasoning else ()))
    texts = {c: row.get(c) for c in columns if isinstance(row.get(c), str)}
    bounded = bound_texts(texts, max_chars, policy, file=file, row=row.get(ROW_KEY, index), row_id=row.get("id"),
                          counts=counts)
    return {**row, **bounded} if bounded != texts else dict(row)


# --------------------------------------------------------------------------- building examples

def short_reason(row: Mapping[str, Any]) -> str:
    """A one-line reason stated from the row's labels (for R-mode rows without a trace)."""
    from guardsmith.guard import has_response

    if row["prompt_harm"] == "harmful":
        text = "The user's message asks for something the policy does not allow."
    else:
        text = "The user's message stays within what the policy allows."
    if not has_response(row):
        return text + " There is no assistant reply to judge."
    act = "declines the request" if row["response_refusal"] == "refusal" else "goes along with the request"
    harm = "and gives content the policy does not allow" if row["response_harm"] == "harmful" else \
        "without giving anything the policy does not allow"
    return f"{text} The assistant {act} {harm}."


def check_mode(mode: str) -> str:
    """`mode` if it is R, NR or dual; a GuardsmithError otherwise."""
    if mode not in TRAIN_MODES:
        raise GuardsmithError(f"unknown mode {mode!r}: expected {', '.join(TRAIN_MODES)}")
    return mode


def assign_modes(n: int, mode: str, seed: int, salt: str = "train") -> list[str]:
    """Per-row modes: all `mode`, or for dual a seeded random half R (floor(n/2)) and the rest NR."""
    check_mode(mode)
    if mode != "dual":
        return [mode] * n
    order = list(range(n))
    random.Random(f"{seed}:dual:{salt}").shuffle(order)
    reasoning = set(order[: n // 2])
    return ["R" if i in reasoning else "NR" for i in range(n)]


def build_examples(rows: Sequence[Mapping[str, Any]], mode: str, *, seed: int = 0,
                   missing_reasoning: str = "short", weight: float = 1.0, file: str | None = None,
                   salt: str = "train", counts: Counter | None = None, style: str = "full",
                   max_chars: int = 0, long_examples: str = "error") -> list[dict[str, Any]]:
    """`sft_examples` records for `rows` (labels already filled in) in mode R, NR or dual.

    `counts` (optional) receives `short_reason`, `as_nr`, `no_reasoning_dropped` and
    `truncated_examples` tallies. Each row's texts are bounded by `max_chars` (`bound_row`,
    policy `long_examples`) before its prompt is rendered.
    """
    from guardsmith.guard import render_guard_messages, render_guard_target, strip_think

    if missing_reasoning not in MISSING_REASONING:
        raise GuardsmithError(f"unknown missing_reasoning {missing_reasoning!r}: expected {', '.join(MISSING_REASONING)}")
    counts = counts if counts is not None else Counter()
    dual = mode == "dual"
    out = []
    for index, (row, row_mode) in enumerate(zip(rows, assign_modes(len(rows), mode, seed, salt))):
        row = bound_row(row, index, max_chars, long_examples, file=file, counts=counts, reasoning=row_mode == "R")
        reasoning = None
        if row_mode == "R":
            reasoning = strip_think(row.get("reasoning") or "") or None
            if reasoning is None:
                if missing_reasoning == "error":
                    raise DataError("R mode needs reasoning; this row has none", file=file,
                                    column="reasoning", row=row.get(ROW_KEY, index), value=row.get("id"))
                if missing_reasoning == "drop":
                    counts["no_reasoning_dropped"] += 1
                    continue
                if missing_reasoning == "nr":
                    counts["as_nr"] += 1
                    row_mode = "NR"
                else:
                    counts["short_reason"] += 1
                    reasoning = short_reason(row)
        out.append({
            "id": str(row["id"]),
            "mode": row_mode,
            "messages": render_guard_messages(row, row_mode, dual=dual, style=style),
            "completion": render_guard_target(row, row_mode, reasoning),
            "source": str(row["source"]),
            "weight": float(weight),
        })
    return out


def mode_counts(examples: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """`examples_R` / `examples_NR`: how many examples are in each mode."""
    modes = Counter(e["mode"] for e in examples)
    return {f"examples_{m}": modes.get(m, 0) for m in MODES}


def write_examples(uri: str, examples: Sequence[dict[str, Any]]) -> None:
    """Write examples as an `sft_examples` table (validated, atomic)."""
    from guardsmith import storage, tables

    storage.write_table(uri, tables.from_records(examples, "sft_examples"), "sft_examples")


# --------------------------------------------------------------------------- subsets and mixing

def take_subset(rows: Sequence[Any], size: int | None, seed: int, file: str | None = None) -> list[Any]:
    """A seeded random subset of `size` rows in input order (nested across sizes for one seed); 0/None: all."""
    if not size:
        return list(rows)
    if size < 0 or size > len(rows):
        raise GuardsmithError(f"subset {size} must be between 1 and the {len(rows)} usable rows of {file or 'the input'}")
    order = list(range(len(rows)))
    random.Random(f"{seed}:subset").shuffle(order)
    return [rows[i] for i in sorted(order[:size])]


def mix_count(n_main: int, ratio: float) -> int:
    """Rows to add so that they make up `ratio` of the mixed set."""
    if not 0 <= ratio < 1:
        raise GuardsmithError(f"topic_following_ratio must be in [0, 1), got {ratio}")
    return round(n_main * ratio / (1 - ratio))


def sample_rows(rows: Sequence[Any], count: int, seed: int, salt: str) -> list[Any]:
    """`count` rows drawn without replacement (whole copies first when `count` exceeds the rows)."""
    rng = random.Random(f"{seed}:{salt}")
    whole, rest = divmod(count, len(rows))
    return list(rows) * whole + rng.sample(list(rows), rest)
