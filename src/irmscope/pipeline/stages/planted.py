"""Stage ``planted-lexicon``: draw a reward the base model cannot know (``reward.spec: planted``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.artifacts import PLANTED_LEXICON
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.rewards.planted import planted_lexicon_of_reviews


@register
class PlantedLexicon(Stage):
    name = "planted-lexicon"

    def applies(self, ctx: RunContext) -> bool:
        return ctx.config.reward.spec.strip().lower() == "planted"

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        return {"reward": config.reward.model_dump(), "data": config.data.source, "model": config.model.name}

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        reward = ctx.config.reward
        lexicon = planted_lexicon_of_reviews(
            ctx.config.data.source,
            ctx.base.tokenizer,
            n_words=reward.planted_words,
            seed=reward.planted_seed,
            reviews_seed=ctx.seed,
        )
        lexicon.to_tsv(work / PLANTED_LEXICON)
        return {"n_words": len(lexicon)}
