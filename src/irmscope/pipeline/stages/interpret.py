"""Stage ``interpret``: explain the tuned model's SAE features and pick the reward-related ones (Table 5's
input), with a second dictionary pair to check that features recur across SAE trainings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from irmscope.activations import ActivationStore
from irmscope.interpret import build_explainer, interpret_features
from irmscope.io import write_json
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.sae.sites import train_site_saes

#: the pair SAEs' seed offset from the run's seed, so they are a second, independent training
PAIR_SEED_OFFSET = 100


@register
class Interpret(Stage):
    name = "interpret"
    version = 2  # 2: the offline explainer is labelled an offline lexicon heuristic
    needs = ("saes",)
    result_key = "interpretation"
    requires = ("tuned",)
    config_sections = ("interpret", "sae", "reward")
    reads = ("saes-tuned",)

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        settings, cache = ctx.config.interpret, ctx.finished["activations-tuned"].dir
        held_out = ActivationStore(cache / "held_out")
        pair_saes, pair_metrics = train_site_saes(
            ActivationStore(cache / "train"),
            ctx.config.sae.model_copy(update={"expansion": settings.pair_expansion}).train_config,
            work / "pair-saes",
            held_out={site: held_out.read_all(site) for site in ctx.sites},
            seed=ctx.seed + PAIR_SEED_OFFSET,
            progress=ctx.progress,
            held_out_positions=held_out.read_meta("position"),
        )
        result = interpret_features(
            ctx.saes("tuned"),
            pair_saes,
            store=held_out,
            tokenizer=ctx.tuned.tokenizer,
            lexicon=ctx.lexicon,
            reward_description=ctx.reward.description,
            explainer=build_explainer(
                settings.explainer, settings.base_url, settings.model, settings.api_key_env
            ),
            top_k=settings.top_k,
            n_contexts=settings.n_contexts,
        )
        result["pair_saes"] = pair_metrics
        write_json(work / self.result_file, result)
        return {key: result[key] for key in ("explainer", "n_explained", "n_related", "related")}
