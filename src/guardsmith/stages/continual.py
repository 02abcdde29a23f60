"""Continual training of a guard on hard samples (method A.7).

`method` picks one of three:

- `sft` (default; the paper's +0.5% harmful F1): SFT on the original set plus the difficult set
  oversampled by `oversample` (the examples of `guardsmith.guard.examples` and
  `guardsmith.training.train_sft`, as in the `sft` stage, with a weighted second input).
  Difficult rows from `mine` carry no reasoning; in R mode it is looked up by id in
  `reasoning_source` (e.g. the pool's traces), else `missing_reasoning` applies.
- `dpo`: TRL `DPOTrainer` on the `pairs` table written by `mine` (chosen = a correct guard
  sample, rejected = an incorrect one of the same prompt).
- `grpo`: TRL `GRPOTrainer` with a verifiable reward on label correctness: each completion is
  parsed with `parse_guard_output`; each labelled task scores +1 when right and minus the
  false-positive / false-negative penalty when wrong, weighted per task and averaged; an output
  that does not parse gets `reward_parse_failure`, below every other reward. The paper reports
  GRPO as a negative result (-1.1%): it is here to be measured, not the default. Reward
  statistics per generation batch are written to `rewards.jsonl` beside the model and logged.

Re-runs follow `guardsmith.training.finished_run`: the work identity (base model, train,
difficult, reasoning_source and pairs tables by content, the effective config, the version) is
computed first; the same work already published at `output` is a no-op, other work there is
refused naming the difference unless `overwrite`; checkpoints are resumed only by the same work.
Every example (SFT, GRPO prompt, DPO pair) is bounded by `max_example_chars` before tokenising.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from guardsmith import settings
from guardsmith.config import option
from guardsmith.errors import DataError, GuardsmithError
from guardsmith.rewards import REWARDS_FILE
from guardsmith.guard import examples as ex
from guardsmith.training import Prepared, TrainConfig, TrainingData, TrainingSummary, TrainResult
from guardsmith.vocabulary import TASK_POSITIVE, TASKS

HELP = (
    "Continual training of a guard on hard samples: SFT on the original set plus the oversampled "
    "difficult set (default), DPO on mined preference pairs, or GRPO with a verifiable "
    "label-correctness reward (a negative result in the paper, kept for measurement)."
)

METHODS = ("sft", "dpo", "grpo")
PAIR_COLUMNS = ("id", "prompt", "chosen", "rejected")

@dataclass(kw_only=True)
class ContinualConfig(TrainConfig, settings.sampling(omit=("seed",), samples_per_row=4, max_tokens=256,
                                                     temperature=1.0, top_p=1.0)):
    """Settings of the `continual` stage (training fields: see `guardsmith.training.TrainConfig`)."""

    method: Literal["sft", "dpo", "grpo"] = option("sft", "sft: original + oversampled difficult set; dpo: mined pairs; grpo: label reward.")
    train: str | None = option(None, "sft/grpo: the original training rows (traces or interactions, as for the sft stage).")
    difficult: str | None = option(None, "sft/grpo: the difficult set written by mine (mined/interactions/traces table).")
    oversample: float = option(2.0, "Weight of each difficult row (2 = twice; fractions are seeded draws).")
    reasoning_source: str | None = option(None, "R mode: a traces table whose reasoning fills difficult rows by id.")
    pairs: str | None = option(None, "dpo: the pairs table written by mine (id, prompt JSON messages, chosen, rejected).")
    mode: Literal["R", "NR", "dual"] = option("R", "Guard mode of the SFT targets and GRPO prompts (dual: seeded half each, tagged).")
    missing_reasoning: Literal["short", "nr", "drop", "error"] = option(
        "short", "R-mode rows without reasoning: short generated reason, nr, drop or error (see sft).")
    prompt_style: Literal["full", "compact"] | None = option(
        None, "Guard prompt style (full or compact); default: the style the base model was trained with.")
    dpo_beta: float = option(0.1, "dpo: KL strength beta of the DPO loss.")
    grpo_beta: float = option(0.0, "grpo: KL penalty to the start model (0 = none, no reference model).")
    reward_prompt_weight: float = option(1.0, "grpo: weight of the prompt-harm task in the reward.")
    reward_response_weight: float = option(1.0, "grpo: weight of the response-harm task in the reward.")
    reward_refusal_weight: float = option(0.5, "grpo: weight of the response-refusal task in the reward.")
    reward_fp_penalty: float = option(1.0, "grpo: penalty for a false positive (harmful/refusal predicted, label negative).")
    reward_fn_penalty: float = option(1.0, "grpo: penalty for a false negative (positive label missed, or no answer line).")
    reward_parse_failure: float = option(-2.0, "grpo: reward of an output that does not parse (must be below -max penalty).")


CONFIG = ContinualConfig


class ContinualResult(TrainResult):
    """Result of a `continual` run (model URI, method, example counts, steps, loss, s/step)."""


def _require(cfg: ContinualConfig, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name):
            raise GuardsmithError(f"continual method {cfg.method} needs `{name}`")


def check_config(cfg: ContinualConfig) -> None:
    """Reject an unknown method/mode, missing inputs and inconsistent reward settings."""
    if cfg.method not in METHODS:
        raise GuardsmithError(f"unknown continual method {cfg.method!r}: expected sft, dpo or grpo")
    if cfg.method == "dpo":
        _require(cfg, "pairs")
        return
    ex.check_mode(cfg.mode)
    if not (cfg.train or cfg.difficult):
        raise GuardsmithError(f"continual method {cfg.method} needs `train` and/or `difficult`")
    if cfg.oversample < 0:
        raise GuardsmithError(f"oversample must be >= 0, got {cfg.oversample}")
    if cfg.method == "grpo":
        RewardWeights.from_config(cfg)
        if cfg.samples_per_row < 2 or cfg.batch_size % cfg.samples_per_row:
            raise GuardsmithError(f"grpo: samples_per_row ({cfg.samples_per_row}) must be >= 2 and divide "
                                  f"batch_size ({cfg.batch_size})")


# --------------------------------------------------------------------------- rows (sft, grpo)

def _read_inputs(cfg: ContinualConfig, need_reasoning: bool) -> tuple[list[tuple[list[dict[str, Any]], float, str]],
                                                                   TrainingData]:
    """[(rows, weight, salt)] for `train` (weight 1) and `difficult` (weight `oversample`), and
    what they are (inputs, row counts, mode, prompt style)."""
    parts, counts = [], Counter()
    data = TrainingData(train_rows=0, mode=cfg.mode, prompt_style=prompt_style(cfg))
    if cfg.train:
        rows, read = ex.read_guard_rows(cfg.train, need_reasoning=need_reasoning)
        counts.update({f"train_{k}": v for k, v in read.items()})
        parts.append((rows, 1.0, "train"))
        data.datasets["train"], data.input_rows["train"] = cfg.train, len(rows)
    if cfg.difficult:
        rows, read = ex.read_guard_rows(cfg.difficult, need_reasoning=False, what="difficult", allow_empty=True)
        counts.update({f"difficult_{k}": v for k, v in read.items()})
        if cfg.reasoning_source and cfg.mode != "NR":
            lookup = ex.reasoning_by_id(cfg.reasoning_source)
            for row in rows:
                if not row.get("reasoning") and str(row["id"]) in lookup:
                    row["reasoning"] = lookup[str(row["id"])]
                    counts["difficult_reasoning_found"] += 1
        if cfg.mode != "NR":  # rows that get `missing_reasoning` (template, NR or dropped) instead of a teacher's
            counts["difficult_without_reasoning"] += sum(1 for row in rows if not row.get("reasoning"))
        if rows:
            parts.append((rows, cfg.oversample, "difficult"))
        else:  # mining found no difficult rows: continue on the original set alone
            from guardsmith import training

            training.log_line("continual", f"warning: {cfg.difficult} has no usable rows; training on the original set alone")
        data.datasets["difficult"], data.input_rows["difficult"] = cfg.difficult, len(rows)
    all_rows = [row for rows, _, _ in parts for row in rows]
    data.train_rows = len(all_rows)
    data.taxonomy, data.budget = ex.shared_value(all_rows, "taxonomy"), ex.shared_value(all_rows, "budget")
    data.policy = ex.shared_value(all_rows, "policy")
    if data.taxonomy is None:  # mixed rows: the guard keeps the taxonomy it was first trained with
        from guardsmith.guard_runner import trained_policy

        data.taxonomy, data.policy = trained_policy(cfg.base_model)
    data.counts = dict(counts)
    data.facts = {"seed": cfg.seed, "oversample": cfg.oversample}
    return parts, data


def prompt_style(cfg: ContinualConfig) -> str:
    """The configured prompt style, else the one the base model was trained with."""
    if cfg.prompt_style:
        return cfg.prompt_style
    from guardsmith.guard import prompt_style_of
    from guardsmith.model_store import local_model

    try:
        return prompt_style_of(local_model(cfg.base_model))
    except GuardsmithError:  # not a readable model folder: training reports that itself
        return "full"


def prepare_sft(cfg: ContinualConfig) -> Prepared:
    """SFT examples: the original set (weight 1) plus the difficult set (weight `oversample`)."""
    parts, data = _read_inputs(cfg, need_reasoning=cfg.mode != "NR")
    counts = Counter(data.counts)
    examples: list[dict[str, Any]] = []
    for rows, weight, salt in parts:
        part_counts: Counter = Counter()
        examples += ex.build_examples(rows, cfg.mode, seed=cfg.seed, missing_reasoning=cfg.missing_reasoning,
                                      weight=weight, file=getattr(cfg, salt), salt=salt, counts=part_counts,
                                      style=data.prompt_style, max_chars=cfg.max_example_chars,
                                      long_examples=cfg.long_examples)
        counts.update(part_counts)
        if salt == "difficult":  # R targets written from the template, not by the teacher
            counts["difficult_template_reasoning"] = part_counts["short_reason"]
    if not examples:
        raise GuardsmithError(f"no training examples left (counts: {dict(counts)})")
    data.counts = dict(counts)
    data.facts.update(ex.mode_counts(examples))
    return Prepared(examples, data)


# --------------------------------------------------------------------------- reward (grpo)

@dataclass(frozen=True)
class RewardWeights:
    """Task weights and error penalties of the label reward."""

    prompt: float = 1.0
    response: float = 1.0
    refusal: float = 0.5
    false_positive: float = 1.0
    false_negative: float = 1.0
    parse_failure: float = -2.0

    def __post_init__(self) -> None:
        if min(self.prompt, self.response, self.refusal, self.false_positive, self.false_negative) < 0:
            raise GuardsmithError("reward weights and penalties must be >= 0")
        if self.prompt + self.response + self.refusal <= 0:
            raise GuardsmithError("at least one reward task weight must be > 0")
        if self.parse_failure >= -max(self.false_positive, self.false_negative):
            raise GuardsmithError(
                f"reward_parse_failure ({self.parse_failure}) must be below every other reward "
                f"(the lowest is -{max(self.false_positive, self.false_negative)})")

    @classmethod
    def from_config(cls, cfg: ContinualConfig) -> RewardWeights:
        return cls(cfg.reward_prompt_weight, cfg.reward_response_weight, cfg.reward_refusal_weight,
                   cfg.reward_fp_penalty, cfg.reward_fn_penalty, cfg.reward_parse_failure)

    def tasks(self) -> tuple[tuple[str, str, float], ...]:
        """(task, positive label, weight) per task."""
        return tuple((t, TASK_POSITIVE[t], w) for t, w in zip(TASKS, (self.prompt, self.response, self.refusal)))


def score_completion(text: str, labels: Mapping[str, str | None], w: RewardWeights) -> tuple[float, dict[str, bool] | None]:
    """Reward of one guard output against the row's labels, and per-task correctness (None: no parse).

    Only tasks with a true label count; a task's score is +1 when right, `-false_positive` when
    the positive label (harmful / refusal) was predicted for a negative row, `-false_negative`
    otherwise (positive missed, or no answer for the task). Scores are averaged with the task
    weights. Range: [-max(penalties), 1]; `parse_failure` for an unparsable output.
    """
    from guardsmith.guard import parse_guard_output

    answer = parse_guard_output(text)
    if not answer.parse_ok:
        return w.parse_failure, None
    total = weights = 0.0
    correct: dict[str, bool] = {}
    for task, positive, weight in w.tasks():
        truth = labels.get(task)
        if truth is None or weight == 0:
            continue
        pred = getattr(answer, task)
        correct[task] = pred == truth
        score = 1.0 if pred == truth else (-w.false_positive if pred == positive else -w.false_negative)
        total += weight * score
        weights += weight
    return (total / weights if weights else 0.0), correct


class LabelReward:
    """GRPO reward function (TRL calling convention) that also records per-batch statistics."""

    def __init__(self, weights: RewardWeights) -> None:
        self.weights = weights
        self.history: list[dict[str, Any]] = []
        self.__name__ = "label_reward"  # TRL names the reward's log keys after it

    def __call__(self, prompts: list, completions: list, prompt_harm: list, response_harm: list,
                 response_refusal: list, trainer_state: Any = None, log_metric: Any = None, **_: Any) -> list[float]:
        rewards, parsed, right, seen = [], 0, Counter(), Counter()
        for completion, ph, rh, rr in zip(completions, prompt_harm, response_harm, response_refusal):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            reward, correct = score_completion(text, {"prompt_harm": ph, "response_harm": rh,
                                                      "response_refusal": rr}, self.weights)
            rewards.append(reward)
            if correct is not None:
                parsed += 1
                for task, ok in correct.items():
                    seen[task] += 1
                    right[task] += int(ok)
        n = len(rewards)
        stats = {"step": getattr(trainer_state, "global_step", None), "completions": n,
                 "reward_mean": sum(rewards) / n if n else 0.0,
                 "parse_failure_rate": 1 - parsed / n if n else 0.0,
                 **{f"accuracy_{t}": right[t] / seen[t] for t in seen}}
        self.history.append(stats)
        if log_metric is not None:
            for key in ("parse_failure_rate", *(f"accuracy_{t}" for t in seen)):
                log_metric(f"guard/{key}", stats[key])
        return rewards

    def jsonl(self) -> str:
        return "".join(json.dumps(entry) + "\n" for entry in self.history)


# --------------------------------------------------------------------------- dpo input

def read_pairs(uri: str, max_chars: int = 0, long_examples: str = "error",
               counts: Counter | None = None) -> list[dict[str, Any]]:
    """DPO records (conversational prompt, chosen, rejected) from mine's pairs table; each pair's
    texts are bounded by `max_chars` (`guardsmith.guard.examples.bound_texts`: the last prompt
    message, chosen and rejected are what truncation cuts)."""
    import pyarrow as pa

    from guardsmith import storage, tables

    wanted = pa.schema([tables.SCHEMAS["pairs"].field(c) for c in PAIR_COLUMNS])
    records, offset = [], 0
    for batch in storage.iter_batches(uri, columns=list(PAIR_COLUMNS)):
        tables.check_schema(batch, wanted, uri, offset)
        for i, row in enumerate(batch.to_pylist()):
            try:
                messages = json.loads(row["prompt"])
                ok = isinstance(messages, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                raise DataError("prompt is not a JSON list of {role, content} messages", file=uri,
                                column="prompt", row=offset + i, value=row["prompt"])
            if messages and max_chars:
                fixed = sum(len(str(m["content"] or "")) for m in messages[:-1])
                texts = ex.bound_texts({"prompt": str(messages[-1]["content"] or ""), "chosen": row["chosen"],
                                        "rejected": row["rejected"]}, max_chars, long_examples, file=uri,
                                       row=offset + i, row_id=row["id"], counts=counts, fixed=fixed)
                messages = [*messages[:-1], {**messages[-1], "content": texts["prompt"]}]
                row = {**row, "chosen": texts["chosen"], "rejected": texts["rejected"]}
            records.append({"prompt": messages,
                            "chosen": [{"role": "assistant", "content": row["chosen"]}],
                            "rejected": [{"role": "assistant", "content": row["rejected"]}]})
        offset += batch.num_rows
    if not records:
        raise DataError("the pairs table has no rows", file=uri)
    return records


# --------------------------------------------------------------------------- training

def _train_preference(cfg: ContinualConfig, prepared: Prepared, identity: Any) -> TrainingSummary:
    """DPO (records: prompt/chosen/rejected) or GRPO (records: prompt + labels) training."""
    from datasets import Dataset

    from guardsmith import training
    from guardsmith.model_files import loading
    from guardsmith.model_store import local_model

    rt = training.runtime(cfg)
    model_dir = local_model(cfg.base_model)
    tokenizer = training.load_tokenizer(model_dir)
    records = prepared.examples
    dataset = Dataset.from_list(records)
    reward = None
    with training.work_folder(cfg, "continual") as work:
        resume = training.restore_checkpoint(cfg, work, identity)
        common = training.trainer_args(cfg, rt, work, save=bool(cfg.checkpoint_uri))
        callbacks = training.checkpoint_callbacks(cfg, identity)
        init = training.model_init_kwargs(cfg, rt)
        if cfg.method == "dpo":
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(**common, beta=cfg.dpo_beta, max_length=cfg.max_length, model_init_kwargs=init)
            with loading(model_dir, "base model"):
                trainer = DPOTrainer(model=str(model_dir), args=args, train_dataset=dataset, processing_class=tokenizer,
                                     peft_config=training.peft_config(cfg), callbacks=callbacks)
        else:
            from trl import GRPOConfig, GRPOTrainer

            reward = LabelReward(RewardWeights.from_config(cfg))
            args = GRPOConfig(**common, num_generations=cfg.samples_per_row,
                              max_completion_length=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              beta=cfg.grpo_beta, use_vllm=False, model_init_kwargs=init)
            with loading(model_dir, "base model"):
                trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=args, train_dataset=dataset,
                                      processing_class=tokenizer, peft_config=training.peft_config(cfg),
                                      callbacks=callbacks)
        training.log_line("continual", f"{cfg.method} on {len(records)} records, {rt.describe()}")
        return training.train_and_publish(
            trainer, cfg, rt, stage="continual", method=cfg.method, title=f"guardsmith continual {cfg.method} guard",
            resume=resume, examples=len(records), data=prepared.data, identity=identity,
            extra_files=(lambda: {REWARDS_FILE: reward.jsonl()}) if reward is not None else None)


def grpo_records(cfg: ContinualConfig) -> Prepared:
    """GRPO prompts (guard messages in `mode`) with their labels; difficult rows repeated by weight."""
    from guardsmith import training
    from guardsmith.guard import render_guard_messages

    parts, data = _read_inputs(cfg, need_reasoning=False)
    counts = Counter(data.counts)
    records = []
    for rows, weight, salt in parts:
        rows = [ex.bound_row(row, i, cfg.max_example_chars, cfg.long_examples, file=getattr(cfg, salt), counts=counts,
                             reasoning=False) for i, row in enumerate(rows)]
        modes = ex.assign_modes(len(rows), cfg.mode, cfg.seed, salt)
        built = [{"prompt": render_guard_messages(row, m, dual=cfg.mode == "dual", style=data.prompt_style),
                  "weight": weight,
                  **{t: row[t] for t in TASKS}} for row, m in zip(rows, modes)]
        records += [{k: v for k, v in r.items() if k != "weight"} for r in training.expand_weights(built, cfg.seed)]
    data.counts = dict(counts)
    if not records:
        raise GuardsmithError(f"no GRPO prompts left (counts: {data.counts})")
    return Prepared(records, data)


_SAMPLING = ("samples_per_row", "temperature", "top_p", "max_tokens")
_REWARD = tuple(f"reward_{k}" for k in ("prompt_weight", "response_weight", "refusal_weight", "fp_penalty",
                                        "fn_penalty", "parse_failure"))
UNUSED: dict[str, tuple[str, ...]] = {
    "sft": (*_SAMPLING, *_REWARD, "dpo_beta", "grpo_beta"),
    "dpo": (*_SAMPLING, *_REWARD, "grpo_beta", "oversample", "mode", "missing_reasoning", "prompt_style"),
    "grpo": ("dpo_beta", "missing_reasoning"),
}
"""Config fields each method never reads: left out of its work identity, so changing one of them
(say `temperature` with method sft) is the same work."""


def identity(cfg: ContinualConfig):
    """The work identity of this run (`guardsmith.training.training_identity`): the inputs the
    method reads, by content, and the config fields it reads (not those in `UNUSED`). The prompt
    style a base model was trained with comes with the base model's identity."""
    from guardsmith import training

    used = ("pairs",) if cfg.method == "dpo" else ("train", "difficult", "reasoning_source")
    inputs = {name: getattr(cfg, name) if name in used else None
              for name in ("train", "difficult", "reasoning_source", "pairs")}
    return training.training_identity("continual", cfg, inputs, exclude=UNUSED.get(cfg.method, ()))


def run(cfg: ContinualConfig) -> ContinualResult:
    """Continue training `cfg.base_model` with the chosen method; publish it at `cfg.output`."""
    from guardsmith import training

    check_config(cfg)
    if cfg.method == "sft":
        prepared = prepare_sft(cfg)
    elif cfg.method == "dpo":
        counts: Counter = Counter()
        pairs = read_pairs(cfg.pairs, cfg.max_example_chars, cfg.long_examples, counts)
        prepared = Prepared(pairs, TrainingData(datasets={"pairs": cfg.pairs}, input_rows={"pairs": len(pairs)},
                                                train_rows=len(pairs), counts={"pairs": len(pairs), **counts},
                                                facts={"beta": cfg.dpo_beta}))
    else:
        prepared = grpo_records(cfg)
    work = identity(cfg)  # after reading: bad input is reported the same on every run, finished or not
    done = training.finished_run(cfg, work, "continual")
    if done is not None:
        return ContinualResult.from_summary(done)
    launched = training.relaunch_if_needed(cfg, training.runtime(cfg), "continual")
    if launched is not None:
        return ContinualResult.from_summary(launched)
    if cfg.method == "sft":
        return ContinualResult.from_summary(training.train_sft(cfg, prepared, stage="continual", method="sft",
                                                               title="guardsmith continual SFT guard", identity=work))
    return ContinualResult.from_summary(_train_preference(cfg, prepared, work))
