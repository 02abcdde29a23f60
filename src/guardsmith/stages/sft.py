"""Supervised fine-tuning of the guard (method A.6).

Input rows are accepted traces (`judged_traces` with `accepted`, or `traces`) or, for NR mode,
plain `interactions`. Each row becomes one `sft_examples` record: the guard prompt
(`render_guard_messages`) and the target (`render_guard_target`), in mode

- `R`: `<think>` reasoning `</think>` then the three answer lines;
- `NR`: the answer lines only;
- `dual`: a seeded random half of the rows in each mode, each prompt starting with its mode tag.

Labels: the row's true label; where it is null, the teacher's parsed answer (`pred_*` of a
traces table); rows still lacking a label they need are dropped and counted. Rows in R mode
whose reasoning is blank follow `missing_reasoning` (a short reason generated from the labels,
NR, drop or error). `subset` keeps a seeded random subset (nested: the first k of one seeded
permutation); `topic_following` mixes rows of a second table in at `topic_following_ratio`.

Training: TRL `SFTTrainer` on a conversational prompt/completion dataset (loss on the
completion only), full or LoRA, checkpoints uploaded to `checkpoint_uri` and resumed from; the
model is published in Hugging Face format with a model card (see `guardsmith.training`).
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from guardsmith.config import option
from guardsmith.errors import DataError, GuardsmithError
from guardsmith.training import TrainConfig, TrainResult

HELP = (
    "Supervised fine-tuning of a guard model on accepted reasoning traces in R (reasoning), NR "
    "(answer only) or dual mode, with optional random subset and topic-following mix; full or "
    "LoRA with TRL's SFTTrainer, checkpoints in object storage with resume, multi-GPU through a "
    "generated accelerate launch; the model is published with a model card."
)

MODES = ("R", "NR", "dual")
MISSING_REASONING = ("short", "nr", "drop", "error")
GUARD_COLUMNS = ("id", "source", "taxonomy", "policy", "prompt", "response",
                 "prompt_harm", "response_harm", "response_refusal")
"""Columns every input row needs (the interaction and its labels)."""
OPTIONAL_COLUMNS = ("reasoning", "accepted", "pred_prompt_harm", "pred_response_harm", "pred_response_refusal")
"""Columns used when present: trace reasoning, filter verdict, teacher answers (label fallback)."""
LABELS = ("prompt_harm", "response_harm", "response_refusal")


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


# --------------------------------------------------------------------------- reading rows

def _present_columns(uri: str) -> set[str]:
    from guardsmith import storage

    first = next(iter(storage.iter_batches(uri, batch_size=1)), None)
    if first is None or first.num_rows == 0:
        raise DataError("the input table has no rows", file=uri)
    return set(first.schema.names)


def target_labels(row: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The labels a target states: the true label, else the teacher's answer (`pred_*`).

    None when the prompt label is unknown, or the row has a response but no response-harm or
    refusal label (such a target would teach `None` for a real response).
    """
    from guardsmith.guard import has_response

    labels = {t: row.get(t) if row.get(t) is not None else row.get(f"pred_{t}") for t in LABELS}
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

    present = _present_columns(uri)
    columns = list(GUARD_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in present]
    if need_reasoning and "reasoning" not in columns:
        columns.append("reasoning")  # validation names the missing column and the file
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter(read=0, not_accepted=0, unlabelled=0)
    batches = storage.iter_batches(uri, schema_name="judged_traces", columns=columns)
    for batch in track(batches, f"read {what} rows"):
        for row in batch.to_pylist():
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
    if mode not in MODES:
        raise GuardsmithError(f"unknown mode {mode!r}: expected R, NR or dual")
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
                   salt: str = "train", counts: Counter | None = None, style: str = "full") -> list[dict[str, Any]]:
    """`sft_examples` records for `rows` (labels already filled in) in mode R, NR or dual.

    `counts` (optional) receives `short_reason`, `as_nr` and `no_reasoning_dropped` tallies.
    """
    from guardsmith.guard import render_guard_messages, render_guard_target, strip_think

    if missing_reasoning not in MISSING_REASONING:
        raise GuardsmithError(f"unknown missing_reasoning {missing_reasoning!r}: expected {', '.join(MISSING_REASONING)}")
    counts = counts if counts is not None else Counter()
    dual = mode == "dual"
    out = []
    for index, (row, row_mode) in enumerate(zip(rows, assign_modes(len(rows), mode, seed, salt))):
        reasoning = None
        if row_mode == "R":
            reasoning = strip_think(row.get("reasoning") or "") or None
            if reasoning is None:
                if missing_reasoning == "error":
                    raise DataError("R mode needs reasoning; this row has none", file=file,
                                    column="reasoning", row=index, value=row.get("id"))
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


# --------------------------------------------------------------------------- the stage

@dataclass
class Prepared:
    """Examples ready for training plus what the model card reports about them."""

    examples: list[dict[str, Any]]
    counts: dict[str, int]
    data: list[tuple[str, str | None, int | None]]
    facts: dict[str, Any]


def prepare(cfg: SftConfig) -> Prepared:
    """Read and validate the inputs and build the examples; nothing is written."""
    check_mode(cfg.mode)
    need_reasoning = cfg.mode != "NR"
    rows, read = read_guard_rows(cfg.train, need_reasoning=need_reasoning)
    rows = take_subset(rows, cfg.subset, cfg.seed, cfg.train)
    counts: Counter = Counter({f"train_{k}": v for k, v in read.items()})
    counts["train_used"] = len(rows)
    examples = build_examples(rows, cfg.mode, seed=cfg.seed, missing_reasoning=cfg.missing_reasoning,
                              file=cfg.train, counts=counts, style=cfg.prompt_style)
    data: list[tuple[str, str | None, int | None]] = [("train", cfg.train, len(rows))]
    if cfg.topic_following:
        tf_rows, tf_read = read_guard_rows(cfg.topic_following, need_reasoning=False, what="topic-following")
        counts.update({f"topic_following_{k}": v for k, v in tf_read.items()})
        if cfg.topic_following_ratio is not None:
            tf_rows = sample_rows(tf_rows, mix_count(len(examples), cfg.topic_following_ratio), cfg.seed, "tf")
        counts["topic_following_used"] = len(tf_rows)
        examples += build_examples(tf_rows, cfg.mode, seed=cfg.seed, missing_reasoning=cfg.missing_reasoning,
                                   file=cfg.topic_following, salt="tf", counts=counts, style=cfg.prompt_style)
        data.append(("topic_following", cfg.topic_following, len(tf_rows)))
    if not examples:
        raise GuardsmithError(f"{cfg.train}: no training examples left (counts: {dict(counts)})")
    modes = Counter(e["mode"] for e in examples)
    facts = {"mode": cfg.mode, "subset": cfg.subset, "seed": cfg.seed, "prompt_style": cfg.prompt_style,
             "examples_R": modes.get("R", 0), "examples_NR": modes.get("NR", 0)}
    return Prepared(examples, dict(counts), data, facts)


def write_examples(uri: str, examples: Sequence[dict[str, Any]]) -> None:
    """Write examples as an `sft_examples` table (validated, atomic)."""
    from guardsmith import storage, tables

    storage.write_table(uri, tables.from_records(examples, "sft_examples"), "sft_examples")


def train_examples(cfg: TrainConfig, prepared: Prepared, *, stage: str = "sft", method: str = "sft",
                   title: str = "guardsmith SFT guard") -> dict[str, Any]:
    """Fine-tune `cfg.base_model` on the prepared examples (weights expanded) and publish it."""
    from trl import SFTConfig, SFTTrainer

    from guardsmith import training
    from guardsmith.model_store import local_model

    rt = training.runtime(cfg)
    model_dir = local_model(cfg.base_model)
    tokenizer = training.load_tokenizer(model_dir)
    expanded = training.expand_weights(prepared.examples, cfg.seed)
    lengths = training.token_lengths(tokenizer, prepared.examples)
    if lengths.get("total_tokens_max", 0) > cfg.max_length:
        training.log_line(stage, f"some examples exceed max_length {cfg.max_length} ({lengths}); they are truncated")
    with training.work_folder(cfg, stage) as work:
        resume = training.restore_checkpoint(cfg, work)
        if resume[0]:
            training.log_line(stage, f"resuming from step {resume[1]} ({cfg.checkpoint_uri})")
        args = SFTConfig(
            **training.trainer_args(cfg, rt, work, save=bool(cfg.checkpoint_uri)),
            max_length=cfg.max_length, packing=cfg.packing, completion_only_loss=True,
            model_init_kwargs=training.model_init_kwargs(cfg, rt),
        )
        callbacks = [training.checkpoint_callback(cfg.checkpoint_uri, cfg.save_total_limit)] if cfg.checkpoint_uri else []
        trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=training.sft_dataset(expanded),
                             processing_class=tokenizer, peft_config=training.peft_config(cfg), callbacks=callbacks)
        training.log_line(stage, f"{len(expanded)} examples on {rt.describe()}, {lengths}")
        return training.train_and_publish(
            trainer, cfg, rt, stage=stage, method=method, title=title, resume=resume,
            examples=len(expanded), counts=prepared.counts, data=prepared.data,
            facts={**prepared.facts, **lengths, "finetune": cfg.finetune})


def launch_command(cfg: SftConfig, n_gpus: int, folder: str | None = None) -> list[str]:
    """Write the accelerate and stage configs; return the argv that runs this SFT on `n_gpus` GPUs."""
    from guardsmith import training

    return training.launch_command(cfg, n_gpus, "sft", folder)


def run(cfg: SftConfig) -> SftResult:
    """Build the examples, fine-tune and publish the guard model at `cfg.output`."""
    from guardsmith import training

    prepared = prepare(cfg)
    launched = training.relaunch_if_needed(cfg, training.runtime(cfg), "sft")
    if launched is not None:
        return SftResult.from_summary(launched)
    if cfg.examples_output and training.runtime(cfg).is_main:
        write_examples(cfg.examples_output, prepared.examples)
    return SftResult.from_summary(train_examples(cfg, prepared))
