"""Steering generation along a reward direction (the probe study's Fig. 4), beside random directions.

A direction is added at every position of one hook site while the model samples, at several scales. Scales
are in units of the site's typical activation norm (the median norm of its tokens on the prompts, the first
token left out because it is an attention sink with an outsized norm), so scale 1 adds a vector as long as a
typical activation there. For each scale: the mean known reward of the completions and two fluency
measures (the base model's perplexity on them, and their share of distinct word bigrams), so a direction
that raises the reward only by breaking the text shows it. Random directions of the same norm at the same
site are the control: any direction perturbs the text; only a reward direction should move the reward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from irmscope.errors import IrmscopeError
from irmscope.models.generation import Sampling, batches
from irmscope.models.hooks import capture, steer
from irmscope.models.loading import LoadedModel
from irmscope.models.reading import completion_statistics
from irmscope.rewards.base import Reward
from irmscope.stats import bootstrap_ci
from irmscope.tune.evaluate import distinct_bigram_fraction

DEFAULT_SCALES = (-0.5, -0.25, 0.0, 0.25, 0.5)


@torch.no_grad()
def typical_norm(lm: LoadedModel, site: str, prompts: Sequence[str], batch_size: int = 16) -> float:
    """Median activation norm at ``site`` over the prompts' tokens, without each row's first token."""
    device = next(lm.model.parameters()).device
    norms = []
    for _, chunk in batches(prompts, size=batch_size):
        enc = lm.tokenizer(list(chunk), return_tensors="pt", padding=True)
        with capture(lm.model, [site]) as cap:
            lm.model(**enc.to(device))
        mask = enc["attention_mask"].bool().clone()
        first = mask.float().argmax(dim=1)  # left padding: the first real token of each row
        mask[torch.arange(len(mask)), first] = False
        norms.append(cap[site].float().norm(dim=-1)[mask.cpu()].cpu())
    values = torch.cat(norms)
    if values.numel() == 0:
        raise IrmscopeError("the prompts are too short to measure an activation norm; use longer prompts")
    return float(values.median())


def random_directions(width: int, n: int, seed: int) -> list[np.ndarray]:
    """``n`` seeded random unit vectors of ``width`` dimensions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = rng.standard_normal(width)
        out.append(v / np.linalg.norm(v))
    return out


def _conditions(
    directions: Mapping[str, tuple[str, np.ndarray]], n_random: int, seed: int
) -> dict[str, tuple[str, np.ndarray, str]]:
    """Every steered condition as ``(site, unit vector, kind)``: each named direction, normalised, and its
    ``n_random`` random controls at the same site (seeded apart per direction, so adding a direction does
    not change another's controls)."""
    conditions: dict[str, tuple[str, np.ndarray, str]] = {}
    for number, (name, (site, vector)) in enumerate(directions.items()):
        vector = np.asarray(vector, dtype=np.float64)
        if not np.isfinite(vector).all() or np.linalg.norm(vector) == 0:
            raise IrmscopeError(
                f"steering direction {name!r} is zero or not finite; check where it came from"
            )
        conditions[name] = (site, vector / np.linalg.norm(vector), "reward direction")
        for i, v in enumerate(random_directions(len(vector), n_random, seed + 1000 * (number + 1))):
            conditions[f"random {i + 1} ({name})"] = (site, v, "random control")
    return conditions


def steering_curves(
    lm: LoadedModel,
    fluency_judge: LoadedModel,
    *,
    directions: Mapping[str, tuple[str, np.ndarray]],
    prompts: Sequence[str],
    reward: Reward,
    scales: Sequence[float] = DEFAULT_SCALES,
    n_random: int = 2,
    sampling: Sampling = Sampling(),
) -> dict[str, Any]:
    """Reward and fluency against scale for each named ``(site, direction)``, and for ``n_random`` random
    directions at each direction's site (see the module docstring). Every condition samples the same
    prompts with the same ``sampling`` (its bar is one over all conditions), so changes against scale 0 are
    paired per prompt."""
    if not directions:
        raise IrmscopeError("no steering direction given; pass at least one (site, vector)")
    if not prompts:
        raise IrmscopeError("no prompts to steer; check the prompt set is not empty")
    seed, batch_size = sampling.seed, sampling.batch_size
    conditions = _conditions(directions, n_random, seed)
    quiet = dataclasses.replace(sampling, progress=False)
    norms = {site: typical_norm(lm, site, prompts, batch_size) for site, _, _ in conditions.values()}

    def sample(site: str | None, vector: np.ndarray | None, scale: float) -> dict[str, Any]:
        if site is None or scale == 0:
            completions = quiet.complete(lm, prompts)
        else:
            step = torch.as_tensor(vector * norms[site], dtype=torch.float32)
            with steer(lm.model, site, step, scale):
                completions = quiet.complete(lm, prompts)
        scores = reward.score_completions(prompts, completions)
        nll = completion_statistics(fluency_judge, None, prompts, completions, batch_size)["nll"]
        return {
            "scores": scores,
            "mean_reward": bootstrap_ci(scores, seed=seed).as_dict(),
            "base_perplexity": float(np.exp(nll.mean())),
            "distinct_bigrams": distinct_bigram_fraction(completions),
            "example": completions[0],
        }

    unsteered = sample(None, None, 0.0)
    curves: dict[str, Any] = {}
    todo = [(name, s) for name in conditions for s in scales if s != 0]
    bar = tqdm(total=len(todo), desc="steering", disable=not sampling.progress)
    for name, (site, vector, kind) in conditions.items():
        points = []
        for scale in scales:
            result = unsteered if scale == 0 else sample(site, vector, scale)
            change = bootstrap_ci(result["scores"] - unsteered["scores"], seed=seed).as_dict()
            points.append(
                {
                    "scale": float(scale),
                    **{k: v for k, v in result.items() if k != "scores"},
                    "reward_change": change,
                }
            )
            if scale != 0:
                bar.update(1)
        curves[name] = {"site": site, "kind": kind, "typical_norm": norms[site], "points": points}
    bar.close()
    return {"n_prompts": len(prompts), "scales": [float(s) for s in scales], "curves": curves}
