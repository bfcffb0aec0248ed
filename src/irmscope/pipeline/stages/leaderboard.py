"""Stage ``leaderboard``: every registered reward-elicitation method scored on the same held-out
completions, each beside its base-model control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from joblib import parallel_config

from irmscope.artifacts import CoverageLikelihoods
from irmscope.io import write_json
from irmscope.leaderboard import METHODS, MethodInputs, build_leaderboard
from irmscope.models import load_model
from irmscope.models.precision import resolve_precision
from irmscope.models.reading import CompletionLikelihoods
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import Stage, register
from irmscope.pipeline.stages.probes import coverage
from irmscope.stages import PART_SECONDS


@register
class Leaderboard(Stage):
    name = "leaderboard"
    # 2: inverse RL fitted within prompts, CCS normalised once, NaN resamples counted; 3: inverse RL enters
    # each pair once (irmscope.irl.pair_design), so its fits agree with version 2's to the solver's tolerance
    version = 3
    needs = ("probes", "evaluate", "read-samples", "elicit")
    result_key = "leaderboard"
    requires = ("tuned", "probes")

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        probes = ctx.config.probes
        return {
            "bootstrap_resamples": probes.bootstrap_resamples,
            "beta": ctx.config.tune.beta,
            "seed": ctx.seed,
            "methods": sorted(METHODS),  # a new method module recomputes the board
            "dpo_model": probes.dpo_model,
            "data": ctx.config.data.source,  # reviews to cut contrast pairs from
            "readout_precision": resolve_precision(ctx.config.activations.precision),
        }

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        probes = ctx.config.probes
        finished = {
            name: ctx.finished[name].dir
            for name in ("probes", "read-samples", "elicit")
            if name in ctx.finished
        }
        others = {"dpo": load_model(probes.dpo_model)} if probes.dpo_model else {}
        device = next(ctx.tuned.model.parameters()).device
        inputs = MethodInputs(
            coverage(ctx),
            ctx.tuned,
            ctx.base,
            finished,
            ctx.config.tune.beta,
            ctx.seed,
            others,
            lexicon=ctx.lexicon,
            review_texts=list(ctx.reviews("contexts")["text"]),
            read_likelihoods={
                label: CompletionLikelihoods(**fields)
                for label, fields in CoverageLikelihoods.load(ctx.finished["read-samples"].dir).fields.items()
            },
            readout_precision=resolve_precision(ctx.config.activations.precision, device),
        )
        # inverse RL fits its read-outs in worker processes: about 1.7x faster than threads here, where
        # scikit-learn's Python around liblinear holds the GIL. The backend must be named: joblib 1.6 runs
        # Parallel() in the calling thread when parallel_config sets n_jobs alone
        with parallel_config(backend="loky", n_jobs=torch.get_num_threads()):
            result = build_leaderboard(inputs, n_resamples=probes.bootstrap_resamples, progress=ctx.progress)
        seconds = result.pop("seconds")  # varies from run to run: bookkeeping, not a result
        write_json(work / self.result_file, result)
        return {"methods": [row["method"] for row in result["rows"]], PART_SECONDS: seconds}
