"""Safety taxonomies (Aegis 2.0, WildGuard) and free-text custom policies.

A row is classified against exactly one policy text, chosen in this order:

1. the row's own ``policy`` text (custom-policy data sets carry it per sample);
2. the ``taxonomy`` argument of the renderer (a built-in name or a :class:`Taxonomy`, e.g. a
   run-level policy made with :func:`custom_policy`);
3. the built-in taxonomy named by the row's ``taxonomy`` field.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guardsmith.errors import GuardsmithError
from guardsmith.vocabulary import AEGIS2_CATEGORIES, BUILT_IN_TAXONOMIES, SOURCE_VOCABULARIES, WILDGUARD_CATEGORIES

@dataclass(frozen=True)
class Taxonomy:
    """A policy the guard classifies against.

    ``text`` is the rendered block placed in prompts; ``custom`` is True for free-text policies;
    ``categories`` lists category names (empty for custom policies).
    """

    name: str
    text: str
    custom: bool = False
    categories: tuple[str, ...] = ()


def _aegis2() -> Taxonomy:
    lines = [f"{code}: {name}" for code, name in AEGIS2_CATEGORIES.items()]
    return Taxonomy("aegis2", "\n".join(lines), False, BUILT_IN_TAXONOMIES["aegis2"])


def _wildguard() -> Taxonomy:
    lines: list[str] = []
    for group, subs in WILDGUARD_CATEGORIES.items():
        lines.append(f"{group}:")
        lines.extend(f"  - {sub}" for sub in subs)
    return Taxonomy("wildguard", "\n".join(lines), False, BUILT_IN_TAXONOMIES["wildguard"])


TAXONOMIES: dict[str, Taxonomy] = {"aegis2": _aegis2(), "wildguard": _wildguard()}
_ALIASES = {"aegis": "aegis2", "aegis2.0": "aegis2", "wildguardmix": "wildguard"}


def get_taxonomy(name: str) -> Taxonomy:
    """Return the built-in taxonomy ``name`` (case-insensitive; ``wildguardmix`` is an alias)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TAXONOMIES:
        known = ", ".join(sorted(TAXONOMIES))
        raise GuardsmithError(
            f"unknown taxonomy {name!r}: known taxonomies are {known}; "
            "for any other policy put its text in the row's 'policy' field or pass a custom policy"
        )
    return TAXONOMIES[key]


def custom_policy(text: str, name: str = "custom") -> Taxonomy:
    """Wrap free policy text (e.g. a run-level policy) as a :class:`Taxonomy`."""
    if not isinstance(text, str) or not text.strip():
        raise GuardsmithError(f"custom policy {name!r} has empty text")
    return Taxonomy(name, text.strip(), True, ())


def resolve_policy(row: Mapping[str, Any], taxonomy: str | Taxonomy | None = None) -> Taxonomy:
    """Pick the policy for ``row``: its ``policy`` text, else ``taxonomy``, else ``row['taxonomy']``
    (a source's own category vocabulary, :data:`SOURCE_VOCABULARIES`, is prompted with its built-in
    counterpart)."""
    policy = row.get("policy")
    if isinstance(policy, str) and policy.strip():
        return custom_policy(policy, name=str(row.get("taxonomy") or "custom"))
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if taxonomy is not None:
        return get_taxonomy(taxonomy)
    name = row.get("taxonomy")
    if not name:
        raise GuardsmithError(
            f"interaction {row.get('id')!r} has neither a policy text nor a taxonomy name"
        )
    return get_taxonomy(SOURCE_VOCABULARIES.get(str(name).strip().lower(), name))


def policy_text(row: Mapping[str, Any], taxonomy: str | Taxonomy | None = None) -> str:
    """The categories/policy block for ``row`` (numbered S-codes for ``aegis2``)."""
    return resolve_policy(row, taxonomy).text
