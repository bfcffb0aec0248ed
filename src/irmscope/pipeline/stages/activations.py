"""Stages ``activations-tuned`` and ``activations-base``: cache each model's activations at the sites, on
reviews the SAEs train on, on others they are measured on (and the features explained on), and, for the
tuned model, on a third set read by Table 6 alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irmscope.activations import cache_activations
from irmscope.config import RunConfig
from irmscope.data import load_reviews
from irmscope.errors import IrmscopeError
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register, section_values
from irmscope.stages import StageResult


def sae_corpus(config: RunConfig, prompts: Sequence[str] = ()) -> dict[str, list[str]]:
    """Reviews the SAEs train on (``train``), others they are measured on and whose top contexts pick the
    reward-related features (``held_out``), and a third set for Table 6 alone (``table6``), all from one
    seeded order of ``activations.split``.

    ``table6`` reads on in that order past the first two and keeps only reviews that differ *in content*
    from every SAE text (a source may repeat a review) and do not begin with any of ``prompts`` (tuning
    prompts come from the train split too), so Table 6 counts feature firing on text that chose nothing.
    It is empty when the source has no such review left."""
    acts = config.activations
    n = acts.n_texts + acts.n_held_out_texts
    order = list(load_reviews(config.data.source, split=acts.split, seed=config.seed)["text"])
    texts = order[:n]
    if len(texts) < 2:
        raise IrmscopeError(f"{config.data.source} ({acts.split}) has too few reviews to train SAEs on")
    cut = max(1, min(acts.n_texts, len(texts) - acts.n_held_out_texts, len(texts) - 1))
    return {
        "train": texts[:cut],
        "held_out": texts[cut:],
        "table6": unseen_texts(order[n:], set(texts), prompts, acts.n_table6_texts),
    }


def unseen_texts(candidates: Sequence[str], seen: set[str], prompts: Sequence[str], n: int) -> list[str]:
    """The first ``n`` of ``candidates`` whose stripped text is none of ``seen`` (stripped), begins with
    none of ``prompts`` and repeats no earlier pick: texts no other use has read."""
    seen_texts = {text.strip() for text in seen}
    starts = tuple(p.strip() for p in prompts if p.strip())
    kept: list[str] = []
    for text in candidates:
        key = text.strip()
        if key in seen_texts or (starts and key.startswith(starts)):
            continue
        seen_texts.add(key)
        kept.append(text)
        if len(kept) == n:
            break
    return kept


@register
class Activations(Stage):
    name = "activations"
    needs = ("sites",)
    per_model = True

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        config = ctx.config
        return {
            "activations": section_values(config.activations),
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
        prompts = ctx.prompts if "prompts" in ctx.finished else None
        corpus = sae_corpus(ctx.config, (prompts.test + (prompts.train or [])) if prompts else ())
        if model != "tuned" or not corpus["table6"]:  # Table 6 reads the tuned model's activations only
            corpus.pop("table6")
        summary = {}
        for part, texts in corpus.items():
            store = cache_activations(
                ctx.model(model), texts, ctx.sites, work / part, max_length=acts.max_length,
                batch_size=acts.batch_size, precision=acts.precision, progress=ctx.progress,
            )  # fmt: skip
            summary[f"{part}_rows"] = store.n_rows
        return {**summary, "sites": ctx.sites, "model": ctx.subjects[model]}

    def result(self, ctx: RunContext) -> dict[str, Any]:
        return {"activations": {label: ctx.stage_outputs(f"{self.name}-{label}") for label in ctx.subjects}}
