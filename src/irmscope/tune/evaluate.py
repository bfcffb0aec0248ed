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
import torch
import torch.nn.functional as F

from irmscope.models.loading import LoadedModel
from irmscope.rewards import Reward
from irmscope.stats import bootstrap_ci
from irmscope.tune.sampling import generate_completions


def completion_batch(lm: LoadedModel, prompts: Sequence[str], completions: Sequence[str]):
    """Right-padded ids of prompt + completion, and a mask of the completion tokens."""
    tok = lm.tokenizer
    rows, masks = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"]
        rows.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    completion = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return ids, attention, completion


@torch.no_grad()
def completion_statistics(
    policy: LoadedModel,
    reference: LoadedModel | None,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """Per completion: its number of tokens, the mean negative log-likelihood of its tokens under
    ``policy`` and, with a ``reference``, the mean per-token KL(policy ‖ reference) over the vocabulary."""
    nll, kl, n_tokens = [], [], []
    for start in range(0, len(prompts), batch_size):
        ids, attention, completion = completion_batch(
            policy, prompts[start : start + batch_size], completions[start : start + batch_size]
        )
        # the token at position t is predicted by the logits at t - 1
        target_mask = completion[:, 1:].float()
        counts = target_mask.sum(dim=1).clamp(min=1)
        n_tokens.append(target_mask.sum(dim=1).numpy())
        logp = F.log_softmax(policy.model(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)
        token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        nll.append((-(token_logp * target_mask).sum(dim=1) / counts).numpy())
        if reference is not None:
            ref_logp = F.log_softmax(
                reference.model(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1
            )
            per_token = (logp.exp() * (logp - ref_logp)).sum(-1)
            kl.append(((per_token * target_mask).sum(dim=1) / counts).numpy())
    out = {"nll": np.concatenate(nll), "n_tokens": np.concatenate(n_tokens)}
    if kl:
        out["kl"] = np.concatenate(kl)
    return out


def distinct_bigram_fraction(texts: Sequence[str]) -> float:
    """Distinct word bigrams over all word bigrams, pooled over ``texts`` (1 = no bigram repeats)."""
    bigrams = [
        tuple(words[i : i + 2])
        for text in texts
        for words in [text.lower().split()]
        for i in range(len(words) - 1)
    ]
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def evaluate_policy(
    base: LoadedModel,
    tuned: LoadedModel,
    prompts: Sequence[str],
    reward: Reward,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample one completion per prompt from each model and compare them (see the module docstring)."""
    base_completions = generate_completions(
        base, prompts, max_new_tokens, batch_size, seed=seed, progress=progress
    )
    tuned_completions = generate_completions(
        tuned, prompts, max_new_tokens, batch_size, seed=seed, progress=progress
    )
    base_scores = reward.score([p + c for p, c in zip(prompts, base_completions, strict=True)])
    tuned_scores = reward.score([p + c for p, c in zip(prompts, tuned_completions, strict=True)])
    on_tuned = completion_statistics(tuned, base, prompts, tuned_completions)
    base_on_tuned = completion_statistics(base, None, prompts, tuned_completions)["nll"]
    base_on_own = completion_statistics(base, None, prompts, base_completions)["nll"]
    ppl_tuned, ppl_own = float(np.exp(base_on_tuned.mean())), float(np.exp(base_on_own.mean()))
    return {
        "n_prompts": len(prompts),
        "reward": reward.name,
        "base_mean_reward": bootstrap_ci(base_scores, seed=seed).as_dict(),
        "tuned_mean_reward": bootstrap_ci(tuned_scores, seed=seed).as_dict(),
        "reward_gain": bootstrap_ci(tuned_scores - base_scores, seed=seed).as_dict(),
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
