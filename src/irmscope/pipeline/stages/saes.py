"""Stages ``saes-tuned`` and ``saes-base``: one SAE per site on each model's cached activations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.activations import ActivationStore
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.sae.sites import train_site_saes
from irmscope.stages import StageResult


@register
class SAEs(Stage):
    name = "saes"
    needs = ("activations",)
    per_model = True
    config_sections = ("sae",)

    def upstream(self, ctx: RunContext, model: str | None) -> list[StageResult]:
        return [ctx.finished[f"activations-{model}"]]

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        cache = ctx.finished[f"activations-{model}"].dir
        held_out = ActivationStore(cache / "held_out")
        _, metrics = train_site_saes(
            ActivationStore(cache / "train"),
            ctx.config.sae.train_config,
            work,
            held_out={site: held_out.read_all(site) for site in ctx.sites},
            seed=ctx.seed,
            progress=ctx.progress,
            held_out_positions=held_out.read_meta("position"),
        )
        return {"metrics": metrics}

    def result(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "saes": {label: ctx.finished[f"{self.name}-{label}"].summary["metrics"] for label in ctx.subjects}
        }
