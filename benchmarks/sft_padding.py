"""Padding in SFT batches: guardsmith's default batching against random batches and packing, same run.

Guard-length examples (token lengths log-normal with median 700, at most 4,096 tokens) go
through TRL's `SFTTrainer` built with guardsmith's own trainer config
(`guardsmith.training.trainer_args` + `sft_args`, a tiny random-weight model: no training), and
the batches of its training dataloader (sampler + TRL's collator) are counted: the share of the
token slots that are padding, per batching:

- default: `group_by_length: true` (transformers' length-grouped sampler);
- random: `group_by_length: false` (what guardsmith did before);
- packed: `attn_implementation: flash_attention_2` (best-fit packing into max_length rows,
  padding-free; the model is never run, so no flash-attention package is needed).

    .venv/bin/python benchmarks/sft_padding.py                       # 4,000 examples, batch 4 and 8
    .venv/bin/python benchmarks/sft_padding.py --examples 1000 --batch 4

``useful tokens`` is 1 - padding share; the ratio column is default/random useful tokens per
slot, the speed-up where step time follows the padded batch size.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

BATCHINGS = {
    "default": {},
    "random": {"group_by_length": False},
    "packed": {"attn_implementation": "flash_attention_2"},
}


def guard_lengths(count: int, seed: int = 0, median: int = 700, sigma: float = 0.6, longest: int = 4096) -> list[int]:
    """Token lengths of `count` guard-length examples: log-normal around `median`, 32 to `longest`."""
    import math

    rng = random.Random(seed)
    return [min(longest, max(32, round(rng.lognormvariate(math.log(median), sigma)))) for _ in range(count)]


def padding_share(model_dir: Path, lengths: list[int], batch: int, work: Path, **settings: Any) -> dict[str, float]:
    """Padding share and batches of the SFT dataloader guardsmith configures for `settings`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from guardsmith import training
    from guardsmith.stages.sft import SftConfig

    cfg = SftConfig(base_model=str(model_dir), output="-", train="-", batch_size=batch, per_device_batch_size=batch,
                    max_length=max(lengths), **settings)
    rt = training.runtime(cfg)
    tokenizer = training.load_tokenizer(model_dir)
    rng = random.Random(1)
    vocab = [i for i in range(tokenizer.vocab_size) if i not in tokenizer.all_special_ids][:500]
    ids = [[rng.choice(vocab) for _ in range(n)] for n in lengths]
    data = Dataset.from_dict({"input_ids": ids, "completion_mask": [[0] * (n // 2) + [1] * (n - n // 2) for n in lengths]})
    args = SFTConfig(**training.trainer_args(cfg, rt, work, save=False), **training.sft_args(cfg),
                     model_init_kwargs={**training.model_init_kwargs(cfg, rt), "attn_implementation": "sdpa"})
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=data, processing_class=tokenizer)
    slots = real = batches = 0
    for b in trainer.get_train_dataloader():
        batches += 1
        if "attention_mask" in b:
            slots += b["attention_mask"].numel()
            real += int(b["attention_mask"].sum())
        else:  # padding-free: one flattened row per batch
            slots += b["input_ids"].numel()
            real += int(b["input_ids"].shape[1])
    return {"padding": 1 - real / slots, "batches": batches, "tokens": real, "slots": slots}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=4000)
    ap.add_argument("--batch", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from guardsmith.standins.tiny import build_tiny_causal_lm

    lengths = guard_lengths(args.examples, args.seed)
    srt = sorted(lengths)
    print(f"{len(lengths)} examples: median {srt[len(srt) // 2]}, mean {sum(lengths) / len(lengths):.0f}, "
          f"max {srt[-1]} tokens")
    with tempfile.TemporaryDirectory(prefix="guardsmith-sft-padding-") as tmp:
        model = build_tiny_causal_lm(Path(tmp) / "tiny")
        print(f"{'batch':>5} {'batching':<9} {'padding':>8} {'useful tokens':>13} {'batches':>8} {'vs random':>9}")
        for batch in args.batch:
            shares = {name: padding_share(model, lengths, batch, Path(tmp) / name, **settings)
                      for name, settings in BATCHINGS.items()}
            for name, r in shares.items():
                ratio = (1 - r["padding"]) / (1 - shares["random"]["padding"])
                print(f"{batch:>5} {name:<9} {r['padding']:>8.1%} {1 - r['padding']:>13.1%} {r['batches']:>8} "
                      f"{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
