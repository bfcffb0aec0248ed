"""Stage ``sites``: the hook sites studied: the top-divergence layers, the last layers, or a given list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.models.adapters import site_name
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.evaluate import model_upstream
from irmscope.stages import StageResult


@register
class Sites(Stage):
    name = "sites"
    needs = ("divergence",)

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        return {
            "activations": config.activations.model_dump(),
            "subject": config.model.tuned or config.model.name,
        }

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        return [ctx.finished["divergence"]] if "divergence" in ctx.finished else model_upstream(ctx)

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        acts, n_layers = ctx.config.activations, ctx.base.n_layers
        if acts.layers != "top-divergence":
            layers = [layer % n_layers for layer in acts.layers]
        elif "divergence" in ctx.finished:
            layers = ctx.finished["divergence"].summary["top_layers"]
        else:  # no tuned model: the last layers
            layers = list(range(n_layers - acts.n_layers, n_layers))
        return {"sites": [site_name(layer, kind) for layer in sorted(layers) for kind in acts.kinds]}

    def result(self, ctx: RunContext) -> dict[str, Any]:
        return {"sites": ctx.sites}
