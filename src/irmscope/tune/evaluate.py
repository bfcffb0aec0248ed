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
from pathlib import Path
from typing import Any

import numpy as np

from irmscope.io import write_json
from irmscope.models.generation import Sampling, completion_statistics, concatenated
from irmscope.models.loading import LoadedModel
from irmscope.rewards import Reward
from irmscope.stats import Estimate, bootstrap_ci
from irmscope.validation import check_output


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
    lm: LoadedModel, prompts: Sequence[str], reward: Reward, sampling: Sampling
) -> tuple[list[str], np.ndarray]:
    """One sampled completion per prompt from ``lm``, and the reward of each."""
    completions = sampling.complete(lm, prompts)
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
    sampling: Sampling = Sampling(),
) -> dict[str, Any]:
    """Sample one completion per prompt from each model and compare them (see the module docstring); the
    bootstrap intervals use the sampling seed. ``likelihoods`` holds each model's
    :class:`~irmscope.models.generation.CompletionLikelihoods` of the base model's completions followed by
    the tuned model's (not JSON: the evaluate stage saves it as an array file)."""
    base_completions, base_scores = sampled_rewards(base, prompts, reward, sampling)
    tuned_completions, tuned_scores = sampled_rewards(tuned, prompts, reward, sampling)
    seed = sampling.seed
    # both models read both models' completions once: the statistics below, and the likelihoods the
    # leaderboard's likelihood-based rewards need (in the coverage order: base completions, then tuned)
    on_base = completion_statistics(tuned, base, prompts, base_completions)
    on_tuned = completion_statistics(tuned, base, prompts, tuned_completions)
    base_on_tuned, base_on_own = on_tuned["reference_nll"], on_base["reference_nll"]
    ppl_tuned, ppl_own = float(np.exp(base_on_tuned.mean())), float(np.exp(base_on_own.mean()))
    likelihoods = {
        "tuned": concatenated(on_base["likelihoods"], on_tuned["likelihoods"]),
        "base": concatenated(on_base["reference_likelihoods"], on_tuned["reference_likelihoods"]),
    }
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
        "likelihoods": likelihoods,
    }


def evaluate_models(
    tuned: str,
    base: str,
    *,
    reward: str,
    data: str,
    n_prompts: int,
    prefix_tokens: int,
    sampling: Sampling,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """What ``irmscope evaluate`` runs: :func:`evaluate_policy` of the model ``tuned`` against ``base`` on
    ``n_prompts`` review prefixes of ``data``'s test split (``prefix_tokens`` long, in the sampling seed's
    order), scored by the reward spec ``reward``. With ``out`` the whole result, samples included, is
    written there as JSON; ``out`` and ``reward`` are checked before any model is loaded."""
    from irmscope.data import review_prompts
    from irmscope.models.loading import load_model
    from irmscope.rewards import load_reward

    if out is not None:
        out = check_output(out, overwrite, "file")
    scorer = load_reward(reward)
    base_lm, tuned_lm = load_model(base, seed=sampling.seed), load_model(tuned)
    prompts = review_prompts(data, "test", base_lm.tokenizer, n_prompts, prefix_tokens, sampling.seed)
    result = evaluate_policy(base_lm, tuned_lm, prompts, scorer, sampling)
    del result["likelihoods"]  # arrays the pipeline's leaderboard reads; the command writes JSON
    if out is not None:
        write_json(out, result)
    return result
