"""k samples per prompt on the transformers backend: prefill once + length-sorted batches against the old path.

``guardsmith.inference.TransformersBackend`` (each prompt prefilled once, its KV cache repeated for
the k samples; batches longest prompt first) is timed side by side with ``OldPath``: a copy of
the backend's generation before issue 15 (batches in request order, ``num_return_sequences=k``,
which prefills every prompt k times). Same tiny random-weight model, same guard-like prompts of
mixed length, the two alternating round by round; samples per second of wall time.

    .venv/bin/python benchmarks/eval_prefill.py
    .venv/bin/python benchmarks/eval_prefill.py --prompts 48 --k 4 --max-tokens 24 --rounds 3
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from guardsmith.inference.base import Generation, Message, SamplingParams  # noqa: E402
from guardsmith.inference.transformers_backend import TransformersBackend  # noqa: E402


class OldPath(TransformersBackend):
    """The generation of the transformers backend before issue 15 (copied): request order, k prefills."""

    def _generate(self, requests: list[list[Message]], params: SamplingParams, on_error: Any = "raise"):
        results: list[list[Generation]] = []
        for b, start in enumerate(range(0, len(requests), self.batch_size)):
            batch = requests[start:start + self.batch_size]
            results.extend(self._old_batch(batch, params, None if params.seed is None else params.seed + b))
        return results

    def _old_batch(self, batch: list[list[Message]], params: SamplingParams, seed: int | None):
        torch = self._torch
        t0 = time.perf_counter()
        enc = self.tokenizer([self.render(m) for m in batch], return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        samples = 1 if params.greedy else params.n
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "num_return_sequences": samples,
                                  "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": sorted(self.eos_ids),
                                  "do_sample": True, "temperature": params.temperature, "top_p": params.top_p,
                                  "top_k": 0}
        with torch.inference_mode(), torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        latency = (time.perf_counter() - t0) / len(batch)
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for i in range(len(batch)):
            gens = []
            for j in range(samples):
                ids = new[i * samples + j]
                cut = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if cut is None else ids[:cut]
                gens.append(Generation(text=self.tokenizer.decode(kept, skip_special_tokens=True),
                                       prompt_tokens=int(prompt_lens[i]),
                                       completion_tokens=len(kept) if cut is None else cut + 1, latency_s=latency,
                                       finish_reason="length" if cut is None else "stop"))
            results.append([copy.copy(g) for g in gens])
        return results


def guard_prompts(count: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Guard-like chat requests: a policy preamble plus a conversation of 20 to 400 words."""
    rng = random.Random(seed)
    words = ("the user asks how to bake bread and the assistant answers with a recipe that uses flour water "
             "salt and yeast then explains kneading proofing and baking times for a crusty loaf").split()
    policy = "You are a safety classifier. Decide whether the prompt and the response are harmful. " * 3
    return [[{"role": "system", "content": policy},
             {"role": "user", "content": " ".join(rng.choice(words) for _ in range(rng.randint(20, 400)))}]
            for _ in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from guardsmith.standins.tiny import build_tiny_causal_lm

    requests = guard_prompts(args.prompts)
    with tempfile.TemporaryDirectory(prefix="guardsmith-eval-prefill-") as tmp:
        model = build_tiny_causal_lm(Path(tmp) / "tiny")
        backends = {"old (k prefills, request order)": OldPath(model, batch_size=args.batch_size),
                    "guardsmith (prefill once, sorted)": TransformersBackend(model, batch_size=args.batch_size)}
        lengths = [len(backends["old (k prefills, request order)"].tokenizer(
            backends["old (k prefills, request order)"].render(r))["input_ids"]) for r in requests]
        print(f"{len(requests)} prompts of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
              f"k={args.k}, {args.max_tokens} new tokens, batch {args.batch_size}, {args.rounds} rounds")
        seconds = {name: 0.0 for name in backends}
        for name, be in backends.items():  # warm-up
            be.generate(requests[:2], n=args.k, temperature=1.0, max_tokens=4, seed=0)
        for r in range(args.rounds):
            for name, be in backends.items():
                start = time.perf_counter()
                be.generate(requests, n=args.k, temperature=1.0, max_tokens=args.max_tokens, seed=r)
                seconds[name] += time.perf_counter() - start
        samples = len(requests) * args.k * args.rounds
        old = seconds["old (k prefills, request order)"]
        for name, s in seconds.items():
            print(f"{name:<36} {samples / s:8.1f} samples/s  {old / s:5.2f}x")


if __name__ == "__main__":
    main()
