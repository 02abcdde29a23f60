"""Local Hugging Face transformers backend (CPU or GPU), batched with left padding.

The model is loaded from a local folder; download checkpoints from S3 first
(``guardsmith.storage.download_dir``).
"""
from __future__ import annotations

import copy
import gc
import time
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.inference.base import (Backend, Generation, Message, OnError, SamplingParams, answer_rows,
                                       fit_context, model_folder, normalise_groups, plain_messages)

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def _resolve_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise GuardsmithError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return torch.device(device), getattr(torch, _DTYPES[dtype])


class TransformersBackend(Backend):
    """Chat generation with `transformers` from a local model folder.

    Options: `device` (``auto`` = cuda if available, else cpu), `dtype` (``auto`` = bf16 on GPU,
    fp32 on CPU), `batch_size` (requests per forward/generate call), `trust_remote_code`.
    Sampling is seeded per batch (``seed + batch index``) so a run is reproducible; temperature
    0 is greedy (the n samples are then identical copies of one decode).
    """

    kind = "transformers"

    def __init__(self, model_path: str | Path, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = model_folder(model_path)
        if batch_size < 1:
            raise GuardsmithError(f"batch_size must be at least 1, got {batch_size}")
        self.model_path = path
        self.batch_size = int(batch_size)
        self.device, self.dtype = _resolve_device_dtype(device, dtype)
        from guardsmith.model_files import check_model_folder, loading

        check_model_folder(path)  # missing tokenizer, truncated weights, bad config.json: one line
        with loading(path, "causal LM"):
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype,
                                                              trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            raise GuardsmithError(f"the tokenizer in {path} has no chat template")
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
        self._torch = torch

    def __repr__(self) -> str:
        return f"TransformersBackend({str(self.model_path)!r}, device={self.device}, dtype={self.dtype})"

    def render(self, messages: list[Message]) -> str:
        """The prompt text: the chat template with the generation prompt."""
        return self.tokenizer.apply_chat_template(plain_messages(messages), add_generation_prompt=True, tokenize=False)

    def _generate(self, requests: list[list[Message]], params: SamplingParams,
                  on_error: OnError = "raise") -> list[list[Generation]]:
        """Generate in batches of `batch_size` requests, n samples each in the same generate call.

        A prompt that leaves no room in the model's context (``max_position_embeddings``) is
        refused naming the request (``on_error="raise"``) or reported as an error generation.
        """
        limit = getattr(self.model.config, "max_position_embeddings", None)
        lengths = [len(self.tokenizer(self.render(m), add_special_tokens=False)["input_ids"]) for m in requests]
        return fit_context(requests, lengths, limit, params, on_error, lambda fit: self._generate_fitting(fit, params))

    def _generate_fitting(self, requests: list[list[Message]], params: SamplingParams) -> list[list[Generation]]:
        results: list[list[Generation]] = []
        for b, start in enumerate(range(0, len(requests), self.batch_size)):
            batch = requests[start:start + self.batch_size]
            batch_seed = None if params.seed is None else params.seed + b
            results.extend(self._generate_batch(batch, params, batch_seed))
        return results

    def _generate_batch(self, batch: list[list[Message]], params: SamplingParams,
                        seed: int | None) -> list[list[Generation]]:
        torch = self._torch
        t0 = time.perf_counter()
        enc = self.tokenizer([self.render(m) for m in batch], return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        samples = 1 if params.greedy else params.n
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "num_return_sequences": samples,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self.eos_ids),
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        latency = (time.perf_counter() - t0) / len(batch)
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results: list[list[Generation]] = []
        for i in range(len(batch)):
            gens = []
            for j in range(samples):
                ids = new[i * samples + j]
                cut = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if cut is None else ids[:cut]
                count = len(kept) if cut is None else cut + 1
                gens.append(Generation(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=int(prompt_lens[i]), completion_tokens=count, latency_s=latency,
                    finish_reason="length" if cut is None else "stop"))
            if params.greedy:
                gens = [copy.copy(gens[0]) for _ in range(params.n)]
            results.append(gens)
        return results

    def _answer_probability(
        self, requests: list[list[Message]], prefix: str, words: tuple[str, ...]
    ) -> list[dict[str, float]]:
        """Score each ``prompt + prefix + word`` in one batched forward pass per `batch_size` requests.

        A word's log-probability is the sum over its tokens (see `answer_token_spans`); the
        results are normalised over `words`.
        """
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        out: list[dict[str, float]] = []
        for start in range(0, len(requests), self.batch_size):
            contexts = [self.render(messages) + prefix for messages in requests[start:start + self.batch_size]]
            out.extend(normalise_groups(self._score_rows(answer_rows(encode, contexts, words)), words))
        return out

    def _score_rows(self, rows: list[tuple[list[int], int]]) -> list[float]:
        """Sum of log-probabilities of ``ids[begin:]`` for each row, one left-padded forward pass."""
        torch = self._torch
        width = max(len(ids) for ids, _ in rows)
        keep = max(len(ids) - begin for ids, begin in rows) + 1
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                logits_to_keep=keep).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for r, (ids, begin) in enumerate(rows):
            m = len(ids) - begin
            targets = torch.tensor(ids[begin:], device=self.device)
            picked = logprobs[r, keep - m - 1:keep - 1].gather(-1, targets.unsqueeze(-1))
            scores.append(float(picked.sum()))
        return scores

    def close(self) -> None:
        """Drop the model and free GPU memory."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()
