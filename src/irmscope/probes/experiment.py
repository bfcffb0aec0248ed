"""The probe study as a pipeline stage: reward probes and human-ratings probes for the tuned and the base
model, their estimates for the leaderboard's coverage completions, and the directions steering uses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from irmscope.artifacts import probe_file
from irmscope.data.samples import Coverage
from irmscope.errors import IrmscopeError
from irmscope.models.adapters import site_name
from irmscope.models.loading import LoadedModel
from irmscope.probes.residuals import Residuals
from irmscope.probes.study import ProbeStudy, probe_study
from irmscope.sae.model import SAE

if TYPE_CHECKING:
    from irmscope.config import ProbesSection


def review_targets(reviews: pd.DataFrame, n: int) -> tuple[list[str], np.ndarray, str] | None:
    """The first ``n`` reviews and their human judgement in [-1, 1]: 1-10 star ratings mapped linearly
    when the source has them, else the binary label as -1/+1; ``None`` when it has neither."""
    if "rating" in reviews and reviews["rating"].notna().any():
        rows = reviews[reviews["rating"].notna()].iloc[:n]
        return list(rows["text"]), ((rows["rating"].astype(float) - 1) / 9 * 2 - 1).to_numpy(), "ratings"
    if "label" in reviews and reviews["label"].notna().any():
        rows = reviews[reviews["label"].notna()].iloc[:n]
        return list(rows["text"]), rows["label"].astype(float).to_numpy() * 2 - 1, "labels"
    return None


def _apply(study: ProbeStudy, coverage_study: ProbeStudy) -> np.ndarray:
    """``study``'s chosen probe read on the coverage completions (whose read-outs ``coverage_study`` holds)
    at the same layer and position."""
    best = study.summary["best"]
    return study.probe.predict(coverage_study.residuals.at(best["position"], best["layer"]))


def reward_probe_study(
    models: Mapping[str, LoadedModel],
    coverage: Coverage,
    reviews: pd.DataFrame,
    settings: ProbesSection,
    out_dir: Path,
    seed: int = 0,
    progress: bool = True,
    coverage_residuals: Mapping[str, Residuals] | None = None,
) -> dict[str, Any]:
    """Probe the known reward of the coverage completions and the human judgement of reviews with each
    model (the error-against-position curve for the reward only: the study plots it for completions).
    ``coverage_residuals`` (per model label): the coverage texts' read-outs, read already (the pipeline's
    read-samples stage keeps them for the methods that fit their own read-out: inverse RL, CCS).

    Writes ``coverage_estimates.npz`` (each probe's estimate per coverage completion, the reward probe's
    cross-fitted) and ``probe-{target}-{label}.npz`` (direction, intercept, layer)."""
    out_dir = Path(out_dir)
    estimates: dict[str, np.ndarray] = {}
    result: dict[str, Any] = {"reward": {}, "ratings": {}}
    judged = review_targets(reviews, settings.n_rating_texts)
    if judged is None:
        result["ratings"] = None
    for label, lm in models.items():
        common = dict(
            test_fraction=settings.test_fraction,
            max_positions=settings.max_positions,
            seed=seed,
            progress=progress,
            precision=settings.precision,
        )
        studies = {
            "reward": probe_study(
                lm,
                coverage.prompts,
                coverage.completions,
                targets=coverage.true,
                groups=coverage.prompt_index,
                max_length=None,
                residuals=(coverage_residuals or {}).get(label),
                **common,
            )
        }
        estimates[f"reward_{label}"] = studies["reward"].cross_fitted
        if judged is not None:
            texts, targets, kind = judged
            studies["ratings"] = probe_study(
                lm,
                [""] * len(texts),
                texts,
                targets=targets,
                max_length=settings.max_length,
                by_position=False,
                cross_fit=False,
                **common,
            )
            estimates[f"ratings_{label}"] = _apply(studies["ratings"], studies["reward"])
            result["ratings"]["target"] = kind
        for target, study in studies.items():
            result[target][label] = study.summary
            np.savez(
                out_dir / probe_file(target, label),
                direction=study.probe.direction,
                intercept=study.probe.intercept,
                layer=study.summary["best"]["layer"],
            )
    np.savez(out_dir / "coverage_estimates.npz", **estimates)
    return result


def steering_directions(
    probes_dir: Path, interpretation: Mapping[str, Any] | None, saes: Mapping[str, SAE]
) -> dict[str, tuple[str, np.ndarray]]:
    """The tuned model's reward-probe direction (residual stream at its layer) and, when interpretation ran,
    the dictionary row of its first reward-related SAE feature (else of the explained feature whose
    activations correlate most with the reward's token values)."""
    saved = np.load(Path(probes_dir) / probe_file("reward", "tuned"))
    layer = int(saved["layer"])
    directions = {f"reward probe (L{layer})": (site_name(layer, "hook_resid_post"), saved["direction"])}
    features = (interpretation or {}).get("features") or []
    if features:
        related = [f for f in features if f.get("related")]
        chosen = related[0] if related else max(features, key=lambda f: f.get("reward_correlation") or -1)
        site, index = chosen["site"], int(chosen["feature"])
        if site not in saes:
            raise IrmscopeError(f"no SAE for {site}; the interpretation and SAE stages disagree")
        row = saes[site].W_dec.detach()[index].float().numpy()
        directions[f"SAE feature {site}#{index}"] = (site, row)
    return directions
