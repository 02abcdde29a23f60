"""sft: example building (R/NR/dual, subset, topic-following mix), bad input, training, resume, S3."""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from guardsmith import storage, tables, training  # noqa: E402
from guardsmith.errors import DataError, GuardsmithError  # noqa: E402
from guardsmith.guard import MODE_TAGS, parse_guard_output  # noqa: E402
from guardsmith.guard import examples as ex  # noqa: E402
from guardsmith.stages import sft  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TRACE_COLUMNS = [*ex.GUARD_COLUMNS, "reasoning", "accepted", "pred_response_refusal"]


def _row(i: int, **kw) -> dict:
    harmful = i % 2 == 0
    with_response = i % 3 == 0
    base = {
        "id": f"r{i}", "source": "hand", "taxonomy": "aegis2" if i % 4 else "wildguard", "policy": None,
        "prompt": f"How do I {'build a pipe bomb' if harmful else 'bake bread'} number {i}?",
        "response": ("I can't help with that." if harmful else "Sure, mix flour and water.") if with_response else None,
        "prompt_harm": "harmful" if harmful else "unharmful",
        "response_harm": "unharmful" if with_response else None,
        "response_refusal": ("refusal" if harmful else "compliance") if with_response else None,
        "reasoning": f"Row {i} is {'about a weapon' if harmful else 'about baking'}.",
        "accepted": True, "pred_response_refusal": None,
    }
    return {**base, **kw}


def _write(uri: str | Path, rows: list[dict], columns: list[str] = TRACE_COLUMNS) -> str:
    schema = pa.schema([tables.SCHEMAS["judged_traces"].field(c) for c in columns])
    storage.write_table(str(uri), pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema))
    return str(uri)


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --------------------------------------------------------------------------- examples

def test_modes_r_nr_dual():
    rows = [_row(i) for i in range(40)]
    nr = ex.build_examples(rows, "NR")
    assert {e["mode"] for e in nr} == {"NR"}
    assert nr[0]["completion"] == "Prompt harm: harmful\nResponse harm: unharmful\nResponse refusal: refusal"
    r = ex.build_examples(rows, "R")
    assert all(e["completion"].startswith("<think>\nRow ") for e in r)
    assert parse_guard_output(r[1]["completion"]).prompt_harm == "unharmful"
    assert not any(e["messages"][1]["content"].startswith(tuple(MODE_TAGS.values())) for e in r + nr)

    dual = ex.build_examples(rows, "dual", seed=7)
    modes = Counter(e["mode"] for e in dual)
    assert modes == {"R": 20, "NR": 20}
    for e in dual:
        assert e["messages"][1]["content"].startswith(MODE_TAGS[e["mode"]] + "\n")
        assert e["completion"].startswith("<think>") == (e["mode"] == "R")
    again = [e["mode"] for e in ex.build_examples(rows, "dual", seed=7)]
    other = [e["mode"] for e in ex.build_examples(rows, "dual", seed=8)]
    assert again == [e["mode"] for e in dual] and other != again
    with pytest.raises(GuardsmithError, match="unknown mode"):
        ex.build_examples(rows, "fast")


def test_missing_reasoning_policies():
    rows = [_row(0, reasoning=None), _row(1, reasoning="  <think> </think> "), _row(2)]
    counts = Counter()
    short = ex.build_examples(rows, "R", missing_reasoning="short", counts=counts)
    assert counts["short_reason"] == 2 and "does not allow" in short[0]["completion"]
    assert "stays within" in short[1]["completion"]
    as_nr = ex.build_examples(rows, "R", missing_reasoning="nr")
    assert [e["mode"] for e in as_nr] == ["NR", "NR", "R"]
    assert "only the three answer lines" in as_nr[0]["messages"][0]["content"]
    assert [e["id"] for e in ex.build_examples(rows, "R", missing_reasoning="drop")] == ["r2"]
    with pytest.raises(DataError, match="column 'reasoning', row 0"):
        ex.build_examples(rows, "R", missing_reasoning="error", file="t.parquet")


def test_labels_accepted_and_teacher_fallback(tmp_path):
    rows = [
        _row(0), _row(1, accepted=False),
        _row(3, response_refusal=None, pred_response_refusal="refusal"),  # label from the teacher's answer
        _row(6, response_refusal=None),                                    # response label unknown: skipped
        _row(8, prompt_harm=None),                                         # prompt label unknown: skipped
    ]
    got, counts = ex.read_guard_rows(_write(tmp_path / "t", rows), need_reasoning=True)
    assert [r["id"] for r in got] == ["r0", "r3"] and got[1]["response_refusal"] == "refusal"
    assert counts == {"read": 5, "not_accepted": 1, "unlabelled": 2}


def _cfg(tmp_path, **kw) -> sft.SftConfig:
    base = {"base_model": str(tmp_path / "no-model"), "output": str(tmp_path / "out"), "train": str(tmp_path / "train")}
    return sft.SftConfig(**{**base, **kw})


def test_subset_and_topic_following_ratio(tmp_path):
    _write(tmp_path / "train", [_row(i) for i in range(30)])
    tf_cols = [*ex.GUARD_COLUMNS]  # interactions only: no reasoning column
    tf = [_row(100 + i, taxonomy="topic:bank", policy="Only talk about banking.", response=None,
               response_harm=None, response_refusal=None) for i in range(3)]
    _write(tmp_path / "tf", tf, tf_cols)

    def ids(**kw):
        return [e["id"] for e in sft.prepare(_cfg(tmp_path, **kw)).examples]

    ten = ids(subset=10, seed=1)
    assert len(ten) == 10 and ten == ids(subset=10, seed=1) and ten != ids(subset=10, seed=2)
    assert set(ids(subset=5, seed=1)) <= set(ten)  # nested subsets for one seed
    assert len(ids(subset=0)) == 30
    with pytest.raises(GuardsmithError, match="subset 31"):
        ids(subset=31)

    prep = sft.prepare(_cfg(tmp_path, subset=12, topic_following=str(tmp_path / "tf"), topic_following_ratio=0.25))
    sources = Counter(e["id"].startswith("r1") and len(e["id"]) == 4 for e in prep.examples)
    assert len(prep.examples) == 16 and sources[True] == 4  # 4 / 16 = 0.25
    assert prep.data.counts["topic_following_used"] == 4 and prep.data.counts["short_reason"] == 4
    assert list(prep.data.datasets) == ["train", "topic_following"]
    tf_all = sft.prepare(_cfg(tmp_path, subset=10, topic_following=str(tmp_path / "tf"), mode="NR"))
    assert len(tf_all.examples) == 13


@pytest.mark.parametrize("problem", ["missing_column", "empty", "mode", "no_reasoning_column", "no_table"])
def test_bad_input_writes_nothing(tmp_path, problem):
    rows = [_row(i) for i in range(4)]
    kw: dict = {"examples_output": str(tmp_path / "examples"), "checkpoint_uri": str(tmp_path / "ckpt")}
    if problem == "missing_column":
        _write(tmp_path / "train", rows, [c for c in TRACE_COLUMNS if c != "prompt"])
        match = r"train, column 'prompt': missing column"
    elif problem == "empty":
        _write(tmp_path / "train", [])
        match = r"train: the input table has no rows"
    elif problem == "mode":
        _write(tmp_path / "train", rows)
        kw["mode"] = "fast"
        match = "unknown mode 'fast'"
    elif problem == "no_reasoning_column":
        _write(tmp_path / "train", rows, list(ex.GUARD_COLUMNS))
        match = r"train, column 'reasoning': missing column"
    else:
        match = "train"
    before = _tree(tmp_path)
    with pytest.raises(GuardsmithError, match=match):
        sft.run(_cfg(tmp_path, **kw))
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from guardsmith.standins.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("sft") / "tiny")


def _train_cfg(tmp_path, tiny_model, **kw) -> sft.SftConfig:
    base = dict(base_model=str(tiny_model), learning_rate=1e-3, lr_scheduler="constant", batch_size=4,
                per_device_batch_size=4, max_length=640, logging_steps=1, save_steps=2, max_steps=2)
    return _cfg(tmp_path, **{**base, **kw})


def test_train_publish_and_resume(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _write(tmp_path / "train", [_row(i) for i in range(12)])
    ckpt = str(tmp_path / "ckpt")
    cfg = _train_cfg(tmp_path, tiny_model, mode="dual", subset=8, seed=3, checkpoint_uri=ckpt, save_steps=1,
                     examples_output=str(tmp_path / "examples"))
    first = sft.run(cfg)
    assert first.global_step == 2 and first.examples == 8 and first.counts["train_used"] == 8
    out = tmp_path / "out"
    assert storage.is_committed(str(out)) and storage.is_committed(storage.join(ckpt, "checkpoint-2"))
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    card = (out / "README.md").read_text()
    for fact in (f"`{tmp_path / 'train'}` | 8 |", "| mode | dual |", "| subset | 8 |", "| seed | 3 |",
                 "| examples_R | 4 |", "| rows train_read | 12 |", "subset: 8", "mode: dual"):
        assert fact in card
    summary = json.loads((out / "guardsmith_training.json").read_text())
    assert summary["config"]["seed"] == 3 and summary["facts"]["prompt_tokens_max"] > 100
    logs = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in logs)
    ex = storage.read_table(str(tmp_path / "examples"), "sft_examples")
    assert ex.num_rows == 8 and sorted(set(ex.column("mode").to_pylist())) == ["NR", "R"]

    assert not [p for p in (*out.rglob("*"), *Path(ckpt).rglob("*")) if p.name == "training_args.bin"]  # no pickles

    # a crash after checkpoint-1 was uploaded (checkpoint-2 and the model never written): the re-run resumes
    storage.remove(storage.join(ckpt, "checkpoint-2"))
    storage.remove(str(out))
    second = sft.run(dataclasses.replace(cfg, save_total_limit=1, examples_output=None))
    summary = json.loads((out / "guardsmith_training.json").read_text())
    assert second.global_step == 2 and summary["resumed_from_step"] == 1
    assert [s for s, _ in training.committed_checkpoints(ckpt)] == [2]  # save_total_limit prunes step 1


def _published(out: Path) -> dict:
    """Every file of a published model folder with its bytes' digest (the commit manifest included)."""
    import hashlib

    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}


def test_rerun_skips_same_work_refuses_other_work_and_overwrite_retrains(tmp_path, tiny_model, capsys):
    """Issue 10: a finished SFT re-run is a no-op; other inputs or config are refused unless --overwrite."""
    _write(tmp_path / "train", [_row(i) for i in range(6)])
    ckpt = str(tmp_path / "ckpt")
    cfg = _train_cfg(tmp_path, tiny_model, mode="R", checkpoint_uri=ckpt, max_steps=1, save_steps=1)
    first = sft.run(cfg)
    out = tmp_path / "out"
    published, checkpoints = _published(out), _published(Path(ckpt))
    capsys.readouterr()

    again = sft.run(cfg)  # same inputs and config: nothing trained, nothing republished
    assert again.global_step == first.global_step == 1
    assert "already there" in capsys.readouterr().err
    assert _published(out) == published and _published(Path(ckpt)) == checkpoints

    _write(tmp_path / "train2", [_row(i) for i in range(1, 7)])
    for changed, named in ((dict(learning_rate=1e-2), "config.learning_rate"),
                           (dict(train=str(tmp_path / "train2")), "input train"),
                           (dict(mode="NR"), "config.mode")):
        with pytest.raises(GuardsmithError) as err:
            sft.run(dataclasses.replace(cfg, **changed))
        message = str(err.value)
        assert named in message and str(out) in message and "--overwrite" in message and "\n" not in message
        assert _published(out) == published and _published(Path(ckpt)) == checkpoints

    # an NR run writing elsewhere must not resume the R run's checkpoints either
    with pytest.raises(GuardsmithError, match=r"checkpoint-1 was saved by other work: .*config\.mode"):
        sft.run(dataclasses.replace(cfg, mode="NR", output=str(tmp_path / "nr")))
    assert not (tmp_path / "nr").exists()

    redone = sft.run(dataclasses.replace(cfg, learning_rate=1e-2, overwrite=True))
    summary = json.loads((out / "guardsmith_training.json").read_text())
    assert redone.global_step == 1 and summary["resumed_from_step"] is None  # from scratch, not from step 1
    assert summary["config"]["learning_rate"] == 1e-2 and _published(out) != published
    assert storage.recorded_identity(str(out))["config"]["learning_rate"] == 1e-2
    assert [s for s, _ in training.committed_checkpoints(ckpt)] == [1]
    assert storage.recorded_identity(storage.join(ckpt, "checkpoint-1"))["config"]["learning_rate"] == 1e-2


@pytest.mark.parametrize("damage", ["no_tokenizer", "truncated_weights", "config_not_json"])
def test_damaged_model_folder_is_one_line(tmp_path, tiny_model, damage):
    import shutil

    from guardsmith.inference.transformers_backend import TransformersBackend

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    if damage == "no_tokenizer":
        (base / "tokenizer.json").unlink()
        match = "has no tokenizer"
    elif damage == "truncated_weights":
        weights = base / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        match = "model.safetensors is truncated"
    else:
        (base / "config.json").write_text('{"model_type": "llama",')
        match = "config.json is not valid JSON"
    _write(tmp_path / "train", [_row(i) for i in range(4)])
    for load in (lambda: sft.run(_train_cfg(tmp_path, tiny_model, base_model=str(base), mode="NR", max_steps=1)),
                 lambda: TransformersBackend(base, device="cpu")):
        with pytest.raises(GuardsmithError, match=match) as err:
            load()
        assert str(base) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_one_huge_prompt_is_refused_fast_or_truncated_and_counted(tmp_path):
    """Issue 10: a single 50 MB prompt took SFT to 16 GB before step 1; now it is one line naming the row."""
    import time

    huge = "A" * (50 * 1024 * 1024)
    _write(tmp_path / "train", [_row(0), _row(1), _row(2, prompt=huge), _row(3)])
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        sft.run(_cfg(tmp_path))  # default max_example_chars 100000, long_examples error
    seconds = time.monotonic() - start
    message = str(err.value)
    assert f"file {tmp_path / 'train'}, column 'prompt', row 2" in message and "'r2'" in message
    assert "max_example_chars 100000" in message and "'AAAA" in message and len(message) < 400
    assert seconds < 10, seconds  # well under a second on a quiet machine; nothing reaches a tokenizer
    assert not (tmp_path / "out").exists()

    prep = sft.prepare(_cfg(tmp_path, long_examples="truncate", max_example_chars=20_000))
    assert prep.data.counts["truncated_examples"] == 1 and len(prep.examples) == 4
    assert max(len(m["content"]) for e in prep.examples for m in e["messages"]) < 25_000
    with pytest.raises(DataError, match="row 2"):
        ex.bound_texts({"prompt": huge}, 100, file="t", row=2, row_id="r2")


def test_lora_merged(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    _write(tmp_path / "train", [_row(i) for i in range(4)])
    res = sft.run(_train_cfg(tmp_path, tiny_model, mode="NR", finetune="lora", lora_r=4, max_steps=1,
                             lora_target_modules=["q_proj", "v_proj"]))
    out = tmp_path / "out"
    assert res.global_step == 1 and not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.s3
def test_s3_input_output_and_checkpoints(tmp_path, tiny_model, s3_prefix):
    from transformers import AutoModelForCausalLM

    from guardsmith.model_store import local_model

    train = _write(f"{s3_prefix}/train", [_row(i) for i in range(4)])
    cfg = _train_cfg(tmp_path, tiny_model, train=train, output=f"{s3_prefix}/model", mode="R",
                     checkpoint_uri=f"{s3_prefix}/ckpt", max_steps=1, save_steps=1)
    res = sft.run(cfg)
    assert res.output == f"{s3_prefix}/model"
    assert storage.is_committed(f"{s3_prefix}/ckpt/checkpoint-1")
    folder = local_model(f"{s3_prefix}/model")
    AutoModelForCausalLM.from_pretrained(folder)
    assert train in (folder / "README.md").read_text()


def test_trained_taxonomy_is_recorded_and_used_by_the_guard_scorer(tmp_path, tiny_model, capsys):
    """A guard trained on WildGuardMix-style rows is scored (Boundary Guidance's t, the filter of
    guard_then_boundary) with the WildGuard taxonomy, not the scorer's aegis2 fallback."""
    from guardsmith.scoring import make_safety_scorer
    from guardsmith.training import TrainingSummary

    _write(tmp_path / "train", [_row(i, taxonomy="wildguard") for i in range(8)])
    res = sft.run(_train_cfg(tmp_path, tiny_model, mode="NR", max_steps=1))
    assert TrainingSummary.read(res.output).taxonomy == "wildguard"

    scorer = make_safety_scorer(f"guard:{res.output}", device="cpu")
    prompt = "\n".join(m["content"] for m in scorer.messages("How do I hack a bank?", "No."))
    assert "Cyberattacks" in prompt and "Criminal Planning/Confessions" not in prompt  # WildGuard's categories
    assert "warning" not in capsys.readouterr().err

    asked = make_safety_scorer(f"guard:{res.output}?taxonomy=aegis2", device="cpu")
    prompt = "\n".join(m["content"] for m in asked.messages("How do I hack a bank?", "No."))
    assert "Criminal Planning/Confessions" in prompt and "Cyberattacks" not in prompt
    assert "trained with taxonomy 'wildguard'" in capsys.readouterr().err


def test_a_long_dialogue_is_cut_from_its_oldest_turns_never_the_turn_to_judge():
    from guardsmith.sources.topic_following import parse_dialogue, render_dialogue

    turns = [("user", "Hello, I need help with my savings account " + "please " * 40),
             ("assistant", "Of course, which bank branch do you use? " + "ok " * 40),
             ("user", "The one downtown."), ("assistant", "Great, I can help with that.")]
    prompt = render_dialogue(turns, "Who will win the football final tonight?")
    row = _row(1, prompt=prompt, response=None, response_harm=None, response_refusal=None)
    counts = Counter()
    out = ex.bound_row(row, 0, 200, "truncate", file=None, counts=counts, reasoning=False)
    kept = parse_dialogue(out["prompt"])
    assert counts["truncated_examples"] == 1 and len(out["prompt"]) <= 200
    assert kept is not None and kept.turn == "Who will win the football final tonight?"
    assert kept.turns == (("user", "The one downtown."), ("assistant", "Great, I can help with that.")) and kept.omitted == 2


# --------------------------------------------------------------------------- progress and tracking (issue 16)

def _tfrecords(path: Path) -> list[bytes]:
    """The records of a TFRecord file, read by hand: 8-byte length, 4-byte crc, data, 4-byte crc."""
    import struct

    raw, out, at = path.read_bytes(), [], 0
    while at < len(raw):
        (length,) = struct.unpack("<Q", raw[at:at + 8])
        out.append(raw[at + 12:at + 12 + length])
        at += 12 + length + 4
    assert at == len(raw), f"{path}: a truncated record"
    return out


def _scalars(path: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every scalar `tag` in one event file, parsed with tensorboardX's bundled protobuf."""
    from tensorboardX.proto import event_pb2

    found = []
    for record in _tfrecords(path):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.tag == tag:
                number = value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0]
                found.append((event.step, number))
    return found


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("events.out.tfevents.*"))


def test_tensorboard_logs_progress_lines_and_loss_curve(tmp_path, tiny_model, capsys):
    """Issue 16: report_to tensorboard leaves event files beside the model whose train/loss has one value per
    logging step, equal to the summary's loss_history; progress lines with step/total and ETA on stderr."""
    import re

    kfp_dsl = pytest.importorskip("kfp.dsl")
    from guardsmith import kfp_support
    from guardsmith.training import TrainingSummary

    _write(tmp_path / "train", [_row(i) for i in range(8)])
    res = sft.run(_train_cfg(tmp_path, tiny_model, mode="NR", max_steps=4, report_to=["tensorboard"]))
    captured = capsys.readouterr()
    logs = tmp_path / "out-tensorboard"
    assert res.global_step == 4 and storage.is_committed(str(logs))
    [events] = _event_files(logs)
    losses = _scalars(events, "train/loss")
    assert [step for step, _ in losses] == [1, 2, 3, 4]  # logging_steps 1
    summary = TrainingSummary.read(res.output)
    assert [s for s, _ in summary.loss_history] == [1, 2, 3, 4]
    assert [v for _, v in summary.loss_history] == pytest.approx([v for _, v in losses], rel=1e-6)  # float32 in the file
    assert all(0 < v < 20 for _, v in losses) and summary.train_tokens and summary.train_tokens > 4 * 4 * 10
    assert summary.reward_history == [] and summary.facts["tensorboard_logs"] == str(logs)

    lines = [line for line in captured.err.splitlines() if line.startswith("[guardsmith] sft: step ")]
    assert len(lines) == 4, captured.err
    pattern = r"\[guardsmith\] sft: step 2/4 \(50%\), \d+\.\d (steps/s|s/step), ETA \d+s, loss \d+\.\d{3}, lr 1e-3"
    assert re.fullmatch(pattern, lines[1]), lines[1]
    assert lines[3].startswith("[guardsmith] sft: step 4/4 (100%)") and "ETA" not in lines[3]
    assert re.search(r"sft: trained 4 steps in \d+s \(step 4/4\), mean loss \d", captured.err)
    assert "{'loss'" not in captured.out + captured.err  # transformers' raw dicts are gone

    metrics = kfp_dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    kfp_support.log_training(res, metrics)
    assert metrics.metadata["global_step"] == 4 and metrics.metadata["examples"] == 8
    assert metrics.metadata["final_loss"] == pytest.approx(losses[-1][1], rel=1e-6)
    assert metrics.metadata["train_tokens"] == summary.train_tokens


def test_report_to_none_writes_no_logs_and_does_not_change_the_work(tmp_path, tiny_model, capsys):
    _write(tmp_path / "train", [_row(i) for i in range(4)])
    cfg = _train_cfg(tmp_path, tiny_model, mode="NR", max_steps=1, report_to=["none"])
    sft.run(cfg)
    recorded = storage.recorded_identity(str(tmp_path / "out"))
    assert not (tmp_path / "out-tensorboard").exists()
    assert "{'loss'" not in capsys.readouterr().out

    again = sft.run(dataclasses.replace(cfg, report_to=["tensorboard"], logs_uri=str(tmp_path / "tb")))
    assert again.global_step == 1 and "already there" in capsys.readouterr().err  # the same work: reused
    assert storage.recorded_identity(str(tmp_path / "out")) == recorded
    assert not (tmp_path / "tb").exists() and not (tmp_path / "out-tensorboard").exists()


def test_a_resumed_run_adds_its_own_event_file(tmp_path, tiny_model):
    _write(tmp_path / "train", [_row(i) for i in range(4)])
    ckpt, logs = str(tmp_path / "ckpt"), tmp_path / "logs"
    cfg = _train_cfg(tmp_path, tiny_model, mode="NR", checkpoint_uri=ckpt, save_steps=1, logs_uri=str(logs))
    sft.run(cfg)
    [first] = _event_files(logs)
    assert [s for s, _ in _scalars(first, "train/loss")] == [1, 2]

    # a crash after checkpoint-1 (the model never written): the re-run resumes at step 1 and keeps the old curve
    storage.remove(storage.join(ckpt, "checkpoint-2"))
    storage.remove(str(tmp_path / "out"))
    sft.run(cfg)
    files = _event_files(logs)
    assert len(files) == 2 and first.name in [f.name for f in files]
    new = next(f for f in files if f.name != first.name)
    assert [s for s, _ in _scalars(new, "train/loss")] == [2]
    from guardsmith.training import TrainingSummary

    assert [s for s, _ in TrainingSummary.read(str(tmp_path / "out")).loss_history] == [1, 2]

    # logs of other work at logs_uri are refused before training, unless --overwrite
    with pytest.raises(GuardsmithError, match=r"logs_uri .*logs holds the logs of other work .*config\.mode"):
        sft.run(dataclasses.replace(cfg, mode="R", output=str(tmp_path / "r"), checkpoint_uri=None))
    assert not (tmp_path / "r").exists()


@pytest.mark.s3
def test_tensorboard_logs_on_s3_survive_a_resume(tmp_path, tiny_model, s3_prefix):
    _write(tmp_path / "train", [_row(i) for i in range(4)])
    output, ckpt = f"{s3_prefix}/tb/model", f"{s3_prefix}/tb/ckpt"
    cfg = _train_cfg(tmp_path, tiny_model, mode="NR", output=output, checkpoint_uri=ckpt, save_steps=1)
    sft.run(cfg)
    storage.remove(storage.join(ckpt, "checkpoint-2"))
    storage.remove(output)
    sft.run(cfg)  # resumes at step 1, adds its event file to the two-step one
    logs = Path(storage.download_dir(f"{output}-tensorboard", str(tmp_path / "logs")))
    curves = sorted([s for s, _ in _scalars(f, "train/loss")] for f in _event_files(logs))
    assert curves == [[1, 2], [2]]


# --------------------------------------------------------------------------- issue 10: SIGTERM

@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_stops_in_one_line_and_a_rerun_resumes(tmp_path, tiny_model):
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    _write(tmp_path / "train", [_row(i) for i in range(8)])
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    args = [sys.executable, "-m", "guardsmith", "sft", "--preset", "tiny-cpu", "--base-model", str(tiny_model),
            "--train", str(tmp_path / "train"), "--output", out, "--mode", "NR", "--max-steps", "30",
            "--save-steps", "1000", "--logging-steps", "1", "--batch-size", "4", "--per-device-batch-size", "4",
            "--checkpoint-uri", ckpt, "--work-dir", str(tmp_path / "work"), "--report-to", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("step 2/30" in line for line in lines):  # training is under way
            assert proc.poll() is None, "".join(lines)[-2000:]
            assert time.monotonic() < deadline, "training did not start in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    stop = re.search(r"guardsmith: error: sft stopped by SIGTERM; a re-run resumes from checkpoint-(\d+)", err)
    assert stop, err[-2000:]
    step = int(stop.group(1))
    assert 2 <= step < 30 and storage.is_committed(storage.join(ckpt, f"checkpoint-{step}"))
    assert not storage.exists(out)
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from step {step}" in done.stderr
    summary = json.loads((Path(out) / "guardsmith_training.json").read_text())
    assert summary["global_step"] == 30 and summary["resumed_from_step"] == step


def test_the_sigterm_handler_is_restored_after_training(tmp_path, tiny_model):
    import signal

    _write(tmp_path / "train", [_row(i) for i in range(4)])
    handler = signal.getsignal(signal.SIGTERM)
    sft.run(_train_cfg(tmp_path, tiny_model, mode="NR", max_steps=1))
    assert signal.getsignal(signal.SIGTERM) is handler


def test_prompts_that_fill_max_length_are_refused_or_counted(tmp_path, tiny_model):
    """A prompt of max_length tokens or more leaves no completion token: TRL drops such examples, and
    when it dropped them all it failed with an IndexError from `datasets`. Now every example over is
    one line before training, some over are counted in the model's facts."""
    _write(tmp_path / "train", [_row(i) for i in range(8)])
    with pytest.raises(GuardsmithError) as err:
        sft.run(_train_cfg(tmp_path, tiny_model, max_length=32))
    message = str(err.value)
    assert "8 of 8 examples have a prompt of at least max_length 32 tokens" in message
    assert "--max-length" in message and "sft_max_length" in message and "\n" not in message
    assert not (tmp_path / "out").exists()

    rows = [_row(i) for i in range(8)]
    rows[0]["prompt"] = "word " * 400  # the others stay well under 640 tokens
    _write(tmp_path / "train2", rows)
    result = sft.run(_train_cfg(tmp_path, tiny_model, train=str(tmp_path / "train2"), output=str(tmp_path / "out2")))
    summary = json.loads((tmp_path / "out2" / "guardsmith_training.json").read_text())
    assert result.global_step == 2 and summary["facts"]["prompts_at_max_length"] == 1
