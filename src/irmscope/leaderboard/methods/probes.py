"""Linear probes on the residual stream (the probe study) as reward estimates.

* The *reward probe* is fitted on known rewards of coverage completions, so it is supervised: each
  completion's estimate comes from a probe fitted on the other prompts' completions (cross-fitted by prompt).
* The *ratings probe* is fitted on human star ratings of reviews and never sees the known reward: it asks
  whether what the model represents as "a good review" is the reward it was tuned on.
"""

from __future__ import annotations

import numpy as np

from irmscope.leaderboard.base import Estimates, MethodInputs, RewardEstimator, register


class ProbeEstimate(RewardEstimator):
    needs = ("probes",)

    def __init__(self, name: str, key: str, description: str, supervised: bool) -> None:
        self.name, self.key, self.description, self.supervised = name, key, description, supervised

    def estimate(self, inputs: MethodInputs) -> Estimates | None:
        saved = np.load(inputs.stage("probes") / "coverage_estimates.npz")
        if f"{self.key}_tuned" not in saved:  # e.g. no ratings probe: the review source has no judgements
            return None
        return Estimates(tuned=saved[f"{self.key}_tuned"], base=saved[f"{self.key}_base"])


register(
    ProbeEstimate(
        "reward probe",
        "reward",
        "ridge probe on the residual stream at the best layer/position, fitted on known rewards "
        "(cross-fitted by prompt)",
        supervised=True,
    )
)
register(
    ProbeEstimate(
        "ratings probe",
        "ratings",
        "ridge probe fitted on human ratings of reviews (no known-reward labels), read at each "
        "completion's last token",
        supervised=False,
    )
)
