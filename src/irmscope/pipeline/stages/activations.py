"""Stages ``activations-tuned`` and ``activations-base``: cache each model's activations at the sites, on
reviews the SAEs train on and on others they are measured on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.activations import cache_activations
from irmscope.config import RunConfig
from irmscope.data import load_reviews
from irmscope.errors import IrmscopeError
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.stages import StageResult


def sae_corpus(config: RunConfig) -> dict[str, list[str]]:
    """Reviews the SAEs train on and others they are measured on (disjoint, seeded)."""
    acts = config.activations
    n = acts.n_texts + acts.n_held_out_texts
    texts = list(load_reviews(config.data.source, split=acts.split, seed=config.seed)["text"])[:n]
    if len(texts) < 2:
        raise IrmscopeError(f"{config.data.source} ({acts.split}) has too few reviews to train SAEs on")
    cut = max(1, min(acts.n_texts, len(texts) - acts.n_held_out_texts, len(texts) - 1))
    return {"train": texts[:cut], "held_out": texts[cut:]}


@register
class Activations(Stage):
    name = "activations"
    needs = ("sites",)
    per_model = True

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        return {
            "activations": config.activations.model_dump(),
            "data": config.data.source,
            "seed": ctx.seed,
            "model": config.model.tuned if model == "tuned" else config.model.name,
            "sites": ctx.sites,
        }

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        # the tuned model's identity comes through the sites (which read the tune stage)
        return [ctx.finished["sites"]] if model == "tuned" else []

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        acts = ctx.config.activations
        summary = {}
        for part, texts in sae_corpus(ctx.config).items():
            store = cache_activations(
                ctx.model(model), texts, ctx.sites, work / part, max_length=acts.max_length,
                batch_size=acts.batch_size, progress=ctx.progress,
            )  # fmt: skip
            summary[f"{part}_rows"] = store.n_rows
        return {**summary, "sites": ctx.sites, "model": ctx.subjects[model]}

    def result(self, ctx: RunContext) -> dict[str, Any]:
        return {"activations": {label: ctx.stage_outputs(f"{self.name}-{label}") for label in ctx.subjects}}
