"""Evaluate a tuned policy against its base model (the paper's Table 7, with controls).

* mean known reward of sampled completions for both models, with bootstrap 95% intervals, and the gain
  (paired over prompts: both models complete the same prompts);
* the per-token KL divergence KL(tuned ‖ base) on the tuned model's completions (exact over the vocabulary);
* two fluency controls: the base model's perplexity on the tuned model's completions next to its perplexity
  on its own completions (word salad shows up here), and the fraction of distinct word bigrams of each
  model's completions. The second matters: a policy that games a lexicon reward by repeating one word
  ("love love love ...") is *more* predictable to the base model than its own samples, so its perplexity
  ratio falls below 1 and only the repetition measure exposes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irmscope.models.generation import completion_statistics, generate_completions
from irmscope.models.loading import LoadedModel
from irmscope.rewards import Reward
from irmscope.stats import Estimate, bootstrap_ci


def distinct_bigram_fraction(texts: Sequence[str]) -> float:
    """Distinct word bigrams over all word bigrams, pooled over ``texts`` (1 = no bigram repeats)."""
    bigrams = [
        tuple(words[i : i + 2])
        for text in texts
        for words in [text.lower().split()]
        for i in range(len(words) - 1)
    ]
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def sampled_rewards(
    lm: LoadedModel,
    prompts: Sequence[str],
    reward: Reward,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> tuple[list[str], np.ndarray]:
    """One sampled completion per prompt from ``lm``, and the reward of each."""
    completions = generate_completions(
        lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress
    )
    return completions, reward.score_completions(prompts, completions)


def paired_gain(tuned_scores: np.ndarray, base_scores: np.ndarray, seed: int = 0) -> Estimate:
    """The gain in mean reward with a bootstrap interval, paired over prompts (both models complete the same
    prompts with the same sampling seed, so the prompt-to-prompt spread cancels)."""
    return bootstrap_ci(np.asarray(tuned_scores) - np.asarray(base_scores), seed=seed)


def evaluate_policy(
    base: LoadedModel,
    tuned: LoadedModel,
    prompts: Sequence[str],
    reward: Reward,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample one completion per prompt from each model and compare them (see the module docstring)."""
    sampling = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress)
    base_completions, base_scores = sampled_rewards(base, prompts, reward, **sampling)
    tuned_completions, tuned_scores = sampled_rewards(tuned, prompts, reward, **sampling)
    on_tuned = completion_statistics(tuned, base, prompts, tuned_completions)
    base_on_tuned = completion_statistics(base, None, prompts, tuned_completions)["nll"]
    base_on_own = completion_statistics(base, None, prompts, base_completions)["nll"]
    ppl_tuned, ppl_own = float(np.exp(base_on_tuned.mean())), float(np.exp(base_on_own.mean()))
    return {
        "n_prompts": len(prompts),
        "reward": reward.name,
        "base_mean_reward": bootstrap_ci(base_scores, seed=seed).as_dict(),
        "tuned_mean_reward": bootstrap_ci(tuned_scores, seed=seed).as_dict(),
        "reward_gain": paired_gain(tuned_scores, base_scores, seed=seed).as_dict(),
        "kl_tuned_to_base_per_token": bootstrap_ci(on_tuned["kl"], seed=seed).as_dict(),
        "base_perplexity_on_tuned_completions": ppl_tuned,
        "base_perplexity_on_base_completions": ppl_own,
        "perplexity_ratio": ppl_tuned / ppl_own,
        "distinct_bigrams_base": distinct_bigram_fraction(base_completions),
        "distinct_bigrams_tuned": distinct_bigram_fraction(tuned_completions),
        "samples": {
            "prompts": list(prompts),
            "base_completions": base_completions,
            "tuned_completions": tuned_completions,
            "base_scores": base_scores.tolist(),
            "tuned_scores": tuned_scores.tolist(),
        },
    }
