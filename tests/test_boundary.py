"""boundary: config checks, prompt reading, the async reward function, every reward through GRPO,
checkpoint resume on S3, the CLI with the tiny-cpu preset, and a learning test."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from guardsmith import storage, tables, training  # noqa: E402
from guardsmith.config import load_config  # noqa: E402
from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.rewards import REWARDS, RewardConfig  # noqa: E402
from guardsmith.stages import boundary  # noqa: E402
from guardsmith.stages.boundary import BoundaryConfig, BoundaryReward  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TOPICS = ["bread", "rivers", "chess", "music", "tea", "birds", "trains", "clouds",
          "paper", "glass", "maps", "boats", "bees", "rain", "salt", "wool"]


def _rows(n: int = 8) -> list[dict]:
    return [{"id": f"p{i}", "source": "hand" if i % 2 else "web", "taxonomy": "aegis2", "policy": None,
             "prompt": f"Write a line about {TOPICS[i % len(TOPICS)]}.", "response": None,
             "prompt_harm": [None, "harmful", "unharmful"][i % 3], "response_harm": None, "response_refusal": None,
             "categories": []} for i in range(n)]


def _write_prompts(uri: str | Path, rows: list[dict]) -> str:
    storage.write_table(str(uri), pa.Table.from_pylist(rows, schema=tables.SCHEMAS["interactions"]))
    return str(uri)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from guardsmith.standins.tiny import build_tiny_causal_lm, build_tiny_classifier

    root = tmp_path_factory.mktemp("boundary")
    return {"gen": build_tiny_causal_lm(root / "gen"), "guard": build_tiny_causal_lm(root / "guard", seed=1),
            "rm": build_tiny_classifier(root / "rm", num_labels=1, seed=2)}


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> str:
    return _write_prompts(tmp_path_factory.mktemp("prompts") / "interactions", _rows(16))


def _cfg(tmp_path: Path, models: dict[str, Path], prompts: str, **kw) -> BoundaryConfig:
    base = dict(generator=str(models["gen"]), prompts=prompts, safety=f"guard:{models['guard']}",
                utility=f"reward_model:{models['rm']}", output=str(tmp_path / "out"), samples_per_row=4,
                max_tokens=8, batch_size=8, per_device_batch_size=8, max_steps=2, learning_rate=1e-4,
                lr_scheduler="constant", warmup_ratio=0.0, logging_steps=1, max_length=768, scorer_device="cpu")
    return BoundaryConfig(**{**base, **kw})


# --------------------------------------------------------------------------- config and prompts

@pytest.mark.parametrize("kw, match", [
    ({"reward": "ppo"}, "unknown reward"),
    ({"utility": None}, "needs `utility`"),
    ({"safety": "judge:/x"}, "unknown scorer kind"),
    ({"samples_per_row": 3}, "samples_per_row"),
    ({"prompt_labels": ["toxic"]}, "prompt_labels"),
    ({"tau": 1.5}, "tau must be"),
    ({"max_length": 8}, "max_length"),
    ({"generator": None}, "needs `generator`"),
    ({"base_model": "/other"}, "differ"),
    ({"margin_normalisation": "max"}, "margin_normalisation"),
    ({"min_prompt_words": -1}, "min_prompt_words"),
])
def test_bad_config(tmp_path, kw, match):
    cfg = BoundaryConfig(**{**dict(generator="/g", prompts="p", safety="rule:keywords", utility="rule:constant",
                                   output=str(tmp_path / "o"), batch_size=8), **kw})
    with pytest.raises(GuardsmithError, match=match):
        boundary.run(cfg)
    assert not (tmp_path / "o").exists()


def test_guard_only_needs_no_utility_and_base_model_is_an_alias():
    cfg = boundary.resolve_generator(BoundaryConfig(base_model="/g", prompts="p", safety="rule:keywords",
                                                    reward="guard_only", output="o", batch_size=8))
    assert cfg.generator == cfg.base_model == "/g"
    boundary.check_config(cfg)


def test_read_prompts_filters_and_samples(tmp_path):
    uri = _write_prompts(tmp_path / "p", _rows(9))
    cfg = BoundaryConfig(generator="/g", prompts=uri, safety="rule:keywords", output="o",
                         sources=["hand"], prompt_labels=["unlabelled", "harmful"], system_prompt="Be brief.")
    records, counts = boundary.read_prompts(cfg)
    assert [r["id"] for r in records] == ["p1", "p3", "p7"]  # odd ids are 'hand'; p5 is unharmful
    assert records[0]["prompt"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Write a line about rivers."}]
    assert counts["other_source"] == 5 and counts["other_label"] == 1
    sampled, counts = boundary.read_prompts(BoundaryConfig(generator="/g", prompts=uri, safety="rule:keywords",
                                                           output="o", max_prompts=4, seed=3))
    assert len(sampled) == 4 and counts["sampled_out"] == 5
    assert sampled == boundary.read_prompts(BoundaryConfig(generator="/g", prompts=uri, safety="rule:keywords",
                                                           output="o", max_prompts=4, seed=3))[0]


def test_read_prompts_keeps_long_prompts(tmp_path):
    rows = _rows(6)
    rows[1]["prompt"] = "Summarise this: " + " ".join(["word"] * 10)  # 12 words
    rows[4]["prompt"] = "one two three four five six"  # 6 words; the others have 5
    rows[5]["prompt"] = "a - b - c - d - e - f"  # 6 words: a dash is not a word
    uri = _write_prompts(tmp_path / "p", rows)
    records, counts = boundary.read_prompts(BoundaryConfig(generator="/g", prompts=uri, safety="rule:keywords",
                                                           output="o", min_prompt_words=6))
    assert [r["id"] for r in records] == ["p1", "p4", "p5"] and counts["short_prompt"] == 3
    records, counts = boundary.read_prompts(BoundaryConfig(generator="/g", prompts=uri, safety="rule:keywords",
                                                           output="o", min_prompt_words=7, max_prompts=1))
    assert [r["id"] for r in records] == ["p1"] and counts["short_prompt"] == 5 and not counts["sampled_out"]


# --------------------------------------------------------------------------- reward function

class SlowScorer:
    """Scores after a delay and records which threads were busy at the same time."""

    def __init__(self, value: float, busy: list, delay: float = 0.3):
        self.value, self.busy, self.delay, self.prompt_calls = value, busy, delay, 0

    def score(self, prompts, responses):
        self.busy.append(threading.get_ident())
        time.sleep(self.delay)
        return np.full(len(prompts), self.value)

    def score_prompts(self, prompts):
        self.prompt_calls += 1
        return np.array([0.9 if "bomb" in p else 0.1 for p in prompts])


def test_reward_function_scores_concurrently_and_logs():
    from guardsmith.scoring import make_utility_scorer

    busy: list = []
    utility = make_utility_scorer("rule:length?target=2", normalisation="affine", scale=2.0)
    slow_utility = SlowScorer(0.0, busy)
    slow_utility.raw_score = lambda p, r: (slow_utility.score(p, r), utility.raw_score(p, r))[1]
    slow_utility.normalisation, slow_utility.scale, slow_utility.shift = "affine", 2.0, 0.0
    reward = BoundaryReward("boundary", SlowScorer(0.8, busy), slow_utility, RewardConfig(tau=0.5, w_u=1.0, w_m=2.0))
    assert reward.__name__ == "boundary"
    metrics: dict = {}

    class State:
        global_step = 4

    start = time.perf_counter()
    out = asyncio.run(reward(prompts=[[{"role": "user", "content": "q"}]] * 2,
                             completions=[[{"role": "assistant", "content": "one"}], [{"role": "assistant", "content": "a b"}]],
                             prompt_text=["q", "q"], trainer_state=State(), log_metric=metrics.__setitem__, id=["a", "b"]))
    elapsed = time.perf_counter() - start
    assert elapsed < 0.55 and len(set(busy)) == 2  # two 0.3 s scorers overlapped in two threads
    assert out == pytest.approx([2 * 0.5 + 2 * 0.3, 2 * 1.0 + 2 * 0.3])
    entry = reward.log.entries[-1]
    assert entry["step"] == 5 and entry["completions"] == 2 and entry["filter_rate"] == 1.0
    assert entry["safety_mean"] == pytest.approx(0.8) and entry["margin_mean"] == pytest.approx(0.3)
    assert entry["utility_raw_mean"] == pytest.approx(0.75) and entry["utility_mean"] == pytest.approx(1.5)
    assert metrics["boundary/margin_mean"] == pytest.approx(0.3)

    safety = SlowScorer(0.2, [], delay=0.0)
    aware = BoundaryReward("prompt_aware", safety, utility, RewardConfig(), concurrent=False)
    r, entry = aware.compute(["make a bomb", "bake bread", "make a bomb"], ["x y", "x y", "x y"])
    assert r.tolist() == pytest.approx([2.0 - 0.3, 2.0 + 0.3, 2.0 - 0.3])  # unsafe prompts: t - tau
    assert entry["prompt_unsafe_rate"] == pytest.approx(2 / 3)
    aware.compute(["make a bomb"], ["z"])
    assert safety.prompt_calls == 1  # prompt verdicts are cached
    with pytest.raises(GuardsmithError, match="needs a utility"):
        BoundaryReward("rm_only", safety, None)


class Fixed:
    """A scorer that returns the given values in order (t for safety, u for utility)."""

    def __init__(self, values):
        self.values = values

    def score(self, prompts, responses):
        return np.array(self.values[:len(responses)])


def test_margin_normalisation_and_spreads_in_the_reward_log():
    # |t - 0.5| = 0.1, 0.3, 0.1, 0.3 (mean 0.2, std 0.1): z-scored -1, 1, -1, 1; u spreads 1
    t, u = Fixed([0.4, 0.8, 0.6, 0.2]), Fixed([1.0, 1.0, -1.0, -1.0])
    pairs = (["q"] * 4, ["a", "b", "c", "d"])
    zscored = BoundaryReward("boundary", t, u, RewardConfig(margin_normalisation="zscore"), concurrent=False)
    r, entry = zscored.compute(*pairs, step=1)
    assert r.tolist() == pytest.approx([0.0, 2.0, -2.0, 0.0])
    assert entry["utility_std"] == pytest.approx(1.0) and entry["margin_std"] == pytest.approx(0.1)
    assert entry["margin_mean"] == pytest.approx(0.2)
    plain = BoundaryReward("boundary", t, u, RewardConfig(), concurrent=False)
    assert plain.compute(*pairs)[0].tolist() == pytest.approx([1.1, 1.3, -0.9, -0.7])  # u + |t - tau|

    entries = [entry, {**entry, "step": 2, "margin_std": 0.3}, {"step": 3, "reward_mean": 0.0}]
    cal = boundary.calibration(entries, w_utility=2.0)
    assert cal == {"batches": 2, "utility_std": pytest.approx(1.0), "margin_std": pytest.approx(0.2),
                   "w_margin": pytest.approx(10.0)}  # 2 * 1.0 / 0.2
    assert boundary.calibration([{"step": 1}]) is None
    assert boundary.calibration([{**entry, "margin_std": 0.0}])["w_margin"] is None
    shown = str(boundary.BoundaryResult(output="o", method="grpo-boundary", examples=4, global_step=1, train_loss=None,
                                         seconds_per_step=None, counts={}, balance=cal))
    assert "balance over 2 batches: std(u) 1.0000, std(margin term) 0.2000" in shown and "margin normalisation: 10" in shown


# --------------------------------------------------------------------------- GRPO runs

def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("reward", list(REWARDS))
def test_every_reward_runs_through_grpo(tmp_path, models, prompts, reward):
    cfg = _cfg(tmp_path, models, prompts, reward=reward, rewards_log=str(tmp_path / "rewards.jsonl"),
               w_utility=0.5, w_margin=2.0, filter_lambda=0.5)
    res = boundary.run(cfg)
    assert res.method == f"grpo-{reward}" and res.global_step == 2 and res.examples == 16
    entries = _log(tmp_path / "rewards.jsonl")
    assert entries == _log(tmp_path / "out" / boundary.REWARDS_FILE)
    assert [e["step"] for e in entries] == [1, 2] and all(e["completions"] == 8 for e in entries)
    for e in entries:
        assert 0 < e["safety_mean"] < 1 and e["margin_mean"] == pytest.approx(abs(e["safety_mean"] - 0.5), abs=0.2)
        assert 0 <= e["filter_rate"] <= 1 and abs(e["utility_mean"]) < 1e-9  # z-scored per batch
        assert 0 <= e["margin_std"] <= 0.5 and e["utility_std"] == pytest.approx(1.0)  # u z-scored, with spread
        if reward in ("boundary", "prompt_aware"):
            assert e["reward_mean"] == pytest.approx(0.0, abs=1e-9)  # both terms z-scored per batch (the default)
        if reward == "guard_only":
            assert e["reward_mean"] == pytest.approx(e["margin_mean"])
        if reward == "rm_only":
            assert e["reward_mean"] == pytest.approx(e["utility_mean"])
        if reward == "prompt_aware":
            assert 0 <= e["prompt_unsafe_rate"] <= 1
    logs = [json.loads(x) for x in (tmp_path / "out" / "training_log.jsonl").read_text().splitlines()]
    assert any(f"rewards/{reward}/mean" in e and "boundary/margin_mean" in e for e in logs)
    assert res.first["step"] == 1 and res.last["step"] == 2 and "reward log:" in str(res)
    assert res.balance["batches"] == 2 and "balance over 2 batches" in str(res)


@pytest.mark.s3
def test_checkpoints_on_s3_and_resume(tmp_path, models, prompts, s3_prefix):
    log_uri = f"{s3_prefix}/rewards.jsonl"
    ckpt = f"{s3_prefix}/ckpt"
    cfg = _cfg(tmp_path, models, prompts, safety="rule:keywords", utility="rule:length", checkpoint_uri=ckpt,
               save_steps=1, save_total_limit=3, rewards_log=log_uri, finetune="lora", lora_r=4, lora_alpha=8,
               max_steps=3)
    boundary.run(cfg)
    assert [step for step, _ in training.committed_checkpoints(ckpt)] == [1, 2, 3]
    # a crash after checkpoint-2 was uploaded (checkpoint-3 and the model never written): the re-run resumes
    storage.remove(f"{ckpt}/checkpoint-3")
    storage.remove(cfg.output)
    res = boundary.run(cfg)
    summary = json.loads((tmp_path / "out" / "guardsmith_training.json").read_text())
    assert summary["resumed_from_step"] == 2 and res.global_step == 3
    assert [e["step"] for e in boundary.read_reward_log(log_uri)] == [1, 2, 3]
    assert not list((tmp_path / "out").glob("adapter_*"))  # LoRA merged into a plain model
    assert not [k for k in storage.list_dir(f"{ckpt}/checkpoint-3") if k == "training_args.bin"]
    # another reward variant neither resumes these checkpoints nor replaces this generator
    with pytest.raises(GuardsmithError, match=r"checkpoint-\d was saved by other work: config\.reward"):
        boundary.run(replace(cfg, reward="rm_only", output=str(tmp_path / "out2")))
    with pytest.raises(GuardsmithError, match=r"made by other work: config\.reward"):
        boundary.run(replace(cfg, reward="rm_only"))


def test_cli_with_tiny_cpu_preset(tmp_path, models, prompts):
    from click.testing import CliRunner

    from guardsmith.config import stage_command

    command = stage_command("boundary", boundary.CONFIG, lambda cfg: print(boundary.run(cfg)), boundary.HELP)
    args = ["--preset", "tiny-cpu", "--generator", str(models["gen"]), "--prompts", prompts,
            "--safety", "rule:keywords", "--utility", f"reward_model:{models['rm']}", "--reward", "filter_avoid",
            "--max-steps", "2", "--max-tokens", "6", "--output", str(tmp_path / "cli")]
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "step 2" in result.output and (tmp_path / "cli" / boundary.REWARDS_FILE).exists()
    card = (tmp_path / "cli" / "README.md").read_text()
    assert "reward: filter_avoid" in card


def test_presets_load():
    paper = load_config(BoundaryConfig, stage="boundary", preset="paper",
                        overrides={"prompts": "p", "safety": "guard:/g", "utility": "reward_model:/rm", "output": "o"})
    assert paper.precision == "bf16" and paper.tau == 0.5 and paper.reward == "boundary"
    assert (paper.w_utility, paper.w_margin, paper.margin_normalisation) == (1.0, 1.0, "zscore")
    assert "Qwen2.5" in paper.generator and paper.batch_size % paper.samples_per_row == 0
    boundary.check_config(boundary.resolve_generator(paper))
    tiny = load_config(BoundaryConfig, stage="boundary", preset="tiny-cpu", overrides={
        "generator": "/g", "prompts": "p", "safety": "rule:keywords", "utility": "rule:constant", "output": "o"})
    assert tiny.use_vllm is False and tiny.precision == "fp32"
    assert boundary.vllm_args(tiny, cuda=False) == {"use_vllm": False}
    server = replace(tiny, use_vllm=None, vllm_mode="server", vllm_server_base_url="http://v:8000")
    if boundary.vllm_available():
        assert boundary.vllm_args(server, cuda=True)["vllm_server_base_url"] == "http://v:8000"
    else:
        assert boundary.vllm_args(server, cuda=True) == {"use_vllm": False}


# --------------------------------------------------------------------------- learning

HELD_OUT = ["snow", "stones", "lamps", "roads"]


def _margin_of_samples(model_dir: Path) -> float:
    """Mean |t - 0.5| of 64 seeded samples (16 per held-out prompt) under the `letters` rule."""
    from guardsmith.inference import TransformersBackend
    from guardsmith.scoring import make_safety_scorer

    backend = TransformersBackend(model_dir, batch_size=4)
    gens = backend.generate([[{"role": "user", "content": f"Write a line about {w}."}] for w in HELD_OUT],
                            n=16, temperature=1.0, max_tokens=12, seed=123)
    backend.close()
    texts = [g.text for group in gens for g in group]
    t = make_safety_scorer("rule:letters").score(["-"] * len(texts), texts)
    return float(np.abs(t - 0.5).mean())


def test_boundary_reward_moves_the_policy_away_from_the_boundary(tmp_path, models, prompts):
    """A rule stands in for the guard (t = share of letters a-m, 0.5 for a random model); u is constant."""
    common = dict(safety="rule:letters", utility="rule:constant", utility_normalisation="none", samples_per_row=8,
                  max_tokens=12, batch_size=16, per_device_batch_size=16, max_steps=40,
                  learning_rate=5e-3, logging_steps=10, seed=0)
    before = _margin_of_samples(models["gen"])
    res = boundary.run(_cfg(tmp_path, models, prompts, reward="boundary", **common))
    after = _margin_of_samples(tmp_path / "out")
    control = boundary.run(_cfg(tmp_path, models, prompts, reward="rm_only", output=str(tmp_path / "control"), **common))
    unchanged = _margin_of_samples(tmp_path / "control")
    print(f"mean |t - tau|: before {before:.4f}, after boundary {after:.4f}, after rm_only (constant) {unchanged:.4f}; "
          f"training-batch margin step 1 {res.first['margin_mean']:.4f} -> step 40 {res.last['margin_mean']:.4f}")
    assert after >= before + 0.2 and after >= 3 * before
    assert res.last["margin_mean"] > res.first["margin_mean"] + 0.2
    assert unchanged == pytest.approx(before, abs=0.02)  # no reward signal: the policy does not move
    assert control.last["reward_std"] == 0.0
