"""Score every registered method against the known reward on one coverage set: the leaderboard."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from irmscope.leaderboard import methods as _methods  # noqa: F401 - importing registers every method
from irmscope.leaderboard.base import METHODS, MethodInputs, RewardEstimator
from irmscope.leaderboard.metrics import score_estimate


def available_methods(stages: Sequence[str]) -> list[RewardEstimator]:
    """The registered methods whose required stages are among ``stages``."""
    return [m for m in METHODS.values() if set(m.needs) <= set(stages)]


def build_leaderboard(
    inputs: MethodInputs,
    methods: Sequence[RewardEstimator] | None = None,
    n_resamples: int = 500,
    progress: bool = False,
) -> dict[str, Any]:
    """One row per method: its metrics for the tuned model and for the base model (the control); and
    ``seconds``, each method's wall time (its estimate and its scoring), which varies from run to run.
    With ``progress``, a bar over the methods (some take a minute or more on a 2-core CPU)."""
    cov = inputs.coverage
    policy = np.asarray(cov.policy)
    rows, seconds = [], {}
    chosen = list(methods) if methods is not None else available_methods(list(inputs.stages))

    def scored(estimate: np.ndarray) -> dict[str, Any]:
        return score_estimate(
            cov.true, estimate, cov.prompt_index, policy, n_resamples=n_resamples, seed=inputs.seed
        )

    with tqdm(chosen, desc="leaderboard", unit="method", disable=not progress) as bar:
        for method in bar:
            bar.set_postfix_str(method.name)
            start = time.perf_counter()
            estimates = method.estimate(inputs)
            if estimates is None:
                continue
            row: dict[str, Any] = {
                "method": method.name,
                "description": method.description,
                "supervised": method.supervised,
                "not_identified": not_identified(method),
                "tuned": scored(estimates.tuned),
                "base": None,
                "base_note": estimates.base_note,
                "details": estimates.details,
            }
            if estimates.base is not None:
                row["base"] = scored(estimates.base)
            rows.append(row)
            seconds[method.name] = round(time.perf_counter() - start, 2)
    return {
        "n_prompts": int(len(set(cov.prompt_index.tolist()))),
        "n_completions": len(cov.completions),
        "coverage": "held-out prompts, each completed once by the base and once by the tuned policy",
        "rows": rows,
        "seconds": seconds,
    }


#: every metric of :func:`irmscope.leaderboard.metrics.score_estimate`, in the report's order
METRICS = ("pearson", "spearman", "kendall", "pearson_within_policy", "preference_accuracy", "epic")


def not_identified(method: RewardEstimator) -> list[str]:
    """The metrics ``method``'s estimate does not identify (marked in the report, see ``identified``)."""
    return [] if method.identified is None else [m for m in METRICS if m not in method.identified]
