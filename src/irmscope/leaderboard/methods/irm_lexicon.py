"""The main paper's implicit reward model (§4.3): the lexicon R reconstructs from SAE features, used as a
reward. A completion's estimate is its score under the same lexicon scorer as the known reward, with the
reconstructed word values in place of the true ones (only the held-out words R was applied to)."""

from __future__ import annotations

import json

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register
from irmscope.rewards.lexicon import Lexicon, LexiconReward


class ReconstructedLexicon(RewardEstimator):
    needs = ("elicit",)

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.name = f"IRM lexicon ({variant})"
        self.description = (
            f"SAE-feature regression R ({variant} variant) applied to held-out lexicon words; completions "
            "scored with the reconstructed values"
        )

    def estimate(self, inputs: MethodInputs) -> Estimates:
        elicitation = json.loads((inputs.stage("elicit") / "elicitation.json").read_text())
        texts = inputs.coverage.texts

        def scores(label: str):
            values = elicitation[label]["reconstructed"][self.variant]
            return LexiconReward(Lexicon(values, source=f"R {self.variant} ({label})")).score(texts)

        return Estimates(tuned=scores("tuned"), base=scores("base"))


for _variant in ("faithful", "ridge-delta"):
    register(ReconstructedLexicon(_variant))
