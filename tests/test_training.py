"""training: CPU precision flags, batch arithmetic, weights, checkpoints, accelerate launch, model card."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402

from guardsmith import storage, training  # noqa: E402
from guardsmith.config import load_config  # noqa: E402
from guardsmith.errors import GuardsmithError  # noqa: E402
from guardsmith.stages.sft import SftConfig, launch_command  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _cfg(**kw) -> SftConfig:
    return SftConfig(base_model="m", output="o", train="t", **kw)


def test_cpu_runtime_turns_off_bf16_and_checkpointing():
    rt = training.runtime(_cfg())
    assert not rt.cuda and rt.world_size == 1 and not rt.launched
    assert rt.precision_args() == {"bf16": False, "fp16": False, "use_cpu": True, "activation_checkpointing": False}
    with pytest.raises(GuardsmithError, match="bf16"):
        training.runtime(_cfg(precision="bf16"))
    with pytest.raises(GuardsmithError, match="no GPU"):
        training.wanted_processes(_cfg(gpus=2), rt)
    assert training.wanted_processes(_cfg(), rt) == 1


def test_trainer_args_build_a_cpu_sft_config(tmp_path):
    from trl import SFTConfig

    cfg = _cfg(batch_size=32, per_device_batch_size=4)
    rt = training.runtime(cfg)
    args = SFTConfig(**training.trainer_args(cfg, rt, tmp_path, save=False))
    assert args.bf16 is False and args.activation_checkpointing is False and args.use_cpu is True
    assert args.gradient_accumulation_steps == 8 and args.learning_rate == 1e-6
    assert args.lr_scheduler_type == "cosine" and args.num_train_epochs == 5


def test_gradient_accumulation():
    assert training.gradient_accumulation(_cfg(batch_size=32, per_device_batch_size=4), 8) == 1
    assert training.gradient_accumulation(_cfg(batch_size=32, per_device_batch_size=2), 2) == 8
    with pytest.raises(GuardsmithError, match="multiple"):
        training.gradient_accumulation(_cfg(batch_size=30, per_device_batch_size=4), 1)


def test_expand_weights_is_seeded():
    recs = [{"id": str(i), "weight": w} for i, w in enumerate([1.0, 3.0, 0.0, 0.5] * 50)]
    out = training.expand_weights(recs, seed=1)
    assert out == training.expand_weights(recs, seed=1)
    counts = {w: sum(1 for r in out if r["weight"] == w) for w in (1.0, 3.0, 0.0, 0.5)}
    assert counts[1.0] == 50 and counts[3.0] == 150 and counts[0.0] == 0
    assert 15 <= counts[0.5] <= 35
    with pytest.raises(GuardsmithError, match="weight"):
        training.expand_weights([{"id": "x", "weight": -1}], seed=0)


def _fake_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return folder


def _identity(cfg: SftConfig):
    from guardsmith.identity import WorkIdentity

    return WorkIdentity(stage="sft", config={"mode": cfg.mode, "learning_rate": cfg.learning_rate}, inputs={"train": "t1"})


def test_checkpoints_latest_prune_and_restore(tmp_path):
    remote = str(tmp_path / "ckpt")
    cfg = _cfg(checkpoint_uri=remote)
    mine = _identity(cfg)
    assert training.latest_checkpoint(remote) is None
    for step in (2, 10, 4):
        storage.upload_dir(str(_fake_checkpoint(tmp_path / f"l{step}", step)), storage.join(remote, f"checkpoint-{step}"),
                           identity=mine)
    (tmp_path / "ckpt" / "checkpoint-99").mkdir()  # an upload that never committed: ignored
    assert [s for s, _ in training.committed_checkpoints(remote)] == [2, 4, 10]
    assert training.latest_checkpoint(remote)[0] == 10
    training._prune(remote, keep=2)
    assert [s for s, _ in training.committed_checkpoints(remote)] == [4, 10]
    local, step = training.restore_checkpoint(cfg, tmp_path / "work", mine)
    assert step == 10 and (Path(local) / "trainer_state.json").exists()
    assert training.restore_checkpoint(_cfg(checkpoint_uri=remote, resume=False), tmp_path / "w2", mine) == (None, 0)


def test_checkpoints_of_other_work_are_never_resumed(tmp_path):
    """Issue 10: an R-mode checkpoint must not be resumed by an NR run with other data and learning rate."""
    remote = str(tmp_path / "ckpt")
    r_cfg = _cfg(checkpoint_uri=remote, mode="R")
    storage.upload_dir(str(_fake_checkpoint(tmp_path / "l3", 3)), storage.join(remote, "checkpoint-3"),
                       identity=_identity(r_cfg))
    nr_cfg = _cfg(checkpoint_uri=remote, mode="NR", learning_rate=1e-4)
    with pytest.raises(GuardsmithError) as err:
        training.restore_checkpoint(nr_cfg, tmp_path / "work", _identity(nr_cfg))
    message = str(err.value)
    assert "checkpoint-3" in message and "config.mode" in message and "config.learning_rate" in message
    assert "--overwrite" in message and "\n" not in message
    assert not (tmp_path / "work").exists()  # nothing downloaded
    # with overwrite: other work's checkpoints are left out (and removed by the main process)
    nr_over = _cfg(checkpoint_uri=remote, mode="NR", learning_rate=1e-4, overwrite=True)
    assert training.restore_checkpoint(nr_over, tmp_path / "work", _identity(nr_over)) == (None, 0)
    assert training.own_checkpoints(nr_over, _identity(nr_over), remove_others=True) == []
    assert training.committed_checkpoints(remote) == []
    # a checkpoint recording no identity (an older guardsmith) is refused too
    storage.upload_dir(str(_fake_checkpoint(tmp_path / "l5", 5)), storage.join(remote, "checkpoint-5"))
    with pytest.raises(GuardsmithError, match="no work identity"):
        training.restore_checkpoint(r_cfg, tmp_path / "work", _identity(r_cfg))


def test_training_identity_leaves_out_how_to_run_fields(tmp_path):
    from dataclasses import replace

    (tmp_path / "base.bin").write_bytes(b"weights")

    def ident(**kw):
        return training.training_identity("sft", replace(_cfg(**kw), base_model=str(tmp_path / "base.bin")),
                                          {"train": None})

    ida = ident(checkpoint_uri="s3://b/c1", gpus=2, per_device_batch_size=2, save_steps=5, overwrite=True, work_dir="/x")
    idb = ident(checkpoint_uri="s3://b/c2", gpus=8, per_device_batch_size=4)
    assert ida.digest == idb.digest
    c = ident(learning_rate=3e-4)
    assert c.differences(idb) == ["config.learning_rate"]
    assert "train" not in ida.config and "output" not in ida.config and "base_model" in ida.inputs


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_launch_command_writes_valid_accelerate_config(tmp_path, distributed):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    cfg = _cfg(distributed=distributed, batch_size=32, per_device_batch_size=4)
    argv = launch_command(cfg, 8, str(tmp_path))
    acc_path, stage_path = tmp_path / "accelerate.yaml", tmp_path / "sft.yaml"
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--config_file") + 1] == str(acc_path)
    assert argv[-5:] == ["-m", "guardsmith.cli", "sft", "--config", str(stage_path)]
    cluster = ClusterConfig.from_yaml_file(str(acc_path))  # rejects unknown keys
    assert cluster.num_processes == 8 and cluster.num_machines == 1
    assert str(cluster.mixed_precision) == "bf16"
    assert str(cluster.distributed_type) == ("DistributedType.MULTI_GPU" if distributed == "ddp" else "DistributedType.FSDP")
    if distributed == "fsdp":
        assert cluster.fsdp_config["fsdp_version"] == 2
    args = launch_command_parser().parse_args(argv[3:])
    assert args.module and args.training_script == "guardsmith.cli"
    assert args.training_script_args == ["sft", "--config", str(stage_path)]
    relaunched = load_config(SftConfig, stage_path)
    assert relaunched.gpus == 8 and relaunched.train == "t" and relaunched.distributed == distributed
    assert relaunched.work_dir == str(tmp_path / "work")
    assert training.gradient_accumulation(relaunched, 8) == 1
    raw = yaml.safe_load(acc_path.read_text())
    assert raw["gpu_ids"] == "all" and raw["rdzv_backend"] == "static"


def _summary(**kw) -> training.TrainingSummary:
    from guardsmith.config import to_dict

    base = dict(stage="sft", method="sft", output="o", base_model="m", examples=12, global_step=3, train_rows=12,
                datasets={"train": "s3://b/train"}, input_rows={"train": 12}, mode="NR", budget=3,
                counts={"train_read": 14}, facts={"seed": 3}, config=to_dict(_cfg(mode="NR", seed=3)))
    return training.TrainingSummary(**{**base, **kw})


def test_model_card(tmp_path):
    from huggingface_hub import ModelCard

    from guardsmith import model_card

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Base\n")
    path = model_card.write_model_card(tmp_path, _summary(), title="T",
                                       license=model_card.base_license(tmp_path / "base"))
    text = path.read_text()
    assert text.startswith("---\n") and "\n# T\n" in text
    assert "| train | `s3://b/train` | 12 |" in text and "| mode | NR |" in text
    assert "| budget | 3 |" in text and "| seed | 3 |" in text and "| rows train_read | 14 |" in text
    assert "```yaml" in text and "seed: 3" in text and "base_model: m" in text
    data = ModelCard.load(path).data
    assert data.library_name == "transformers" and data.base_model == "m" and data.license == "apache-2.0"
    assert data.datasets == ["s3://b/train"] and data.tags == ["guardsmith", "safety", "sft"]
    assert data.eval_results is None and model_card.base_license(tmp_path / "nowhere") is None


def test_model_card_eval_results_as_model_index(tmp_path):
    from huggingface_hub import ModelCard

    from guardsmith import model_card

    first = model_card.guard_eval_result("Safe", "prompt_harm", 0.81234, mode="R", benchmark_uri="s3://b/safe")
    path = model_card.write_model_card(tmp_path, _summary(), title="T", eval_results=[first])
    assert "model-index:" in path.read_text()
    (got,) = ModelCard.load(path).data.eval_results
    assert (got.dataset_name, got.dataset_type, got.task_name, got.metric_type, got.metric_name, got.metric_value) == \
        ("Safe", "s3://b/safe", "prompt_harm", "f1", "harmful F1 (R)", 0.8123)
    newer = model_card.guard_eval_result("Safe", "prompt_harm", 0.9, mode="R", benchmark_uri="s3://b/safe")
    other = model_card.guard_eval_result("Policy", "response_harm", 0.5)
    model_card.add_eval_results(tmp_path, [newer, other])
    card = ModelCard.load(path)
    assert sorted((r.dataset_name, r.metric_value) for r in card.data.eval_results) == [("Policy", 0.5), ("Safe", 0.9)]
    assert card.data.model_name == "T" and "| mode | NR |" in card.text  # the rest of the card is kept
    # several tasks and modes on one benchmark read back one by one (model-index groups by dataset)
    both = [model_card.guard_eval_result("Safe", t, v, mode=m) for t, m, v in
            (("prompt_harm", "R", 0.1), ("prompt_harm", "NR", 0.2), ("response_harm", "R", 0.3))]
    model_card.add_eval_results(tmp_path, both)
    read = {(r.dataset_name, r.task_name, r.metric_name): r.metric_value for r in ModelCard.load(path).data.eval_results}
    assert read[("Safe", "prompt_harm", "harmful F1 (R)")] == 0.1 and read[("Safe", "prompt_harm", "harmful F1 (NR)")] == 0.2
    assert read[("Safe", "response_harm", "harmful F1 (R)")] == 0.3


def test_training_summary_round_trip_and_validation(tmp_path):
    import json

    summary = _summary(taxonomy="aegis2", prompt_style="compact")
    path = summary.write(tmp_path)
    assert path.name == training.SUMMARY_FILE
    assert training.TrainingSummary.read(tmp_path) == summary
    assert training.TrainingSummary.read(f"file://{tmp_path}") == summary
    assert training.TrainingSummary.find(tmp_path / "missing") is None
    raw = json.loads(path.read_text())
    for bad, match in [({**raw, "train_rows": "many"}, "train_rows"), ({**raw, "unknown_key": 1}, "unknown_key"),
                       ({k: v for k, v in raw.items() if k != "global_step"}, "global_step"),
                       ([1, 2], "JSON object")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(GuardsmithError, match=match) as err:
            training.TrainingSummary.read(tmp_path)
        assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    path.write_text("{not json")
    with pytest.raises(GuardsmithError, match="not valid JSON"):
        training.TrainingSummary.find(tmp_path)


def test_prompt_style_and_evaluate_read_the_summary(tmp_path):
    from guardsmith.guard import prompt_style_of
    from guardsmith.stages.evaluate import model_metadata

    assert prompt_style_of(tmp_path) == "full" and model_metadata(tmp_path) == {}
    _summary(prompt_style="compact").write(tmp_path)
    assert prompt_style_of(tmp_path) == "compact"
    assert model_metadata(tmp_path) == {"train_size": 12, "budget": 3, "trained_by": "sft"}
    _summary(budget=None, train_rows=500).write(tmp_path)
    assert prompt_style_of(tmp_path) == "full" and model_metadata(tmp_path) == {"train_size": 500, "trained_by": "sft"}


def test_sft_batching_settings(tmp_path):
    """Length-grouped batches by default; packing only with a variable-length (flash) kernel, which
    turns it on by itself; packing with sdpa is refused in one line; liger needs a GPU."""
    from trl import SFTConfig

    rt = training.runtime(_cfg())
    default = SFTConfig(**training.trainer_args(_cfg(), rt, tmp_path, save=False), **training.sft_args(_cfg()))
    assert default.train_sampling_strategy == "group_by_length" and default.packing is False
    assert training.batching(_cfg(group_by_length=False)) == "random"
    flash = _cfg(attn_implementation="flash_attention_2")
    assert training.sft_args(flash)["packing"] is True and training.batching(flash) == "packed"
    assert training.sft_args(flash)["train_sampling_strategy"] == "random"
    assert training.model_init_kwargs(flash, rt)["attn_implementation"] == "flash_attention_2"
    assert "attn_implementation" not in training.model_init_kwargs(_cfg(), rt)
    assert training.sft_args(_cfg(attn_implementation="flash_attention_2", packing=False))["packing"] is False
    with pytest.raises(GuardsmithError, match=r"^packing: true needs a variable-length attention kernel .* with sdpa"):
        training.sft_args(_cfg(packing=True))
    with pytest.raises(GuardsmithError, match="use_liger_kernel needs a GPU"):
        training.trainer_args(_cfg(use_liger_kernel=True), rt, tmp_path, save=False)


def test_default_sft_batches_waste_little_padding(tmp_path):
    """The SFT dataloader built from guardsmith's config (benchmarks/sft_padding.py) on guard-length
    rows: under 10% padding by default, over 25% with random batches, none when packed."""
    import importlib.util

    from guardsmith.standins.tiny import build_tiny_causal_lm

    spec = importlib.util.spec_from_file_location("sft_padding", Path(__file__).parent.parent / "benchmarks" / "sft_padding.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = build_tiny_causal_lm(tmp_path / "tiny")
    lengths = bench.guard_lengths(240, seed=3)
    shares = {name: bench.padding_share(model, lengths, 4, tmp_path / name, **settings)
              for name, settings in bench.BATCHINGS.items()}
    assert shares["default"]["padding"] < 0.10 < 0.25 < shares["random"]["padding"], shares
    assert shares["packed"]["padding"] == 0 and shares["packed"]["tokens"] == shares["random"]["tokens"] == sum(lengths)


# --------------------------------------------------------------------------- progress and tracking (issue 16)

def test_progress_line_rate_eta_and_values():
    logs = {"loss": 2.19, "learning_rate": 1e-3, "grad_norm": 3.0, "epoch": 0.4}
    # 160 steps left at 1.9 steps/s: 84.2 s
    assert training.progress_line(40, 200, 1.9, logs) == \
        "step 40/200 (20%), 1.9 steps/s, ETA 1m24s, loss 2.190, lr 1e-3"
    # slower than a step a second: seconds per step; hours in the ETA; GRPO's reward mean
    assert training.progress_line(10, 4000, 0.25, {"loss": 0.5, "reward": -0.25, "learning_rate": 2.5e-6}) == \
        "step 10/4000 (0%), 4.0 s/step, ETA 4h26m, loss 0.500, reward -0.250, lr 2.5e-6"
    assert training.progress_line(1, 8, None, {"loss": 1.0}) == "step 1/8 (12%), loss 1.000"  # before a rate is known
    assert training.progress_line(8, 8, 2.0, {"loss": 1.0}) == "step 8/8 (100%), 2.0 steps/s, loss 1.000"
    assert [training.duration(s) for s in (0, 59.4, 60, 3599, 3600, 7500)] == \
        ["0s", "59s", "1m00s", "59m59s", "1h00m", "2h05m"]


def test_histories_from_a_log_history():
    log = [{"loss": 2.5, "learning_rate": 1e-3, "step": 10}, {"loss": 2.0, "reward": 0.5, "step": 20},
           {"train_loss": 2.2, "train_runtime": 3.0, "step": 20}]
    assert training.histories(log) == ([[10, 2.5], [20, 2.0]], [[20, 0.5]])


def test_report_to_values_are_checked_and_passed_through(tmp_path, monkeypatch):
    import importlib.util
    from dataclasses import replace

    from trl import SFTConfig

    rt = training.runtime(_cfg())
    for report_to, match in ((["comet"], "unknown tracker 'comet'"), (["none", "tensorboard"], "none cannot be combined"),
                             (["wandb"], "pip install wandb")):
        with pytest.raises(GuardsmithError, match=match) as err:
            training.trainer_args(_cfg(report_to=report_to), rt, tmp_path, save=False)
        assert "report_to" in str(err.value) and "\n" not in str(err.value)
    assert training.trackers(_cfg(report_to=[])) == [] == training.trackers(_cfg(report_to=["none"]))
    assert _cfg().report_to == ["tensorboard"] and training.logs_location(replace(_cfg(), output="s3://b/run/sft/")) == \
        "s3://b/run/sft-tensorboard"
    assert training.logs_location(_cfg(logs_uri="s3://b/tb")) == "s3://b/tb"

    # TensorBoard is ours (tensorboard_logs); mlflow / wandb go to transformers' report_to as they are
    args = SFTConfig(**training.trainer_args(_cfg(), rt, tmp_path, save=False))
    assert args.report_to == [] and args.disable_tqdm
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in ("mlflow", "wandb") else real(name, *a))
    kwargs = training.trainer_args(_cfg(report_to=["tensorboard", "mlflow", "wandb"]), rt, tmp_path, save=False)
    assert kwargs["report_to"] == ["mlflow", "wandb"]


def test_report_to_and_logs_uri_leave_the_work_identity_alone(tmp_path):
    from dataclasses import replace

    (tmp_path / "base.bin").write_bytes(b"weights")

    def ident(**kw):
        return training.training_identity("sft", replace(_cfg(**kw), base_model=str(tmp_path / "base.bin")),
                                          {"train": None})

    assert ident(report_to=["none"]).digest == ident().digest == ident(report_to=["tensorboard"], logs_uri="s3://b/x").digest


def test_an_old_summary_without_curves_still_loads(tmp_path):
    import json

    path = _summary().write(tmp_path)
    raw = json.loads(path.read_text())
    assert raw["loss_history"] == [] and raw["train_tokens"] is None
    for key in ("loss_history", "reward_history", "train_tokens"):
        del raw[key]
    path.write_text(json.dumps(raw))
    old = training.TrainingSummary.read(tmp_path)
    assert old.loss_history == [] and old.reward_history == [] and old.train_tokens is None
    _summary(loss_history=[[10, 2.5], [20, 2.0]], train_tokens=1234).write(tmp_path)
    read = training.TrainingSummary.read(tmp_path)
    assert read.loss_history == [[10, 2.5], [20, 2.0]] and read.train_tokens == 1234
