"""Shared TRL plumbing of the guard-training stages (`sft`, `continual`).

- `TrainConfig`: the training fields every training stage shares (model URIs, optimiser, batch,
  precision, LoRA, checkpoints, GPUs). Stage configs subclass it and add their data fields.
- `Runtime` / `runtime()`: device and precision choice. On GPU: bf16 (where supported) and
  activation checkpointing on; on CPU: `bf16=False`, activation checkpointing off and
  `use_cpu=True` (TRL's defaults are 5-15x slower on CPU).
- `trainer_args(...)`: the keyword arguments common to `SFTConfig`, `DPOConfig` and `GRPOConfig`;
  `sft_args(cfg)`: SFT batching: length-grouped batches by default, packing (best-fit, padding-free
  with position_ids) when the attention is a variable-length (flash) kernel, refused without one
  (`packing_on`, `batching`).
- `expand_weights`, `sft_dataset`: example records -> a TRL conversational dataset.
- `training_identity`, `finished_run`: the work identity of a run (`guardsmith.identity`: inputs
  by content, effective config, version), checked before training: a model at `output` made by
  the same work makes the run a no-op; one made by other work is refused (one line naming the
  difference) unless `overwrite`.
- `checkpoint_callback`, `own_checkpoints`, `restore_checkpoint`: every saved checkpoint is
  uploaded to `checkpoint_uri` with `storage.upload_dir`, with the run's identity and without the
  pickled `training_args.bin`; a rerun of the same work downloads its newest committed one and
  resumes from it; checkpoints of other work are refused (or removed with `overwrite`).
- `accelerate_config`, `launch_command`: a generated accelerate config plus the argv that runs a
  stage on several GPUs (`accelerate launch ... -m guardsmith.cli <stage> --config <yaml>`).
- `TrainingData`, `Prepared`: what a stage built for training (records plus the facts about them);
  `train_sft`: the SFT run both `sft` and `continual` use.
- `progress_callback`, `tensorboard_logs`, `trackers`: one progress line per logging step (step/total,
  rate, ETA, loss, lr, GRPO reward) instead of transformers' raw dicts; `report_to` (tensorboard,
  mlflow, wandb, none): TensorBoard event files written in the work folder and uploaded to
  `logs_uri` (default `<output>-tensorboard`) with each checkpoint and at the end, mlflow/wandb
  passed through to transformers.
- `TrainingSummary`: the typed summary written beside every trained model
  (`guardsmith_training.json`, with the loss and GRPO reward curves) and read back by the guard
  prompt style, evaluate and reports.
- `train_and_publish`: train, save, write the summary, the training log and the model card
  (`guardsmith.model_card`), then publish the folder with the run's identity.

Heavy imports (torch, transformers, trl, peft, datasets) happen inside the functions.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from guardsmith.config import build_config, dump_yaml, option, to_dict
from guardsmith.errors import GuardsmithError, redact
from guardsmith.progress import duration

if TYPE_CHECKING:
    from guardsmith.identity import WorkIdentity

SUMMARY_FILE = "guardsmith_training.json"
"""The `TrainingSummary` of a training run, written beside the model."""
LOG_FILE = "training_log.jsonl"
"""The trainer's log history (one JSON object per logging step), written beside the model."""
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(kw_only=True)
class TrainConfig:
    """Training fields shared by the guard-training stages."""

    base_model: str = option(help="Start model: a Hugging Face model folder (path, file:// or s3:// URI).")
    output: str = option(help="Output URI of the trained model (Hugging Face folder with README.md model card).")
    learning_rate: float = option(1e-6, "Peak learning rate.")
    lr_scheduler: str = option("cosine", "Learning-rate schedule (transformers name: cosine, linear, constant_with_warmup, ...).")
    warmup_ratio: float = option(0.03, "Share of the steps used for linear warmup (0 to <1).")
    epochs: float = option(5.0, "Passes over the training examples (ignored when max_steps > 0).")
    max_steps: int = option(-1, "Stop after this many optimiser steps; -1 trains for `epochs`.")
    batch_size: int = option(32, "Global batch size = per_device_batch_size x gradient accumulation x processes.")
    per_device_batch_size: int = option(4, "Examples per device per forward pass.")
    max_length: int = option(4096, "Longest tokenised example (prompt + completion); longer ones are truncated at the end.")
    packing: bool | None = option(
        None, "SFT: pack examples into max_length rows, each example attending only to itself (TRL best-fit "
              "packing with position_ids, no padding). Unset: on when attn_implementation is a variable-length "
              "(flash) kernel, else off; true without one is refused (SDPA/eager attend over the whole packed row).")
    group_by_length: bool = option(
        True, "SFT: batch examples of similar token length together (transformers' length-grouped sampler): "
              "little padding on mixed-length rows; false: random batches. Not used when packing.")
    attn_implementation: str | None = option(
        None, "Attention kernel the model is loaded with (transformers attn_implementation: sdpa, eager, "
              "flash_attention_2, flash_attention_3, kernels-community/flash-attn3, ...); unset: transformers' "
              "default (sdpa). A flash kernel makes SFT pack examples (see packing).")
    use_liger_kernel: bool = option(
        False, "Liger Triton kernels (RMSNorm, RoPE, SwiGLU) in the model's layers: less memory and faster steps; "
               "GPU only, needs the liger-kernel package (in the train image).")
    finetune: Literal["full", "lora"] = option("full", "full: train all weights; lora: train LoRA adapters (peft).")
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_target_modules: list[str] = option(help="Modules that get LoRA adapters.",
                                            factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    merge_lora: bool = option(True, "Merge LoRA adapters into the weights before saving (a plain HF model).")
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "auto: bf16 on a GPU that supports it, fp32 on CPU.")
    activation_checkpointing: bool | None = option(None, "Recompute activations to save memory; default: on for GPU, off for CPU.")
    gpus: int = option(0, "GPUs to use: 0 = all visible; more than 1 relaunches the stage with accelerate.")
    distributed: Literal["ddp", "fsdp"] = option("ddp", "Multi-GPU strategy: ddp (model fits one GPU) or fsdp (sharded, FSDP2).")
    checkpoint_uri: str | None = option(None, "Where checkpoints are uploaded (one folder per run); a rerun of the same work resumes from its newest.")
    save_steps: int = option(200, "Save (and upload) a checkpoint every this many steps, and at the end.")
    save_total_limit: int = option(2, "Checkpoints kept locally and at checkpoint_uri.")
    resume: bool = option(True, "Resume from the newest committed checkpoint of the same work at checkpoint_uri when there is one.")
    logging_steps: int = option(10, "Log loss (and rewards) every this many steps.")
    report_to: list[str] = option(
        help="Where the training logs go: any of tensorboard (event files uploaded to logs_uri), mlflow, wandb "
             "(configured by their own environment variables, e.g. MLFLOW_TRACKING_URI, WANDB_PROJECT), or none.",
        factory=lambda: ["tensorboard"])
    logs_uri: str | None = option(
        None, "Where the TensorBoard event files are uploaded when training ends (and with every checkpoint); "
              "a resumed run adds its own event file. Unset: `<output>-tensorboard`, beside the model.")
    seed: int = option(0, "Seed of data sampling (subset, dual split, oversampling) and of training.")
    work_dir: str | None = option(None, "Local scratch folder for checkpoints; default: a temporary folder.")
    max_example_chars: int = option(100_000, "Longest training example in characters (prompt, response and reasoning "
                                             "together), checked before tokenising; 0: no bound.")
    long_examples: Literal["error", "truncate"] = option(
        "error", "Examples over max_example_chars: error (names the file, column, row and id) or truncate "
                 "(cut the longest text, counted as truncated_examples).")
    overwrite: bool = option(False, "Replace a finished model at `output` made by other inputs or config (and discard "
                                    "other work's checkpoints at checkpoint_uri); without it such a re-run is refused.")


# --------------------------------------------------------------------------- device and precision

@dataclass(frozen=True)
class Runtime:
    """Where this process trains: device kind, process count and precision flags."""

    cuda: bool
    visible_gpus: int
    world_size: int
    bf16: bool
    activation_checkpointing: bool

    @property
    def launched(self) -> bool:
        """True inside a multi-process launch (accelerate / torchrun set WORLD_SIZE)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return int(os.environ.get("RANK", "0")) == 0

    def precision_args(self) -> dict[str, Any]:
        """TRL/transformers flags for this device (bf16, use_cpu, activation checkpointing)."""
        return {
            "bf16": self.bf16,
            "fp16": False,
            "use_cpu": not self.cuda,
            "activation_checkpointing": self.activation_checkpointing,
        }

    def describe(self) -> str:
        device = f"{self.visible_gpus} GPU(s)" if self.cuda else "CPU"
        return f"{device}, {self.world_size} process(es), {'bf16' if self.bf16 else 'fp32'}"


def runtime(cfg: TrainConfig) -> Runtime:
    """Choose device and precision for `cfg` (bf16 + checkpointing on GPU; fp32, no checkpointing on CPU)."""
    import torch

    cuda = torch.cuda.is_available()
    visible = torch.cuda.device_count() if cuda else 0
    if cfg.precision == "bf16" and not (cuda and torch.cuda.is_bf16_supported()):
        raise GuardsmithError("precision bf16 needs a GPU with bf16 support; use precision auto or fp32 here")
    bf16 = cuda and torch.cuda.is_bf16_supported() and cfg.precision != "fp32"
    checkpointing = cuda if cfg.activation_checkpointing is None else bool(cfg.activation_checkpointing)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not sys.stderr.isatty():  # pod and CI logs: our progress lines, not datasets' redrawn bars
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    return Runtime(cuda=cuda, visible_gpus=visible, world_size=world, bf16=bf16, activation_checkpointing=checkpointing)


def wanted_processes(cfg: TrainConfig, rt: Runtime) -> int:
    """Processes the run should use: 1 on CPU, else `cfg.gpus` (0 = every visible GPU)."""
    if not rt.cuda:
        if cfg.gpus > 1:
            raise GuardsmithError(f"gpus={cfg.gpus} was asked for but no GPU is visible")
        return 1
    if cfg.gpus > rt.visible_gpus:
        raise GuardsmithError(f"gpus={cfg.gpus} was asked for but only {rt.visible_gpus} GPU(s) are visible")
    return cfg.gpus or rt.visible_gpus


def gradient_accumulation(cfg: TrainConfig, processes: int) -> int:
    """Accumulation steps so that per-device batch x accumulation x processes = `batch_size`."""
    per_step = cfg.per_device_batch_size * processes
    if cfg.batch_size < 1 or cfg.per_device_batch_size < 1 or cfg.batch_size % per_step:
        raise GuardsmithError(
            f"batch_size {cfg.batch_size} must be a positive multiple of per_device_batch_size "
            f"{cfg.per_device_batch_size} x {processes} process(es)"
        )
    return cfg.batch_size // per_step


def varlen_attention(attn_implementation: str | None) -> bool:
    """Whether an attention implementation attends to each packed example on its own (flash kernels,
    variable-length with position_ids / cu_seqlens) rather than over the whole packed row."""
    return attn_implementation is not None and "flash" in attn_implementation.lower()


def packing_on(cfg: TrainConfig) -> bool:
    """Whether SFT packs examples: `cfg.packing`, or (unset) whether the attention is variable-length.
    Packing without a variable-length kernel is refused (one line)."""
    varlen = varlen_attention(cfg.attn_implementation)
    if cfg.packing is None:
        return varlen
    if cfg.packing and not varlen:
        raise GuardsmithError(
            f"packing: true needs a variable-length attention kernel (attn_implementation flash_attention_2, "
            f"flash_attention_3 or kernels-community/flash-attn3); with {cfg.attn_implementation or 'sdpa'} every "
            "packed row is computed as one block-masked sequence (about 0.42x the padded speed): set "
            "attn_implementation, or drop packing (length-grouped batches)")
    return bool(cfg.packing)


def batching(cfg: TrainConfig) -> str:
    """How SFT batches examples: packed, length-grouped or random."""
    if packing_on(cfg):
        return "packed"
    return "length-grouped" if cfg.group_by_length else "random"


def sft_args(cfg: TrainConfig) -> dict[str, Any]:
    """The `SFTConfig` keywords of SFT batching: packing (best-fit, padding-free) or the sampler."""
    packed = packing_on(cfg)
    return {
        "max_length": cfg.max_length,
        "packing": packed,
        "packing_strategy": "bfd",
        "train_sampling_strategy": "group_by_length" if cfg.group_by_length and not packed else "random",
        "completion_only_loss": True,
        "include_num_input_tokens_seen": "non_padding",  # TrainingSummary.train_tokens
    }


def trainer_args(cfg: TrainConfig, rt: Runtime, output_dir: Path, *, save: bool) -> dict[str, Any]:
    """Keyword arguments shared by `SFTConfig`, `DPOConfig` and `GRPOConfig`."""
    if not 0 <= cfg.warmup_ratio < 1:
        raise GuardsmithError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.use_liger_kernel:
        import importlib.util

        if not rt.cuda:
            raise GuardsmithError("use_liger_kernel needs a GPU (Triton kernels); set use_liger_kernel: false on CPU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise GuardsmithError("use_liger_kernel: the liger-kernel package is not installed (it is in the train "
                                  "image): pip install liger-kernel, or set use_liger_kernel: false")
    return {
        "output_dir": str(output_dir),
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(cfg, rt.world_size),
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps" if save else "no",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "report_to": [r for r in trackers(cfg) if r != "tensorboard"] or "none",  # TensorBoard: `tensorboard_logs`
        "disable_tqdm": True,  # transformers' PrinterCallback is replaced by `progress_callback`
        "dataloader_num_workers": 0,
        "use_liger_kernel": cfg.use_liger_kernel,
        **rt.precision_args(),
    }


def model_init_kwargs(cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
    """How TRL loads the start model: fp32 master weights, bf16 frozen base for LoRA on GPU; the
    attention implementation when one is set."""
    kwargs: dict[str, Any] = {"dtype": "bfloat16" if cfg.finetune == "lora" and rt.bf16 else "float32"}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    return kwargs


def peft_config(cfg: TrainConfig):
    """A peft `LoraConfig` for `finetune: lora`, else None."""
    if cfg.finetune != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")


def load_tokenizer(model_dir: Path, what: str = "base model"):
    """The model's tokenizer, with a pad token (eos when the model has none). The folder is checked
    first (`guardsmith.model_files`): a missing tokenizer, truncated weights or a damaged
    config.json is a one-line error naming the folder."""
    from transformers import AutoTokenizer

    from guardsmith.model_files import check_model_folder, loading

    check_model_folder(model_dir, what=what)
    with loading(model_dir, f"{what}'s tokenizer"):
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise GuardsmithError(f"{model_dir}: the tokenizer has no chat template; guard training needs one")
    return tok


# --------------------------------------------------------------------------- datasets

def expand_weights(records: Sequence[dict[str, Any]], seed: int, key: str = "weight") -> list[dict[str, Any]]:
    """Repeat each record by its weight: floor(w) copies plus one more with probability frac(w).

    Weight 1 keeps a record once, 3 oversamples it three times, 0.5 keeps it with probability 1/2
    (a seeded draw, so reruns give the same set).
    """
    rng = random.Random(f"{seed}:weights")
    out: list[dict[str, Any]] = []
    for rec in records:
        w = float(rec.get(key, 1.0))
        if w < 0 or math.isnan(w):
            raise GuardsmithError(f"example {rec.get('id')!r}: weight must be >= 0, got {w}")
        copies = int(w) + (1 if rng.random() < w - int(w) else 0)
        out.extend([rec] * copies)
    return out


def sft_dataset(examples: Sequence[dict[str, Any]]):
    """A TRL conversational prompt/completion `Dataset` from `sft_examples` records (loss on the completion)."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [list(e["messages"]) for e in examples],
        "completion": [[{"role": "assistant", "content": e["completion"]}] for e in examples],
    })


LENGTH_SAMPLE = 2000
"""How many examples `token_lengths` measures (the first ones)."""


def token_lengths(tokenizer, examples: Sequence[dict[str, Any]], limit: int = LENGTH_SAMPLE,
                  max_length: int | None = None) -> dict[str, float]:
    """Prompt/completion token statistics of (at most `limit`) examples, rendered with the chat
    template; with ``max_length``, also how many of them have a prompt of at least that many tokens
    (``prompts_at_max_length``: cut at ``max_length``, nothing of their completion is left to learn)."""
    prompt_lens, total_lens = [], []
    for e in list(examples)[:limit]:
        p = tokenizer.apply_chat_template(list(e["messages"]), add_generation_prompt=True, tokenize=True)
        full = tokenizer.apply_chat_template(
            list(e["messages"]) + [{"role": "assistant", "content": e["completion"]}], tokenize=True)
        prompt_lens.append(len(_ids(p)))
        total_lens.append(len(_ids(full)))
    if not prompt_lens:
        return {}
    out = {
        "prompt_tokens_mean": round(sum(prompt_lens) / len(prompt_lens), 1),
        "prompt_tokens_max": max(prompt_lens),
        "total_tokens_mean": round(sum(total_lens) / len(total_lens), 1),
        "total_tokens_max": max(total_lens),
    }
    if max_length is not None:
        out["prompts_at_max_length"] = sum(n >= max_length for n in prompt_lens)
    return out


def check_prompt_room(stage: str, lengths: Mapping[str, float], measured: int, max_length: int) -> None:
    """Refuse a training set whose every (measured) prompt fills ``max_length`` (TRL would drop them
    all and fail without a word); warn with the count when some do (TRL drops those)."""
    full = int(lengths.get("prompts_at_max_length", 0))
    if not full:
        return
    what = (f"{full} of {measured} examples{' measured' if measured >= LENGTH_SAMPLE else ''} have a prompt of at least "
            f"max_length {max_length} tokens (longest {int(lengths['prompt_tokens_max'])})")
    if full >= measured:
        raise GuardsmithError(f"{stage}: {what}: no completion token is left to learn; raise --max-length "
                              f"(pipelines: {stage}_max_length) or shorten the prompts (e.g. the policy text)")
    log_line(stage, f"{what}: the trainer drops them; raise --max-length to keep them")


def _ids(encoded: Any) -> list[int]:
    """Token ids from `apply_chat_template(tokenize=True)` (a list, or a BatchEncoding in transformers 5)."""
    if isinstance(encoded, list):
        return encoded
    return list(encoded["input_ids"])


# --------------------------------------------------------------------------- work identity

HOW_TO_TRAIN = ("per_device_batch_size", "activation_checkpointing", "attn_implementation", "use_liger_kernel")
"""Training fields that say how a run uses its devices, not what it trains: left out of the work
identity (with `guardsmith.identity.RUN_ONLY_FIELDS`: gpus, checkpoint_uri, save_steps, ...)."""
PICKLES = ("training_args.bin",)
"""Files the trainer writes that are pickles of arbitrary objects: deleted from every checkpoint
before it is uploaded and from the published model (resume does not read them)."""


def training_identity(stage: str, cfg: TrainConfig, inputs: dict[str, str | None], *,
                      exclude: Sequence[str] = (), extra: dict[str, Any] | None = None) -> WorkIdentity:
    """The work identity of a training run: `stage`, the effective config (without run-only fields,
    `HOW_TO_TRAIN`, `exclude`, the output and the input URIs), the content identity of the base
    model and of each set input (name -> URI; names that are config fields leave the config), and
    the guardsmith version."""
    from guardsmith.identity import work_identity

    named = {"base_model": cfg.base_model, **{k: v for k, v in inputs.items() if v}}
    return work_identity(stage, cfg, named, exclude=("output", "base_model", *inputs, *HOW_TO_TRAIN, *exclude),
                         extra=extra)


def finished_run(cfg: TrainConfig, identity: WorkIdentity, stage: str) -> TrainingSummary | None:
    """Before any training: the summary of the model at `cfg.output` when the same work (identity)
    made it, so a re-run is a no-op; None when this run must train.

    A model at `cfg.output` made by other work, and checkpoints of other work at `checkpoint_uri`,
    are refused with a one-line error naming what differs, unless `cfg.overwrite` (then the other
    checkpoints are removed and the model is replaced when the new one is published).
    """
    from guardsmith.identity import decide

    if decide(cfg.output, identity, cfg.overwrite) == "skip":
        log_line(stage, f"{redact(cfg.output)} is already there, trained from the same inputs and config; "
                        "nothing to do")
        return TrainingSummary.read(cfg.output)
    own_checkpoints(cfg, identity, remove_others=int(os.environ.get("RANK", "0")) == 0)
    return None


# --------------------------------------------------------------------------- checkpoints

def _step(name: str) -> int | None:
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    tail = name[len(CHECKPOINT_PREFIX):]
    return int(tail) if tail.isdigit() else None


def committed_checkpoints(uri: str) -> list[tuple[int, str]]:
    """(step, uri) of every committed checkpoint folder under `uri`, oldest first."""
    from guardsmith import storage

    if not storage.exists(uri):
        return []
    found = []
    for name in storage.list_dir(uri):
        step = _step(name)
        if step is not None and storage.is_committed(storage.join(uri, name)):
            found.append((step, storage.join(uri, name)))
    return sorted(found)


def latest_checkpoint(uri: str | None) -> tuple[int, str] | None:
    """The newest committed checkpoint under `uri` as (step, uri), or None (whatever work saved it)."""
    found = committed_checkpoints(uri) if uri else []
    return found[-1] if found else None


def own_checkpoints(cfg: TrainConfig, identity: WorkIdentity, *, remove_others: bool = False) -> list[tuple[int, str]]:
    """(step, uri) of the committed checkpoints under `cfg.checkpoint_uri` saved by this work, oldest first.

    Checkpoints recording another identity (or none) are a one-line error naming the first one and
    what differs, unless `cfg.overwrite`: then they are left out, and removed when `remove_others`.
    """
    if not cfg.checkpoint_uri:
        return []
    from guardsmith import storage
    from guardsmith.identity import foreign_parts

    checkpoints = committed_checkpoints(cfg.checkpoint_uri)
    foreign = foreign_parts((uri for _, uri in checkpoints), identity)
    own = [(step, uri) for step, uri in checkpoints if uri not in foreign]
    other = list(foreign)
    if other and not cfg.overwrite:
        raise GuardsmithError(f"checkpoint {redact(other[0])} was saved by other work: {foreign[other[0]]}; it is "
                              "never resumed by this run: use another checkpoint_uri, or --overwrite to discard the "
                              f"{len(other)} checkpoint(s) of other work")
    if other and remove_others:
        for uri in other:
            storage.remove(uri)
        log_line("training", f"--overwrite: removed {len(other)} checkpoint(s) of other work under "
                             f"{redact(cfg.checkpoint_uri)}")
    return own


def restore_checkpoint(cfg: TrainConfig, work_dir: Path, identity: WorkIdentity) -> tuple[str | None, int]:
    """Download the newest committed checkpoint of this work (when resuming) into `work_dir`;
    (local path, step), or (None, 0) when there is none. Other work's checkpoints are never resumed."""
    if not cfg.resume or not cfg.checkpoint_uri:
        return None, 0
    from accelerate import PartialState

    from guardsmith import storage

    state = PartialState()
    with state.main_process_first():  # launched processes share work_dir: one download
        own = own_checkpoints(cfg, identity)
        if not own:
            return None, 0
        step, uri = own[-1]
        local = work_dir / f"{CHECKPOINT_PREFIX}{step}"
        if state.is_main_process or not (local / "trainer_state.json").exists():
            # work_dir is scratch: a killed run may have left its own, uncommitted copy of this step
            # there; only the committed checkpoint in object storage is trusted
            shutil.rmtree(local, ignore_errors=True)
            storage.download_dir(uri, str(local))
    return str(local), step


def _prune(uri: str, keep: int) -> None:
    """Delete all but the newest `keep` committed checkpoints under `uri`."""
    if keep <= 0:
        return
    from guardsmith import storage

    for _, old in committed_checkpoints(uri)[:-keep]:
        storage.remove(old)


def drop_pickles(folder: str | Path) -> None:
    """Delete the trainer's pickled files (`PICKLES`) from a local checkpoint or model folder."""
    for name in PICKLES:
        (Path(folder) / name).unlink(missing_ok=True)


def checkpoint_callback(uri: str, keep: int, identity: WorkIdentity):
    """A `TrainerCallback` that uploads each saved checkpoint to `uri` with the run's identity
    (main process only), without pickled training arguments."""
    from transformers import TrainerCallback

    from guardsmith import storage

    class CheckpointSync(TrainerCallback):
        """Upload `checkpoint-<step>` after the trainer has written it completely."""

        def on_save(self, args, state, control, **kwargs):  # noqa: D102 (TrainerCallback hook)
            from accelerate import PartialState

            PartialState().wait_for_everyone()  # every rank's files are in the folder
            if state.is_world_process_zero:
                name = f"{CHECKPOINT_PREFIX}{state.global_step}"
                local = Path(args.output_dir) / name
                if local.is_dir():
                    drop_pickles(local)
                    storage.upload_dir(str(local), storage.join(uri, name), identity=identity)
                    _prune(uri, keep)
            return control

    return CheckpointSync()


class SigtermStop:
    """What `stop_on_sigterm` saw: whether SIGTERM arrived (`requested`) and the step at which the
    trainer was told to save and stop (`at_step`, None while it was not)."""

    def __init__(self) -> None:
        self.requested = False
        self.at_step: int | None = None

    def wanted(self) -> bool:
        """True when any process got SIGTERM: with several processes the flag is reduced over them
        at every step, so all stop after the same step (a lone rank stopping would hang the others)."""
        requested = self.requested
        try:
            import torch.distributed as dist
        except ImportError:  # pragma: no cover (torch is there whenever a trainer runs)
            return requested
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch
            from accelerate import PartialState

            flag = torch.tensor([1 if requested else 0], device=PartialState().device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested


@contextmanager
def stop_on_sigterm() -> Iterator[SigtermStop]:
    """While the block runs, SIGTERM (Kubernetes preemption, a KFP retry) only sets a flag; the
    trainer checks it after each step (`sigterm_callback`), saves a checkpoint and stops. Installed
    in the main thread only; the previous handler is restored afterwards."""
    import signal
    import threading

    stop = SigtermStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        stop.requested = True

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def sigterm_callback(stop: SigtermStop, save: bool):
    """A `TrainerCallback` that, once SIGTERM arrived (`stop.wanted()`), tells the trainer to save a
    checkpoint (when `save`: `checkpoint_callback` then uploads it before the trainer goes on) and to
    stop after the current step."""
    from transformers import TrainerCallback

    class StopOnSigterm(TrainerCallback):
        """Turns a SIGTERM into save-and-stop at the next step end."""

        def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 (TrainerCallback hook)
            if stop.at_step is None and stop.wanted():
                stop.at_step = state.global_step
                control.should_training_stop = True
                if save:
                    control.should_save = True
            return control

    return StopOnSigterm()


def stopped_error(cfg: TrainConfig, stage: str, step: int) -> GuardsmithError:
    """The one-line error of a run stopped by SIGTERM after `step`."""
    if cfg.checkpoint_uri:
        return GuardsmithError(f"{stage} stopped by SIGTERM; a re-run resumes from {CHECKPOINT_PREFIX}{step} "
                               f"({redact(cfg.checkpoint_uri)})")
    return GuardsmithError(f"{stage} stopped by SIGTERM at step {step}; no checkpoint_uri is set, so a re-run "
                           "starts over")


def checkpoint_callbacks(cfg: TrainConfig, identity: WorkIdentity) -> list[Any]:
    """`[checkpoint_callback(...)]` when `cfg.checkpoint_uri` is set, else []."""
    return [checkpoint_callback(cfg.checkpoint_uri, cfg.save_total_limit, identity)] if cfg.checkpoint_uri else []


# --------------------------------------------------------------------------- progress and tracking

TRACKERS = ("tensorboard", "mlflow", "wandb", "none")
"""The values of `report_to`."""
TRACKER_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}
"""The package each tracker needs (checked before training; tensorboardX is in the `train` extra)."""
TENSORBOARD_DIR = "tensorboard"
"""The local folder (in the run's work folder) the TensorBoard event files are written to."""


def trackers(cfg: TrainConfig) -> list[str]:
    """The trackers `cfg.report_to` asks for ([] for none), each checked: an unknown name, none mixed with
    others, or a tracker whose package is not installed is a one-line error naming `report_to`."""
    import importlib.util

    chosen = list(dict.fromkeys(cfg.report_to or ["none"]))
    unknown = [r for r in chosen if r not in TRACKERS]
    if unknown:
        raise GuardsmithError(f"report_to: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}")
    if "none" in chosen and len(chosen) > 1:
        raise GuardsmithError(f"report_to: none cannot be combined with {', '.join(r for r in chosen if r != 'none')}")
    for name in chosen:
        package = TRACKER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise GuardsmithError(f"report_to {name}: the {package} package is not installed; pip install {package}, "
                                  f"or drop {name} from report_to")
    return [r for r in chosen if r != "none"]


def logs_location(cfg: TrainConfig) -> str:
    """Where the TensorBoard event files of a run go: `logs_uri`, or `<output>-tensorboard`."""
    return cfg.logs_uri or f"{cfg.output.rstrip('/')}-tensorboard"


def _sci(value: float) -> str:
    """A learning rate in short scientific notation: `1e-3`, `2.5e-5`."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def progress_line(step: int, total: int, rate: float | None, logs: dict[str, Any]) -> str:
    """One training progress line: step/total, rate and ETA (from `rate`, steps per second in this run;
    None before the first step ends), then loss, learning rate and the GRPO reward mean when logged."""
    parts = [f"step {step}/{total}" + (f" ({round(100 * step / total)}%)" if total > 0 else "")]
    if rate:
        parts.append(f"{rate:.1f} steps/s" if rate >= 1 else f"{1 / rate:.1f} s/step")
        if total > step:
            parts.append(f"ETA {duration((total - step) / rate)}")
    for key, name in (("loss", "loss"), ("reward", "reward")):
        if isinstance(logs.get(key), (int, float)):
            parts.append(f"{name} {logs[key]:.3f}")
    if isinstance(logs.get("learning_rate"), (int, float)):
        parts.append(f"lr {_sci(logs['learning_rate'])}")
    return ", ".join(parts)


def progress_callback(stage: str):
    """A `TrainerCallback` printing one `progress_line` per logging step on stderr (main process), and a
    last line with the run's steps, time and mean loss; it replaces transformers' raw dict printing."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        """Rate over this run's steps so far (a resumed run counts from its checkpoint), ETA from it."""

        def __init__(self) -> None:
            self.start: float | None = None
            self.first_step = 0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102 (TrainerCallback hook)
            if self.start is None:
                self.start, self.first_step = time.monotonic(), state.global_step
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102 (TrainerCallback hook)
            if not state.is_world_process_zero or not logs:
                return control
            elapsed = time.monotonic() - self.start if self.start is not None else 0.0
            steps = state.global_step - self.first_step
            if "train_loss" in logs:  # the trainer's end-of-run entry
                loss = f", mean loss {logs['train_loss']:.3f}" if isinstance(logs["train_loss"], float) else ""
                log_line(stage, f"trained {steps} steps in {duration(elapsed)} (step {state.global_step}/"
                                f"{state.max_steps}){loss}")
            elif any(k in logs for k in ("loss", "reward")):
                rate = steps / elapsed if steps > 0 and elapsed > 0 else None
                log_line(stage, progress_line(state.global_step, state.max_steps, rate, logs))
            return control

    return TrainingProgress()


def histories(log_history: Sequence[dict[str, Any]]) -> tuple[list[list[float]], list[list[float]]]:
    """[[step, loss], ...] and [[step, reward mean], ...] from a trainer's log history."""
    def curve(key: str) -> list[list[float]]:
        return [[int(e["step"]), float(e[key])] for e in log_history
                if isinstance(e.get(key), (int, float)) and "step" in e]

    return curve("loss"), curve("reward")


def tensorboard_logs(trainer, cfg: TrainConfig, identity: WorkIdentity, *, resuming: bool) -> Path | None:
    """When `report_to` has tensorboard: the local event-file folder of this run (main process), with a
    TensorBoard callback writing there and, with `checkpoint_uri`, a callback uploading it to
    `logs_location(cfg)` with every checkpoint. A resumed run starts from the folder committed there
    by the same work and adds its own event file. Logs of other work there are refused before
    training (one line) unless `overwrite`. None when TensorBoard is off or on other processes."""
    if "tensorboard" not in trackers(cfg):
        return None
    from guardsmith import storage
    from guardsmith.identity import why_not_reused

    uri = logs_location(cfg)
    committed = storage.is_committed(uri)
    other = why_not_reused(storage.recorded_identity(uri), identity) if committed else None
    if other is not None and not cfg.overwrite:  # checked by every process: all stop alike
        raise GuardsmithError(f"logs_uri {redact(uri)} holds the logs of other work ({other}); use another "
                              "logs_uri, or --overwrite to replace them")
    if not trainer.accelerator.is_main_process:
        return None
    from tensorboardX import SummaryWriter
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    local = Path(trainer.args.output_dir) / TENSORBOARD_DIR
    shutil.rmtree(local, ignore_errors=True)
    if committed and other is None and resuming:
        storage.download_dir(uri, str(local))
    local.mkdir(parents=True, exist_ok=True)

    class LogSync(TrainerCallback):
        """Upload the event files after each checkpoint, so that a resumed run keeps the curve so far."""

        def on_save(self, args, state, control, **kwargs):  # noqa: D102 (TrainerCallback hook)
            if state.is_world_process_zero:
                storage.upload_dir(str(local), uri, identity=identity)
            return control

    # a unique suffix: a resumed run within the same second never appends to the downloaded file
    writer = SummaryWriter(str(local), filename_suffix=f".{os.getpid()}-{time.time_ns() % 10**9}")
    trainer.add_callback(TensorBoardCallback(tb_writer=writer))
    if cfg.checkpoint_uri:
        trainer.add_callback(LogSync())
    return local


# --------------------------------------------------------------------------- multi-GPU launch

def accelerate_config(n_gpus: int, *, bf16: bool = True, distributed: str = "ddp",
                      activation_checkpointing: bool = False) -> dict[str, Any]:
    """An accelerate config for one machine with `n_gpus` processes (DDP or FSDP2)."""
    if n_gpus < 1:
        raise GuardsmithError(f"n_gpus must be >= 1, got {n_gpus}")
    conf: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if distributed == "ddp" else "FSDP",
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": n_gpus,
        "gpu_ids": "all",
        "mixed_precision": "bf16" if bf16 else "no",
        "downcast_bf16": "no",
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "use_cpu": False,
        "debug": False,
    }
    if distributed == "fsdp":
        conf["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_activation_checkpointing": activation_checkpointing,
        }
    elif distributed != "ddp":
        raise GuardsmithError(f"unknown distributed strategy {distributed!r}: expected ddp or fsdp")
    return conf


def launch_command(cfg: TrainConfig, n_gpus: int, stage: str, folder: str | Path | None = None) -> list[str]:
    """Write `accelerate.yaml` and `<stage>.yaml` into `folder`; return the argv that trains on `n_gpus`.

    The stage config is written with `gpus` set to `n_gpus` and a `work_dir` shared by the
    processes (`<folder>/work` unless set); each launched process runs
    `guardsmith <stage> --config <stage>.yaml` and sees WORLD_SIZE, so it trains instead of
    relaunching. With FSDP, activation checkpointing is done by FSDP itself.
    """
    import yaml

    out = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=f"guardsmith-{stage}-launch-"))
    out.mkdir(parents=True, exist_ok=True)
    fsdp = cfg.distributed == "fsdp"
    checkpointing = cfg.activation_checkpointing is not False
    acc = accelerate_config(n_gpus, bf16=cfg.precision != "fp32", distributed=cfg.distributed,
                            activation_checkpointing=fsdp and checkpointing)
    acc_path = out / "accelerate.yaml"
    acc_path.write_text(yaml.safe_dump(acc, sort_keys=False), encoding="utf-8")
    launched = _replace(cfg, gpus=n_gpus, work_dir=cfg.work_dir or str(out / "work"),
                        activation_checkpointing=False if fsdp else cfg.activation_checkpointing)
    stage_path = out / f"{stage}.yaml"
    stage_path.write_text(dump_yaml(launched), encoding="utf-8")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(acc_path),
            "-m", "guardsmith.cli", stage, "--config", str(stage_path)]


def _replace(cfg: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def relaunch_if_needed(cfg: TrainConfig, rt: Runtime, stage: str) -> TrainingSummary | None:
    """On several GPUs outside a launch: run the stage under accelerate and return its summary.

    Returns None when this process should train itself (CPU, one GPU, or already launched).
    """
    if rt.launched:
        return None
    processes = wanted_processes(cfg, rt)
    if processes <= 1:
        return None
    with tempfile.TemporaryDirectory(prefix=f"guardsmith-{stage}-launch-") as tmp:
        argv = launch_command(cfg, processes, stage, tmp)
        log_line(stage, f"launching {processes} processes: {' '.join(argv)}")
        code = subprocess.run(argv, check=False).returncode
    if code != 0:
        raise GuardsmithError(f"{stage}: distributed training failed (exit code {code}); see the log above")
    return TrainingSummary.read(cfg.output)


# --------------------------------------------------------------------------- what was trained, and the summary

@dataclass(kw_only=True)
class TrainingData:
    """What a model is trained on: inputs, row counts and the facts the summary and model card report."""

    datasets: dict[str, str] = field(default_factory=dict)
    """Input name (train, topic_following, difficult, pairs, prompts) -> its URI."""
    input_rows: dict[str, int] = field(default_factory=dict)
    """Input name -> rows of it used."""
    train_rows: int
    """Size of the training set: rows of the training inputs used (after subset), before oversampling."""
    mode: str | None = None
    """Guard mode of the targets (R, NR, dual); None for non-guard training."""
    prompt_style: str | None = None
    """Guard prompt style (full, compact) the model is trained and must be queried with."""
    taxonomy: str | None = None
    """The taxonomy of the training rows when they all share one: the one scorers and servers prompt the guard with."""
    policy: str | None = None
    """The custom policy text of the training rows when they all share one (wins over the taxonomy when prompting)."""
    subset: int | None = None
    """Seeded random subset size asked for (None: all rows)."""
    budget: int | None = None
    """Sentence budget of the training traces when they all share one."""
    topic_following_rows: int | None = None
    """Rows of the topic-following table mixed in."""
    counts: dict[str, int] = field(default_factory=dict)
    """Row tallies of reading and building (read, skipped, short reasons, ...)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Further stage-specific facts (seed, oversample, reward settings, token lengths, ...)."""


@dataclass(kw_only=True)
class TrainingSummary(TrainingData):
    """The typed summary of a training run, written beside the model as `guardsmith_training.json`.

    `write(folder)` stores it; `read(model_folder_or_uri)` loads and validates one (unknown
    keys and wrong types are a one-line error naming the file); `find` is `read` or None when
    the folder has no summary (e.g. a model not trained by guardsmith).
    """

    stage: str
    method: str
    output: str
    base_model: str
    examples: int
    """Training records after oversampling (what the trainer iterated over)."""
    global_step: int
    train_loss: float | None = None
    resumed_from_step: int | None = None
    """The checkpoint step this run resumed from (None: started afresh)."""
    train_seconds: float | None = None
    seconds_per_step: float | None = None
    """Wall time of this run's steps, per step."""
    train_tokens: int | None = None
    """Tokens fed to the model over all steps, resumed ones included (the trainer's num_input_tokens_seen:
    SFT counts them without padding, TRL's GRPO counts prompts and completions); None when not counted (DPO)."""
    loss_history: list[list[float]] = field(default_factory=list)
    """The loss curve: [[step, loss], ...], one pair per logging step (the trainer's log history)."""
    reward_history: list[list[float]] = field(default_factory=list)
    """GRPO: the mean reward curve, [[step, reward], ...] per logging step; empty for other methods."""
    runtime: str | None = None
    """Devices, processes and precision (`Runtime.describe`)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The stage's full config."""
    guardsmith_version: str = ""

    def write(self, folder: str | Path) -> Path:
        """Write `guardsmith_training.json` into local `folder`; return its path."""
        path = Path(folder) / SUMMARY_FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=str), encoding="utf-8")
        return path

    @classmethod
    def read(cls, where: str | Path) -> TrainingSummary:
        """The summary in a model folder (local path or URI); a GuardsmithError naming the file if bad."""
        from guardsmith import storage

        uri = storage.folder_file(str(where), SUMMARY_FILE)
        raw = storage.read_json(uri)
        if not isinstance(raw, dict):
            raise GuardsmithError(f"{uri}: a training summary must be a JSON object, got {type(raw).__name__}")
        return build_config(cls, raw, uri)

    @classmethod
    def find(cls, where: str | Path) -> TrainingSummary | None:
        """`read(where)`, or None when the folder has no summary."""
        from guardsmith import storage

        return cls.read(where) if storage.exists(storage.folder_file(str(where), SUMMARY_FILE)) else None


@dataclass
class Prepared:
    """Records ready for a trainer plus what the summary and model card report about them."""

    examples: list[dict[str, Any]]
    data: TrainingData


# --------------------------------------------------------------------------- work folders, outputs

@dataclass
class TrainResult:
    """What a training stage reports: the model URI and the run's numbers."""

    output: str
    method: str
    examples: int
    global_step: int
    train_loss: float | None
    seconds_per_step: float | None
    counts: dict[str, Any]

    @classmethod
    def from_summary(cls, summary: TrainingSummary) -> TrainResult:
        """Build from the run's `TrainingSummary`."""
        return cls(output=summary.output, method=summary.method, examples=summary.examples,
                   global_step=summary.global_step, train_loss=summary.train_loss,
                   seconds_per_step=summary.seconds_per_step, counts=dict(summary.counts))

    def __str__(self) -> str:
        loss = "-" if self.train_loss is None else f"{self.train_loss:.4f}"
        sps = "-" if self.seconds_per_step is None else f"{self.seconds_per_step:.3f}"
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return "\n".join([
            f"method {self.method}: {self.examples} training examples, step {self.global_step}, "
            f"train loss {loss}, {sps} s/step",
            f"rows: {counts}",
            f"model: {self.output}",
        ])


@contextmanager
def work_folder(cfg: TrainConfig, stage: str) -> Iterator[Path]:
    """`cfg.work_dir` (kept) or a temporary folder (removed afterwards)."""
    if cfg.work_dir:
        path = Path(cfg.work_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"guardsmith-{stage}-") as tmp:
        yield Path(tmp)


def train_and_publish(trainer, cfg: TrainConfig, rt: Runtime, *, stage: str, method: str, title: str,
                      resume: tuple[str | None, int], examples: int, data: TrainingData, identity: WorkIdentity,
                      extra_files: Callable[[], dict[str, str]] | None = None,
                      description: str | None = None) -> TrainingSummary:
    """Train (resuming from `resume` = (local checkpoint, step)), save and publish the model.

    The published folder holds the model (LoRA merged when `merge_lora`), its tokenizer,
    README.md (model card, see `guardsmith.model_card`), `guardsmith_training.json` (the
    `TrainingSummary`, full config included) and `training_log.jsonl` (the trainer's log
    history: loss, learning rate, rewards...), plus the files `extra_files()` returns
    (name -> text). `description` (with `{stage}` and `{base}`) defaults to a guard model's.
    Progress goes to stderr (`progress_callback`); with `report_to: [tensorboard]` the event files are
    uploaded to `logs_location(cfg)` with the same identity (`tensorboard_logs`).
    The folder is published with the run's work `identity` (recorded in its commit manifest), so a
    re-run of the same work finds it and does nothing (`finished_run`).
    SIGTERM during training (`stop_on_sigterm`) makes the trainer save a checkpoint after the
    current step, upload it to `checkpoint_uri` and stop; the run then fails with one line saying
    a re-run resumes from that checkpoint. A SIGTERM that arrives after the last step lets the
    publish finish.
    """
    from transformers import PrinterCallback

    from guardsmith import storage

    resume_from = resume[0]
    trainer.remove_callback(PrinterCallback)  # raw log dicts: replaced by one progress line per logging step
    trainer.add_callback(progress_callback(stage))
    logs = tensorboard_logs(trainer, cfg, identity, resuming=bool(resume_from))
    with stop_on_sigterm() as stop:  # SIGTERM: save a checkpoint, upload it, stop; during the publish: finish it
        trainer.add_callback(sigterm_callback(stop, save=bool(cfg.checkpoint_uri)))
        start = time.monotonic()
        result = trainer.train(resume_from_checkpoint=resume_from)
        if stop.at_step is not None:
            if logs is not None:
                storage.upload_dir(str(logs), logs_location(cfg), identity=identity)
            raise stopped_error(cfg, stage, stop.at_step)
        return _publish(trainer, cfg, rt, result, time.monotonic() - start, stage=stage, method=method,
                        title=title, resume=resume, examples=examples, data=data, identity=identity, logs=logs,
                        extra_files=extra_files, description=description)


def _publish(trainer, cfg: TrainConfig, rt: Runtime, result: Any, wall: float, *, stage: str, method: str,
             title: str, resume: tuple[str | None, int], examples: int, data: TrainingData,
             identity: WorkIdentity, logs: Path | None, extra_files: Callable[[], dict[str, str]] | None,
             description: str | None) -> TrainingSummary:
    """Save the trained model with its summary, log and card, and publish it (see `train_and_publish`)."""
    from guardsmith import __version__, model_card, storage
    from guardsmith.model_store import local_model

    resume_from, resume_step = resume
    state = trainer.state
    steps_run = max(state.global_step - resume_step, 0)
    loss_history, reward_history = histories(state.log_history)
    if logs is not None:
        storage.upload_dir(str(logs), logs_location(cfg), identity=identity)
        log_line(stage, f"TensorBoard logs: {redact(logs_location(cfg))}")
        data = TrainingData(**{**vars(data), "facts": {**data.facts, "tensorboard_logs": logs_location(cfg)}})
    summary = TrainingSummary(
        **vars(data), stage=stage, method=method, output=cfg.output, base_model=cfg.base_model,
        examples=examples, global_step=state.global_step,
        resumed_from_step=resume_step if resume_from else None,
        train_loss=result.training_loss, train_seconds=round(wall, 2),
        seconds_per_step=round(wall / steps_run, 4) if steps_run else None,
        train_tokens=int(state.num_input_tokens_seen) if state.num_input_tokens_seen else None,
        loss_history=loss_history, reward_history=reward_history,
        runtime=rt.describe(), config=to_dict(cfg), guardsmith_version=__version__,
    )
    with tempfile.TemporaryDirectory(prefix=f"guardsmith-{stage}-model-") as tmp:
        out = Path(tmp)
        trainer.save_model(str(out))
        if not trainer.accelerator.is_main_process:
            return summary
        if cfg.finetune == "lora" and cfg.merge_lora:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            for stale in ("adapter_config.json", "adapter_model.safetensors"):
                (out / stale).unlink(missing_ok=True)
            merged.save_pretrained(str(out))
        trainer.processing_class.save_pretrained(str(out))
        drop_pickles(out)  # the config is in the summary
        with open(out / LOG_FILE, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(entry) + "\n" for entry in state.log_history)
        for name, text in (extra_files() if extra_files else {}).items():
            (out / name).write_text(text, encoding="utf-8")
        summary.write(out)
        model_card.write_model_card(out, summary, title=title, description=description or model_card.GUARD_DESCRIPTION,
                                    license=model_card.base_license(local_model(cfg.base_model)))
        storage.upload_dir(str(out), cfg.output, identity=identity)
    log_line(stage, f"published {cfg.output} (step {state.global_step}, {wall:.1f} s)")
    return summary


# --------------------------------------------------------------------------- SFT

def train_sft(cfg: TrainConfig, prepared: Prepared, *, stage: str, identity: WorkIdentity, method: str = "sft",
              title: str = "guardsmith SFT guard") -> TrainingSummary:
    """Fine-tune `cfg.base_model` on prepared `sft_examples` records (weights expanded) with TRL's
    `SFTTrainer` (conversational prompt/completion, loss on the completion) and publish it."""
    from trl import SFTConfig, SFTTrainer

    from guardsmith.model_files import loading
    from guardsmith.model_store import local_model

    rt = runtime(cfg)
    model_dir = local_model(cfg.base_model)
    tokenizer = load_tokenizer(model_dir)
    expanded = expand_weights(prepared.examples, cfg.seed)
    lengths = token_lengths(tokenizer, prepared.examples, max_length=cfg.max_length)
    check_prompt_room(stage, lengths, min(len(prepared.examples), LENGTH_SAMPLE), cfg.max_length)
    if lengths.get("total_tokens_max", 0) > cfg.max_length:
        log_line(stage, f"some examples exceed max_length {cfg.max_length} ({lengths}); they are truncated")
    with work_folder(cfg, stage) as work:
        resume = restore_checkpoint(cfg, work, identity)
        if resume[0]:
            log_line(stage, f"resuming from step {resume[1]} ({cfg.checkpoint_uri})")
        args = SFTConfig(**trainer_args(cfg, rt, work, save=bool(cfg.checkpoint_uri)), **sft_args(cfg),
                         model_init_kwargs=model_init_kwargs(cfg, rt))
        with loading(model_dir, "base model"):
            trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=sft_dataset(expanded),
                                 processing_class=tokenizer, peft_config=peft_config(cfg),
                                 callbacks=checkpoint_callbacks(cfg, identity))
        log_line(stage, f"{len(expanded)} examples on {rt.describe()}, {batching(cfg)} batches, {lengths}")
        data = prepared.data
        data = TrainingData(**{**vars(data), "facts": {**data.facts, **lengths, "finetune": cfg.finetune,
                                                       "batching": batching(cfg)}})
        return train_and_publish(trainer, cfg, rt, stage=stage, method=method, title=title, resume=resume,
                                 examples=len(expanded), data=data, identity=identity)


def log_line(stage: str, message: str) -> None:
    """One progress line on stderr."""
    print(f"[guardsmith] {stage}: {message}", file=sys.stderr, flush=True)
