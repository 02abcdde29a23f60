"""ToxicChat (``lmsys/toxic-chat``, config ``toxicchat0124``): CSV, prompt harm.

Only rows with ``human_annotation`` true are kept (the rest are dropped and counted).
``toxicity`` 1/0 -> ``prompt_harm`` harmful/unharmful on ``user_input``; toxic rows whose
``jailbreaking`` is 1 get the category ``jailbreaking``: an attack marker, not a WildGuard harm
category, so the rows' taxonomy is the source's own ``toxicchat`` (prompted with the built-in
``wildguard`` policy, :data:`guardsmith.vocabulary.SOURCE_VOCABULARIES`). ``model_output`` is
not used (the labels are about the user input), so records are prompt-only. Ids: ``conv_id``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardsmith.sources.base import RowContext, SourceAdapter, boolean, flag01, harm_word, own_id, prompt_text


class ToxicChat(SourceAdapter):
    """ToxicChat (lmsys/toxic-chat, toxicchat0124): prompt toxicity, human-annotated rows only."""

    name = "toxicchat"
    taxonomy = "toxicchat"
    file_format = "csv"
    hf_dataset = "lmsys/toxic-chat"
    hf_splits = {"train": ("toxicchat0124", "train"), "test": ("toxicchat0124", "test")}
    files = {
        "train": ("data/0124/toxic-chat_annotation_train.csv",),
        "test": ("data/0124/toxic-chat_annotation_test.csv",),
    }

    def convert(self, rec: Mapping[str, Any], ctx: RowContext) -> Iterator[dict[str, Any]]:
        if not boolean(rec, "human_annotation", ctx):
            ctx.tally.drop("human_annotation is false")
            return
        toxic = flag01(rec, "toxicity", ctx)
        jailbreak = flag01(rec, "jailbreaking", ctx, nullable=True) if "jailbreaking" in rec else None
        prompt = prompt_text(rec, "user_input", ctx)
        if prompt is None:
            return
        yield self.record(ctx, prompt, id=own_id(rec, "conv_id", ctx), prompt_harm=harm_word(toxic),
                          categories=["jailbreaking"] if toxic and jailbreak else [])


ADAPTER = ToxicChat()
