"""Stage ``planted-lexicon``: draw a reward the base model cannot know (``reward.spec: planted``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import PLANTED_LEXICON
from irmscope.data import load_reviews
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.rewards.planted import planted_lexicon

#: Training reviews a planted lexicon's word frequencies are counted on.
PLANTED_TEXTS = 5000


@register
class PlantedLexicon(Stage):
    name = "planted-lexicon"

    def applies(self, ctx: RunContext) -> bool:
        return ctx.config.reward.spec.strip().lower() == "planted"

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        return {"reward": config.reward.model_dump(), "data": config.data.source, "model": config.model.name}

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        config = ctx.config
        texts = list(
            load_reviews(config.data.source, split="train", limit=PLANTED_TEXTS, seed=ctx.seed)["text"]
        )
        lexicon = planted_lexicon(
            texts, ctx.base.tokenizer, n_words=config.reward.planted_words, seed=config.reward.planted_seed
        )
        lexicon.to_tsv(work / PLANTED_LEXICON)
        return {"n_words": len(lexicon)}
