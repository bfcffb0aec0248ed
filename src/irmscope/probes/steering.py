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
from irmscope.models.hooks import capture, intervene
from irmscope.models.loading import LoadedModel
from irmscope.models.prompt_cache import CachedPrompts
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
    judge = CachedPrompts(fluency_judge, prompts, batch_size)  # the prompts read once for every condition

    def summary(completions: list[str]) -> dict[str, Any]:
        scores = reward.score_completions(prompts, completions)
        nll = judge.completion_nll(completions)
        return {
            "scores": scores,
            "mean_reward": bootstrap_ci(scores, seed=seed).as_dict(),
            "base_perplexity": float(np.exp(nll.mean())),
            "distinct_bigrams": distinct_bigram_fraction(completions),
            "example": completions[0],
        }

    def offset(name: str | None, scale: float) -> tuple[str, torch.Tensor] | None:
        if name is None:
            return None
        site, vector, _ = conditions[name]
        return site, scale * torch.as_tensor(vector * norms[site], dtype=torch.float32)

    # scale 0 once, then every steered (condition, scale), as many to a batch as fit (see steered_completions)
    runs: list[tuple[str | None, float]] = [(None, 0.0)]
    runs += [(name, float(s)) for name in conditions for s in scales if s != 0]
    per_batch = max(1, batch_size // len(prompts))
    results: dict[tuple[str | None, float], dict[str, Any]] = {}
    bar = tqdm(total=len(runs), desc="steering", disable=not sampling.progress)
    for start in range(0, len(runs), per_batch):
        chunk = runs[start : start + per_batch]
        sampled = steered_completions(lm, prompts, [offset(*run) for run in chunk], quiet)
        for run, completions in zip(chunk, sampled, strict=True):
            results[run] = summary(completions)
            bar.update(1)
    bar.close()
    unsteered = results[(None, 0.0)]
    curves: dict[str, Any] = {}
    for name, (site, _, kind) in conditions.items():
        points = []
        for scale in scales:
            result = unsteered if scale == 0 else results[(name, float(scale))]
            change = bootstrap_ci(result["scores"] - unsteered["scores"], seed=seed).as_dict()
            points.append(
                {
                    "scale": float(scale),
                    **{k: v for k, v in result.items() if k != "scores"},
                    "reward_change": change,
                }
            )
        curves[name] = {"site": site, "kind": kind, "typical_norm": norms[site], "points": points}
    return {"n_prompts": len(prompts), "scales": [float(s) for s in scales], "curves": curves}


def steered_completions(
    lm: LoadedModel,
    prompts: Sequence[str],
    offsets: Sequence[tuple[str, torch.Tensor] | None],
    sampling: Sampling,
) -> list[list[str]]:
    """One completion per prompt under each of several steering ``offsets`` (``(site, vector)`` added at
    every position of the site while sampling; ``None``: unsteered), sampled together: one copy of the
    prompts per offset in one batch, each copy with its own vector, and every copy drawing the random
    numbers it would draw alone (:func:`~irmscope.models.generation.generate_completions`' ``groups``).
    So the completions are those of sampling each offset on its own, to float rounding, with common random
    numbers across offsets, at the larger batch's speed (32 prompts: 3.1 ms per sampled token at batch 32
    here, 2.0 at 128). Offsets that do not fit one batch together, or a model off the CPU (whose sampler
    draws otherwise), are sampled one at a time."""
    n = len(prompts)
    on_cpu = next(lm.model.parameters()).device.type == "cpu"  # the shared draw is the CPU sampler's
    if len(offsets) > 1 and (n * len(offsets) > sampling.batch_size or not on_cpu):
        return [c for o in offsets for c in steered_completions(lm, prompts, [o], sampling)]
    rows_by_site: dict[str, torch.Tensor] = {}
    for group, given in enumerate(offsets):
        if given is not None:
            site, vector = given
            rows = rows_by_site.setdefault(site, torch.zeros(n * len(offsets), vector.shape[-1]))
            rows[group * n : (group + 1) * n] = vector
    edits = {site: _row_offsets(rows) for site, rows in rows_by_site.items()}
    with intervene(lm.model, edits):
        flat = sampling.complete(lm, list(prompts) * len(offsets), groups=len(offsets))
    return [flat[group * n : (group + 1) * n] for group in range(len(offsets))]


def _row_offsets(rows: torch.Tensor):
    """An edit adding row ``i`` of ``rows`` at every position of batch row ``i``."""
    return lambda act: act + rows[:, None, :].to(act.dtype).to(act.device)
