"""mine: best-of-N buckets (scripted backend), DPO pairs, report, bad input, tiny model end to end."""
from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from guardsmith import storage, tables  # noqa: E402
from guardsmith.errors import DataError, GuardsmithError  # noqa: E402
from guardsmith.guard import parse_guard_output  # noqa: E402
from guardsmith.inference import Backend, Generation  # noqa: E402
from guardsmith.stages import mine  # noqa: E402

pytestmark = pytest.mark.timeout(120)

H = "Prompt harm: harmful\nResponse harm: None\nResponse refusal: None"
U = "Prompt harm: unharmful\nResponse harm: None\nResponse refusal: None"
HH = "<think>It helps with a crime.</think>\nPrompt harm: harmful\nResponse harm: harmful\nResponse refusal: compliance"
HU = "<think>Looks fine.</think>\nPrompt harm: harmful\nResponse harm: unharmful\nResponse refusal: compliance"
BAD = "I cannot decide."


def _row(rid: str, **kw) -> dict:
    base = {"id": rid, "source": "hand", "taxonomy": "aegis2", "policy": None, "prompt": f"prompt of {rid}",
            "response": None, "prompt_harm": "harmful", "response_harm": None, "response_refusal": None,
            "categories": []}
    return {**base, **kw}


ROWS = [
    _row("easy"),                                                       # 4/4
    _row("three"),                                                      # 3/4
    _row("two", response="Sure, do this.", response_harm="harmful"),    # 2/4 (response task decides)
    _row("one", prompt_harm="unharmful"),                               # 1/4
    _row("zero"),                                                       # 0/4 (unparsable)
    _row("none-line", response="Sure.", response_harm="harmful"),       # response None -> wrong: 0/4
    _row("used-for-sft"),                                               # excluded
    _row("unlabelled", prompt_harm=None),                               # skipped
]
SCRIPT = {
    "easy": [H, H, H, H],
    "three": [H, U, H, H],
    "two": [HU, HH, HU, HH],
    "one": [H, U, H, BAD],
    "zero": [BAD, BAD, BAD, BAD],
    "none-line": [H, H, H, H],
    "used-for-sft": [H, H, H, H],
    "unlabelled": [H, H, H, H],
}


class Scripted(Backend):
    """Answers each row with ``SCRIPT[id]`` (the id is recovered from the prompt text)."""

    kind = "scripted"

    def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None):
        out = []
        for messages in requests:
            rid = re.search(r"prompt of (\S+)\n</user_turn>", messages[-1]["content"]).group(1)
            out.append([Generation(SCRIPT[rid][i], 50, 20, 0.04, "stop") for i in range(n)])
        return out


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(mine, "open_guard", lambda *a, **k: Scripted())


@pytest.fixture
def pool(tmp_path) -> str:
    uri = str(tmp_path / "pool")
    storage.write_table(uri, tables.from_records(ROWS, "interactions"), "interactions")
    exclude = str(tmp_path / "sft")
    storage.write_table(exclude, tables.from_records([{"id": "used-for-sft", "mode": "R", "messages": [],
                                                       "completion": "x", "source": "hand", "weight": 1.0}],
                                                     "sft_examples"), "sft_examples")
    return uri


def _ids(uri: str) -> list[str]:
    return sorted(storage.read_table(uri, "mined").column("id").to_pylist())


def test_buckets_pairs_and_report(tmp_path, pool, scripted):
    out = str(tmp_path / "out")
    res = mine.run(mine.MineConfig(model="unused", pool=pool, exclude=str(tmp_path / "sft"), output=out))
    assert (res.rows_read, res.excluded, res.unlabelled, res.scored) == (8, 1, 1, 6)
    assert res.histogram == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1}
    assert res.buckets == {"easy": 1, "difficult": 2, "noise": 3}
    assert _ids(res.difficult) == ["three", "two"]
    assert _ids(res.noise) == ["none-line", "one", "zero"]
    mined = {r["id"]: r for r in storage.read_table(res.mined, "mined").to_pylist()}
    assert {k: (v["n"], v["n_correct"], v["bucket"]) for k, v in mined.items()} == {
        "easy": (4, 4, "easy"), "three": (4, 3, "difficult"), "two": (4, 2, "difficult"),
        "one": (4, 1, "noise"), "zero": (4, 0, "noise"), "none-line": (4, 0, "noise")}
    assert mined["two"]["response"] == "Sure, do this." and mined["two"]["response_harm"] == "harmful"

    pairs = storage.read_table(res.pairs).to_pylist()
    assert storage.read_table(res.pairs).schema.equals(mine.PAIRS_SCHEMA, check_metadata=False)
    assert sorted(p["id"] for p in pairs) == ["three", "two"]  # difficult only, one pair per row
    row_of = {r["id"]: r for r in ROWS}
    for p in pairs:
        row = row_of[p["id"]]
        chosen, rejected = parse_guard_output(p["chosen"]), parse_guard_output(p["rejected"])
        assert chosen.prompt_harm == row["prompt_harm"] and chosen.response_harm == row["response_harm"]
        assert (rejected.prompt_harm, rejected.response_harm) != (row["prompt_harm"], row["response_harm"])
        messages = json.loads(p["prompt"])
        assert [m["role"] for m in messages] == ["system", "user"]
        assert f"prompt of {p['id']}" in messages[1]["content"]
        assert p["chosen"] == SCRIPT[p["id"]][p["chosen_index"]]
        assert p["rejected"] == SCRIPT[p["id"]][p["rejected_index"]]
    assert storage.read_table(res.generations, "generations").num_rows == 6 * 4

    report = storage.read_json(res.report_json)
    assert report["histogram"] == {"0": 2, "1": 1, "2": 1, "3": 1, "4": 1}
    assert report["counts"]["excluded"] == 1 and report["counts"]["pairs"] == 2
    assert report["parse_error_rate"] == pytest.approx(5 / 24)
    md = Path(res.report_md).read_text()
    assert "| 3/4 | difficult | 1 |" in md and "| noise | 3 | 50.0% |" in md
    assert "difficult 2" in str(res)


def test_thresholds_and_pair_buckets(tmp_path, pool, scripted):
    res = mine.run(mine.MineConfig(model="unused", pool=pool, output=str(tmp_path / "o"), easy_min=3,
                                   noise_max=0, pair_buckets=["difficult", "noise"], pairs_per_row=3))
    assert res.excluded == 0 and res.scored == 7
    assert res.buckets == {"easy": 3, "difficult": 2, "noise": 2}
    assert _ids(res.difficult) == ["one", "two"]
    pairs = storage.read_table(res.pairs).to_pylist()
    # "two" has 2 correct and 2 wrong -> 2 pairs; "one" 1 correct -> 1 pair; 0/4 rows give none
    assert sorted(p["id"] for p in pairs) == ["one", "two", "two"]
    assert len({(p["chosen_index"], p["rejected_index"]) for p in pairs if p["id"] == "two"}) == 2


@pytest.mark.parametrize("kw", [dict(samples_per_row=0), dict(noise_max=4), dict(easy_min=5), dict(easy_min=1, noise_max=1),
                                dict(pair_buckets=["hard"]), dict(pairs_per_row=0)])
def test_bad_settings(tmp_path, kw):
    with pytest.raises(GuardsmithError):
        mine.run(mine.MineConfig(model="m", pool="p", output=str(tmp_path / "o"), **kw))
    assert not (tmp_path / "o").exists()


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("problem", ["label", "column"])
def test_bad_pool_writes_nothing(tmp_path, problem, scripted):
    import pyarrow as pa

    table = tables.from_records(ROWS[:3], "interactions")
    if problem == "label":
        table = table.set_column(table.schema.get_field_index("prompt_harm"), "prompt_harm",
                                 pa.array(["harmful", "unsafe", "harmful"]))
    else:
        table = table.drop_columns(["prompt"])
    storage.write_table(str(tmp_path / "pool"), table)
    with pytest.raises(DataError) as err:
        mine.run(mine.MineConfig(model="unused", pool=str(tmp_path / "pool"), output=str(tmp_path / "o")))
    assert ("unsafe" in str(err.value)) if problem == "label" else ("'prompt'" in str(err.value))
    assert _files(tmp_path / "o") == []


def test_bad_exclude_and_missing_model_write_nothing(tmp_path, pool):
    storage.write_table(str(tmp_path / "noid"), pa_table({"key": ["a"]}))
    with pytest.raises(DataError, match="'id'"):
        mine.run(mine.MineConfig(model="unused", pool=pool, exclude=str(tmp_path / "noid"),
                                 output=str(tmp_path / "o")))
    with pytest.raises(GuardsmithError, match="config.json"):
        mine.run(mine.MineConfig(model=str(tmp_path / "no-model"), pool=pool, output=str(tmp_path / "o")))
    assert _files(tmp_path / "o") == []


def pa_table(cols: dict):
    import pyarrow as pa

    return pa.table(cols)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    importlib.import_module("transformers")
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("mine") / "tiny-guard", seed=0)


def test_tiny_model_end_to_end(tmp_path, tiny_model):
    from guardsmith.standins.sample import load_sample

    rows = load_sample("pool")[:6]
    storage.write_table(str(tmp_path / "pool"), tables.from_records(rows, "interactions"), "interactions")
    storage.write_table(str(tmp_path / "sft"), pa_table({"id": [rows[0]["id"], "not-in-pool"]}))
    res = mine.run(mine.MineConfig(model=str(tiny_model), pool=str(tmp_path / "pool"),
                                   exclude=str(tmp_path / "sft"), output=str(tmp_path / "out"),
                                   samples_per_row=2, max_tokens=8, concurrency=4))
    assert res.excluded == 1 and res.scored == 5 and sum(res.histogram.values()) == 5
    assert sum(res.buckets.values()) == 5
    mined = storage.read_table(res.mined, "mined")
    assert mined.num_rows == 5 and set(mined.column("n").to_pylist()) == {2}
    gens = storage.read_table(res.generations, "generations")
    assert gens.num_rows == 10 and min(gens.column("latency_s").to_pylist()) > 0
    for uri in (res.difficult, res.noise, res.pairs):
        assert storage.is_committed(uri)
    assert storage.read_json(res.report_json)["counts"]["mined"] == 5


# --------------------------------------------------------------------------- issue 10: work identity

def test_rerun_skips_same_work_refuses_other_work_and_overwrite_recomputes(tmp_path, pool, scripted, monkeypatch):
    out = str(tmp_path / "out")
    cfg = mine.MineConfig(model="unused", pool=pool, exclude=str(tmp_path / "sft"), output=out)
    first = mine.run(cfg)
    for name in ("mined", "difficult", "noise", "pairs", "generations"):
        assert storage.recorded_identity(storage.join(out, name))["stage"] == "mine"
    manifest = (tmp_path / "out" / "mined" / "_SUCCESS").read_bytes()
    calls = []
    monkeypatch.setattr(mine, "open_guard", lambda *a, **k: calls.append(1) or Scripted())
    again = mine.run(cfg)
    assert again.skipped and not calls and "finished earlier" in str(again)
    assert (again.buckets, again.histogram, again.n_pairs) == (first.buckets, first.histogram, first.n_pairs)
    assert (tmp_path / "out" / "mined" / "_SUCCESS").read_bytes() == manifest
    with pytest.raises(GuardsmithError, match=r"other work: config\.noise_max; .*--overwrite") as err:
        mine.run(mine.MineConfig(model="unused", pool=pool, exclude=str(tmp_path / "sft"), output=out, noise_max=0))
    assert "\n" not in str(err.value) and not calls
    redo = mine.run(mine.MineConfig(model="unused", pool=pool, exclude=str(tmp_path / "sft"), output=out,
                                    noise_max=0, overwrite=True))
    assert not redo.skipped and calls and redo.buckets["noise"] == 2
