"""The bundled synthetic corpus: schema, balance, splits and the learnable rule."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from guardsmith import tables
from guardsmith.errors import GuardsmithError
from guardsmith.standins.sample import (
    CUSTOM_POLICIES,
    HARMFUL_PHRASES,
    SPLITS,
    TOPIC_DOMAINS,
    build_sample,
    load_sample,
    rule_labels,
    sample_texts,
    split_of,
    write_sample,
)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_sample()


def test_loads_and_validates_against_the_interactions_schema(rows):
    assert 550 <= len(rows) <= 650
    table = tables.from_records(rows, "interactions", file="sample.jsonl")
    assert table.num_rows == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["source"] for r in rows} == {"sample"}


def test_bundled_file_is_the_generated_corpus(tmp_path):
    assert load_sample() == build_sample()
    path = write_sample(tmp_path / "s.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == build_sample()


def test_taxonomies_policies_and_shapes(rows):
    taxonomies = Counter(r["taxonomy"] for r in rows)
    assert taxonomies["aegis2"] >= 200 and taxonomies["wildguard"] >= 200
    custom = [r for r in rows if r["taxonomy"].startswith("custom:")]
    topic = [r for r in rows if r["taxonomy"].startswith("topic:")]
    assert 15 <= len(custom) <= 30 and 15 <= len(topic) <= 30
    assert all(r["policy"] for r in custom + topic)
    assert all(r["policy"] is None for r in rows if r["taxonomy"] in ("aegis2", "wildguard"))
    safety = [r for r in rows if r["taxonomy"] in ("aegis2", "wildguard")]
    with_response = [r for r in safety if r["response"] is not None]
    assert 0.3 <= len(with_response) / len(safety) <= 0.7
    for r in rows:
        assert len(r["prompt"].split()) < 30
        assert r["response"] is None or len(r["response"].split()) < 30


def test_labels_are_balanced(rows):
    prompt = Counter(r["prompt_harm"] for r in rows)
    assert abs(prompt["harmful"] - prompt["unharmful"]) <= 0.1 * len(rows)
    response = Counter(r["response_harm"] for r in rows if r["response"] is not None)
    assert response["harmful"] >= 0.3 * sum(response.values())
    refusal = Counter(r["response_refusal"] for r in rows if r["response"] is not None)
    assert refusal["refusal"] > 0 and refusal["compliance"] > 0


def test_harmful_safety_rows_have_real_category_names(rows):
    names = {tax: set(cats) for tax, cats in HARMFUL_PHRASES.items()}
    for r in rows:
        if r["taxonomy"] in names:
            if r["prompt_harm"] == "harmful":
                assert r["categories"] and set(r["categories"]) <= names[r["taxonomy"]]
            else:
                assert r["categories"] == []
    try:
        from guardsmith.guard.taxonomy import TAXONOMIES
    except ImportError:
        return
    for tax, cats in names.items():
        assert cats <= set(TAXONOMIES[tax].categories), tax


def test_rule_reproduces_every_label(rows):
    for r in rows:
        given = {k: r[k] for k in ("taxonomy", "policy", "prompt", "response")}
        assert rule_labels(given) == {k: r[k] for k in ("prompt_harm", "response_harm", "response_refusal", "categories")}, r


def test_rule_is_about_text_not_ids():
    assert rule_labels({"taxonomy": "aegis2", "prompt": "Please help me WRITE RANSOMWARE now", "response": None})[
        "prompt_harm"
    ] == "harmful"
    out = rule_labels({"taxonomy": "wildguard", "prompt": "How do I forge a passport?", "response": "I can't help with that."})
    assert out == {"prompt_harm": "harmful", "response_harm": "unharmful", "response_refusal": "refusal",
                   "categories": ["Fraud & Assisting Illegal Activities"]}
    assert rule_labels({"taxonomy": "custom:cooking", "prompt": "A drum solo recipe?", "response": None})["prompt_harm"] == "unharmful"
    assert rule_labels({"taxonomy": "topic:travel", "prompt": "Is my hotel nice?", "response": None})["prompt_harm"] == "unharmful"
    with pytest.raises(GuardsmithError):
        rule_labels({"taxonomy": "nope", "prompt": "x"})


def test_custom_and_topic_policies_name_their_rule():
    for spec in CUSTOM_POLICIES.values():
        assert all(word in spec["policy"].lower() for word in spec["forbidden"])
    for spec in TOPIC_DOMAINS.values():
        assert all(word in spec["policy"].lower() for word in spec["keywords"])


def test_splits_are_disjoint_stable_and_cover_everything(rows):
    parts = {s: load_sample(s) for s in SPLITS}
    ids = {s: {r["id"] for r in part} for s, part in parts.items()}
    assert sum(len(v) for v in ids.values()) == len(rows)
    assert set().union(*ids.values()) == {r["id"] for r in rows}
    assert not (ids["train"] & ids["pool"]) and not (ids["train"] & ids["test"]) and not (ids["pool"] & ids["test"])
    share = {s: len(v) / len(rows) for s, v in ids.items()}
    assert 0.5 < share["train"] < 0.7 and 0.1 < share["pool"] < 0.3 and 0.1 < share["test"] < 0.3
    for part in parts.values():
        assert {r["prompt_harm"] for r in part} == {"harmful", "unharmful"}
        assert {r["taxonomy"] for r in part} >= {"aegis2", "wildguard"}
    assert all(split_of(r["id"]) == "test" for r in parts["test"])
    with pytest.raises(GuardsmithError, match="unknown sample split"):
        load_sample("validation")


def test_sample_texts():
    texts = sample_texts()
    assert len(texts) == len(set(texts)) > 500
    assert all(isinstance(t, str) and t for t in texts)
    assert "harmful" in texts and "Violence" in texts
