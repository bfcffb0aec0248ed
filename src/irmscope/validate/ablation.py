"""Zero-ablating SAE features in a running model, and the paper's Table 5 (§5.2).

Ablating a feature removes its contribution from the site's activation, ``x → x − Σ_f a_f(x)·d_f`` with
``a_f`` the feature's activation and ``d_f`` its dictionary row; the SAE's reconstruction error and every
other feature are left in place, so only what those features carry is lost. Table 5 compares the tuned
model's mean reward on the fine-tuning task before and after ablating the features classified as related
to the reward, and, as the control the paper lacks, after ablating as many random features of the same
dictionaries. The explainer's label picks few features at the layers tuning changed most, so the table can
also ablate a second choice, features chosen by reward attribution (:mod:`irmscope.validate.selection`),
beside its own controls; every row then reports the share of the tuning gain it removes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.generation import Sampling
from irmscope.models.hooks import intervene
from irmscope.models.loading import LoadedModel
from irmscope.rewards.base import Reward
from irmscope.sae.model import SAE
from irmscope.stats import bootstrap_ci, paired_ratio_ci
from irmscope.validate.selection import AttributedSelection


def feature_ablation(sae: SAE, features: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """An activation edit that removes ``features``' contributions (see the module docstring)."""
    index = torch.as_tensor(list(features), dtype=torch.long)
    if index.numel() and (index.min() < 0 or index.max() >= sae.d_sae):
        raise IrmscopeError(f"feature indices must lie in [0, {sae.d_sae}); got {list(features)[:5]}...")
    rows = sae.W_dec.detach()[index]

    def edit(act: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = sae.encode(act)[..., index]
        return act - (latents @ rows.to(act.device)).to(act.dtype)

    return edit


def random_features(
    features_by_site: Mapping[str, Sequence[int]], saes: Mapping[str, SAE], seed: int
) -> dict[str, list[int]]:
    """As many features per site as ``features_by_site`` holds, drawn (seeded) from the others."""
    rng = np.random.default_rng(seed)
    out = {}
    for site, chosen in features_by_site.items():
        pool = np.setdiff1d(np.arange(saes[site].d_sae), np.asarray(list(chosen), dtype=int))
        out[site] = sorted(rng.choice(pool, size=len(chosen), replace=False).tolist())
    return out


@dataclass(frozen=True)
class AblationRun:
    """A model, its dictionaries, the prompts and how their completions are sampled and scored: what every
    ablated condition of Table 5 shares, so conditions differ only in the features they remove and each
    ablated completion pairs with the unablated one of its prompt."""

    lm: LoadedModel
    saes: Mapping[str, SAE]
    prompts: Sequence[str]
    reward: Reward
    sampling: Sampling = Sampling()

    def rewards(self, features_by_site: Mapping[str, Sequence[int]]) -> np.ndarray:
        """The reward of one completion per prompt, sampled with ``features_by_site`` ablated."""
        edits = {site: feature_ablation(self.saes[site], f) for site, f in features_by_site.items() if len(f)}
        with intervene(self.lm.model, edits):
            completions = self.sampling.complete(self.lm, self.prompts, desc="ablated sampling")
        return self.reward.score_completions(self.prompts, completions)


def ablation_table(
    run: AblationRun,
    related: Mapping[str, Sequence[int]],
    *,
    before: np.ndarray,
    attributed: AttributedSelection | None = None,
    base: np.ndarray | None = None,
    n_random_draws: int = 1,
    base_model: LoadedModel | None = None,
) -> dict[str, Any]:
    """Table 5: mean reward before and after ablating the ``related`` features, as many random ones, and
    (optionally) an attributed selection with its controls, each sampled and scored by ``run``.

    ``before`` holds the rewards of the unablated model's completions to the run's prompts, sampled alike
    (the run's ``sampling``, whose seed also draws the random controls and the intervals), so each ablated
    completion is paired with the unablated one of its prompt and the changes are paired differences. With
    ``attributed`` (:mod:`irmscope.validate.selection`) the table also ablates that selection, its
    opposite-reward control and as many random features. With ``base`` (the untuned model's rewards on the
    same prompts) each condition also gets ``gain_removed``: the drop in reward as a share of the tuning
    gain ``mean(before - base)`` (reported only when the gain's interval lies above 0).

    Each random control is drawn ``n_random_draws`` times (seeds counted up from the first draw's), since
    one draw's interval covers prompt noise but not the spread between draws: the condition's row keeps the
    first draw and gains ``draws``, every draw's mean change and gain share, with their mean and range.
    With ``base_model`` (the untuned model) the attributed selection and its opposite are also ablated in
    it, with the tuned model's dictionaries: if they moved its reward as much, the features would not be
    what tuning leans on (``base_model_check``).
    """
    before, n, saes = np.asarray(before, dtype=float), len(run.prompts), run.saes
    for name, values in (("'before'", before), ("'base'", base)):
        if values is not None and len(values) != n:
            raise IrmscopeError(f"{len(values)} {name} rewards for {n} prompts; they must pair up")
    seed = run.sampling.seed
    table: dict[str, Any] = {
        "n_prompts": n,
        "n_features": {site: len(f) for site, f in related.items()},
        "before": bootstrap_ci(before, seed=seed).as_dict(),
    }
    conditions = _conditions(table, related, attributed, saes, seed)
    gain = _tuning_gain(table, before, base, seed)

    for name, features in conditions.items():
        table[name] = _condition_row(features, run.rewards(features), before, gain, seed)
    random_controls = {"random": (related, seed)}
    if attributed is not None:
        random_controls["attributed_random"] = (attributed.features, seed + 1)
    for name, (chosen, first_seed) in random_controls.items():
        if name in conditions and n_random_draws >= 2:
            table[name]["draws"] = _random_draws(
                table[name], chosen, first_seed, n_random_draws, saes, lambda f: before - run.rewards(f), gain
            )
    if base_model is not None and "attributed" in conditions and base is not None:
        base, in_base = np.asarray(base, dtype=float), dataclasses.replace(run, lm=base_model)
        table["base_model_check"] = {
            name: {"change": bootstrap_ci(in_base.rewards(conditions[name]) - base, seed=seed).as_dict()}
            for name in ("attributed", "attributed_opposite")
        }
    return table


def _condition_row(
    features: Mapping[str, Sequence[int]],
    after: np.ndarray,
    before: np.ndarray,
    gain: np.ndarray | None,
    seed: int,
) -> dict[str, Any]:
    """One condition's row of Table 5: the ablated features, the reward after, the paired change and, with
    a tuning ``gain`` to compare with, the share of it the ablation removed."""
    row = {
        "features": {site: [int(i) for i in f] for site, f in features.items()},
        "after": bootstrap_ci(after, seed=seed).as_dict(),
        "change": bootstrap_ci(after - before, seed=seed).as_dict(),
    }
    if gain is not None:
        row["gain_removed"] = paired_ratio_ci(before - after, gain, seed=seed).as_dict()
    return row


def _conditions(
    table: dict[str, Any],
    related: Mapping[str, Sequence[int]],
    attributed: AttributedSelection | None,
    saes: Mapping[str, SAE],
    seed: int,
) -> dict[str, Mapping[str, Sequence[int]]]:
    """The feature sets to ablate, by condition: the related features and as many random ones, and the
    attributed selection with its two controls (an empty choice is noted in ``table``)."""
    conditions: dict[str, Mapping[str, Sequence[int]]] = {}
    if sum(len(f) for f in related.values()) == 0:
        table["note"] = "no feature was classified as related to the reward: the explainer's choice is empty"
    else:
        conditions |= {"related": dict(related), "random": random_features(related, saes, seed)}
    if attributed is not None and any(attributed.features.values()):
        conditions |= {
            "attributed": attributed.features,
            "attributed_opposite": attributed.opposite,
            "attributed_random": random_features(attributed.features, saes, seed + 1),
        }
    return conditions


def _tuning_gain(
    table: dict[str, Any], before: np.ndarray, base: np.ndarray | None, seed: int
) -> np.ndarray | None:
    """Each prompt's reward gain from tuning, to report ablations as a share of; None without ``base`` or
    when the gain's interval is not above 0 (a share of a gain that may be zero is not a number to read).
    The gain's interval (and why no share is reported) go into ``table``."""
    if base is None:
        return None
    gain = before - np.asarray(base, dtype=float)
    table["gain"] = bootstrap_ci(gain, seed=seed).as_dict()
    if table["gain"]["low"] <= 0:
        table["gain_note"] = "the tuning gain's interval is not above 0, so no share of it is reported"
        return None
    return gain


def _random_draws(
    first: dict[str, Any],
    chosen: Mapping[str, Sequence[int]],
    first_seed: int,
    n_draws: int,
    saes: Mapping[str, SAE],
    reward_drop: Callable[[Mapping[str, Sequence[int]]], np.ndarray],
    gain: np.ndarray | None,
) -> dict[str, Any]:
    """A random control drawn ``n_draws`` times (``first`` is the condition's row for the first draw;
    seeds count up from ``first_seed``): every draw's mean change (or gain share), with their mean and
    range, since one draw's interval covers prompt noise but not the spread between draws."""
    removed = first.get("gain_removed", {}).get("value")
    rows = [_draw_row(first_seed, first["features"], first["change"]["value"], removed)]
    for draw_seed in range(first_seed + 1, first_seed + n_draws):
        features = random_features(chosen, saes, draw_seed)
        drop = reward_drop(features)
        share = None if gain is None else float(drop.mean() / gain.mean())
        rows.append(_draw_row(draw_seed, features, float(-drop.mean()), share))
    key = "gain_removed" if gain is not None else "change"
    values = [row[key] for row in rows]
    return {
        "rows": rows,
        "summarised": key,
        "mean": float(np.mean(values)),
        "min": min(values),
        "max": max(values),
    }


def _draw_row(
    seed: int, features: Mapping[str, Sequence[int]], change: float, gain_removed: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seed": seed,
        "features": {site: [int(i) for i in f] for site, f in features.items()},
        "change": change,
    }
    if gain_removed is not None:
        row["gain_removed"] = gain_removed
    return row
