"""Preference pairs for DPO, in the shape of UltraFeedback-binarized.

DPO learns from pairs rather than scalar rewards, so to fine-tune with DPO on a known reward we sample several
completions per prompt, score each with the reward, and keep the best as ``chosen`` and the worst as
``rejected`` (UltraFeedback-binarized does the same with its ratings). The columns are TRL's standard,
non-conversational preference format — ``prompt``, ``chosen``, ``rejected`` (the completions exclude the
prompt; ``DPOTrainer`` tokenizes ``prompt + chosen``) — plus ``score_chosen`` / ``score_rejected``, which
``DPOTrainer`` ignores and which record the reward margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from irmscope.errors import IrmscopeError

if TYPE_CHECKING:
    import datasets

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")


def build_preference_pairs(
    prompts: Sequence[str],
    completions: Sequence[Sequence[str]],
    rewards: Sequence[Sequence[float]] | np.ndarray,
    min_margin: float = 0.0,
) -> datasets.Dataset:
    """One pair per prompt: its highest-reward completion as ``chosen``, its lowest as ``rejected``.

    ``completions[i]`` and ``rewards[i]`` are the completions of ``prompts[i]`` and their rewards, at least
    two per prompt. Prompts whose margin (best minus worst reward) is ``<= min_margin`` are skipped: a tie
    teaches DPO nothing and a tiny margin is mostly reward noise. Ties for best or worst go to the first
    completion.
    Mismatched lengths, non-finite rewards, or no pair left raise :class:`IrmscopeError`.
    """
    import datasets

    if not math.isfinite(min_margin) or min_margin < 0:
        raise IrmscopeError(f"min_margin must be a finite number >= 0, got {min_margin}")
    if not (len(prompts) == len(completions) == len(rewards)):
        raise IrmscopeError(
            f"got {len(prompts)} prompts, {len(completions)} completion lists and {len(rewards)} reward "
            "lists; give one list of completions and one list of rewards per prompt"
        )
    rows: dict[str, list] = {name: [] for name in PREFERENCE_COLUMNS}
    for i, (prompt, texts, scores) in enumerate(zip(prompts, completions, rewards, strict=True)):
        if isinstance(texts, str):
            raise IrmscopeError(f"completions[{i}] is a string; give a list of completions per prompt")
        try:
            scores = np.asarray(scores, dtype=float)
        except (TypeError, ValueError):
            raise IrmscopeError(f"rewards[{i}] is not a list of numbers") from None
        if scores.ndim != 1 or len(scores) != len(texts):
            raise IrmscopeError(
                f"prompt {i} has {len(texts)} completions but {scores.size} rewards; "
                "give one reward per completion"
            )
        if len(texts) < 2:
            raise IrmscopeError(f"prompt {i} has {len(texts)} completion(s); a pair needs at least 2")
        if not np.isfinite(scores).all():
            raise IrmscopeError(f"rewards for prompt {i} contain NaN or infinity; check the reward function")
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] - scores[worst] <= min_margin:
            continue
        rows["prompt"].append(str(prompt))
        rows["chosen"].append(str(texts[best]))
        rows["rejected"].append(str(texts[worst]))
        rows["score_chosen"].append(float(scores[best]))
        rows["score_rejected"].append(float(scores[worst]))
    if not rows["prompt"]:
        raise IrmscopeError(
            f"no preference pairs: no prompt's reward margin exceeds min_margin={min_margin}; "
            "sample more completions per prompt or lower min_margin"
        )
    return datasets.Dataset.from_dict(rows)
