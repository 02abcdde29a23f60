"""The filter stage: rule yields on injected defects, the judge, regeneration rounds, outputs."""
from __future__ import annotations

import collections
import json
import socket

import pytest

from guardsmith import storage, tables
from guardsmith.config import load_config
from guardsmith.errors import DataError, GuardsmithError
from guardsmith.guard import render_teacher_messages
from guardsmith.standins.offline import DEFECTS, offline_spec, serve_offline
from guardsmith.standins.sample import load_sample
from guardsmith.stages import distill
from guardsmith.stages.filter import (
    JUDGE,
    RULE_ORDER,
    RULES,
    FilterConfig,
    apply_rules,
    leakage_hits,
    overthinking_count,
    repeated_ngram_ratio,
    run,
)

pytestmark = pytest.mark.timeout(60)
RATE = 0.1
RATES = dict.fromkeys(DEFECTS, RATE)
EXPECTED = {"leakage": "leakage", "repetition": "repetition", "overthinking": "overthinking",
            "wrong_answer": "wrong_answer", "unparseable": "unparsed", "ungrounded": JUDGE, None: None}
"""Offline-teacher defect -> the filter that must reject it (None: accepted)."""


@pytest.fixture(scope="module")
def server():
    with serve_offline(defects=RATES, seed=7) as srv:
        yield srv


@pytest.fixture(scope="module")
def data(tmp_path_factory, server) -> dict:
    root = tmp_path_factory.mktemp("flt")
    rows = load_sample()[::4]  # 150 rows of every kind
    src = str(root / "interactions")
    storage.write_table(src, tables.from_records(rows, "interactions"), "interactions")
    traces = str(root / "traces")
    distill.run(distill.DistillConfig(input=src, output=traces, teacher=offline_spec(server), concurrency=4,
                                      shard_size=64, max_retries=1))
    return {"root": root, "rows": rows, "traces": traces}


def fcfg(data: dict, name: str, srv, **kw) -> FilterConfig:
    kw = {"judge": offline_spec(srv), "concurrency": 4, "shard_size": 64, "max_retries": 1, **kw}
    return FilterConfig(input=kw.pop("input", data["traces"]), output=str(data["root"] / name), **kw)


def planned(srv, rows, seed: int = 0) -> dict[str, str | None]:
    """The defect the offline teacher put into each row's trace (same draw as its reply)."""
    return {r["id"]: srv.responder.defect_for(render_teacher_messages(r), seed) for r in rows}


def test_each_injected_defect_is_caught_by_its_rule(data, server):
    result = run(fcfg(data, "exact", server, rounds=0))
    defects = planned(server, data["rows"])
    accepted = storage.read_table(result.accepted, "judged_traces").to_pylist()
    rejected = storage.read_table(result.rejected, "judged_traces").to_pylist()
    assert len(accepted) + len(rejected) == len(data["rows"])
    for row in accepted:
        assert defects[row["id"]] is None and row["judge_score"] >= 4 and row["reject_details"] == []
    for row in rejected:
        expected = EXPECTED[defects[row["id"]]]
        assert row["reject_reason"] == expected, row
        assert len(row["reject_details"]) == 1 and row["reject_details"][0].startswith(expected + ": ")
        assert (row["judge_score"] is None) == (expected != JUDGE)
    report = json.loads(storage.read_bytes(result.report_json))
    want = collections.Counter(EXPECTED[d] for d in defects.values())
    first = report["rounds"][0]
    n = len(data["rows"])
    for rule_name in RULE_ORDER:
        assert first["rules"][rule_name]["flagged"] == first["rules"][rule_name]["first_reason"] == want[rule_name]
    assert first["judge"]["rejected"] == want[JUDGE]
    assert first["judge"]["judged"] == want[JUDGE] + want[None]
    for d in DEFECTS:  # the injected rates come back as per-rule yields
        assert abs(want[EXPECTED[d]] / n - RATE) < 0.07
    assert report["accepted"] == want[None] == result.accepted_rows
    assert abs(result.yield_ - want[None] / n) < 1e-9
    md = storage.read_bytes(result.report_md).decode()
    assert "| leakage |" in md and "judge (of" in md and "Round 0" in md
    assert not storage.exists(str(data["root"] / "exact" / "_rounds"))


def test_regeneration_reduces_rejects(data, server):
    result = run(fcfg(data, "regen", server, teacher=offline_spec(server), rounds=3))
    report = json.loads(storage.read_bytes(result.report_json))
    rejected_per_round = [rd["rejected"] for rd in report["rounds"]]
    assert len(rejected_per_round) >= 3
    assert all(a > b for a, b in zip(rejected_per_round, rejected_per_round[1:])), rejected_per_round
    assert [rd["rows"] for rd in report["rounds"][1:]] == rejected_per_round[:-1]
    accepted = storage.read_table(result.accepted, "judged_traces").to_pylist()
    rejected = storage.read_table(result.rejected, "judged_traces").to_pylist()
    ids = [r["id"] for r in accepted]
    assert len(ids) == len(set(ids)) == report["accepted"] > report["rounds"][0]["accepted"]
    assert {r["round"] for r in accepted} == set(range(len(report["rounds"])))
    # every version that was rejected is kept, with its round; the final rejects were never accepted
    assert len(rejected) == sum(rejected_per_round)
    final = {r["id"] for r in rejected} - set(ids)
    assert len(final) == report["rejected"] == rejected_per_round[-1] == result.rejected_rows
    assert set(ids) | final == {r["id"] for r in data["rows"]}
    # round 1 regenerated with seed + 1: the teacher's draws for that seed decide its verdicts
    round0 = {r["id"] for r in rejected if r["round"] == 0}
    redo = planned(server, [r for r in data["rows"] if r["id"] in round0], seed=1)
    assert report["rounds"][1]["accepted"] == sum(1 for d in redo.values() if d is None)
    before = server.stats.requests
    assert "finished earlier" in str(run(fcfg(data, "regen", server, teacher=offline_spec(server), rounds=3)))
    assert server.stats.requests == before


def test_budgeted_traces_are_regenerated_at_their_budget(data, server, tmp_path):
    budget = str(tmp_path / "b2")
    distill.run(distill.DistillConfig(input=data["traces"], output=budget, teacher=offline_spec(server),
                                      budget=2, concurrency=4, shard_size=64, max_retries=1))
    result = run(fcfg(data, "budget", server, input=budget, teacher=offline_spec(server), rounds=1,
                      keep_rounds=True))
    accepted = storage.read_table(result.accepted, "judged_traces").to_pylist()
    later = [r for r in accepted if r["round"] == 1]
    assert later and all(r["budget"] == 2 and r["n_sentences"] <= 2 for r in later)
    assert storage.is_committed(str(data["root"] / "budget" / "_rounds" / "round-1" / "budget-2"))


def test_rules_are_switchable_and_parameterised(data, server):
    only = run(fcfg(data, "only", server, rules=["unparsed"], judge=None, rounds=0))
    report = json.loads(storage.read_bytes(only.report_json))
    assert list(report["rounds"][0]["rules"]) == ["unparsed"] and "judge" not in report["rounds"][0]
    assert only.rejected_rows == report["rounds"][0]["rules"]["unparsed"]["flagged"] > 0
    strict = run(fcfg(data, "strict", server, rules=["overlength"], judge=None, rounds=0, max_words=20))
    assert strict.rejected_rows > only.rejected_rows


def make_row(text: str, **kw) -> dict:
    row = {"id": "x", "prompt_harm": "harmful", "response_harm": None, "response_refusal": None,
           "parse_ok": True, "reasoning": text, "raw_output": text, "completion_tokens": 10,
           "pred_prompt_harm": "harmful", "pred_response_harm": None, "pred_response_refusal": None}
    row.update(kw)
    return row


def test_rule_functions():
    cfg = FilterConfig(input="i", output="o")
    assert apply_rules(make_row("The request asks for a weapon recipe."), cfg) == []
    for text, name in [
        ("The ground truth marks it.", "leakage"), ("As labeled, it is unsafe.", "leakage"),
        ("The given labels say so.", "leakage"), ("It was labeled as harmful.", "leakage"),
        ("Wait. Hmm. Let me re-check. On second thought, fine.", "overthinking"),
        ("the same words again " * 8, "repetition"),
        (" ".join(f"w{i}" for i in range(401)), "overlength"),
        ("", "no_reasoning"),
    ]:
        assert [h.split(":")[0] for h in apply_rules(make_row(text), cfg)] == [name], text
    assert apply_rules(make_row("ok.", completion_tokens=5000), cfg)[0].startswith("overlength: 5000")
    wrong = apply_rules(make_row("ok.", pred_prompt_harm="unharmful"), cfg)
    assert wrong == ["wrong_answer: prompt_harm answered unharmful, true label harmful"]
    unparsed = apply_rules(make_row("ok.", parse_ok=False, reasoning=None, raw_output="Prompt harm: maybe"), cfg)
    assert unparsed[0].startswith("unparsed: ") and "maybe" in unparsed[0]
    assert leakage_hits("nothing to see") == [] and overthinking_count("Wait, hmm") == 2
    assert repeated_ngram_ratio("a b c d a b c d", 4) == 1 / 5 and repeated_ngram_ratio("a b", 4) == 0.0
    assert set(RULES) == set(RULE_ORDER)


def test_bad_settings_and_input(data, server, tmp_path):
    with pytest.raises(GuardsmithError, match="unknown rule"):
        run(fcfg(data, "x", server, rules=["leakage", "typo"]))
    with pytest.raises(GuardsmithError, match="judge_min_score"):
        run(fcfg(data, "x", server, judge_min_score=7))
    interactions = str(data["root"] / "interactions")
    with pytest.raises(DataError, match="teacher"):  # an interactions table lacks the trace columns
        run(fcfg(data, "x", server, input=interactions))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GuardsmithError, match="failed after"):
        run(fcfg(data, "x", server, judge=f"openai:http://127.0.0.1:{port}/v1?model=j", max_retries=0))
    assert not storage.exists(str(data["root"] / "x"))


def test_presets_load():
    for name in ("default", "offline"):
        config = load_config(FilterConfig, None, {"input": "i", "output": "o"}, stage="filter", preset=name)
        assert config.rules and config.rounds == 2


def test_every_config_field_and_rule_is_documented():
    import dataclasses
    from pathlib import Path

    from guardsmith.teacher import TeacherSettings

    doc = (Path(__file__).parent.parent / "docs" / "stages" / "filter.md").read_text()
    own = [f.name for f in dataclasses.fields(FilterConfig) if f.name not in
           {g.name for g in dataclasses.fields(TeacherSettings)}]
    assert all(f"`{name}`" in doc for name in own + list(RULES))


# --------------------------------------------------------------------------- issue 10: re-runs, failed rows, yield floor

def test_rerun_with_other_input_or_rules_is_refused(data, server, tmp_path):
    first = run(fcfg(data, "again", server, rounds=0))
    before = server.stats.requests
    fewer = str(tmp_path / "fewer")
    table = storage.read_table(data["traces"], "traces")
    storage.write_table(fewer, table.slice(0, 60), "traces")
    for change, named in [({"rules": ["unparsed", "leakage"]}, "config.rules"), ({"input": fewer}, r"input table \(--input\)"),
                          ({"max_words": 50}, "config.max_words"), ({"judge": None}, "config.judge_model")]:
        with pytest.raises(GuardsmithError, match=f"other work: .*{named}") as err:
            run(fcfg(data, "again", server, rounds=0, **change))
        assert "\n" not in str(err.value)
    assert server.stats.requests == before
    assert run(fcfg(data, "again", server, rounds=0)).skipped
    redo = run(fcfg(data, "again", server, rounds=0, input=fewer, overwrite=True))
    assert not redo.skipped and redo.rows == 60
    ids = [r["id"] for r in storage.read_table(redo.accepted).to_pylist() + storage.read_table(redo.rejected).to_pylist()]
    assert sorted(ids) == sorted(table.slice(0, 60).column("id").to_pylist())
    assert json.loads(storage.read_bytes(redo.report_json))["rows"] == 60 != first.rows


def test_rounds_of_other_rules_are_not_resumed(data, server):
    out = fcfg(data, "resume", server, rounds=0, keep_rounds=True, judge=None)
    run(out)
    storage.remove(str(data["root"] / "resume" / "accepted"))  # as if stopped before the final commit
    with pytest.raises(GuardsmithError, match="rounds made with other rules.*config.rules"):
        run(fcfg(data, "resume", server, rounds=0, keep_rounds=True, judge=None, rules=["unparsed"]))
    redo = run(fcfg(data, "resume", server, rounds=0, judge=None, rules=["unparsed"], overwrite=True))
    report = json.loads(storage.read_bytes(redo.report_json))
    assert list(report["rounds"][0]["rules"]) == ["unparsed"]  # round 0 judged again under the new rules
    rejected = storage.read_table(redo.rejected).to_pylist()
    assert rejected and all(r["reject_reason"] == "unparsed" for r in rejected)


def test_yield_below_the_floor_fails(data, server):
    with pytest.raises(GuardsmithError, match=r"yield .* below min_yield 0.5.*overlength") as err:
        run(fcfg(data, "floor", server, rounds=0, judge=None, rules=["overlength"], max_words=10, min_yield=0.5))
    assert "\n" not in str(err.value)
    assert not storage.is_committed(str(data["root"] / "floor" / "accepted"))
    assert not storage.exists(str(data["root"] / "floor" / "report.json"))


def test_judge_failures_are_counted_then_fatal_above_the_threshold(data, tmp_path):
    rows = storage.read_table(data["traces"], "traces").to_pylist()
    with serve_offline(defects={}, seed=7) as judge:
        bad = [r["id"] for r in rows if r["parse_ok"] and r["prompt"][:60].isascii()][:3]
        for rid in bad:  # the judge prompt shows the conversation: poison the rows' prompts
            judge.faults.poison(next(r["prompt"] for r in rows if r["id"] == rid)[:60])
        result = run(fcfg(data, "judged", judge, rounds=0, rules=["unparsed"], max_failed_fraction=0.05))
        failed = storage.read_table(result.failed, "failed").to_pylist()
        assert {f["id"] for f in failed} >= set(bad) and all(f["stage"] == "filter" for f in failed)
        assert result.failed_rows == len(failed) and f"failed rows {len(failed)}" in str(result)
        rejected = {r["id"]: r for r in storage.read_table(result.rejected).to_pylist()}
        assert all(rejected[rid]["reject_reason"] == JUDGE for rid in bad)
        with pytest.raises(GuardsmithError, match="rows failed .* max_failed_fraction 0.01") as err:
            run(fcfg(data, "judged2", judge, rounds=0, rules=["unparsed"], max_failed_fraction=0.01))
        assert bad[0] in str(err.value)
        # the finished output re-run with the stricter gate: refused as a fresh run would be, no request
        before = judge.stats.requests
        with pytest.raises(GuardsmithError, match="rows failed .* max_failed_fraction 0.01") as err2:
            run(fcfg(data, "judged", judge, rounds=0, rules=["unparsed"], max_failed_fraction=0.01))
        assert bad[0] in str(err2.value) and "\n" not in str(err2.value) and judge.stats.requests == before
        assert storage.is_committed(result.accepted)


def test_a_finished_output_is_held_to_the_current_yield_floor(data, server):
    kw = dict(rounds=0, judge=None, rules=["overlength"], max_words=25)
    first = run(fcfg(data, "gate", server, **kw))
    assert 0 < first.yield_ < 0.95
    assert run(fcfg(data, "gate", server, **kw, min_yield=first.yield_)).skipped  # min_yield is not the work
    with pytest.raises(GuardsmithError, match=rf"yield {first.yield_:.1%} .* below min_yield 0.95 "
                                              r"\(round 0 rejections: overlength \d+\)") as err:
        run(fcfg(data, "gate", server, **kw, min_yield=0.95))
    assert "\n" not in str(err.value) and "finished earlier" not in str(err.value)
    assert storage.is_committed(first.accepted)  # the finished output stays


def test_a_local_judge_or_teacher_model_is_identified_by_its_content(data, tmp_path):
    from guardsmith.stages.filter import filter_identity

    model = tmp_path / "judge-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = FilterConfig(input=data["traces"], output=str(tmp_path / "f"), judge=f"vllm:{model}",
                       teacher=f"transformers:{model}")
    first = filter_identity(cfg)
    (model / "config.json").write_text('{"republished": true}')
    assert filter_identity(cfg).differences(first) == ["input judge", "input teacher"]
