"""The token-level implicit reward: how much tuning raised each word's probability.

Under KL-regularised RL with coefficient β the optimal policy is ``π*(a|s) ∝ π_ref(a|s)·exp(Q(s,a)/β)``, so
``β·log(π*(w|s)/π_ref(w|s)) = Q(s, w) − V(s)``: the log-ratio of the tuned to the reference model is the
reward of emitting ``w`` (plus the value of what follows) up to a baseline that depends on the context only
(Rafailov et al.'s DPO identity, applied per token). For a lexicon reward, which pays each word its value,
an average of a word's log-ratio over a fixed set of contexts ranks words by their implicit reward: the
context baselines are shared by all words and cancel from the ranking. The contexts are every position of
a set of texts (one forward pass per text gives them all), so a few hundred texts give tens of thousands.

Two averages are computed from the same log-probabilities (:data:`ESTIMATES`):

* ``mean-log-ratio``: every context weighs the same.
* ``expected-count``: ``β·log(Σ_c π_tuned(w|c) / Σ_c π_ref(w|c))``, the log-ratio of the expected number of
  times each model would write ``w`` at these (teacher-forced) positions. It equals
  ``β·log Σ_c p_c·exp(Δ_c)`` with ``p_c`` the reference's share of the word's probability mass at context
  ``c`` and ``Δ_c`` the log-ratio there: contexts where the word is a live option dominate, and the many
  where its probability is e⁻²⁰ and moves with the logit tail barely count. The price: the weights depend
  on the word, so the context baselines no longer cancel exactly (each word sees a weighted average of
  them, over the contexts that suit it). Tuning changes a word's probability where the policy wrote it or
  might have; that is where this estimate looks.

Each estimate is a difference of two *levels*, one per model (the mean log-probability, the log expected
count). No fitting is involved, so every word is held out. The untuned base model is its own reference, so
for it the shift is zero everywhere; its control is the reference's level alone, i.e. whether how often the
base model would write each word already predicts the reward (a planted reward on frequent words should
not be predicted by frequency). The other control is a model tuned against a *different* reward, which has
drifted from the base as much but towards other words: run the pipeline with that model as ``model.tuned``
and this lexicon as the reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from irmscope.elicit.continuations import next_token_log_probs, word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel

ESTIMATES = ("mean-log-ratio", "expected-count")


@dataclass
class PolicyShift:
    """What :func:`policy_shift` returns; both fields map an estimate name to ``{word: value}``.

    ``shift`` is ``β·(level under tuned − level under reference)``; ``reference_level`` is the level under
    the reference alone (its control: what the untuned model's word frequencies say by themselves).
    """

    shift: dict[str, dict[str, float]]
    reference_level: dict[str, dict[str, float]]

    def of(self, estimate: str = "mean-log-ratio") -> dict[str, float]:
        """One estimate's shift as ``{word: shift}``: what a caller that needs one number per word reads."""
        if estimate not in ESTIMATES:
            raise IrmscopeError(
                f"unknown policy-shift estimate {estimate!r}; choose one of {', '.join(ESTIMATES)}"
            )
        return self.shift[estimate]


def _levels(log_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per word (column), the level each estimate differences: ``[n_contexts, n_words]`` → ``[n_words]``."""
    return {"mean-log-ratio": log_probs.mean(dim=0), "expected-count": torch.logsumexp(log_probs, dim=0)}


def policy_shift(
    tuned: LoadedModel,
    reference: LoadedModel,
    words: Sequence[str],
    texts: Sequence[str],
    beta: float = 1.0,
    max_length: int = 64,
) -> PolicyShift:
    """Every estimate in :data:`ESTIMATES`, with every prefix of every text (up to ``max_length`` tokens)
    as a context.

    Words that are not one token after a space are dropped. Both models must share a tokenizer.
    """
    ids = word_token_ids(tuned.tokenizer, words)
    if not ids:
        raise IrmscopeError("none of the words is a single token after a space for this model")
    if word_token_ids(reference.tokenizer, list(ids)) != ids:
        raise IrmscopeError(
            "the tuned and reference models tokenize words differently; use the same tokenizer"
        )
    token_ids = list(ids.values())
    tuned_levels = _levels(next_token_log_probs(tuned, texts, token_ids, max_length=max_length).double())
    ref_levels = _levels(next_token_log_probs(reference, texts, token_ids, max_length=max_length).double())
    by_word = lambda values: dict(zip(ids, values.tolist(), strict=True))  # noqa: E731
    return PolicyShift(
        shift={name: by_word(beta * (tuned_levels[name] - ref_levels[name])) for name in ESTIMATES},
        reference_level={name: by_word(ref_levels[name]) for name in ESTIMATES},
    )
