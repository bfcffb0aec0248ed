"""An unsupervised reward direction (CCS) as a reward estimate (see :mod:`irmscope.probes.ccs`).

Contrast pairs are the positive and negative texts of the contrastive triples the IRM regression uses,
cut from unlabelled reviews with the known reward's lexicon (which words are rewarded is the one thing
the pairs take from it; no value and no completion's reward is used). The probe is fitted at every block
on the residual stream at the sentiment word; the block with the lowest CCS loss on held-out pairs is
kept (an unsupervised choice), and the estimate of a completion is the probe's score of its text's
mean-pooled read-out (prompt and completion) at that block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irmscope.artifacts import coverage_residuals_file
from irmscope.data.triples import short_contrastive_triples
from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register
from irmscope.probes.ccs import fit_ccs_layers
from irmscope.probes.residuals import load_residuals, read_residuals

#: contrast pairs fitted
N_PAIRS = 400


class ContrastConsistentSearch(RewardEstimator):
    name = "CCS direction (unsupervised)"
    description = (
        "contrast-consistent search on the residual stream at the rewarded/penalised word of contrast pairs "
        "cut from reviews with the reward's lexicon (no reward values), block chosen by held-out CCS loss, "
        "read on each text's mean-pooled residual (prompt and completion)"
    )
    needs = ("read-samples",)

    def estimate(self, inputs: MethodInputs) -> Estimates | None:
        if inputs.lexicon is None or not inputs.review_texts:
            return None  # no lexicon to cut contrast pairs with (a classifier reward, say)
        triples = short_contrastive_triples(
            inputs.review_texts, inputs.lexicon, inputs.base.tokenizer, N_PAIRS, inputs.seed
        )
        if len(triples) < 10:
            return None
        out: dict[str, np.ndarray] = {}
        details: dict[str, Any] = {"n_pairs": len(triples)}
        for label, lm in (("tuned", inputs.tuned), ("base", inputs.base)):
            texts = [t.positive for t in triples] + [t.negative for t in triples]
            read = {"max_length": None, "progress": False, "precision": inputs.readout_precision}
            at_word = read_residuals(lm, [""] * len(texts), texts, **read).last
            positive, negative = at_word[: len(triples)], at_word[len(triples) :]
            coverage = load_residuals(inputs.stage("read-samples") / coverage_residuals_file(label))
            probes = dict(
                zip(coverage.layers, fit_ccs_layers(positive, negative, seed=inputs.seed), strict=True)
            )
            layer = min(probes, key=lambda k: probes[k].held_out_loss)
            out[label] = probes[layer].score(coverage.at("mean_pooled", layer))
            details[label] = {
                "layer": layer,
                "held_out_loss": probes[layer].held_out_loss,
                "held_out_pair_accuracy": probes[layer].held_out_pair_accuracy,
                "held_out_loss_by_layer": {k: p.held_out_loss for k, p in probes.items()},
            }
        return Estimates(tuned=out["tuned"], base=out["base"], details=details)


register(ContrastConsistentSearch())
