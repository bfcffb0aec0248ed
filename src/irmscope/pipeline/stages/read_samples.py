"""Stage ``read-samples``: both models read the evaluation samples once, for every method that reads them.

The evaluation's likelihood half (KL, perplexities, and the likelihoods the leaderboard's DPO-implicit and
endogenous rewards use), the policy shift (elicit), the blind audit's word shifts and dictionaries (audit)
and the reward probes' read-outs (probes, and from them inverse RL, CCS and attribution) each need a
forward pass of the tuned and the base model over the same prompt + completion texts. Each used to run its
own; here one pass per batch serves them all (:func:`~irmscope.models.reading.read_pairs`), and each gets a
typed artifact: :class:`~irmscope.artifacts.CoverageLikelihoods` with the evaluation's statistics,
:class:`~irmscope.elicit.policy_shift.ShiftLevels`, :class:`~irmscope.audit.shift.UnitShifts` and the
:class:`~irmscope.probes.residuals.Residuals` of each model.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.artifacts import LIKELIHOOD_EVALUATION, CoverageLikelihoods, coverage_residuals_file
from irmscope.audit.inside import divergence_site
from irmscope.audit.shift import UnitSums, vocabulary_words
from irmscope.elicit.continuations import word_token_ids
from irmscope.elicit.policy_shift import LevelSums
from irmscope.io import write_json
from irmscope.models.reading import Reader, read_pairs
from irmscope.pipeline.context import RunContext
from irmscope.pipeline.registry import STAGES, Stage, register
from irmscope.probes.residuals import ResidualReadout, model_layers, save_residuals
from irmscope.tune.evaluate import coverage_statistics, likelihood_evaluation


def first_of_each_side(n_samples: int, n: int) -> np.ndarray:
    """Rows of the coverage order (every base sample, then every tuned one) that are among the first ``n``
    samples of their model."""
    keep = np.arange(min(n, n_samples))
    return np.concatenate([keep, n_samples + keep])


@register
class ReadSamples(Stage):
    name = "read-samples"
    needs = ("evaluate",)
    requires = ("tuned",)

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        audit = ctx.config.audit
        return {
            "policy_shift_texts": ctx.config.elicit.n_shift_texts if self._shift(ctx) else None,
            "audit": {"n_prompts": audit.n_prompts, "crosscoder": audit.crosscoder},
            "probes": ctx.config.probes.enabled,
            "seed": ctx.seed,  # the evaluation statistics' bootstrap
        }

    @staticmethod
    def _shift(ctx: RunContext) -> bool:
        """Whether the elicit stage runs, so the policy shift's levels are needed."""
        return STAGES["elicit"].applies(ctx)

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        samples, config = ctx.samples, ctx.config
        n = len(samples.prompts)
        readers: dict[str, Reader] = {"evaluation": coverage_statistics(n)}
        if self._shift(ctx):
            rows = first_of_each_side(n, config.elicit.n_shift_texts)
            words = {form for word in ctx.lexicon for form in (word, word.lower())}  # elicit lowercases
            token_ids = sorted(set(word_token_ids(ctx.base.tokenizer, words).values()))
            readers["levels"] = LevelSums({"tuned": "tuned", "base": "reference"}, token_ids, rows)
        n_audit = min(config.audit.n_prompts, n)
        owner = np.full(2 * n, -1)
        owner[first_of_each_side(n, n_audit)] = np.tile(np.arange(n_audit), 2)
        site = divergence_site(ctx.tuned, ctx.base) if config.audit.crosscoder else None
        word_ids = list(vocabulary_words(ctx.base.tokenizer).values())
        readers["audit"] = UnitSums(word_ids, owner, np.repeat([0, 1], n), site)
        if config.probes.enabled:
            for label, lm in (("tuned", ctx.tuned), ("base", ctx.base)):
                readers[label] = ResidualReadout(label, model_layers(lm, None), 2 * n)
        read_pairs(
            {"tuned": ctx.tuned, "base": ctx.base},
            samples.prompts * 2,
            samples.completions("base") + samples.completions("tuned"),
            list(readers.values()),
            progress=ctx.progress,
            desc="reading the samples",
        )
        evaluation = likelihood_evaluation(readers["evaluation"].result(), seed=ctx.seed)
        likelihoods = evaluation.pop("likelihoods")
        CoverageLikelihoods({label: asdict(values) for label, values in likelihoods.items()}).save(work)
        write_json(work / LIKELIHOOD_EVALUATION, evaluation)
        if "levels" in readers:
            readers["levels"].result().save(work)
        readers["audit"].result().save(work)
        for label in ("tuned", "base"):
            if label in readers:
                save_residuals(readers[label].result(), work / coverage_residuals_file(label))
        return {"n_texts": 2 * n, "read_for": sorted(readers), "audit_site": site}
