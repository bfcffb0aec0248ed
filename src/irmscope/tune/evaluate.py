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
from irmscope.models.generation import Sampling
from irmscope.models.loading import LoadedModel
from irmscope.models.reading import CompletionStatistics, read_pairs
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


def sampled_evaluation(
    base: LoadedModel,
    tuned: LoadedModel,
    prompts: Sequence[str],
    reward: Reward,
    sampling: Sampling = Sampling(),
) -> dict[str, Any]:
    """Sample one completion per prompt from each model and score them: the mean rewards, the paired gain
    and the distinct bigrams (the half of the evaluation that needs no further pass of the models), with
    ``samples`` (prompts, completions, scores). The bootstrap intervals use the sampling seed."""
    base_completions, base_scores = sampled_rewards(base, prompts, reward, sampling)
    tuned_completions, tuned_scores = sampled_rewards(tuned, prompts, reward, sampling)
    seed = sampling.seed
    return {
        "n_prompts": len(prompts),
        "reward": reward.name,
        "base_mean_reward": bootstrap_ci(base_scores, seed=seed).as_dict(),
        "tuned_mean_reward": bootstrap_ci(tuned_scores, seed=seed).as_dict(),
        "reward_gain": paired_gain(tuned_scores, base_scores, seed=seed).as_dict(),
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


def coverage_statistics(n_prompts: int) -> CompletionStatistics:
    """The reader of the evaluation's other half: read as :func:`read_pairs`'s "tuned" and "base" models
    over the coverage order (the ``n_prompts`` base completions, then the tuned ones), both models'
    likelihoods of every completion and KL(tuned ‖ base) (see :func:`likelihood_evaluation`)."""
    return CompletionStatistics(2 * n_prompts, policy="tuned", reference="base")


def likelihood_evaluation(statistics: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The evaluation's half that reads the samples with both models, from :func:`coverage_statistics`'s
    result: the per-token KL(tuned ‖ base) on the tuned completions, the base model's perplexity on each
    model's completions, and ``likelihoods``, each model's
    :class:`~irmscope.models.reading.CompletionLikelihoods` of every completion in the coverage order (not
    JSON: the pipeline saves it as an array file for the leaderboard)."""
    n = len(statistics["kl"]) // 2
    ppl_tuned = float(np.exp(statistics["reference_nll"][n:].mean()))
    ppl_own = float(np.exp(statistics["reference_nll"][:n].mean()))
    return {
        "kl_tuned_to_base_per_token": bootstrap_ci(statistics["kl"][n:], seed=seed).as_dict(),
        "base_perplexity_on_tuned_completions": ppl_tuned,
        "base_perplexity_on_base_completions": ppl_own,
        "perplexity_ratio": ppl_tuned / ppl_own,
        "likelihoods": {"tuned": statistics["likelihoods"], "base": statistics["reference_likelihoods"]},
    }


def evaluate_policy(
    base: LoadedModel,
    tuned: LoadedModel,
    prompts: Sequence[str],
    reward: Reward,
    sampling: Sampling = Sampling(),
) -> dict[str, Any]:
    """Sample one completion per prompt from each model and compare them (see the module docstring): the
    :func:`sampled_evaluation`, then both models read both models' completions once for the
    :func:`likelihood_evaluation`."""
    result = sampled_evaluation(base, tuned, prompts, reward, sampling)
    samples = result["samples"]
    statistics = coverage_statistics(len(prompts))
    read_pairs(
        {"tuned": tuned, "base": base}, list(prompts) * 2,
        samples["base_completions"] + samples["tuned_completions"], [statistics],
    )  # fmt: skip
    return {**result, **likelihood_evaluation(statistics.result(), seed=sampling.seed)}


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
