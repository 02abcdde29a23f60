"""The words guardsmith's tables, prompts, parsers and metrics share: label words, task names and
the category names of the built-in taxonomies.

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

# The built-in taxonomies' category names (their policy texts are rendered by guardsmith.guard.taxonomy).
AEGIS2_CATEGORIES: dict[str, str] = {
    "S1": "Violence",
    "S2": "Sexual",
    "S3": "Criminal Planning/Confessions",
    "S4": "Guns and Illegal Weapons",
    "S5": "Controlled/Regulated Substances",
    "S6": "Suicide and Self Harm",
    "S7": "Sexual (minor)",
    "S8": "Hate/Identity Hate",
    "S9": "PII/Privacy",
    "S10": "Harassment",
    "S11": "Threat",
    "S12": "Profanity",
    "S13": "Needs Caution",
    "S14": "Manipulation",
    "S15": "Fraud/Deception",
    "S16": "Malware",
    "S17": "High Risk Gov Decision Making",
    "S18": "Political/Misinformation/Conspiracy",
    "S19": "Copyright/Trademark/Plagiarism",
    "S20": "Unauthorized Advice",
    "S21": "Illegal Activity",
    "S22": "Immoral/Unethical",
}

WILDGUARD_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Privacy": (
        "Sensitive Information (Organization)",
        "Private Information (Individual)",
        "Copyright Violations",
    ),
    "Misinformation": (
        "False or Misleading Information",
        "Material Harm by Misinformation",
    ),
    "Harmful language": (
        "Social Stereotypes & Discrimination",
        "Violence and Physical Harm",
        "Toxic Language & Hate Speech",
        "Sexual Content",
    ),
    "Malicious uses": (
        "Cyberattacks",
        "Fraud & Assisting Illegal Activities",
        "Encouraging Unethical/Unsafe Actions",
        "Mental Health & Over-Reliance Crisis",
    ),
}

BUILT_IN_TAXONOMIES: dict[str, tuple[str, ...]] = {
    "aegis2": tuple(AEGIS2_CATEGORIES.values()),
    "wildguard": tuple(sub for subs in WILDGUARD_CATEGORIES.values() for sub in subs),
}
"""Each built-in taxonomy's category names."""

SOURCE_VOCABULARIES: dict[str, str] = {"jbb": "wildguard", "simplesafetytests": "wildguard", "toxicchat": "wildguard"}
"""Category vocabularies of data sets that are not policies (their rows keep the source's category
names, see docs/data-sources.md) -> the built-in taxonomy a guard is prompted with for such rows."""
