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
from irmscope.pipeline.registry import Stage, register
from irmscope.probes.residuals import ResidualReadout, model_layers, save_residuals
from irmscope.tune.evaluate import coverage_statistics, likelihood_evaluation


@register
class ReadSamples(Stage):
    name = "read-samples"
    needs = ("evaluate",)
    requires = ("tuned",)

    def settings(self, ctx: RunContext, model: str | None) -> dict[str, Any]:
        # what it reads depends on the samples (the evaluate stage's key) alone: every sample, every word
        # shift, every layer, whatever share of them a reader's settings use, so that changing one reader's
        # settings (audit.n_prompts, elicit.n_shift_texts, ...) recomputes that reader only
        return {"seed": ctx.seed}  # the evaluation statistics' bootstrap

    def compute(self, ctx: RunContext, work: Path, model: str | None) -> dict[str, Any]:
        samples = ctx.samples
        n = len(samples.prompts)
        readers: dict[str, Reader] = {"evaluation": coverage_statistics(n)}
        if ctx.lexicon is not None:  # the policy shift's words
            words = {form for word in ctx.lexicon for form in (word, word.lower())}  # elicit lowercases
            token_ids = sorted(set(word_token_ids(ctx.base.tokenizer, words).values()))
            readers["levels"] = LevelSums({"tuned": "tuned", "base": "reference"}, token_ids, 2 * n)
        site = divergence_site(ctx.tuned, ctx.base)  # where the audit's dictionaries read
        word_ids = list(vocabulary_words(ctx.base.tokenizer).values())
        readers["audit"] = UnitSums(word_ids, np.tile(np.arange(n), 2), np.repeat([0, 1], n), site)
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
            save_residuals(readers[label].result(), work / coverage_residuals_file(label))
        return {"n_texts": 2 * n, "read_for": sorted(readers), "audit_site": site}
