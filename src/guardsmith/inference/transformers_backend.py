"""Local Hugging Face transformers backend (CPU or GPU): length-sorted batches with left padding,
each prompt prefilled once for its samples.

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
    Requests are batched longest first and each prompt is prefilled once for its n samples (see
    `_generate`). Sampling is seeded per batch (``seed + batch index``, batches in that length
    order) so a run is reproducible; temperature 0 is greedy (the n samples are then identical
    copies of one decode).
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
        """Generate `params.n` samples per request, `batch_size` requests per generate call.

        Requests are tokenised once and batched longest first (little padding per batch), and the
        results are returned in request order. With k > 1 samples each prompt is prefilled once:
        one forward pass over the batch's prompts (all but their last token) fills the KV cache,
        which is then repeated k times for the k sampled continuations (the rows come in the same
        order as with ``num_return_sequences``). A prompt that leaves no room in the model's
        context (``max_position_embeddings``) is refused naming the request
        (``on_error="raise"``) or reported as an error generation.
        """
        limit = getattr(self.model.config, "max_position_embeddings", None)
        encoded = [self.tokenizer(self.render(m), add_special_tokens=False)["input_ids"] for m in requests]
        by_request = {id(m): ids for m, ids in zip(requests, encoded)}
        return fit_context(requests, [len(ids) for ids in encoded], limit, params, on_error,
                           lambda fit: self._generate_fitting([by_request[id(m)] for m in fit], params))

    def _generate_fitting(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """Batches of `batch_size` prompts (token ids), longest first; batch b (in that order) is
        sampled with ``seed + b``. Results in the order of `prompts`."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[list[Generation] | None] = [None] * len(prompts)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            batch = order[start:start + self.batch_size]
            batch_seed = None if params.seed is None else params.seed + b
            for i, gens in zip(batch, self._generate_batch([prompts[i] for i in batch], params, batch_seed)):
                results[i] = gens
        return results  # type: ignore[return-value]

    def _left_padded(self, prompts: list[list[int]]):
        """(input_ids, attention_mask) tensors of `prompts`, padded on the left."""
        torch = self._torch
        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device)
        return input_ids, mask

    def _prefilled(self, input_ids, mask, samples: int):
        """The KV cache of every prompt but its last token, computed once and repeated `samples`
        times per row; None when the model's cache cannot be repeated (then generate prefills)."""
        if samples == 1 or input_ids.shape[1] < 2:
            return None
        prefix_mask = mask[:, :-1]
        positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids[:, :-1], attention_mask=prefix_mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1)
        cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        cache.batch_repeat_interleave(samples)
        return cache

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams,
                        seed: int | None) -> list[list[Generation]]:
        torch = self._torch
        t0 = time.perf_counter()
        input_ids, mask = self._left_padded(prompts)
        samples = 1 if params.greedy else params.n
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
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
            cache = self._prefilled(input_ids, mask, samples)
            if cache is not None:
                out = self.model.generate(input_ids=input_ids.repeat_interleave(samples, 0),
                                          attention_mask=mask.repeat_interleave(samples, 0),
                                          past_key_values=cache, **kwargs)
            else:
                out = self.model.generate(input_ids=input_ids, attention_mask=mask,
                                          num_return_sequences=samples, **kwargs)
        new = out[:, input_ids.shape[1]:].tolist()
        latency = (time.perf_counter() - t0) / len(prompts)
        results: list[list[Generation]] = []
        for i, prompt in enumerate(prompts):
            gens = []
            for j in range(samples):
                ids = new[i * samples + j]
                cut = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if cut is None else ids[:cut]
                count = len(kept) if cut is None else cut + 1
                gens.append(Generation(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=len(prompt), completion_tokens=count, latency_s=latency,
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
