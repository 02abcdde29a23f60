"""WildGuardMix (``allenai/wildguardmix``): train/test Parquet, all three tasks, WildGuard taxonomy.

Columns used: ``prompt``, ``response`` (None for prompt-only rows), ``prompt_harm_label``,
``response_harm_label``, ``response_refusal_label`` (words as in the record, or None) and
``subcategory``. The subcategory becomes the record's single category when the row has a harmful
label and the subcategory is not ``benign``, written with the WildGuard taxonomy's display name
(:data:`SUBCATEGORY_NAMES`, method A.2); an unlisted subcategory is kept as is (categories are
not labels). There is no id column: ids are derived.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import HARM, REFUSAL, RowContext, SourceAdapter, blank_to_none, label, prompt_text, text

SUBCATEGORY_NAMES = {
    "private_information_individual": "Private Information (Individual)",
    "sensitive_information_organization_government": "Sensitive Information (Organization)",
    "copyright_violations": "Copyright Violations",
    "disseminating_false_or_misleading_information_encouraging_disinformation_campaigns": "False or Misleading Information",
    "causing_material_harm_by_disseminating_misinformation": "Material Harm by Misinformation",
    "social_stereotypes_and_unfair_discrimination": "Social Stereotypes & Discrimination",
    "violence_and_physical_harm": "Violence and Physical Harm",
    "toxic_language_hate_speech": "Toxic Language & Hate Speech",
    "sexual_content": "Sexual Content",
    "cyberattack": "Cyberattacks",
    "fraud_assisting_illegal_activities": "Fraud & Assisting Illegal Activities",
    "defamation_encouraging_unethical_or_unsafe_actions": "Encouraging Unethical/Unsafe Actions",
    "mental_health_over-reliance_crisis": "Mental Health & Over-Reliance Crisis",
    "others": "Others",
}
"""WildGuardMix ``subcategory`` values -> WildGuard taxonomy names (``benign`` has none)."""


class WildGuardMix(SourceAdapter):
    """WildGuardMix (allenai/wildguardmix): prompt harm, response harm, refusal; WildGuard taxonomy."""

    name = "wildguardmix"
    file_format = "parquet"
    hf_dataset = "allenai/wildguardmix"
    hf_splits = {"train": ("wildguardtrain", "train"), "test": ("wildguardtest", "test")}
    files = {"train": ("train/wildguard_train.parquet",), "test": ("test/wildguard_test.parquet",)}

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        prompt = prompt_text(rec, "prompt", ctx)
        if prompt is None:
            return
        response = blank_to_none(text(rec, "response", ctx, nullable=True))
        prompt_harm = label(rec, "prompt_harm_label", HARM, ctx, nullable=True, empty_is_null=True)
        response_harm = label(rec, "response_harm_label", HARM, ctx, nullable=True, empty_is_null=True)
        refusal = label(rec, "response_refusal_label", REFUSAL, ctx, nullable=True, empty_is_null=True)
        sub = (text(rec, "subcategory", ctx, nullable=True) or "").strip()
        harmful = "harmful" in (prompt_harm, response_harm if response is not None else None)
        categories = [SUBCATEGORY_NAMES.get(sub, sub)] if harmful and sub and sub != "benign" else []
        yield self.record(ctx, prompt, response=response, prompt_harm=prompt_harm, response_harm=response_harm,
                          response_refusal=refusal, categories=categories)


ADAPTER = WildGuardMix()
