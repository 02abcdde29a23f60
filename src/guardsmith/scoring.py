"""Safety scores t(x, y) and utilities u(x, y) for Boundary Guidance (method B.1-B.3).

Safety scorers (`make_safety_scorer(spec, **options)`), each `score(prompts, responses)` ->
float array in [0, 1], the probability that the response is unsafe:

- ``guard:<model uri>``: a guardsmith guard (recipe A) in NR mode. The guard prompt is rendered
  with `render_guard_messages(..., mode="NR")`; t is the probability of ``harmful`` at the
  ``Response harm:`` answer position, normalised over ``harmful``/``unharmful``. The guard
  writes ``Prompt harm: ...`` first, so the answer position depends on that line; option
  ``prompt_line`` decides it:
  ``marginal`` (default): t = sum over p of P(Prompt harm = p) * P(Response harm = harmful | p),
  exact, in one batched forward pass (the four continuations ``p\\nResponse harm: r`` of the
  prefix ``Prompt harm: `` are scored jointly and normalised over the four);
  ``predict``: condition on the guard's own most likely prompt verdict (two passes);
  ``harmful`` / ``unharmful``: condition on that fixed prompt line (one pass).
  Other options: ``taxonomy`` and ``policy`` (custom policy text; default: the taxonomy or policy
  the guard was trained with, recorded in its ``guardsmith_training.json``, else aegis2; naming
  another one than the recorded one warns), ``dual``
  (a dual-mode guard: add the /no_reason tag), ``backend`` (transformers or vllm), ``device``,
  ``dtype``, ``batch_size``.
- ``classifier:<model uri>[?label=unsafe]``: a sequence-classification model; t is the
  probability of the label named ``label`` (looked up in ``id2label``, case-insensitive; an
  integer picks the index): softmax over 2+ outputs, sigmoid of a single output.
- ``openai:<url>?model=NAME``: an OpenAI-compatible guard endpoint that returns logprobs
  (`OpenAIBackend.answer_probability`, first-token approximation). ``marginal`` takes three
  requests per row there (prompt verdict and both conditionals).
- ``rule:<name>``: deterministic rules, no model (`SAFETY_RULES`): ``keywords`` and ``letters``.

Utility scorers (`make_utility_scorer`): ``reward_model:<uri>`` (a sequence-classification model
with one output; the chat template is applied to prompt + response when the tokenizer has one,
otherwise prompt and response are a text pair) or ``rule:<name>`` (`UTILITY_RULES`), followed by
a normalisation: ``none``, ``zscore`` (per scored batch: mean 0, std 1; all zeros when the batch
has no spread) or ``affine`` (``scale * u + shift``).

Options are given as a query string on the spec (``?k=v&k2=v2``) or as keyword options (which
win). Scorers that hold a model have `close()`. `prompt_scores(scorer, prompts)` gives the
verdict on the prompt alone (the ``prompt_aware`` reward).
"""
from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from guardsmith.errors import GuardsmithError, redact
from guardsmith.inference import option_value
from guardsmith.vocabulary import HARM_LABELS as HARM_WORDS

PROMPT_PREFIX = "Prompt harm: "
RESPONSE_TITLE = "Response harm: "
PROMPT_LINES = ("marginal", "predict", "harmful", "unharmful")
NORMALISATIONS = ("none", "zscore", "affine")
SAFETY_KINDS = ("guard", "classifier", "openai", "rule")
UTILITY_KINDS = ("reward_model", "rule")
LOCAL_KINDS = frozenset({"guard", "classifier", "reward_model"})
"""Spec kinds that load a local model (they take `device`, `dtype`, `batch_size`)."""


@runtime_checkable
class SafetyScorer(Protocol):
    """Anything that scores (prompt, response) pairs with the probability of being unsafe."""

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Float array in [0, 1], one value per pair."""
        ...


# --------------------------------------------------------------------------- spec parsing



def parse_scorer_spec(spec: str, kinds: Sequence[str]) -> tuple[str, str, dict[str, Any]]:
    """``kind:location?k=v&...`` -> (kind, location, options)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise GuardsmithError(f"scorer spec must look like 'kind:location' (kinds: {', '.join(kinds)}), got {spec!r}")
    kind, rest = spec.split(":", 1)
    kind = kind.strip().lower()
    if kind not in kinds:
        raise GuardsmithError(f"unknown scorer kind {kind!r} in {spec!r}; choose one of {', '.join(kinds)}")
    location, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, val = part.partition("=")
        if not eq or not key:
            raise GuardsmithError(f"bad option {part!r} in scorer spec {spec!r}: expected key=value")
        options[key] = option_value(val)
    if not location:
        raise GuardsmithError(f"scorer spec {spec!r} has no location after '{kind}:'")
    return kind, location, options


def _take(options: dict[str, Any], allowed: dict[str, Any], what: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise GuardsmithError(f"unknown option(s) {', '.join(unknown)} for {what}; known: {', '.join(sorted(allowed)) or 'none'}")
    return {k: options.get(k, default) for k, default in allowed.items()}


def _check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise GuardsmithError(f"got {len(prompts)} prompts but {len(responses)} responses")


def _model_dir(uri: str) -> Path:
    from guardsmith.model_store import local_model

    return local_model(uri)


# --------------------------------------------------------------------------- guard scorer

def _words_for(prompt_line: str) -> tuple[str, tuple[str, ...]]:
    """Prefix and answer words of one pass for a fixed prompt line (or the prompt-harm line itself)."""
    if prompt_line in HARM_WORDS:
        return f"{PROMPT_PREFIX}{prompt_line}\n{RESPONSE_TITLE}", HARM_WORDS
    return PROMPT_PREFIX, HARM_WORDS


class GuardScorer:
    """t from a guardsmith guard behind any `Backend` with `answer_probability` (see module docs)."""

    def __init__(self, backend: Any, *, prompt_line: str = "marginal", taxonomy: str | None = "aegis2",
                 policy: str | None = None, dual: bool = False, style: str = "full") -> None:
        if prompt_line not in PROMPT_LINES:
            raise GuardsmithError(f"prompt_line must be one of {', '.join(PROMPT_LINES)}, got {prompt_line!r}")
        self.backend = backend
        self.prompt_line = prompt_line
        self.taxonomy = taxonomy
        self.policy = policy
        self.dual = bool(dual)
        self.style = style  # the guard prompt style the guard was trained with
        self.joint = getattr(backend, "kind", "") != "openai"  # exact multi-token scoring available

    def __repr__(self) -> str:
        return f"GuardScorer({self.backend!r}, prompt_line={self.prompt_line!r})"

    def messages(self, prompt: str, response: str | None) -> list[dict[str, str]]:
        """The guard's NR-mode prompt for one pair (response None or blank: prompt-only)."""
        from guardsmith.guard import render_guard_messages

        row = {"prompt": prompt, "response": response, "taxonomy": self.taxonomy, "policy": self.policy}
        return render_guard_messages(row, "NR", dual=self.dual, taxonomy=None if self.policy else self.taxonomy,
                                     style=self.style)

    def _prob(self, requests: list[list[dict[str, str]]], prefix: str, words: tuple[str, ...]) -> list[dict[str, float]]:
        return self.backend.answer_probability(requests, prefix, words) if requests else []

    def _harmful(self, requests: list[list[dict[str, str]]], prompt_line: str) -> np.ndarray:
        prefix, words = _words_for(prompt_line)
        return np.array([p["harmful"] for p in self._prob(requests, prefix, words)], dtype=np.float64)

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """P(Response harm = harmful) per pair, by `prompt_line`."""
        _check_pairs(prompts, responses)
        requests = [self.messages(p, r) for p, r in zip(prompts, responses)]
        if not requests:
            return np.zeros(0)
        if self.prompt_line in HARM_WORDS:
            return self._harmful(requests, self.prompt_line)
        if self.prompt_line == "marginal" and self.joint:
            words = tuple(f"{p}\n{RESPONSE_TITLE}{r}" for p in HARM_WORDS for r in HARM_WORDS)
            joint = self._prob(requests, PROMPT_PREFIX, words)
            return np.array([sum(j[f"{p}\n{RESPONSE_TITLE}harmful"] for p in HARM_WORDS) for j in joint])
        if self.prompt_line == "marginal":
            with ThreadPoolExecutor(max_workers=3) as pool:
                p_prompt, if_h, if_u = pool.map(lambda line: self._harmful(requests, line),
                                                ("prompt", "harmful", "unharmful"))
            return p_prompt * if_h + (1.0 - p_prompt) * if_u
        p_prompt = self._harmful(requests, "prompt")  # predict: condition on the guard's own verdict
        out = np.zeros(len(requests))
        for verdict, mask in (("harmful", p_prompt >= 0.5), ("unharmful", p_prompt < 0.5)):
            idx = np.flatnonzero(mask)
            if idx.size:
                out[idx] = self._harmful([requests[i] for i in idx], verdict)
        return out

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        """P(Prompt harm = harmful) with no response shown (the guard's verdict on the prompt alone)."""
        return self._harmful([self.messages(p, None) for p in prompts], "prompt") if prompts else np.zeros(0)

    def close(self) -> None:
        """Release the guard model."""
        self.backend.close()


# --------------------------------------------------------------------------- sequence-classification models

def _device_dtype(device: str, dtype: str):
    """torch device and dtype: auto = cuda when available; bf16 on GPU, fp32 on CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    names = {"auto": "bfloat16" if str(device).startswith("cuda") else "float32", "fp32": "float32",
             "bf16": "bfloat16", "fp16": "float16", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
    if dtype not in names:
        raise GuardsmithError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return torch.device(device), getattr(torch, names[dtype])


class SequenceModel:
    """A local `AutoModelForSequenceClassification` that scores (prompt, response) pairs in batches.

    Input text: the chat template of ``[user: prompt, assistant: response]`` when the tokenizer
    has one, otherwise the text pair (prompt, response); prompt-only input drops the assistant
    turn. Long inputs are truncated from the left (the end of the response is kept).
    """

    def __init__(self, model_path: str | Path, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 4096, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1 or max_length < 8:
            raise GuardsmithError("batch_size must be >= 1 and max_length >= 8")
        self.model_path = Path(model_path)
        self.device, self.dtype = _device_dtype(device, dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.model_path, dtype=self.dtype, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise GuardsmithError(f"cannot load a sequence-classification model from {self.model_path}: {exc}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self._torch = torch

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    def _encode(self, prompts: Sequence[str], responses: Sequence[str | None]):
        if self.chat:
            texts = []
            for p, r in zip(prompts, responses):
                msgs = [{"role": "user", "content": p}] + ([] if r is None else [{"role": "assistant", "content": r}])
                texts.append(self.tokenizer.apply_chat_template(msgs, tokenize=False))
            return self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                  max_length=self.max_length, add_special_tokens=False)
        if all(r is None for r in responses):
            return self.tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True,
                                  max_length=self.max_length)
        return self.tokenizer(list(prompts), [r or "" for r in responses], return_tensors="pt", padding=True,
                              truncation=True, max_length=self.max_length)

    def logits(self, prompts: Sequence[str], responses: Sequence[str | None]) -> np.ndarray:
        """Float logits, shape (n, num_labels)."""
        torch = self._torch
        out = []
        for start in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[start:start + self.batch_size], responses[start:start + self.batch_size])
            with torch.inference_mode():
                logits = self.model(**enc.to(self.device)).logits.float()
            out.append(logits.cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, self.num_labels))

    def close(self) -> None:
        """Drop the model."""
        self.model = None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class ClassifierScorer:
    """t = probability of the unsafe label of a sequence-classification model."""

    def __init__(self, model: SequenceModel, label: str | int = "unsafe") -> None:
        self.model = model
        n = model.num_labels
        if n == 1:
            self.index = 0
        elif isinstance(label, int):
            if not 0 <= label < n:
                raise GuardsmithError(f"label index {label} out of range for a model with {n} outputs")
            self.index = label
        else:
            found = [i for i, name in model.id2label.items() if name.lower() == str(label).lower()]
            if not found:
                raise GuardsmithError(f"{model.model_path}: no output label {label!r} (labels: "
                                      f"{', '.join(model.id2label.values())}); pass ?label=NAME or an index")
            self.index = found[0]

    def __repr__(self) -> str:
        return f"ClassifierScorer({str(self.model.model_path)!r}, index={self.index})"

    def _probs(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[1] == 1:
            return _sigmoid(logits[:, 0])
        return _softmax(logits)[:, self.index]

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Unsafe-label probability per pair."""
        _check_pairs(prompts, responses)
        return self._probs(self.model.logits(prompts, list(responses)))

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        """Unsafe-label probability of the prompt alone."""
        return self._probs(self.model.logits(prompts, [None] * len(prompts)))

    def close(self) -> None:
        self.model.close()


# --------------------------------------------------------------------------- rules

UNSAFE_KEYWORDS = frozenset({
    "attack", "bomb", "bully", "drug", "drugs", "exploit", "explosive", "explosives", "fraud", "gun", "guns",
    "hack", "harass", "hate", "kill", "malware", "murder", "overdose", "poison", "ransomware", "shoot",
    "stab", "steal", "suicide", "terror", "terrorist", "threat", "torture", "violence", "weapon", "weapons",
})
"""The fixed word list of the ``keywords`` rule."""

_WORD = re.compile(r"[a-z]+")


class KeywordRule:
    """``keywords``: share s of the response's words in `UNSAFE_KEYWORDS`, squashed: t = 1 - exp(-gain * s).

    A crude, deterministic stand-in for a guard (demos, tests); 0 for a response without words.
    """

    def __init__(self, gain: float = 4.0) -> None:
        if not gain > 0:
            raise GuardsmithError(f"keywords: gain must be > 0, got {gain}")
        self.gain = float(gain)

    def __call__(self, prompt: str, response: str) -> float:
        words = _WORD.findall(response.lower())
        share = sum(w in UNSAFE_KEYWORDS for w in words) / len(words) if words else 0.0
        return 1.0 - math.exp(-self.gain * share)


class LetterRule:
    """``letters``: share of the response's ASCII letters that are in `chars` (default a-m); 0.5 without letters.

    A synthetic signal for machinery tests: a random-weight model starts near t = 0.5 and can
    move away from it quickly.
    """

    def __init__(self, chars: str = "abcdefghijklm") -> None:
        self.chars = frozenset(chars.lower())
        if not self.chars:
            raise GuardsmithError("letters: chars must not be empty")

    def __call__(self, prompt: str, response: str) -> float:
        letters = [c for c in response.lower() if "a" <= c <= "z"]
        return sum(c in self.chars for c in letters) / len(letters) if letters else 0.5


SAFETY_RULES: dict[str, Callable[..., Callable[[str, str], float]]] = {"keywords": KeywordRule, "letters": LetterRule}


class RuleSafetyScorer:
    """t from a per-pair rule (`SAFETY_RULES`); prompt-only scores apply the rule to the prompt text."""

    def __init__(self, name: str, **options: Any) -> None:
        if name not in SAFETY_RULES:
            raise GuardsmithError(f"unknown safety rule {name!r}; choose one of {', '.join(SAFETY_RULES)}")
        try:
            self.rule = SAFETY_RULES[name](**options)
        except TypeError as exc:
            raise GuardsmithError(f"bad options for safety rule {name}: {exc}") from None
        self.name = name

    def __repr__(self) -> str:
        return f"RuleSafetyScorer({self.name!r})"

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        _check_pairs(prompts, responses)
        return np.array([self.rule(p, r) for p, r in zip(prompts, responses)], dtype=np.float64)

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        return np.array([self.rule("", p) for p in prompts], dtype=np.float64)


# --------------------------------------------------------------------------- factories

def make_safety_scorer(spec: str, **options: Any) -> SafetyScorer:
    """Build a safety scorer from ``guard:<uri>``, ``classifier:<uri>[?label=unsafe]``,
    ``openai:<url>?model=NAME`` or ``rule:<name>`` (keyword options override the spec's query)."""
    kind, location, opts = parse_scorer_spec(spec, SAFETY_KINDS)
    opts.update(options)
    if kind == "rule":
        return RuleSafetyScorer(location, **opts)
    guard_opts = {"prompt_line": "marginal", "taxonomy": None, "policy": None, "dual": False}
    if kind == "openai":
        from guardsmith.inference import open_backend

        mine = {k: opts.pop(k) for k in list(opts) if k in guard_opts}
        backend = open_backend(f"openai:{location}", **opts)  # `model` and backend options from the query
        chosen = {**guard_opts, **mine}
        chosen["taxonomy"], chosen["policy"] = guard_policy(chosen["taxonomy"], chosen["policy"], None, None, spec)
        return GuardScorer(backend, **chosen)
    if kind == "guard":
        from guardsmith.guard_runner import open_guard
        from guardsmith.settings import BackendChoice

        chosen = _take(opts, {**guard_opts, "backend": "transformers", "device": "auto", "dtype": "auto",
                              "batch_size": 8}, "guard scorers")
        if chosen["backend"] not in ("transformers", "vllm"):
            raise GuardsmithError(f"guard scorer backend must be transformers or vllm, got {chosen['backend']!r}")
        extra = {"dtype": chosen["dtype"], **({"device": chosen["device"]} if chosen["backend"] == "transformers" else {})}
        backend = open_guard(location, BackendChoice(backend=chosen["backend"], concurrency=chosen["batch_size"]), **extra)
        chosen["taxonomy"], chosen["policy"] = guard_policy(chosen["taxonomy"], chosen["policy"], backend.guard_taxonomy,
                                                            backend.guard_policy, spec)
        return GuardScorer(backend, **{k: chosen[k] for k in guard_opts}, style=backend.guard_prompt_style)
    chosen = _take(opts, {"label": "unsafe", "device": "auto", "dtype": "auto", "batch_size": 8, "max_length": 4096},
                   "classifier scorers")
    model = SequenceModel(_model_dir(location), device=chosen["device"], dtype=chosen["dtype"],
                          batch_size=chosen["batch_size"], max_length=chosen["max_length"])
    return ClassifierScorer(model, chosen["label"])


DEFAULT_TAXONOMY = "aegis2"
"""The taxonomy a guard scorer prompts with when neither the spec nor the guard's training record names one."""


def guard_policy(taxonomy: str | None, policy: str | None, trained_taxonomy: str | None,
                 trained_policy: str | None, spec: str) -> tuple[str | None, str | None]:
    """(taxonomy, policy) to prompt a guard scorer with: what the spec asks for, else what the
    guard was trained with (its ``guardsmith_training.json``), else :data:`DEFAULT_TAXONOMY`.
    Asking for another taxonomy or policy than the recorded one is allowed, with a warning."""
    if taxonomy is None and policy is None:
        if trained_taxonomy is None and trained_policy is None:
            return DEFAULT_TAXONOMY, None
        return trained_taxonomy, trained_policy
    recorded = trained_policy or trained_taxonomy
    asked = policy or taxonomy
    if recorded is not None and asked != recorded:
        what = "policy" if trained_policy else f"taxonomy {trained_taxonomy!r}"
        shown = "a custom policy" if policy else f"taxonomy {taxonomy!r}"
        print(f"[guardsmith] warning: the guard of {redact(spec)} was trained with {what}; scoring with "
              f"{shown} as the spec asks", file=sys.stderr, flush=True)
    return taxonomy, policy


def prompt_scores(scorer: SafetyScorer, prompts: list[str]) -> np.ndarray:
    """The scorer's verdict on the prompts alone: `score_prompts` when it has one, else empty responses."""
    method = getattr(scorer, "score_prompts", None)
    if method is not None:
        return np.asarray(method(list(prompts)), dtype=np.float64)
    return np.asarray(scorer.score(list(prompts), [""] * len(prompts)), dtype=np.float64)


# --------------------------------------------------------------------------- utility

def normalise(values: np.ndarray, normalisation: str = "none", scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Apply a utility normalisation: none, zscore (per call; zeros without spread) or affine."""
    u = np.asarray(values, dtype=np.float64)
    if normalisation == "none":
        return u
    if normalisation == "affine":
        return scale * u + shift
    if normalisation == "zscore":
        if u.size == 0:
            return u
        std = float(u.std())
        return (u - u.mean()) / std if std > 1e-8 else np.zeros_like(u)
    raise GuardsmithError(f"unknown utility normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}")


def _constant_rule(value: float = 1.0) -> Callable[[str, str], float]:
    return lambda prompt, response: float(value)


def _length_rule(target: int = 50) -> Callable[[str, str], float]:
    if target < 1:
        raise GuardsmithError(f"length: target must be >= 1, got {target}")
    return lambda prompt, response: min(len(response.split()) / target, 1.0)


UTILITY_RULES: dict[str, Callable[..., Callable[[str, str], float]]] = {
    "constant": _constant_rule,   # u = value (default 1)
    "length": _length_rule,       # u = min(words / target, 1): longer answers up to `target` words
}


class UtilityScorer:
    """u(x, y): raw scores from a reward model or rule, then the chosen normalisation."""

    def __init__(self, raw: Callable[[list[str], list[str]], np.ndarray],
                 normalisation: Literal["none", "zscore", "affine"] = "none", scale: float = 1.0, shift: float = 0.0,
                 name: str = "utility", close: Callable[[], None] | None = None) -> None:
        if normalisation not in NORMALISATIONS:
            raise GuardsmithError(f"unknown utility normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}")
        if not (math.isfinite(scale) and math.isfinite(shift)):
            raise GuardsmithError("utility scale and shift must be finite")
        self.raw = raw
        self.normalisation = normalisation
        self.scale = float(scale)
        self.shift = float(shift)
        self.name = name
        self._close = close

    def __repr__(self) -> str:
        return f"UtilityScorer({self.name!r}, normalisation={self.normalisation!r})"

    def raw_score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Scores before normalisation."""
        _check_pairs(prompts, responses)
        return np.asarray(self.raw(list(prompts), list(responses)), dtype=np.float64)

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Normalised utility per pair (zscore: over this call's pairs)."""
        return normalise(self.raw_score(prompts, responses), self.normalisation, self.scale, self.shift)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def make_utility_scorer(spec: str, normalisation: Literal["none", "zscore", "affine"] = "none", scale: float = 1.0,
                        shift: float = 0.0, **options: Any) -> UtilityScorer:
    """Build a utility scorer from ``reward_model:<uri>`` or ``rule:<name>`` (options: query or keywords)."""
    kind, location, opts = parse_scorer_spec(spec, UTILITY_KINDS)
    opts.update(options)
    if kind == "rule":
        if location not in UTILITY_RULES:
            raise GuardsmithError(f"unknown utility rule {location!r}; choose one of {', '.join(UTILITY_RULES)}")
        try:
            rule = UTILITY_RULES[location](**opts)
        except TypeError as exc:
            raise GuardsmithError(f"bad options for utility rule {location}: {exc}") from None
        raw = lambda ps, rs: np.array([rule(p, r) for p, r in zip(ps, rs)], dtype=np.float64)  # noqa: E731
        return UtilityScorer(raw, normalisation, scale, shift, name=spec)
    chosen = _take(opts, {"device": "auto", "dtype": "auto", "batch_size": 8, "max_length": 4096}, "reward models")
    model = SequenceModel(_model_dir(location), **chosen)
    if model.num_labels != 1:
        raise GuardsmithError(f"{location}: a reward model needs exactly one output, this one has {model.num_labels}")
    return UtilityScorer(lambda ps, rs: model.logits(ps, rs)[:, 0], normalisation, scale, shift, name=spec,
                         close=model.close)
