"""vLLM offline-engine backend (GPU images only; vllm is imported lazily inside the class).

The mapping between our requests/params and vLLM's, and from vLLM's ``RequestOutput`` back to
`Generation`, lives in pure functions so it is tested on CPU with small fake objects.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.inference.base import (Backend, Generation, Message, OnError, SamplingParams, answer_rows,
                                       fit_context, model_folder, normalise_groups, plain_messages)

INSTALL_HINT = ("vLLM is not installed: install the vllm extra (pip install 'guardsmith[vllm]') on a GPU image, "
                "or use the transformers backend")


def to_vllm_messages(requests: Sequence[Sequence[Mapping[str, str]]]) -> list[list[dict[str, str]]]:
    """Our requests as vLLM chat conversations (plain role/content dicts)."""
    return [plain_messages(req) for req in requests]


def to_vllm_sampling(params: SamplingParams, count: int) -> tuple[list[dict[str, Any]], int]:
    """Keyword arguments for one ``vllm.SamplingParams`` per request, and the replication factor.

    Greedy decoding asks vLLM for one sample and replicates it `params.n` times (all greedy
    samples are identical). With a seed, request i gets ``seed + i`` so equal prompts in a
    batch still sample independently while the run stays reproducible. Without one (``seed:
    None``) no request carries a seed: vLLM samples seeded requests with a torch generator each
    (a per-request step in its sampler), so per-request seeds are only set when a seed asks for
    reproducibility; greedy requests never need one.
    """
    n = 1 if params.greedy else params.n
    out = []
    for i in range(count):
        kwargs: dict[str, Any] = {"n": n, "temperature": params.temperature,
                                  "top_p": 1.0 if params.greedy else params.top_p, "max_tokens": params.max_tokens}
        if params.seed is not None and not params.greedy:
            kwargs["seed"] = params.seed + i
        out.append(kwargs)
    return out, params.n if params.greedy else 1


def from_vllm_outputs(outputs: Sequence[Any], replicate: int, latency_s: float) -> list[list[Generation]]:
    """vLLM ``RequestOutput``s (``.prompt_token_ids``, ``.outputs[*].text/.token_ids/.finish_reason``) -> Generations."""
    results = []
    for ro in outputs:
        prompt_tokens = len(ro.prompt_token_ids or [])
        gens = [Generation(text=c.text, prompt_tokens=prompt_tokens, completion_tokens=len(c.token_ids or []),
                           latency_s=latency_s, finish_reason=c.finish_reason or "stop")
                for c in ro.outputs]
        if replicate > 1:
            gens = [copy.copy(g) for g in gens for _ in range(replicate)]
        results.append(gens)
    return results


def sum_prompt_logprobs(output: Any, token_ids: Sequence[int], start: int) -> float:
    """Sum of the prompt log-probabilities of ``token_ids[start:]`` from a ``RequestOutput.prompt_logprobs``.

    ``prompt_logprobs[j]`` maps token id -> ``Logprob`` (``.logprob``) for position j (None at 0).
    """
    plp = output.prompt_logprobs
    if plp is None:
        raise GuardsmithError("vLLM returned no prompt logprobs (set prompt_logprobs in SamplingParams)")
    total = 0.0
    for j in range(start, len(token_ids)):
        entry = plp[j]
        if entry is None or token_ids[j] not in entry:
            raise GuardsmithError(f"vLLM prompt logprobs lack token {token_ids[j]} at position {j}")
        value = entry[token_ids[j]]
        total += float(getattr(value, "logprob", value))
    return total


class VLLMBackend(Backend):
    """Generation with the vLLM offline engine (``LLM`` + ``llm.chat``) from a local model folder.

    Options: `dtype`, `gpu_memory_utilization`, `max_model_len`, `tensor_parallel_size`,
    `enforce_eager`, `seed`, plus any other ``vllm.LLM`` keyword (`llm_kwargs`).
    `answer_probability` scores ``prompt + prefix + word`` token ids with prompt logprobs.
    """

    kind = "vllm"

    def __init__(self, model_path: str | Path, *, dtype: str = "auto", gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, tensor_parallel_size: int = 1, enforce_eager: bool = False,
                 seed: int = 0, **llm_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise GuardsmithError(INSTALL_HINT) from None
        path = model_folder(model_path)
        self._vllm = vllm
        self.model_path = path
        kwargs = dict(model=str(path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                      tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager, seed=seed, **llm_kwargs)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)

    def __repr__(self) -> str:
        return f"VLLMBackend({str(self.model_path)!r})"

    def _generate(self, requests: list[list[Message]], params: SamplingParams,
                  on_error: OnError = "raise") -> list[list[Generation]]:
        """All requests in one ``llm.chat`` call; vLLM schedules the batching itself (continuous
        batching: no barrier inside a call). Callers hand over whole tables or large chunks
        (``chunk_rows``): each call ends in a barrier where the engine drains.

        The prompts are tokenised first; one that does not fit the engine's ``max_model_len`` is
        refused naming the request (``on_error="raise"``) or reported as an error generation
        (``"collect"``) instead of failing the whole call inside vLLM.
        """
        if not requests:
            return []
        limit = self._max_model_len()
        if limit is None:
            return self._generate_fitting(requests, params)
        tokenizer = self.llm.get_tokenizer()
        lengths = [len(tokenizer.encode(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                                        add_special_tokens=False)) for m in to_vllm_messages(requests)]
        return fit_context(requests, lengths, limit, params, on_error, lambda fit: self._generate_fitting(fit, params))

    def _max_model_len(self) -> int | None:
        """The engine's context length, or None when this vLLM version does not expose it."""
        engine = getattr(self.llm, "llm_engine", None)
        value = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        return value if isinstance(value, int) else None

    def _generate_fitting(self, requests: list[list[Message]], params: SamplingParams) -> list[list[Generation]]:
        if not requests:
            return []
        per_request, replicate = to_vllm_sampling(params, len(requests))
        sampling = [self._vllm.SamplingParams(**kw) for kw in per_request]
        t0 = time.perf_counter()
        outputs = self.llm.chat(to_vllm_messages(requests), sampling, use_tqdm=False, add_generation_prompt=True)
        latency = (time.perf_counter() - t0) / len(requests)
        return from_vllm_outputs(outputs, replicate, latency)

    def _answer_probability(
        self, requests: list[list[Message]], prefix: str, words: tuple[str, ...]
    ) -> list[dict[str, float]]:
        """Prompt logprobs of ``prompt + prefix + word`` token ids (one ``llm.generate`` call, 1 new token)."""
        tokenizer = self.llm.get_tokenizer()
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        contexts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
                    for messages in to_vllm_messages(requests)]
        rows = answer_rows(encode, contexts, words)
        sp = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids, _ in rows], sp, use_tqdm=False)
        return normalise_groups([sum_prompt_logprobs(o, ids, start) for o, (ids, start) in zip(outputs, rows)], words)

    def close(self) -> None:
        """Drop the engine (GPU memory is freed when the engine is garbage-collected)."""
        self.llm = None
