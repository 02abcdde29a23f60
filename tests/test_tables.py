"""guardsmith.tables: schemas, validation (vectorised, exact error locations), records."""
from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardsmith import tables
from guardsmith.errors import DataError, GuardsmithError
from helpers.data import interactions

A1 = [  # method.md A.1: name, type, nullable
    ("id", pa.string(), False), ("source", pa.string(), False), ("taxonomy", pa.string(), False),
    ("policy", pa.string(), True), ("prompt", pa.string(), False), ("response", pa.string(), True),
    ("prompt_harm", pa.string(), True), ("response_harm", pa.string(), True),
    ("response_refusal", pa.string(), True), ("categories", pa.list_(pa.string()), False),
]


def _set(table: pa.Table, name: str, values: list | pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values) if isinstance(values, list) else values)


def test_interactions_schema_is_method_a1() -> None:
    s = tables.SCHEMAS["interactions"]
    assert [(f.name, f.type, f.nullable) for f in s] == A1


def test_every_schema_documented_and_named() -> None:
    assert set(tables.SCHEMAS) == {"interactions", "traces", "judged_traces", "sft_examples",
                                   "generations", "mined", "pairs", "judged_outputs", "boundary_metrics", "predictions", "metrics", "failed"}
    for name, s in tables.SCHEMAS.items():
        assert s.metadata[b"description"]
        assert all(f.metadata and f.metadata[b"help"] for f in s), name
        assert len(set(s.names)) == len(s.names)
        assert name in tables.describe(name)
        assert tables.empty_table(name).schema == s
    traces = tables.SCHEMAS["traces"]
    assert traces.names[:10] == [n for n, _, _ in A1]
    assert tables.SCHEMAS["judged_traces"].names[: len(traces)] == traces.names
    assert traces.field("budget").nullable and traces.field("round").type == pa.int32()
    assert set(tables.SCHEMAS["mined"].names) >= {n for n, _, _ in A1} | {"n", "n_correct", "bucket"}
    with pytest.raises(GuardsmithError, match="unknown table schema 'nope'"):
        tables.schema("nope")


def test_label_vocabularies() -> None:
    assert tables.HARM_LABELS == ("harmful", "unharmful")
    assert tables.REFUSAL_LABELS == ("refusal", "compliance")
    assert tables.VOCABULARIES["interactions"] == {
        "prompt_harm": tables.HARM_LABELS, "response_harm": tables.HARM_LABELS,
        "response_refusal": tables.REFUSAL_LABELS}
    assert tables.VOCABULARIES["traces"]["pred_response_refusal"] == tables.REFUSAL_LABELS
    assert tables.VOCABULARIES["mined"]["bucket"] == ("easy", "difficult", "noise")
    assert tables.VOCABULARIES["sft_examples"]["mode"] == ("R", "NR")


def test_valid_table_passes_and_is_returned() -> None:
    t = interactions(50)
    assert tables.validate(t, "interactions", "x.parquet") is t
    assert tables.validate(t.to_batches()[0], "interactions") is not None


def test_missing_column() -> None:
    t = interactions(5).drop(["prompt"])
    with pytest.raises(DataError, match="missing column") as e:
        tables.validate(t, "interactions", "in.parquet")
    assert (e.value.file, e.value.column) == ("in.parquet", "prompt")
    assert "file in.parquet, column 'prompt'" in str(e.value)


def test_wrong_type_is_not_coerced() -> None:
    t = _set(interactions(5), "prompt", pa.array([None, None, 7, 8, 9], pa.int64()))
    with pytest.raises(DataError, match="wrong type: expected string, got int64") as e:
        tables.validate(t, "interactions", "in.parquet", row_offset=1000)
    assert (e.value.column, e.value.row, e.value.value) == ("prompt", 1002, 7)
    assert "row 1002" in str(e.value) and "(value 7)" in str(e.value)
    bools = _set(interactions(3), "categories", [1, 2, 3])
    with pytest.raises(DataError, match="column 'categories', row 0"):
        tables.validate(bools, "interactions")


def test_null_in_required_column() -> None:
    t = _set(interactions(6), "id", ["a", "b", "c", None, "e", "f"])
    with pytest.raises(DataError, match="null in a required column") as e:
        tables.validate(t, "interactions", "f", row_offset=10)
    assert (e.value.column, e.value.row, e.value.value) == ("id", 13, None)


def test_unknown_label_word() -> None:
    t = _set(interactions(6), "prompt_harm", ["harmful", None, "unharmful", "unsafe", "safe", None])
    with pytest.raises(DataError, match="unknown label word") as e:
        tables.validate(t, "interactions", "f.parquet", row_offset=100)
    assert (e.value.file, e.value.column, e.value.row, e.value.value) == ("f.parquet", "prompt_harm", 103, "unsafe")
    refusal = _set(interactions(3), "response_refusal", ["refusal", "harmful", None])
    with pytest.raises(DataError, match="column 'response_refusal', row 1"):
        tables.validate(refusal, "interactions")


def test_bad_row_in_later_chunk_has_global_index() -> None:
    good = interactions(100)
    bad = _set(interactions(100, start=100), "response_harm", [None] * 41 + ["maybe"] + [None] * 58)
    t = pa.concat_tables([good, bad])
    assert t.column("response_harm").num_chunks == 2
    with pytest.raises(DataError) as e:
        tables.validate(t, "interactions", row_offset=5)
    assert (e.value.row, e.value.value) == (146, "maybe")


def test_extra_columns_allowed_and_kept() -> None:
    t = interactions(4).append_column("note", pa.array(["n"] * 4))
    tables.validate(t, "interactions")
    assert tables.conform(t, "interactions").schema.names[-1] == "note"
    assert "note" not in tables.conform(t, "interactions", keep_extra=False).schema.names


def test_lossless_variants_are_accepted_and_conformed() -> None:
    t = interactions(6)
    t = _set(t, "prompt", t.column("prompt").cast(pa.large_string()))
    t = _set(t, "prompt_harm", t.column("prompt_harm").combine_chunks().dictionary_encode())
    t = _set(t, "policy", pa.nulls(6))  # an all-null column from a JSON loader
    t = t.select(list(reversed(t.schema.names)))
    out = tables.conform(t, "interactions")
    assert out.schema == tables.SCHEMAS["interactions"]
    assert out.column("prompt").to_pylist() == interactions(6).column("prompt").to_pylist()


def test_integer_width_checked() -> None:
    m = tables.from_records([dict(model="m", benchmark="b", task="prompt_harm", k=3, f1_mean=0.5,
                                  f1_std=0.1, precision_mean=0.5, recall_mean=0.5, support=10,
                                  parse_error_rate=0.0, latency_s_mean=None)], "metrics")
    wide = _set(m, "k", pa.array([3], pa.int64()))
    assert tables.conform(wide, "metrics").schema.field("k").type == pa.int32()
    with pytest.raises(DataError, match="does not fit int32"):
        tables.validate(_set(m, "k", pa.array([2**40], pa.int64())), "metrics")
    with pytest.raises(DataError, match="expected double, got string"):
        tables.validate(_set(m, "f1_mean", ["0.5"]), "metrics")


def test_null_category_item() -> None:
    t = _set(interactions(3), "categories", [["a"], [], ["b", None]])
    with pytest.raises(DataError, match="null item") as e:
        tables.validate(t, "interactions", row_offset=7)
    assert e.value.row == 9


def test_prediction_words_follow_task() -> None:
    row = dict(model="m", benchmark="b", task="response_refusal", run=0, id="1", label="refusal",
               prediction="compliance", parse_ok=True, latency_s=0.1)
    tables.from_records([row], "predictions")
    with pytest.raises(DataError, match="does not belong to task 'response_refusal'") as e:
        tables.from_records([row, {**row, "prediction": "harmful"}], "predictions")
    assert (e.value.column, e.value.row) == ("prediction", 1)
    with pytest.raises(DataError, match="unknown label word"):
        tables.from_records([{**row, "task": "toxicity"}], "predictions")


def test_validate_columns_subset() -> None:
    t = interactions(3).select(["id", "prompt_harm"])
    tables.validate(t, "interactions", columns=["id", "prompt_harm"])
    with pytest.raises(DataError, match="missing column"):
        tables.validate(t, "interactions")


def test_from_records_exact_schema_and_errors() -> None:
    rec = dict(id="a", source="s", taxonomy="aegis2", prompt="p", categories=["S1"], prompt_harm="harmful")
    t = tables.from_records([rec], "interactions", file="src.jsonl")
    assert t.schema == tables.SCHEMAS["interactions"]
    assert t.to_pylist()[0]["response"] is None
    cases = [
        ({**rec, "prompt": 5}, "prompt", "wrong type"),
        ({**rec, "categories": "S1"}, "categories", "wrong type"),  # a str is not a list of str
        ({**rec, "prompt_harm": "unsafe"}, "prompt_harm", "unknown label word"),
        ({**rec, "promt": "typo"}, "promt", "unknown field"),
        ({k: v for k, v in rec.items() if k != "id"}, "id", "null in a required column"),
    ]
    for bad, column, problem in cases:
        with pytest.raises(DataError, match=problem) as e:
            tables.from_records([rec, rec, bad], "interactions", file="src.jsonl")
        assert (e.value.file, e.value.column, e.value.row) == ("src.jsonl", column, 2)
    gen = dict(id="a", sample_index=1.5, text="t", parse_ok=True, prompt_tokens=1, completion_tokens=1, latency_s=1)
    with pytest.raises(DataError, match="expected int32, got float") as e:
        tables.from_records([gen], "generations")
    assert e.value.row == 0
    msgs = dict(id="a", mode="R", messages=[{"role": "user", "content": "hi"}], completion="c", source="s", weight=1.0)
    assert tables.from_records([msgs], "sft_examples").column("messages")[0].as_py() == msgs["messages"]
    with pytest.raises(DataError, match="wrong type"):
        tables.from_records([{**msgs, "messages": [{"role": "user", "content": 3}]}], "sft_examples")


_text = st.text(max_size=20)
_record = st.fixed_dictionaries({
    "id": _text, "source": _text, "taxonomy": st.sampled_from(["aegis2", "wildguard"]),
    "policy": st.none() | _text, "prompt": _text, "response": st.none() | _text,
    "prompt_harm": st.sampled_from([None, *tables.HARM_LABELS]),
    "response_harm": st.sampled_from([None, *tables.HARM_LABELS]),
    "response_refusal": st.sampled_from([None, *tables.REFUSAL_LABELS]),
    "categories": st.lists(_text, max_size=3),
})


@settings(max_examples=40, deadline=None)
@given(st.lists(_record, max_size=20))
def test_records_round_trip(records: list[dict]) -> None:
    assert tables.from_records(records, "interactions").to_pylist() == records


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), data=st.data(), offset=st.integers(0, 10**9),
       column=st.sampled_from(["prompt_harm", "response_harm", "response_refusal"]),
       word=st.text(min_size=1, max_size=10).filter(lambda w: w not in tables.HARM_LABELS + tables.REFUSAL_LABELS))
def test_first_bad_label_is_located(n: int, data: st.DataObject, offset: int, column: str, word: str) -> None:
    bad = data.draw(st.integers(0, n - 1))
    values = [None] * n
    values[bad] = word
    if bad + 1 < n:
        values[bad + 1] = "also-bad"
    t = _set(interactions(n), column, values)
    with pytest.raises(DataError) as e:
        tables.validate(t, "interactions", "f", row_offset=offset)
    assert (e.value.column, e.value.row, e.value.value) == (column, offset + bad, word)
