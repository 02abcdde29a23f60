"""Boundary Guidance: RL fine-tuning of a generator in front of a safety filter (method B.3).

TRL's `GRPOTrainer` samples `samples_per_row` completions per prompt; one reward function
scores every completion with the safety scorer (t) and the utility scorer (u) and combines them
with the selected reward from `guardsmith.rewards` (boundary, guard_only, rm_only, filter_avoid,
prompt_aware). The reward function is asynchronous (TRL 1.16 runs async reward functions on its
own event loop); inside it, the safety scorer, the utility scorer and (prompt_aware) the
prompt-only safety scorer run concurrently in worker threads (`asyncio.to_thread`), so a GPU
guard and a GPU reward model overlap. Per generation batch, the reward total and its parts (mean
u, mean t, mean |t - tau|, filter rate, the spreads of u and of the margin term) are appended to a
JSONL reward log, published beside the model as `rewards.jsonl` and also written to `rewards_log`
when set. `margin_normalisation: zscore` (the default) z-scores the margin term per batch like the
utility, so that w_u = w_m = 1 weigh two terms of equal spread; the run prints the spreads and
the w_margin that would equalise them without it (`calibration`).

Generation uses vLLM when it is installed and a GPU is present (`use_vllm`; colocate or server
mode), transformers otherwise. Precision, LoRA, checkpoint upload to object storage and resume,
multi-GPU relaunch and model publishing come from `guardsmith.training`.

Re-runs follow `guardsmith.training.finished_run`: the work identity (the generator, the prompt
table and local scorer models by content, the effective config, the version) is computed
first; the same work already published at `output` is a no-op, other work there is refused
naming the difference unless `overwrite`; checkpoints are resumed only by the same work.
Prompts longer than `max_example_chars` (with the system prompt) are refused naming the row
(`long_examples: error`) or cut and counted (`truncate`) before any tokenising; prompts with fewer
than `min_prompt_words` words are left out (a long-context prompt set).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from guardsmith import settings
from guardsmith.config import option
from guardsmith.errors import DataError, GuardsmithError
from guardsmith.rewards import (NEEDS_PROMPT_SCORE, REWARDS, RewardConfig, compute_reward, equalising_weight,
                                margin_balance, margin_term, read_reward_log, REWARDS_FILE)
from guardsmith.training import TrainConfig, TrainResult

HELP = (
    "Boundary Guidance: fine-tune a generator with GRPO so that its outputs stay away from the "
    "safety filter's decision boundary. Rewards combine a safety score t (a guardsmith guard, a "
    "classifier, an OpenAI-compatible guard or a rule) and a utility u (a reward model or a "
    "rule): boundary = w_u*u + w_m*|t - tau| (the method), guard_only, rm_only, filter_avoid "
    "(the usual baseline) and prompt_aware (an ablation)."
)

LABEL_FILTERS = ("harmful", "unharmful", "unlabelled")
PROMPT_COLUMNS = ["id", "source", "prompt", "prompt_harm"]


@dataclass(kw_only=True)
class BoundaryConfig(TrainConfig, settings.sampling(omit=("seed",), samples_per_row=8, max_tokens=512,
                                                     temperature=1.0, top_p=1.0)):
    """Settings of the `boundary` stage (training fields: see `guardsmith.training.TrainConfig`)."""

    generator: str | None = option(None, "Start model of the policy (Hugging Face folder: path, file:// or s3:// URI).")
    base_model: str | None = option(None, "Alias of `generator` (the field name the other training stages use).")
    prompts: str = option(help="Prompt set: an interactions table; its `prompt` column is used.")
    sources: list[str] = option(help="Use only rows of these sources (empty: all).", factory=list)
    prompt_labels: list[str] = option(help="Use only rows whose prompt_harm is one of: harmful, unharmful, unlabelled (empty: all).",
                                      factory=list)
    max_prompts: int = option(0, "Use at most this many prompts (a seeded sample); 0 uses all.")
    min_prompt_words: int = option(0, "Use only prompts of at least this many words (e.g. 200 for long-context prompts); 0 uses all.")
    system_prompt: str | None = option(None, "System message put before each prompt (none by default).")
    safety: str = option(help="Safety scorer t: guard:<uri>, classifier:<uri>[?label=unsafe], openai:<url>?model=NAME or rule:<name>.")
    utility: str | None = option(None, "Utility scorer u: reward_model:<uri> or rule:<name> (optional only for guard_only).")
    reward: Literal["boundary", "guard_only", "rm_only", "filter_avoid", "prompt_aware"] = option(
        "boundary", "Reward: boundary, guard_only, rm_only, filter_avoid or prompt_aware (see docs/stages/boundary.md).")
    tau: float = option(0.5, "Filter threshold: an output with t >= tau is replaced by a refusal.")
    w_utility: float = option(1.0, "Weight w_u of the utility in boundary and prompt_aware.")
    w_margin: float = option(1.0, "Weight w_m of the margin term |t - tau| in boundary and prompt_aware.")
    margin_normalisation: Literal["none", "zscore"] = option(
        "zscore", "Margin term of boundary and prompt_aware: zscore (per generation batch, the spread of a z-scored "
                  "utility) or none (|t - tau| as written; the paper's formula).")
    filter_lambda: float = option(1.0, "filter_avoid: penalty lambda on t.")
    refusal_utility: float = option(0.0, "filter_avoid: utility of a filtered output (u_refusal).")
    utility_normalisation: Literal["none", "zscore", "affine"] = option(
        "zscore", "Utility normalisation: none, zscore (per generation batch) or affine (scale*u + shift).")
    utility_scale: float = option(1.0, "affine normalisation: scale.")
    utility_shift: float = option(0.0, "affine normalisation: shift.")
    scorer_device: str = option("auto", "Device of local scorer models (auto: this process's GPU, else CPU).")
    scorer_batch_size: int = option(16, "Pairs per forward pass of local scorer models.")
    score_concurrently: bool = option(True, "Run the safety and utility scorers concurrently (threads) in each reward call.")
    grpo_beta: float = option(0.0, "KL penalty to the start model (0 = none, no reference model).")
    loss_type: str = option("dapo", "GRPO loss aggregation (TRL loss_type: dapo, grpo, dr_grpo, bnpo, ...).")
    scale_rewards: str = option("group", "Advantage scaling (TRL scale_rewards: group, batch or none).")
    use_vllm: bool | None = option(None, "Generate with vLLM; default: when vllm is installed and a GPU is visible.")
    vllm_mode: Literal["colocate", "server"] = option("colocate", "vLLM mode: colocate (in-process) or server (trl vllm-serve).")
    vllm_server_base_url: str | None = option(None, "server mode: base URL of the `trl vllm-serve` server.")
    vllm_gpu_memory_utilization: float = option(0.3, "colocate mode: share of GPU memory vLLM may take.")
    vllm_tensor_parallel_size: int = option(1, "colocate mode: tensor-parallel size of vLLM.")
    vllm_max_model_length: int | None = option(None, "vLLM context length (default: from the model config).")
    vllm_enable_sleep_mode: bool = option(False, "colocate mode: offload vLLM weights/cache during the optimiser step.")
    rewards_log: str | None = option(None, f"Also write the per-step reward log (JSONL) here; it is always published as {REWARDS_FILE} beside the model.")


CONFIG = BoundaryConfig


@dataclass
class BoundaryResult(TrainResult):
    """Result of a `boundary` run: the model, the run numbers and the first/last reward log entries."""

    rewards_log: str | None = None
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    balance: dict[str, Any] | None = None

    def __str__(self) -> str:
        lines = [super().__str__(), f"reward log: {self.rewards_log}"]
        for name, entry in (("first", self.first), ("last", self.last)):
            if entry:
                lines.append(f"{name} step {entry['step']}: reward {entry['reward_mean']:.4f}, t {entry['safety_mean']:.4f}, "
                             f"|t-tau| {entry['margin_mean']:.4f}, u {entry['utility_mean']:.4f}, "
                             f"filtered {entry['filter_rate']:.3f}")
        if self.balance:
            b = self.balance
            weight = "none (the margin term has no spread)" if b["w_margin"] is None else f"{b['w_margin']:.3g}"
            lines.append(f"balance over {b['batches']} batches: std(u) {b['utility_std']:.4f}, std(margin term) "
                         f"{b['margin_std']:.4f}; w_margin equalising them without margin normalisation: {weight}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- config

def reward_config(cfg: BoundaryConfig) -> RewardConfig:
    """The `RewardConfig` of a stage config."""
    return RewardConfig(tau=cfg.tau, w_u=cfg.w_utility, w_m=cfg.w_margin, lam=cfg.filter_lambda,
                        u_refusal=cfg.refusal_utility, margin_normalisation=cfg.margin_normalisation)


def resolve_generator(cfg: BoundaryConfig) -> BoundaryConfig:
    """`cfg` with `generator` and `base_model` both set to the start model (one of them must be given)."""
    gen, base = cfg.generator, cfg.base_model
    if not gen and not base:
        raise GuardsmithError("boundary needs `generator` (the policy's start model)")
    if gen and base and gen != base:
        raise GuardsmithError(f"generator ({gen}) and base_model ({base}) differ; set only generator")
    return replace(cfg, generator=gen or base, base_model=gen or base)


def check_config(cfg: BoundaryConfig) -> None:
    """Reject unknown rewards, labels and scorer kinds and inconsistent batch settings before any work."""
    from guardsmith.scoring import NORMALISATIONS, SAFETY_KINDS, UTILITY_KINDS, parse_scorer_spec

    if cfg.reward not in REWARDS:
        raise GuardsmithError(f"unknown reward {cfg.reward!r}; choose one of {', '.join(REWARDS)}")
    reward_config(cfg)
    parse_scorer_spec(cfg.safety, SAFETY_KINDS)
    if cfg.utility:
        parse_scorer_spec(cfg.utility, UTILITY_KINDS)
    elif cfg.reward != "guard_only":
        raise GuardsmithError(f"reward {cfg.reward} needs `utility` (reward_model:<uri> or rule:<name>)")
    if cfg.utility_normalisation not in NORMALISATIONS:
        raise GuardsmithError(f"unknown utility_normalisation {cfg.utility_normalisation!r}")
    bad = sorted(set(cfg.prompt_labels) - set(LABEL_FILTERS))
    if bad:
        raise GuardsmithError(f"prompt_labels: unknown value(s) {', '.join(bad)}; use {', '.join(LABEL_FILTERS)}")
    if cfg.samples_per_row < 2 or cfg.batch_size % cfg.samples_per_row:
        raise GuardsmithError(f"samples_per_row ({cfg.samples_per_row}) must be >= 2 and divide batch_size ({cfg.batch_size})")
    if cfg.max_tokens < 1 or cfg.max_prompts < 0 or cfg.scorer_batch_size < 1 or cfg.min_prompt_words < 0:
        raise GuardsmithError("max_tokens and scorer_batch_size must be >= 1, max_prompts and min_prompt_words >= 0")
    if cfg.max_length <= cfg.max_tokens:
        raise GuardsmithError(f"max_length ({cfg.max_length}) must exceed max_tokens ({cfg.max_tokens})")
    settings.group_values(cfg, settings.Sampling)
    if cfg.use_vllm and cfg.vllm_mode == "server" and not cfg.vllm_server_base_url:
        raise GuardsmithError("vllm_mode server needs vllm_server_base_url")


# --------------------------------------------------------------------------- prompts

def read_prompts(cfg: BoundaryConfig) -> tuple[list[dict[str, Any]], Counter]:
    """Prompt records (`prompt` messages, `prompt_text`, `id`) from the interactions table, filtered and sampled."""
    from guardsmith import storage
    from guardsmith.guard.parser import word_count
    from guardsmith.progress import track

    counts: Counter = Counter(read=0)
    rows: list[dict[str, Any]] = []
    wanted_sources, wanted_labels = set(cfg.sources), set(cfg.prompt_labels)
    batches = storage.iter_batches(cfg.prompts, schema_name="interactions", columns=PROMPT_COLUMNS)
    for batch in track(batches, "read prompts"):
        for row in batch.to_pylist():
            row["_row"] = counts["read"]
            counts["read"] += 1
            if wanted_sources and row["source"] not in wanted_sources:
                counts["other_source"] += 1
                continue
            if wanted_labels and (row["prompt_harm"] or "unlabelled") not in wanted_labels:
                counts["other_label"] += 1
                continue
            if not row["prompt"].strip():
                counts["empty_prompt"] += 1
                continue
            if word_count(row["prompt"]) < cfg.min_prompt_words:
                counts["short_prompt"] += 1
                continue
            rows.append(row)
    if cfg.max_prompts and len(rows) > cfg.max_prompts:
        counts["sampled_out"] = len(rows) - cfg.max_prompts
        rows = random.Random(f"{cfg.seed}:prompts").sample(rows, cfg.max_prompts)
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    from guardsmith.guard.examples import bound_texts

    fixed = len(cfg.system_prompt or "")
    for row in rows:
        row["prompt"] = bound_texts({"prompt": row["prompt"]}, cfg.max_example_chars, cfg.long_examples,
                                    file=cfg.prompts, row=row["_row"], row_id=row["id"], counts=counts,
                                    fixed=fixed)["prompt"]
    records = [{"prompt": [*system, {"role": "user", "content": r["prompt"]}], "prompt_text": r["prompt"],
                "id": str(r["id"])} for r in rows]
    return records, counts


def drop_long_prompts(records: list[dict[str, Any]], tokenizer: Any, limit: int, counts: Counter) -> list[dict[str, Any]]:
    """Records whose chat-rendered prompt has at most `limit` tokens (the rest are counted as too_long)."""
    kept = []
    for rec in records:
        ids = tokenizer.apply_chat_template(rec["prompt"], add_generation_prompt=True, tokenize=True)
        n = len(ids if isinstance(ids, list) else ids["input_ids"])
        if n <= limit:
            kept.append(rec)
        else:
            counts["too_long"] += 1
    return kept


# --------------------------------------------------------------------------- reward function

def completion_text(completion: Any) -> str:
    """The assistant text of a TRL completion (conversational: the assistant messages joined)."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")
    return str(completion)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)


class RewardLog:
    """Per-call reward statistics: kept in memory, appended to a local JSONL file, serialised on demand."""

    def __init__(self, path: Path | None = None, entries: list[dict[str, Any]] | None = None) -> None:
        self.entries: list[dict[str, Any]] = list(entries or [])
        self.path = path
        if path is not None:
            path.write_text(self.jsonl(), encoding="utf-8")

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    def jsonl(self) -> str:
        return "".join(json.dumps(e) + "\n" for e in self.entries)


class BoundaryReward:
    """A TRL reward function (async) computing the selected reward from t and u.

    `compute(prompts, responses, step)` is the synchronous core (also usable outside TRL);
    calling the object is the TRL entry point: it scores in worker threads, concurrently when
    `concurrent`, logs the parts with TRL's `log_metric` and appends an entry to `log`.
    """

    def __init__(self, name: str, safety: Any, utility: Any | None, cfg: RewardConfig = RewardConfig(), *,
                 concurrent: bool = True, log: RewardLog | None = None) -> None:
        if name not in REWARDS:
            raise GuardsmithError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
        if utility is None and name != "guard_only":
            raise GuardsmithError(f"reward {name} needs a utility scorer")
        self.name = name
        self.__name__ = name  # TRL logs rewards/<name>/mean
        self.safety, self.utility, self.cfg = safety, utility, cfg
        self.concurrent = concurrent
        self.log = log if log is not None else RewardLog()
        self._prompt_cache: dict[str, float] = {}

    # scoring parts, each runnable in a thread
    def _t(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.clip(np.asarray(self.safety.score(prompts, responses), dtype=np.float64), 0.0, 1.0)

    def _u(self, prompts: list[str], responses: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.utility is None:
            zeros = np.zeros(len(prompts))
            return zeros, zeros
        raw_fn = getattr(self.utility, "raw_score", None)
        if raw_fn is None:
            u = np.asarray(self.utility.score(prompts, responses), dtype=np.float64)
            return u, u
        from guardsmith.scoring import normalise

        raw = np.asarray(raw_fn(prompts, responses), dtype=np.float64)
        return raw, normalise(raw, self.utility.normalisation, self.utility.scale, self.utility.shift)

    def _t_prompt(self, prompts: list[str]) -> np.ndarray | None:
        if self.name not in NEEDS_PROMPT_SCORE:
            return None
        from guardsmith.scoring import prompt_scores

        new = sorted({p for p in prompts if p not in self._prompt_cache})
        if new:
            self._prompt_cache.update(zip(new, np.clip(prompt_scores(self.safety, new), 0.0, 1.0).tolist()))
        return np.array([self._prompt_cache[p] for p in prompts], dtype=np.float64)

    def _combine(self, prompts: list[str], t: np.ndarray, raw: np.ndarray, u: np.ndarray, tp: np.ndarray | None,
                 step: int | None, seconds: float) -> tuple[np.ndarray, dict[str, Any]]:
        r = compute_reward(self.name, t, u, self.cfg, t_prompt=tp)
        balance = margin_balance(u, margin_term(t, self.cfg, tp), self.cfg.w_u)
        entry: dict[str, Any] = {
            "step": step, "reward": self.name, "completions": int(r.size),
            "reward_mean": float(r.mean()) if r.size else 0.0, "reward_std": float(r.std()) if r.size else 0.0,
            "utility_mean": float(u.mean()) if u.size else 0.0, "utility_raw_mean": float(raw.mean()) if raw.size else 0.0,
            "safety_mean": float(t.mean()) if t.size else 0.0,
            "margin_mean": float(np.abs(t - self.cfg.tau).mean()) if t.size else 0.0,
            "filter_rate": float((t >= self.cfg.tau).mean()) if t.size else 0.0,
            "utility_std": balance["utility_std"], "margin_std": balance["margin_std"],
            "score_seconds": round(seconds, 4),
        }
        if tp is not None:
            entry["prompt_unsafe_rate"] = float((tp >= self.cfg.tau).mean()) if tp.size else 0.0
        self.log.append(entry)
        return r, entry

    def compute(self, prompts: list[str], responses: list[str], step: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Rewards and the log entry for (prompt text, response text) pairs, scored sequentially."""
        start = time.perf_counter()
        t = self._t(prompts, responses)
        raw, u = self._u(prompts, responses)
        tp = self._t_prompt(prompts)
        return self._combine(prompts, t, raw, u, tp, step, time.perf_counter() - start)

    async def acompute(self, prompts: list[str], responses: list[str], step: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """As `compute`, with the scorers running concurrently in worker threads."""
        start = time.perf_counter()
        t, (raw, u), tp = await asyncio.gather(asyncio.to_thread(self._t, prompts, responses),
                                               asyncio.to_thread(self._u, prompts, responses),
                                               asyncio.to_thread(self._t_prompt, prompts))
        return self._combine(prompts, t, raw, u, tp, step, time.perf_counter() - start)

    async def __call__(self, prompts: list, completions: list, prompt_text: list[str] | None = None,
                       trainer_state: Any = None, log_metric: Any = None, **_: Any) -> list[float]:
        texts = list(prompt_text) if prompt_text is not None else [_prompt_text(p) for p in prompts]
        responses = [completion_text(c) for c in completions]
        step = None if trainer_state is None else int(trainer_state.global_step) + 1
        if self.concurrent:
            rewards, entry = await self.acompute(texts, responses, step)
        else:
            rewards, entry = await asyncio.to_thread(self.compute, texts, responses, step)
        if log_metric is not None:
            for key in ("utility_mean", "safety_mean", "margin_mean", "filter_rate", "prompt_unsafe_rate"):
                if key in entry:
                    log_metric(f"boundary/{key}", entry[key])
        return rewards.tolist()


# --------------------------------------------------------------------------- scorers

def scorer_options(spec: str, cfg: BoundaryConfig, local_rank: int, cuda: bool) -> dict[str, Any]:
    """Device and batch options for specs that load a local model (none for rules and endpoints)."""
    from guardsmith.scoring import LOCAL_KINDS

    if spec.split(":", 1)[0].strip().lower() not in LOCAL_KINDS:
        return {}
    device = cfg.scorer_device
    if device == "auto":
        device = f"cuda:{local_rank}" if cuda else "cpu"
    return {"device": device, "batch_size": cfg.scorer_batch_size}


def build_reward(cfg: BoundaryConfig, *, cuda: bool = False, log: RewardLog | None = None) -> BoundaryReward:
    """The reward function of `cfg`, with its scorers loaded."""
    from guardsmith.scoring import make_safety_scorer, make_utility_scorer

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    safety = make_safety_scorer(cfg.safety, **scorer_options(cfg.safety, cfg, rank, cuda))
    utility = None
    if cfg.utility:
        utility = make_utility_scorer(cfg.utility, normalisation=cfg.utility_normalisation, scale=cfg.utility_scale,
                                      shift=cfg.utility_shift, **scorer_options(cfg.utility, cfg, rank, cuda))
    return BoundaryReward(cfg.reward, safety, utility, reward_config(cfg), concurrent=cfg.score_concurrently, log=log)


def _close(scorer: Any) -> None:
    close = getattr(scorer, "close", None)
    if close is not None:
        close()


# --------------------------------------------------------------------------- training

def vllm_available() -> bool:
    """True when the vllm package can be imported."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def vllm_args(cfg: BoundaryConfig, cuda: bool) -> dict[str, Any]:
    """GRPOConfig's vLLM fields (use_vllm off on CPU or without vllm unless forced)."""
    use = cfg.use_vllm if cfg.use_vllm is not None else (cuda and vllm_available())
    if not use:
        return {"use_vllm": False}
    if not vllm_available():
        raise GuardsmithError("use_vllm is set but vllm is not installed (pip install 'guardsmith[vllm]')")
    args: dict[str, Any] = {"use_vllm": True, "vllm_mode": cfg.vllm_mode,
                            "vllm_enable_sleep_mode": cfg.vllm_enable_sleep_mode}
    if cfg.vllm_mode == "server":
        args["vllm_server_base_url"] = cfg.vllm_server_base_url
    else:
        args.update(vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                    vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size)
    if cfg.vllm_max_model_length:
        args["vllm_max_model_length"] = cfg.vllm_max_model_length
    return args


def _previous_log(cfg: BoundaryConfig, resume_step: int) -> list[dict[str, Any]]:
    """Entries of an earlier run's reward log up to the resumed step (so a resumed log is complete)."""
    from guardsmith import storage

    if not resume_step or not cfg.rewards_log or not storage.exists(cfg.rewards_log):
        return []
    text = storage.read_bytes(cfg.rewards_log).decode("utf-8")
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in entries if e.get("step") is not None and e["step"] <= resume_step]


def _train(cfg: BoundaryConfig, records: list[dict[str, Any]], counts: Counter, identity: Any) -> dict[str, Any]:
    from datasets import Dataset

    from guardsmith import storage, training
    from guardsmith.model_store import local_model

    from guardsmith.model_files import loading

    rt = training.runtime(cfg)
    model_dir = local_model(cfg.generator)
    tokenizer = training.load_tokenizer(model_dir, "generator")
    records = drop_long_prompts(records, tokenizer, cfg.max_length - cfg.max_tokens, counts)
    if not records:
        raise GuardsmithError(f"no prompts left (counts: {dict(counts)})")
    with training.work_folder(cfg, "boundary") as work:
        resume = training.restore_checkpoint(cfg, work, identity)
        log = RewardLog(work / REWARDS_FILE, _previous_log(cfg, resume[1]))
        reward = build_reward(cfg, cuda=rt.cuda, log=log)
        try:
            from trl import GRPOConfig, GRPOTrainer

            common = training.trainer_args(cfg, rt, work, save=bool(cfg.checkpoint_uri))
            args = GRPOConfig(**common, num_generations=cfg.samples_per_row,
                              max_completion_length=cfg.max_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, beta=cfg.grpo_beta, loss_type=cfg.loss_type,
                              scale_rewards=cfg.scale_rewards, model_init_kwargs=training.model_init_kwargs(cfg, rt),
                              **vllm_args(cfg, rt.cuda))
            with loading(model_dir, "generator"):
                trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=args,
                                      train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                                      peft_config=training.peft_config(cfg),
                                      callbacks=training.checkpoint_callbacks(cfg, identity))
            training.log_line("boundary", f"{cfg.reward} reward on {len(records)} prompts x {cfg.samples_per_row} "
                                          f"completions, {rt.describe()}, vLLM {'on' if args.use_vllm else 'off'}")
            facts = {"reward": cfg.reward, "tau": cfg.tau, "safety": cfg.safety, "utility": cfg.utility,
                     "utility_normalisation": cfg.utility_normalisation, "seed": cfg.seed,
                     "rewards_log": cfg.rewards_log or storage.join(cfg.output, REWARDS_FILE)}
            summary = training.train_and_publish(
                trainer, cfg, rt, stage="boundary", method=f"grpo-{cfg.reward}", title=f"guardsmith boundary generator ({cfg.reward})",
                resume=resume, examples=len(records), identity=identity,
                data=training.TrainingData(datasets={"prompts": cfg.prompts}, input_rows={"prompts": len(records)},
                                           train_rows=len(records), counts=dict(counts), facts=facts),
                extra_files=lambda: {REWARDS_FILE: log.jsonl()},
                description=("A generator fine-tuned by `guardsmith {stage}` from `{base}` with GRPO and the "
                             f"`{cfg.reward}` reward (Boundary Guidance): it is meant to run behind a safety "
                             "filter, and the reward steers its outputs away from the filter's threshold."))
            if cfg.rewards_log and trainer.accelerator.is_main_process:
                storage.write_bytes_atomic(cfg.rewards_log, log.jsonl().encode("utf-8"))
            return summary
        finally:
            _close(reward.safety)
            _close(reward.utility)


def calibration(entries: list[dict[str, Any]], w_utility: float = 1.0) -> dict[str, Any] | None:
    """Mean per-batch spreads of u and of the margin term over reward-log `entries`, and the w_margin
    that gives ``w_margin * margin`` the spread of ``w_utility * u`` (None without margin spread);
    None when no entry records spreads (logs written before they were)."""
    rows = [e for e in entries if "utility_std" in e and "margin_std" in e]
    if not rows:
        return None
    u_std = float(np.mean([e["utility_std"] for e in rows]))
    m_std = float(np.mean([e["margin_std"] for e in rows]))
    return {"batches": len(rows), "utility_std": u_std, "margin_std": m_std,
            "w_margin": equalising_weight(u_std, m_std, w_utility)}


def identity(cfg: BoundaryConfig):
    """The work identity of a run of resolved `cfg`: the generator, the prompt table and the models of
    local scorers (guard:, classifier:, reward_model:) by content; scorer specs stay in the config."""
    from guardsmith import training
    from guardsmith.scoring import LOCAL_KINDS, SAFETY_KINDS, UTILITY_KINDS, parse_scorer_spec

    inputs: dict[str, str | None] = {"prompts": cfg.prompts}
    for name, spec, kinds in (("safety_model", cfg.safety, SAFETY_KINDS), ("utility_model", cfg.utility, UTILITY_KINDS)):
        if spec:
            kind, location, _ = parse_scorer_spec(spec, kinds)
            inputs[name] = location if kind in LOCAL_KINDS else None
    return training.training_identity("boundary", cfg, inputs, exclude=("generator",))


def run(cfg: BoundaryConfig) -> BoundaryResult:
    """Fine-tune `cfg.generator` with GRPO and the chosen reward; publish it at `cfg.output` (a no-op
    when the same work already published it there)."""
    from guardsmith import storage, training

    cfg = resolve_generator(cfg)
    check_config(cfg)
    work = identity(cfg)
    summary = training.finished_run(cfg, work, "boundary")
    if summary is None:
        records, counts = read_prompts(cfg)
        if not records:
            raise DataError(f"no prompts left after filtering ({dict(counts)})", file=cfg.prompts)
        summary = training.relaunch_if_needed(cfg, training.runtime(cfg), "boundary")
    if summary is None:
        summary = _train(cfg, records, counts, work)
    result = BoundaryResult.from_summary(summary)
    result.rewards_log = cfg.rewards_log or storage.folder_file(cfg.output, REWARDS_FILE)
    if storage.exists(result.rewards_log):
        entries = read_reward_log(result.rewards_log)
        result.first, result.last = (entries[0], entries[-1]) if entries else (None, None)
        result.balance = calibration(entries, cfg.w_utility)
    return result
