"""The guard behind the services: P(unsafe) scores, reasoning and chat answers, in batches.

:meth:`GuardEngine.open` loads a guard from a spec (a model folder or object-storage URI, a
``vllm:``/``transformers:`` folder, an ``openai:URL?model=NAME`` endpoint such as a vLLM server,
or ``rule:keywords`` / ``rule:letters``, the deterministic stand-ins of ``guardsmith.scoring``
for demos and tests). The prompt style, mode (R, NR, dual) and taxonomy or policy the guard was
trained with are read from its folder's ``guardsmith_training.json`` (`guard_runner.open_guard`,
`training.TrainingSummary`).

Scores are the guard's NR-mode answer probability, :class:`guardsmith.scoring.GuardScorer`:
P(Response harm = harmful) for a (prompt, response) pair, P(Prompt harm = harmful) for a prompt
alone. Every ``*_batch`` method takes one batch of items sharing a key (policy, or sampling
settings) and is what :class:`guardsmith.serving.batcher.Batcher` runs in its worker thread.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.serving.api import APIError, ChatRequest, Choice, bad, cut_at_stop


@dataclass(frozen=True)
class Item:
    """What one moderation input asks about: a prompt, and the response to judge when there is one."""

    prompt: str
    response: str | None = None

    @property
    def task(self) -> str:
        return "response_harm" if self.response is not None else "prompt_harm"


PolicyKey = tuple[str | None, str | None]
"""(taxonomy, policy) a batch is scored with."""


@dataclass
class Reasoned:
    """An R-mode answer: the guard's reasoning and the labels it wrote (None when unparsed)."""

    reasoning: str
    prompt_harm: str | None
    response_harm: str | None
    parse_ok: bool


class GuardEngine:
    """A loaded guard: `score_batch`, `reason_batch`, `chat_batch`; `name` is the served model name."""

    def __init__(self, *, name: str, scorer: Any, backend: Any = None, mode: str | None = None, dual: bool = False,
                 taxonomy: str | None = None, policy: str | None = None, style: str = "full",
                 reasoning_max_tokens: int = 512) -> None:
        self.name = name
        self.scorer = scorer
        self.backend = backend
        self.mode = mode
        self.dual = dual
        self.taxonomy = taxonomy
        self.policy = policy
        self.style = style
        self.reasoning_max_tokens = int(reasoning_max_tokens)
        self._lock = threading.Lock()  # one model call at a time across the batchers

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, spec: str, *, name: str = "guardsmith-guard", backend: str = "transformers", device: str = "auto",
             dtype: str = "auto", batch_size: int = 16, reasoning_max_tokens: int = 512) -> GuardEngine:
        """Load the guard named by ``spec`` (see the module docs)."""
        from guardsmith.scoring import GuardScorer, RuleSafetyScorer, guard_policy

        text = str(spec).strip()
        if text.startswith("rule:"):
            return cls(name=name, scorer=RuleSafetyScorer(text.split(":", 1)[1]), mode="NR")
        from guardsmith.guard_runner import model_folder_uri, open_guard
        from guardsmith.settings import BackendChoice
        from guardsmith.training import TrainingSummary

        if backend not in ("transformers", "vllm"):
            raise GuardsmithError(f"--backend must be transformers or vllm, got {backend!r}")
        extra: dict[str, Any] = {"dtype": dtype, **({"device": device} if backend == "transformers" else {})}
        folder = model_folder_uri(text)
        if folder is None:  # an openai: endpoint (e.g. vLLM's own server) takes no local options
            extra = {}
        opened = open_guard(text, BackendChoice(backend=backend, concurrency=batch_size), **extra)
        summary = TrainingSummary.find(folder) if folder is not None else None
        mode = summary.mode if summary is not None else None
        taxonomy, policy = guard_policy(None, None, getattr(opened, "guard_taxonomy", None),
                                        getattr(opened, "guard_policy", None), text)
        style = getattr(opened, "guard_prompt_style", "full")
        dual = mode == "dual"
        scorer = GuardScorer(opened, taxonomy=taxonomy, policy=policy, dual=dual, style=style)
        return cls(name=name, scorer=scorer, backend=opened, mode=mode, dual=dual, taxonomy=taxonomy,
                   policy=policy, style=style, reasoning_max_tokens=reasoning_max_tokens)

    def describe(self) -> dict[str, Any]:
        """What the service reports about its guard (GET /ready)."""
        return {"model": self.name, "mode": self.mode, "taxonomy": self.taxonomy,
                "policy": "custom" if self.policy else None, "prompt_style": self.style,
                "backend": getattr(self.backend, "kind", "rule")}

    # ------------------------------------------------------------------ moderation

    def policy_key(self, taxonomy: Any, policy: Any) -> PolicyKey:
        """The (taxonomy, policy) a request is scored with: its own, else the guard's."""
        for key, value in (("taxonomy", taxonomy), ("policy", policy)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad(f"{key} must be a non-empty string", key)
        if taxonomy is None and policy is None:
            return (self.taxonomy, self.policy)
        return (taxonomy, policy)

    def _scorer_for(self, key: PolicyKey) -> Any:
        if self.backend is None or key == (self.scorer.taxonomy, self.scorer.policy):
            return self.scorer
        from guardsmith.scoring import GuardScorer

        return GuardScorer(self.backend, taxonomy=key[0], policy=key[1], dual=self.dual, style=self.style)

    def check(self, key: PolicyKey, item: Item) -> None:
        """Render the item's guard prompt once so a bad taxonomy or text fails its own request (400)."""
        if self.backend is None:
            return
        try:
            self._scorer_for(key).messages(item.prompt, item.response)
        except GuardsmithError as exc:
            raise bad(str(exc), "taxonomy" if key[0] is not None else "input") from None

    def score_batch(self, key: PolicyKey, items: Sequence[Item]) -> list[float]:
        """P(unsafe) per item: response harm for pairs, prompt harm for prompts alone."""
        from guardsmith.filtered_system import check_scores

        scorer = self._scorer_for(key)
        out: list[float] = [0.0] * len(items)
        pairs = [i for i, it in enumerate(items) if it.response is not None]
        alone = [i for i, it in enumerate(items) if it.response is None]
        with self._lock:
            if pairs:
                got = check_scores(scorer.score([items[i].prompt for i in pairs],
                                                [items[i].response for i in pairs]), len(pairs))
                for i, v in zip(pairs, got):
                    out[i] = v
            if alone:
                got = check_scores(scorer.score_prompts([items[i].prompt for i in alone]), len(alone))
                for i, v in zip(alone, got):
                    out[i] = v
        return out

    def can_reason(self) -> str | None:
        """None when the guard can return reasoning, else why not."""
        if self.backend is None:
            return "a rule guard has no reasoning"
        if self.mode == "NR":
            return "this guard was trained without reasoning (mode NR)"
        return None

    def reason_batch(self, key: PolicyKey, items: Sequence[Item]) -> list[Reasoned]:
        """The guard's R-mode answer per item (greedy)."""
        from guardsmith.guard import parse_guard_output, render_guard_messages

        requests = [render_guard_messages({"prompt": it.prompt, "response": it.response, "taxonomy": key[0],
                                           "policy": key[1]}, "R", dual=self.dual,
                                          taxonomy=None if key[1] else key[0], style=self.style) for it in items]
        with self._lock:
            gens = self.backend.generate(requests, n=1, temperature=0.0, max_tokens=self.reasoning_max_tokens)
        out = []
        for (g,) in gens:
            answer = parse_guard_output(g.text)
            out.append(Reasoned(answer.reasoning or g.text, answer.prompt_harm, answer.response_harm, answer.parse_ok))
        return out

    # ------------------------------------------------------------------ chat

    @property
    def exact_logprobs(self) -> bool:
        """True when token log-probabilities can be computed (the in-process transformers model)."""
        return getattr(self.backend, "kind", "") == "transformers"

    def check_chat(self, req: ChatRequest) -> None:
        """Refuse (400) what this guard's backend cannot do for a chat request."""
        if self.backend is None:
            raise bad("a rule guard has no text model; use /v1/moderations", "model")
        if (req.logprobs or req.continue_final_message) and not self.exact_logprobs:
            what = "logprobs" if req.logprobs else "continue_final_message"
            raise bad(f"{what} needs the in-process transformers backend; ask the vLLM server behind this guard "
                      "directly", what)
        if req.continue_final_message and req.max_tokens != 1:
            raise bad("continue_final_message is supported with max_tokens 1 (answer probabilities)",
                      "continue_final_message")

    @staticmethod
    def chat_key(req: ChatRequest) -> tuple:
        """Requests with equal keys share one generate call; a seeded sampled request runs alone
        (its seed then decides its samples whatever else is in flight)."""
        alone = object() if (req.seed is not None and req.temperature > 0) else None
        return (req.n, req.temperature, req.top_p, req.max_tokens, req.seed if alone else None, req.stop,
                req.logprobs, req.top_logprobs, req.continue_final_message, alone)

    def chat_batch(self, key: tuple, reqs: Sequence[ChatRequest]) -> list[Any]:
        """(choices, prompt_tokens, completion_tokens) per request, or an APIError for a request refused."""
        first = reqs[0]
        with self._lock:
            if first.continue_final_message:
                return [self._next_token(r) for r in reqs]
            gens = self.backend.generate([r.messages for r in reqs], n=first.n, temperature=first.temperature,
                                         top_p=first.top_p, max_tokens=first.max_tokens, seed=first.seed,
                                         on_error="collect")
            out: list[Any] = []
            for r, gs in zip(reqs, gens):
                if gs and gs[0].error:
                    out.append(APIError(400, gs[0].error, param="messages", code="context_length_exceeded"
                                        if gs[0].error.startswith("too long") else None))
                    continue
                choices, completion_tokens = [], 0
                for g in gs:
                    text, stopped = cut_at_stop(g.text, r.stop)
                    reason = "stop" if stopped else g.finish_reason
                    entries = self._logprobs(r.messages, text, r.top_logprobs) if r.logprobs else None
                    completion_tokens += self._count(text) if stopped else int(g.completion_tokens)
                    choices.append(Choice(text, reason, entries))
                out.append((choices, int(gs[0].prompt_tokens) if gs else 0, completion_tokens))
            return out

    def _count(self, text: str) -> int:
        tok = getattr(self.backend, "tokenizer", None)
        return len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else len(text.split())

    def _entry(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> dict[str, Any]:
        tok = self.backend.tokenizer
        text = tok.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode()),
                "top_logprobs": [{"token": tok.decode([t]), "logprob": lp, "bytes": list(tok.decode([t]).encode())}
                                 for t, lp in top]}

    def _logprobs(self, messages: list[dict[str, str]], completion: str, k: int) -> list[dict[str, Any]]:
        """Log-probabilities of the answer's tokens (the answer re-tokenised, scored in one forward pass)."""
        be = self.backend
        torch = be._torch
        prompt_ids = be.tokenizer(be.render(messages), add_special_tokens=False)["input_ids"]
        ids = be.tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
        if not ids:
            return []
        with torch.inference_mode():
            logits = be.model(input_ids=torch.tensor([prompt_ids + ids], device=be.device),
                              logits_to_keep=len(ids) + 1).logits[0, :-1]
            lp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for j, t in enumerate(ids):
            top = lp[j].topk(k) if k else None
            pairs = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
            out.append(self._entry(t, float(lp[j, t]), pairs))
        return out

    def _next_token(self, req: ChatRequest) -> tuple[list[Choice], int, int]:
        """One token continuing the final assistant message (what answer-probability clients ask)."""
        be = self.backend
        torch = be._torch
        from guardsmith.inference.base import plain_messages

        text = be.tokenizer.apply_chat_template(plain_messages(req.messages), continue_final_message=True,
                                                tokenize=False)
        ids = be.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = be.model(input_ids=torch.tensor([ids], device=be.device), logits_to_keep=1).logits[0, -1]
            lp = torch.log_softmax(logits.float(), dim=-1)
        gen = torch.Generator().manual_seed(req.seed if req.seed is not None else 0)
        choices = []
        k = max(req.top_logprobs, 1)
        top = lp.topk(k)
        pairs = list(zip(top.indices.tolist(), top.values.tolist()))
        for _ in range(req.n):
            if req.temperature == 0:
                token = int(top.indices[0])
            else:
                probs = torch.softmax(lp.cpu() / req.temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=gen))
            entry = self._entry(token, float(lp[token]), pairs if req.top_logprobs else [])
            choices.append(Choice(entry["token"], "length", [entry] if req.logprobs else None))
        return choices, len(ids), req.n

    def close(self) -> None:
        closer = getattr(self.scorer, "close", None)
        if closer is not None:
            closer()
