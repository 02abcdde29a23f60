"""continual: label reward, config checks, and a few steps of SFT (+difficult), DPO and GRPO on a tiny model."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from guardsmith import storage, tables, training  # noqa: E402
from guardsmith.errors import DataError, GuardsmithError  # noqa: E402
from guardsmith.guard import render_guard_messages  # noqa: E402
from guardsmith.guard.examples import GUARD_COLUMNS  # noqa: E402
from guardsmith.stages import continual  # noqa: E402
from guardsmith.stages.mine import PAIRS_SCHEMA  # noqa: E402

pytestmark = pytest.mark.timeout(180)

H = "Prompt harm: harmful\nResponse harm: None\nResponse refusal: None"
U = "Prompt harm: unharmful\nResponse harm: None\nResponse refusal: None"


def _row(i: int, **kw) -> dict:
    harmful = i % 2 == 0
    base = {"id": f"r{i}", "source": "hand", "taxonomy": "aegis2", "policy": None,
            "prompt": f"How do I {'make a pipe bomb' if harmful else 'bake bread'} ({i})?", "response": None,
            "prompt_harm": "harmful" if harmful else "unharmful", "response_harm": None, "response_refusal": None,
            "categories": [], "reasoning": f"Reason {i}."}
    return {**base, **kw}


def _write(uri: str | Path, rows: list[dict], columns: list[str]) -> str:
    schema = pa.schema([tables.SCHEMAS["judged_traces"].field(c) for c in columns])
    storage.write_table(str(uri), pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema))
    return str(uri)


TRACES = [*GUARD_COLUMNS, "reasoning"]
MINED = [*GUARD_COLUMNS, "categories"]


# --------------------------------------------------------------------------- reward

def test_label_reward_scores():
    w = continual.RewardWeights(prompt=1.0, response=1.0, refusal=0.0, false_positive=0.5, false_negative=2.0,
                                parse_failure=-3.0)
    prompt_only = {"prompt_harm": "harmful", "response_harm": None, "response_refusal": None}
    assert continual.score_completion(H, prompt_only, w) == (1.0, {"prompt_harm": True})
    assert continual.score_completion(U, prompt_only, w)[0] == -2.0            # false negative
    benign = {**prompt_only, "prompt_harm": "unharmful"}
    assert continual.score_completion(H, benign, w)[0] == -0.5                 # false positive
    assert continual.score_completion("no idea", benign, w) == (-3.0, None)    # parse failure: lowest
    both = {"prompt_harm": "harmful", "response_harm": "harmful", "response_refusal": "compliance"}
    half = "<think>x</think>\nPrompt harm: harmful\nResponse harm: unharmful\nResponse refusal: compliance"
    assert continual.score_completion(half, both, w)[0] == pytest.approx((1.0 - 2.0) / 2)
    with pytest.raises(GuardsmithError, match="below every other reward"):
        continual.RewardWeights(parse_failure=-1.0)

    reward = continual.LabelReward(w)
    logged = {}
    out = reward(prompts=[[], []], completions=[[{"role": "assistant", "content": H}], [{"role": "assistant", "content": "?"}]],
                 prompt_harm=["harmful", "harmful"], response_harm=[None, None], response_refusal=[None, None],
                 log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [1.0, -3.0] and reward.__name__ == "label_reward"
    assert logged == {"guard/parse_failure_rate": 0.5, "guard/accuracy_prompt_harm": 1.0}
    assert json.loads(reward.jsonl())["reward_mean"] == -1.0


@pytest.mark.parametrize("kw, match", [
    ({"method": "ppo"}, "unknown continual method"),
    ({"method": "dpo"}, "needs `pairs`"),
    ({"method": "sft"}, "needs `train` and/or `difficult`"),
    ({"method": "grpo", "train": "t", "samples_per_row": 3}, "samples_per_row"),
    ({"method": "sft", "train": "t", "mode": "both"}, "unknown mode"),
])
def test_bad_config(tmp_path, kw, match):
    with pytest.raises(GuardsmithError, match=match):
        continual.run(continual.ContinualConfig(base_model="m", output=str(tmp_path / "o"), **kw))
    assert not (tmp_path / "o").exists()


def test_bad_pairs_table(tmp_path):
    rows = [{"id": "a", "prompt": "not json", "chosen": H, "rejected": U}]
    storage.write_table(str(tmp_path / "pairs"), pa.Table.from_pylist(rows))
    with pytest.raises(DataError, match=r"column 'prompt', row 0"):
        continual.read_pairs(str(tmp_path / "pairs"))
    storage.write_table(str(tmp_path / "p2"), pa.Table.from_pylist([{"id": "a", "prompt": "[]", "chosen": H}]))
    with pytest.raises(DataError, match=r"p2, column 'rejected'"):
        continual.read_pairs(str(tmp_path / "p2"))


def test_sft_examples_oversample_difficult_with_reasoning_lookup(tmp_path):
    _write(tmp_path / "train", [_row(i) for i in range(6)], TRACES)
    _write(tmp_path / "difficult", [_row(i) for i in (10, 11)], MINED)
    _write(tmp_path / "pool_traces", [_row(10, reasoning="Pool reason.")], TRACES)
    cfg = continual.ContinualConfig(base_model="m", output="o", train=str(tmp_path / "train"),
                                    difficult=str(tmp_path / "difficult"), oversample=3,
                                    reasoning_source=str(tmp_path / "pool_traces"))
    prep = continual.prepare_sft(cfg)
    weights = {e["id"]: e["weight"] for e in prep.examples}
    assert weights == {**{f"r{i}": 1.0 for i in range(6)}, "r10": 3.0, "r11": 3.0}
    by_id = {e["id"]: e["completion"] for e in prep.examples}
    assert "Pool reason." in by_id["r10"] and "policy does not allow" not in by_id["r10"]
    assert "stays within" in by_id["r11"]  # no trace for r11: short generated reason
    assert prep.data.counts["difficult_reasoning_found"] == 1 and prep.data.counts["short_reason"] == 1


# --------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("continual") / "tiny")


def _cfg(tmp_path, tiny_model, **kw) -> continual.ContinualConfig:
    base = dict(base_model=str(tiny_model), output=str(tmp_path / "out"), learning_rate=1e-4, lr_scheduler="constant",
                batch_size=4, per_device_batch_size=4, max_length=640, logging_steps=1, max_steps=2)
    return continual.ContinualConfig(**{**base, **kw})


def _summary(tmp_path) -> dict:
    return json.loads((tmp_path / "out" / "guardsmith_training.json").read_text())


def test_continual_sft_runs(tmp_path, tiny_model):
    _write(tmp_path / "train", [_row(i) for i in range(4)], TRACES)
    _write(tmp_path / "difficult", [_row(10)], MINED)
    res = continual.run(_cfg(tmp_path, tiny_model, method="sft", mode="NR", train=str(tmp_path / "train"),
                             difficult=str(tmp_path / "difficult"), oversample=2))
    assert res.method == "sft" and res.examples == 6 and res.global_step == 2
    assert "| difficult |" in (tmp_path / "out" / "README.md").read_text()


def test_dpo_runs_and_logs(tmp_path, tiny_model):
    rows = [{"id": f"p{i}", "source": "hand", "prompt": json.dumps(render_guard_messages(_row(i), "NR")),
             "chosen": H if i % 2 == 0 else U, "rejected": U if i % 2 == 0 else H, "mode": "NR", "n": 4,
             "n_correct": 2, "bucket": "difficult", "chosen_index": 0, "rejected_index": 1} for i in range(4)]
    storage.write_table(str(tmp_path / "pairs"), pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))
    res = continual.run(_cfg(tmp_path, tiny_model, method="dpo", pairs=str(tmp_path / "pairs")))
    assert res.method == "dpo" and res.examples == 4 and res.global_step == 2
    logs = [json.loads(x) for x in (tmp_path / "out" / "training_log.jsonl").read_text().splitlines()]
    assert any("rewards/accuracies" in e for e in logs)
    # issue 10: the same work again is a no-op; other pairs are refused; an over-long pair names its row
    manifest = (tmp_path / "out" / "_SUCCESS").read_bytes()
    assert continual.run(_cfg(tmp_path, tiny_model, method="dpo", pairs=str(tmp_path / "pairs"))).global_step == 2
    assert (tmp_path / "out" / "_SUCCESS").read_bytes() == manifest
    rows[3]["chosen"] = H + " " + "x" * 5000
    storage.write_table(str(tmp_path / "pairs2"), pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))
    with pytest.raises(GuardsmithError, match="input pairs") as err:
        continual.run(_cfg(tmp_path, tiny_model, method="dpo", pairs=str(tmp_path / "pairs2")))
    assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"pairs2, column 'chosen', row 3: example 'p3' has \d+ characters"):
        continual.run(_cfg(tmp_path, tiny_model, method="dpo", pairs=str(tmp_path / "pairs2"), max_example_chars=4000))
    counts = __import__("collections").Counter()
    records = continual.read_pairs(str(tmp_path / "pairs2"), 4000, "truncate", counts)
    assert counts["truncated_examples"] == 1 and len(records[3]["chosen"][0]["content"]) < 4000


def test_grpo_runs_and_writes_reward_log(tmp_path, tiny_model):
    _write(tmp_path / "difficult", [_row(i) for i in range(4)], MINED)
    res = continual.run(_cfg(tmp_path, tiny_model, method="grpo", difficult=str(tmp_path / "difficult"),
                             mode="dual", oversample=1, samples_per_row=2, max_tokens=12))
    assert res.method == "grpo" and res.global_step == 2
    out = tmp_path / "out"
    rewards = [json.loads(x) for x in (out / continual.REWARDS_FILE).read_text().splitlines()]
    assert len(rewards) == 2 and all(r["completions"] == 4 for r in rewards)
    assert all(r["parse_failure_rate"] == 1.0 and r["reward_mean"] == -2.0 for r in rewards)  # random model
    logs = [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]
    assert any("rewards/label_reward/mean" in e and "guard/parse_failure_rate" in e for e in logs)
    assert _summary(tmp_path)["method"] == "grpo"


# --------------------------------------------------------------------------- issue 10: re-runs of method sft

def test_continual_sft_rerun_skips_refuses_other_work_and_overwrites(tmp_path, tiny_model):
    _write(tmp_path / "train", [_row(i) for i in range(4)], TRACES)
    _write(tmp_path / "difficult", [_row(10)], MINED)
    ckpt = str(tmp_path / "ckpt")
    same = dict(method="sft", mode="NR", train=str(tmp_path / "train"), difficult=str(tmp_path / "difficult"),
                oversample=2, checkpoint_uri=ckpt, save_steps=1)
    first = continual.run(_cfg(tmp_path, tiny_model, **same))
    assert first.global_step == 2
    manifest = (tmp_path / "out" / "_SUCCESS").read_bytes()
    # the same work is a no-op; so are fields method sft never reads (sampling, rewards, dpo/grpo beta)
    for unused in ({}, {"temperature": 0.1, "max_tokens": 7, "dpo_beta": 0.5, "grpo_beta": 0.2,
                        "reward_fp_penalty": 3.0}):
        assert continual.run(_cfg(tmp_path, tiny_model, **same, **unused)).global_step == 2
        assert (tmp_path / "out" / "_SUCCESS").read_bytes() == manifest
    # other work into the finished output: one line naming the field and --overwrite, nothing trained
    with pytest.raises(GuardsmithError, match=r"other work: config\.oversample") as err:
        continual.run(_cfg(tmp_path, tiny_model, **{**same, "oversample": 3}))
    assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "out" / "_SUCCESS").read_bytes() == manifest
    # a checkpoint_uri holding another run's checkpoints is refused, even into a fresh output
    with pytest.raises(GuardsmithError, match=r"checkpoint .*checkpoint-\d was saved by other work: config\.oversample"
                       ) as err:
        continual.run(_cfg(tmp_path, tiny_model, **{**same, "oversample": 3}, output=str(tmp_path / "out2")))
    assert "\n" not in str(err.value) and not (tmp_path / "out2").exists()
    # --overwrite retrains (other work's checkpoints discarded) and records the new value
    redo = continual.run(_cfg(tmp_path, tiny_model, **{**same, "oversample": 3}, overwrite=True))
    assert redo.global_step == 2 and redo.examples == 7
    assert (tmp_path / "out" / "_SUCCESS").read_bytes() != manifest
    assert _summary(tmp_path)["config"]["oversample"] == 3
    saved = [storage.recorded_identity(uri)["config"]["oversample"]
             for _, uri in training.committed_checkpoints(ckpt)]
    assert saved and set(saved) == {3}


def test_identity_leaves_out_the_fields_a_method_never_reads():
    base = dict(base_model="m", output="o", train="t", difficult="d", pairs="p")

    def digest(**kw):
        return continual.identity(continual.ContinualConfig(**{**base, **kw})).digest

    assert digest(method="sft", temperature=0.2, dpo_beta=0.9, reward_parse_failure=-5.0) == digest(method="sft")
    assert digest(method="sft", oversample=3) != digest(method="sft")
    assert digest(method="dpo", temperature=0.2, oversample=9, mode="NR") == digest(method="dpo")
    assert digest(method="dpo", dpo_beta=0.3) != digest(method="dpo")
    assert digest(method="grpo", dpo_beta=0.3) == digest(method="grpo")
    assert digest(method="grpo", temperature=0.2) != digest(method="grpo")
    assert digest(method="grpo", reward_fp_penalty=2.0) != digest(method="grpo")
