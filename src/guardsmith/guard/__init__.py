"""Guard model I/O: taxonomies and policies, prompt rendering, output parsing (method A.2-A.6).

Submodules imported on their own: `guardsmith.guard.examples` (guard rows -> SFT training
examples, shared by the sft and continual stages) and `guardsmith.guard.trace_checks`
(trace-quality text checks, shared by the filter stage and the offline stand-in teacher).
"""
from __future__ import annotations

from guardsmith.guard.parser import (
    GuardAnswer,
    parse_guard_output,
    parse_ok_for,
    sentence_count,
    split_reasoning,
    strip_think,
    word_count,
)
from guardsmith.guard.prompts import (
    MAX_BUDGET,
    MIN_BUDGET,
    MODE_TAGS,
    NO_RESPONSE,
    PROMPT_STYLES,
    THINK_END,
    THINK_START,
    has_response,
    parse_judge_output,
    prompt_style_of,
    render_guard_answer,
    render_guard_messages,
    render_guard_target,
    render_judge_messages,
    render_rewrite_messages,
    render_teacher_messages,
)
from guardsmith.guard.taxonomy import (
    AEGIS2_CATEGORIES,
    TAXONOMIES,
    WILDGUARD_CATEGORIES,
    Taxonomy,
    custom_policy,
    get_taxonomy,
    policy_text,
    resolve_policy,
)
from guardsmith.vocabulary import TASKS

# Transitional alias for guard_runner (label words and task names live in guardsmith.vocabulary).
FIELDS = TASKS

__all__ = [
    "AEGIS2_CATEGORIES", "FIELDS", "MAX_BUDGET", "MIN_BUDGET", "MODE_TAGS", "NO_RESPONSE", "PROMPT_STYLES",
    "TAXONOMIES", "THINK_END", "THINK_START", "WILDGUARD_CATEGORIES", "GuardAnswer", "Taxonomy",
    "custom_policy", "get_taxonomy", "has_response", "parse_guard_output", "parse_judge_output",
    "parse_ok_for", "policy_text", "prompt_style_of", "render_guard_answer", "render_guard_messages",
    "render_guard_target", "render_judge_messages", "render_rewrite_messages",
    "render_teacher_messages", "resolve_policy", "sentence_count", "split_reasoning",
    "strip_think", "word_count",
]
