"""Stage ``divergence``: per-layer parameter distance between tuned and base model (§4.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.evaluate import model_upstream
from irmscope.stages import StageResult
from irmscope.tune import layer_divergence, top_layers


@register
class Divergence(Stage):
    name = "divergence"
    needs = ("prompts", "tune")
    result_key = "divergence"
    requires = ("tuned",)

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        return {"tuned": ctx.config.model.tuned, "n_layers": ctx.config.activations.n_layers}

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        return model_upstream(ctx)

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        per_layer = layer_divergence(ctx.base, ctx.tuned)
        return {"per_layer": per_layer, "top_layers": top_layers(per_layer, ctx.config.activations.n_layers)}
