"""Tiny local models: random-weight Llama models with a tokenizer trained on local text.

Nothing is downloaded. The tests and the demo use these in place of real checkpoints:
- `build_tiny_causal_lm`: a Llama-architecture causal LM (generator / guard stand-in).
- `build_tiny_classifier`: a Llama sequence-classification model on the same tokenizer
  (reward-model and classifier stand-in).

A Llama config is used on purpose: with a Qwen2 config `AutoTokenizer` swaps in Qwen's own
pre-tokenizer, so the ids would no longer be the ones the local tokenizer was trained with.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from guardsmith.errors import GuardsmithError

EOS = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", EOS, PAD]

# ChatML-style template; the {% generation %} markers let TRL compute assistant-only loss.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048)
"""Llama config of every tiny model: trains a learnable guard rule in seconds on 2 CPU cores."""
VOCAB_SIZE = 2048
"""Size of the locally trained tokenizer's vocabulary."""


def default_texts() -> list[str]:
    """Text to train the tokenizer on: the bundled sample corpus and guard prompts rendered from it."""
    texts: list[str] = []
    try:
        from guardsmith.standins.sample import load_sample

        rows = load_sample()
    except (ImportError, FileNotFoundError):  # corpus not available: fall back to the label vocabulary
        rows = []
    for row in rows:
        texts.append(row["prompt"])
        if row.get("response"):
            texts.append(row["response"])
        if row.get("policy"):
            texts.append(row["policy"])
    try:
        from guardsmith.guard.prompts import render_guard_messages, render_guard_target

        for row in rows[:200]:
            for mode in ("R", "NR"):
                for style in ("full", "compact"):
                    texts.extend(m["content"] for m in render_guard_messages(row, mode=mode, dual=True, style=style))
                texts.append(render_guard_target(row, mode=mode, reasoning="The request is plain."))
    except ImportError:
        pass
    texts += [
        "Prompt harm: harmful", "Prompt harm: unharmful", "Response harm: harmful",
        "Response harm: unharmful", "Response harm: None", "Response refusal: refusal",
        "Response refusal: compliance", "Response refusal: None",
    ] * 4
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, max_length: int = 2048):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None, model_max_length=max_length
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _llama_config(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        **SHAPE,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _prepare(out_dir: str | Path, texts: Iterable[str] | None, seed: int):
    import torch

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise GuardsmithError(f"{out} exists and is not empty; choose a new folder for the tiny model")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(default_texts() if texts is None else texts, VOCAB_SIZE, SHAPE["max_position_embeddings"])
    return out, tokenizer


def _finish(out: Path, model, tokenizer, seed: int, kind: str) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-shard tiny model needs no "Writing model shards" bar
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    facts = {"kind": kind, "parameters": params, **SHAPE, "vocab_size": VOCAB_SIZE, "seed": seed}
    (out / "guardsmith_tiny.json").write_text(json.dumps(facts, indent=2))
    return out


def build_tiny_causal_lm(out_dir: str | Path, texts: Iterable[str] | None = None, seed: int = 0) -> Path:
    """Build and save a random-weight Llama causal LM plus its locally trained tokenizer.

    Returns the output folder (Hugging Face format: loadable with `AutoModelForCausalLM` and
    `AutoTokenizer`). `texts` trains the tokenizer; by default the bundled sample corpus.
    """
    from transformers import AutoModelForCausalLM

    out, tokenizer = _prepare(out_dir, texts, seed)
    model = AutoModelForCausalLM.from_config(_llama_config(tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return _finish(out, model, tokenizer, seed, "causal_lm")


def build_tiny_classifier(out_dir: str | Path, texts: Iterable[str] | None = None, num_labels: int = 1,
                          seed: int = 0, id2label: dict[int, str] | None = None) -> Path:
    """Build and save a random-weight Llama sequence-classification model.

    `num_labels=1` gives a reward model (one scalar output); 2 gives a safe/unsafe classifier
    (default labels `safe`, `unsafe`).
    """
    from transformers import AutoModelForSequenceClassification

    out, tokenizer = _prepare(out_dir, texts, seed)
    if id2label is None:
        id2label = {0: "safe", 1: "unsafe"} if num_labels == 2 else {i: f"LABEL_{i}" for i in range(num_labels)}
    llama = _llama_config(tokenizer, num_labels=num_labels, id2label=id2label,
                          label2id={v: k for k, v in id2label.items()})
    model = AutoModelForSequenceClassification.from_config(llama)
    return _finish(out, model, tokenizer, seed, "classifier")
