"""The audit against a known lexicon reward: how far what the model treats as rewarded is from what it was
paid for (the divergence the main paper is about).

Every number is computed twice: with the elicited values (each word's relative shift beyond the drift of
words of its frequency, :mod:`irmscope.audit.shift`) and with the
base model's *own level* (its expected count per text) as the values. The second is the control: a reward
on words the base model already writes often would be "recovered" by word frequency alone, with no tuning
(as :mod:`irmscope.elicit.policy_shift` does for its base level). Chance is shown beside precision too.
On both sides the control ranks the words the base model writes *most*: "does word frequency alone find
them?" (its lowest counts are rare junk tokens, which no lexicon holds, so that control would be 0 by
construction).

* Kendall's tau between the values and the reward's over every single-token word the lexicon holds, with a
  bootstrap interval over words and a permutation p-value (:func:`~irmscope.elicit.agreement.agreement`),
  and the paired gap tau(elicited) − tau(base level) (:func:`~irmscope.elicit.agreement.tau_gap`).
* precision@k: of the ``k`` words the audit ranks highest over the whole vocabulary, the share the reward
  pays (value > 0); likewise the ``k`` lowest and the words it penalises. ``k`` is at most the number of
  such words in the vocabulary, so a perfect ranking scores 1. The called words come first, by their
  shift beyond the drift (the audit's lists); the words the floor did not call follow by the lower end of
  that shift's 95% interval (the upper end, for the penalised side): how surely the word rose, not how
  far its point estimate went. A word written in one or two texts has a wide interval, and ranked by its
  point estimate it filled the list with one text's topic words. (That rule was chosen after seeing
  planted seeds 4-6 of docs/replicates.md; seeds 7-9 test it.)
* the words the model treats as rewarded (called by the floor) that the reward does not pay: hacks of the
  reward's tokenisation, or generalisation to words like the paid ones; and the paid words the model
  ignores (not called rewarded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irmscope.elicit.agreement import agreement, tau_gap
from irmscope.errors import IrmscopeError
from irmscope.rewards.lexicon import Lexicon

PRECISION_K = 20


def precision_at_k(
    values: np.ndarray,
    paid: np.ndarray,
    k: int,
    *,
    highest: bool = True,
    first: np.ndarray | None = None,
    then: np.ndarray | None = None,
) -> dict[str, Any]:
    """The share of the ``k`` top (or bottom) words that are ``paid``, ``k`` capped at ``paid.sum()``.
    Words in ``first`` (the words the floor called that way) rank before all others by ``values``, as in
    the audit's lists; the others by ``then`` (default ``values``)."""
    k = int(min(k, paid.sum()))
    if k == 0:
        return {"k": 0, "value": float("nan")}
    first = np.zeros(len(values), dtype=bool) if first is None else first
    ranked = np.where(first, values, values if then is None else then)
    order = np.lexsort([-ranked if highest else ranked, ~first])[:k]
    return {"k": k, "value": float(paid[order].mean())}


def reward_comparison(
    words: Sequence[str],
    shift: np.ndarray,
    base_level: np.ndarray,
    rewarded: np.ndarray,
    lexicon: Lexicon,
    *,
    penalised: np.ndarray | None = None,
    interval: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = PRECISION_K,
    seed: int = 0,
    top: int = 15,
) -> dict[str, Any]:
    """Compare the audit's word values with ``lexicon`` (see the module docstring).

    ``words``, ``shift`` (the elicited values: relative shift beyond the drift), ``base_level`` (base
    expected count), ``rewarded`` and ``penalised`` (called so by the floor) are aligned over the audited
    vocabulary; precision@k of the elicited values ranks the called words first, as the audit's lists do,
    and the rest by ``interval`` (the 95% interval of ``shift``, low and high; without it, by ``shift``).
    """
    truth = np.array([lexicon.lookup(w) for w in words])
    folded = {w.lower() for w in lexicon}
    in_lexicon = np.array([w in folded for w in words])  # exact lowercase lexicon words, as tokens
    if in_lexicon.sum() == 0:
        raise IrmscopeError(
            f"none of the words of lexicon {lexicon.source} is a single token of this model: the audit "
            "cannot compare with it"
        )
    x, b, y = shift[in_lexicon], base_level[in_lexicon], truth[in_lexicon]
    low, high = (None, None) if interval is None else interval
    positive, negative = truth > 0, truth < 0

    def both(measure) -> dict[str, Any]:
        return {"elicited": measure(shift), "base_level": measure(base_level)}

    unpaid = [i for i in np.argsort(-shift, kind="stable") if rewarded[i] and truth[i] <= 0][:top]
    paid = sorted((i for i in range(len(words)) if positive[i] and not rewarded[i]), key=lambda i: -truth[i])
    return {
        "lexicon": lexicon.source,
        "n_single_token_words": int(in_lexicon.sum()),
        "kendall": both(lambda v: agreement(v[in_lexicon], y, seed=seed).to_dict()),
        "tau_gap": tau_gap(x, b, y, seed=seed),
        "precision_rewarded": {
            "elicited": precision_at_k(shift, positive, k, first=rewarded, then=low),
            "base_level": precision_at_k(base_level, positive, k),
            "chance": float(positive.mean()),
        },
        "precision_penalised": {
            "elicited": precision_at_k(shift, negative, k, highest=False, first=penalised, then=high),
            "base_level": precision_at_k(base_level, negative, k),
            "chance": float(negative.mean()),
        },
        "n_paid_called": int((positive & rewarded).sum()),
        "n_paid": int(positive.sum()),
        "n_called_unpaid": int((rewarded & ~positive).sum()),
        "n_called": int(rewarded.sum()),
        "unpaid_rewarded": [_row(words[i], i, shift, base_level, truth) for i in unpaid],
        "paid_ignored": [_row(words[i], i, shift, base_level, truth) for i in paid[:top]],
    }


def _row(word: str, i: int, shift: np.ndarray, base_level: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    return {
        "word": word,
        "reward_value": float(truth[i]),
        "elicited_value": float(shift[i]),
        "base_count": float(base_level[i]),
    }


def lexicon_of(reward: Any) -> Lexicon:
    """The lexicon of a lexicon reward (``vader`` or ``lexicon:PATH``); other rewards have no word values
    to compare with."""
    lexicon = getattr(reward, "lexicon", None)
    if not isinstance(lexicon, Lexicon):
        raise IrmscopeError(
            f"--reward {getattr(reward, 'name', reward)!r} is not a lexicon reward: the audit compares word "
            "values, so give vader or lexicon:PATH.tsv"
        )
    return lexicon
