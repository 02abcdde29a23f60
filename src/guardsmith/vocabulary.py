"""The words guardsmith's tables, prompts, parsers and metrics share: label words and task names.

Every module that needs a label word or a task name imports it from here; nothing else defines
them. Data-set adapters map each source's own words onto these.
"""
from __future__ import annotations

HARM_LABELS: tuple[str, ...] = ("harmful", "unharmful")
"""Label words of ``prompt_harm``, ``response_harm`` and their predictions."""
REFUSAL_LABELS: tuple[str, ...] = ("refusal", "compliance")
"""Label words of ``response_refusal`` and its prediction."""
TASKS: tuple[str, ...] = ("prompt_harm", "response_harm", "response_refusal")
"""The three classification tasks of a guard model; each is also an interactions column."""
HARM_TASKS: tuple[str, ...] = ("prompt_harm", "response_harm")
"""The tasks harmful F1 is reported (and gated) on."""
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "prompt_harm": HARM_LABELS,
    "response_harm": HARM_LABELS,
    "response_refusal": REFUSAL_LABELS,
}
"""Vocabulary of each task."""
TASK_POSITIVE: dict[str, str] = {"prompt_harm": "harmful", "response_harm": "harmful", "response_refusal": "refusal"}
"""The positive class of each task (the class F1 is computed for)."""
TASK_TITLES: dict[str, str] = {
    "prompt_harm": "Prompt harm",
    "response_harm": "Response harm",
    "response_refusal": "Response refusal",
}
"""How each task is titled in guard prompts and outputs."""
TASK_SHORT: dict[str, str] = {"prompt_harm": "prompt", "response_harm": "response", "response_refusal": "refusal"}
"""Short column names of each task in reports."""
NONE_WORD = "None"
"""The answer a guard gives for a response task when there is no response."""
UNLABELLED = "unlabelled"
"""Filter word for rows without a label (not a label word)."""
MODES: tuple[str, ...] = ("R", "NR")
"""Guard output modes: with reasoning (R) and without (NR)."""
