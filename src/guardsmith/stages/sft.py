"""Supervised fine-tuning of the guard (method A.6).

Input rows are accepted traces (`judged_traces` with `accepted`, or `traces`) or, for NR mode,
plain `interactions`. Each row becomes one `sft_examples` record in mode R (reasoning then the
answer lines), NR (answer lines only) or dual (a seeded half in each, with mode tags), with the
row's labels (else the teacher's answer) and `missing_reasoning` for R-mode rows without a trace:
see `guardsmith.guard.examples`. `subset` keeps a seeded random subset (nested: the first k of
one seeded permutation); `topic_following` mixes rows of a second table in at
`topic_following_ratio`.

Training is `guardsmith.training.train_sft` (TRL `SFTTrainer` on a conversational
prompt/completion dataset, loss on the completion only), full or LoRA, checkpoints uploaded to
`checkpoint_uri` and resumed from; the model is published in Hugging Face format with its
`TrainingSummary` and a model card.

Re-runs (`guardsmith.training.finished_run`): the run's work identity (the train and
topic-following tables and the base model by content, the effective config, the guardsmith
version) is computed before anything is trained. A model at `output` made by the same work makes
the run a no-op; one made by other work is refused with a one-line error naming the difference
unless `overwrite`. Checkpoints carry the identity and are resumed only by the same work. Each
example's texts are bounded by `max_example_chars` before tokenising (`long_examples`: error or
truncate).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from guardsmith.config import option
from guardsmith.errors import GuardsmithError
from guardsmith.guard import examples as ex
from guardsmith.training import Prepared, TrainConfig, TrainingData, TrainResult

HELP = (
    "Supervised fine-tuning of a guard model on accepted reasoning traces in R (reasoning), NR "
    "(answer only) or dual mode, with optional random subset and topic-following mix; full or "
    "LoRA with TRL's SFTTrainer, checkpoints in object storage with resume, multi-GPU through a "
    "generated accelerate launch; the model is published with a model card."
)


@dataclass(kw_only=True)
class SftConfig(TrainConfig):
    """Settings of the `sft` stage (training fields: see `guardsmith.training.TrainConfig`)."""

    train: str = option(help="Training rows: accepted traces (judged_traces/traces table); interactions suffice for NR.")
    mode: Literal["R", "NR", "dual"] = option("R", "R: reasoning then answer; NR: answer only; dual: seeded half in each mode, with mode tags.")
    subset: int | None = option(None, "Train on a seeded random subset of this many rows (e.g. 500, 5000); 0 or unset: all.")
    topic_following: str | None = option(None, "Optional second table mixed in (topic-following traces or interactions).")
    topic_following_ratio: float | None = option(None, "Share of the final example set taken from topic_following (0 to <1); default: all its rows once.")
    missing_reasoning: Literal["short", "nr", "drop", "error"] = option(
        "short", "R-mode rows without reasoning: short = a one-line reason generated from the labels; "
        "nr = train them in NR mode; drop; error.")
    examples_output: str | None = option(None, "Also write the built examples as an sft_examples table here.")
    prompt_style: Literal["full", "compact"] = option(
        "full", "Guard prompt style: full (tasks, rules, every category) or compact (taxonomy named, one-line "
        "instructions; for small models). Recorded in the model folder; mine/evaluate use the same style.")


CONFIG = SftConfig


class SftResult(TrainResult):
    """Result of an `sft` run (model URI, example and row counts, steps, loss, s/step)."""


# --------------------------------------------------------------------------- the stage

def prepare(cfg: SftConfig) -> Prepared:
    """Read and validate the inputs and build the examples; nothing is written."""
    ex.check_mode(cfg.mode)
    rows, read = ex.read_guard_rows(cfg.train, need_reasoning=cfg.mode != "NR")
    rows = ex.take_subset(rows, cfg.subset, cfg.seed, cfg.train)
    counts: Counter = Counter({f"train_{k}": v for k, v in read.items()})
    counts["train_used"] = len(rows)
    bound = {"max_chars": cfg.max_example_chars, "long_examples": cfg.long_examples}
    examples = ex.build_examples(rows, cfg.mode, seed=cfg.seed, missing_reasoning=cfg.missing_reasoning,
                                 file=cfg.train, counts=counts, style=cfg.prompt_style, **bound)
    data = TrainingData(datasets={"train": cfg.train}, input_rows={"train": len(rows)}, train_rows=len(rows),
                        mode=cfg.mode, prompt_style=cfg.prompt_style, subset=cfg.subset or None,
                        taxonomy=ex.shared_value(rows, "taxonomy"), policy=ex.shared_value(rows, "policy"), budget=ex.shared_value(rows, "budget"))
    if cfg.topic_following:
        tf_rows, tf_read = ex.read_guard_rows(cfg.topic_following, need_reasoning=False, what="topic-following")
        counts.update({f"topic_following_{k}": v for k, v in tf_read.items()})
        if cfg.topic_following_ratio is not None:
            tf_rows = ex.sample_rows(tf_rows, ex.mix_count(len(examples), cfg.topic_following_ratio), cfg.seed, "tf")
        counts["topic_following_used"] = len(tf_rows)
        examples += ex.build_examples(tf_rows, cfg.mode, seed=cfg.seed, missing_reasoning=cfg.missing_reasoning,
                                      file=cfg.topic_following, salt="tf", counts=counts, style=cfg.prompt_style,
                                      **bound)
        data.datasets["topic_following"] = cfg.topic_following
        data.input_rows["topic_following"] = data.topic_following_rows = len(tf_rows)
    if not examples:
        raise GuardsmithError(f"{cfg.train}: no training examples left (counts: {dict(counts)})")
    data.counts = dict(counts)
    data.facts = {"seed": cfg.seed, **ex.mode_counts(examples)}
    return Prepared(examples, data)


def launch_command(cfg: SftConfig, n_gpus: int, folder: str | None = None) -> list[str]:
    """Write the accelerate and stage configs; return the argv that runs this SFT on `n_gpus` GPUs."""
    from guardsmith import training

    return training.launch_command(cfg, n_gpus, "sft", folder)


def identity(cfg: SftConfig):
    """The work identity of this run (`guardsmith.training.training_identity`)."""
    from guardsmith import training

    return training.training_identity("sft", cfg, {"train": cfg.train, "topic_following": cfg.topic_following})


def run(cfg: SftConfig) -> SftResult:
    """Build the examples, fine-tune and publish the guard model at `cfg.output` (a no-op when the
    same work already published it there)."""
    from guardsmith import training

    prepared = prepare(cfg)  # bad input is reported the same on every run, finished or not
    work = identity(cfg)
    done = training.finished_run(cfg, work, "sft")
    if done is not None:
        return SftResult.from_summary(done)
    launched = training.relaunch_if_needed(cfg, training.runtime(cfg), "sft")
    if launched is not None:
        return SftResult.from_summary(launched)
    if cfg.examples_output and training.runtime(cfg).is_main:
        ex.write_examples(cfg.examples_output, prepared.examples)
    return SftResult.from_summary(training.train_sft(cfg, prepared, stage="sft", identity=work))
