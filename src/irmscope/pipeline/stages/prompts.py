"""Stage ``prompts``: the review prefixes the model is tuned on (train) and evaluated on (test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope import artifacts
from irmscope.data import truncate_to_prefixes
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register, section_settings


@register
class Prompts(Stage):
    name = "prompts"
    reads = ()

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        extra = {"model": ctx.config.model.name, "n_train": ctx.config.tune.n_train_prompts}
        return {**section_settings(ctx, "data"), **extra}

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        config = ctx.config
        prompts = {}
        for split, n in (("test", config.data.n_prompts), ("train", config.tune.n_train_prompts)):
            if split == "train" and not ctx.tunes_a_model:
                continue
            prompts[split] = review_prefixes(ctx, "train" if split == "train" else None, n)
        artifacts.Prompts(test=prompts["test"], train=prompts.get("train")).save(work)
        return {split: len(values) for split, values in prompts.items()}


def review_prefixes(ctx: RunContext, split: str | None, n: int) -> list[str]:
    """The first ``n`` usable prompts of ``split`` (None: the evaluation split) in the prompts' seeded order:
    the training prompts are the first ``tune.n_train_prompts`` of the train split's."""
    reviews = ctx.reviews("prompts", split=split)
    return truncate_to_prefixes(
        list(reviews["text"]), ctx.base.tokenizer, ctx.config.data.prefix_tokens, limit=n
    )
