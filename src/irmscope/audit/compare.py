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
  shift beyond the drift (the audit's lists); the words the floor did not call follow by that shift too
  (the **estimate** rule). The **bound** rule (``uncalled_by="bound"``) ranks them instead by the lower
  end of the 95% bootstrap interval of their relative shift, less the drift of words of their frequency
  (the upper end, for the penalised side): how surely a word rose. It treats the drift's centre as known,
  leaves out its spread (which the floor's z includes) and favours frequent words, whose intervals are
  narrow. Chosen after seeing planted seeds 4-6 of docs/replicates.md (0.633 against 0.567 there), it did
  not hold on fresh seeds 7-9 (0.517 against 0.533), so the audit keeps the estimate rule, chosen before.
  Beside it, the **shuffled-values control**: the same top ``k`` words scored against the lexicon with its
  values shuffled among its words, many times. A ranking that finds the lexicon's *words* (frequent ones,
  say) without their *signs* scores as well there; the p-value is the share of shuffles that score at
  least as high.
* the words the model treats as rewarded (called by the floor) that the reward does not pay: hacks of the
  reward's tokenisation, or generalisation to words like the paid ones; and the paid words the model
  ignores (not called rewarded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from irmscope.elicit.agreement import agreement, tau_gap
from irmscope.errors import IrmscopeError
from irmscope.rewards.lexicon import Lexicon

PRECISION_K = 20
#: shuffles of the lexicon's values behind precision@k's control
N_SHUFFLES = 200
#: how precision@k ranks the words the floor did not call (see the module docstring)
UncalledRule = Literal["bound", "estimate"]


def ranked_top(
    values: np.ndarray,
    k: int,
    *,
    highest: bool = True,
    first: np.ndarray | None = None,
    then: np.ndarray | None = None,
) -> np.ndarray:
    """The indices of the ``k`` top (or bottom) words: those in ``first`` (the words the floor called that
    way) before all others, ranked by ``values`` as in the audit's lists; the others by ``then`` (default
    ``values``)."""
    first = np.zeros(len(values), dtype=bool) if first is None else first
    ranked = np.where(first, values, values if then is None else then)
    return np.lexsort([-ranked if highest else ranked, ~first])[:k]


def precision_at_k(
    values: np.ndarray,
    paid: np.ndarray,
    k: int,
    *,
    highest: bool = True,
    first: np.ndarray | None = None,
    then: np.ndarray | None = None,
) -> dict[str, Any]:
    """The share of the ``k`` top (or bottom) words (:func:`ranked_top`) that are ``paid``, ``k`` capped
    at ``paid.sum()``."""
    k = int(min(k, paid.sum()))
    if k == 0:
        return {"k": 0, "value": float("nan")}
    order = ranked_top(values, k, highest=highest, first=first, then=then)
    return {"k": k, "value": float(paid[order].mean())}


def shuffled_precision(
    top_words: Sequence[str],
    observed: float,
    lexicon: Lexicon,
    *,
    sign: int,
    n: int = N_SHUFFLES,
    seed: int = 0,
) -> dict[str, Any]:
    """precision@k of the same ``top_words`` when ``lexicon``'s values are shuffled among its words ``n``
    times (``sign`` +1: the share paid, -1: the share penalised): the mean, the 95th percentile and the
    permutation p-value of ``observed``, with the +1 of a permutation test."""
    if not len(top_words):
        return {"mean": float("nan"), "q95": float("nan"), "p": float("nan"), "n": 0}
    shares = (sign * lexicon.shuffled_lookups(top_words, n, seed=seed) > 0).mean(axis=1)
    return {
        "mean": float(shares.mean()),
        "q95": float(np.quantile(shares, 0.95)),
        "p": float((1 + np.sum(shares >= observed - 1e-12)) / (n + 1)),
        "n": n,
    }


def lexicon_precision(
    words: Sequence[str],
    shift: np.ndarray,
    base_level: np.ndarray,
    lexicon: Lexicon,
    *,
    rewarded: np.ndarray,
    penalised: np.ndarray | None = None,
    interval: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = PRECISION_K,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """precision@k of the top and bottom words against the words ``lexicon`` pays and penalises: the
    elicited ranking (called words first by ``shift``, the rest by ``interval``, low and high, or by
    ``shift`` without it), its shuffled-values control, the base level's and chance (module docstring)."""
    truth = np.array([lexicon.lookup(w) for w in words])
    low, high = (None, None) if interval is None else interval
    out = {}
    for name, sign, called, then in (("rewarded", 1, rewarded, low), ("penalised", -1, penalised, high)):
        paid, highest = sign * truth > 0, sign > 0
        elicited = precision_at_k(shift, paid, k, highest=highest, first=called, then=then)
        top = ranked_top(shift, elicited["k"], highest=highest, first=called, then=then)
        out[f"precision_{name}"] = {
            "elicited": elicited,
            "shuffled_values": shuffled_precision(
                [words[i] for i in top], elicited["value"], lexicon, sign=sign, seed=seed
            ),
            "base_level": precision_at_k(base_level, paid, k),
            "chance": float(paid.mean()),
        }
    return out


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
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Compare the audit's word values with ``lexicon`` (see the module docstring); the Kendall intervals
    and the tau gap's are bootstraps over words with ``n_resamples`` resamples.

    ``words``, ``shift`` (the elicited values: relative shift beyond the drift), ``base_level`` (base
    expected count), ``rewarded`` and ``penalised`` (called so by the floor) are aligned over the audited
    vocabulary; precision@k (:func:`lexicon_precision`) ranks the called words first, as the audit's
    lists do, and the rest by ``interval`` (the 95% interval of ``shift``, low and high; without it, by
    ``shift``).
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
    positive = truth > 0

    def both(measure) -> dict[str, Any]:
        return {"elicited": measure(shift), "base_level": measure(base_level)}

    unpaid = [i for i in np.argsort(-shift, kind="stable") if rewarded[i] and truth[i] <= 0][:top]
    paid = sorted((i for i in range(len(words)) if positive[i] and not rewarded[i]), key=lambda i: -truth[i])
    return {
        "lexicon": lexicon.source,
        "n_single_token_words": int(in_lexicon.sum()),
        "kendall": both(lambda v: agreement(v[in_lexicon], y, n_resamples, seed).to_dict()),
        "tau_gap": tau_gap(x, b, y, n_resamples, seed),
        **lexicon_precision(
            words,
            shift,
            base_level,
            lexicon,
            rewarded=rewarded,
            penalised=penalised,
            interval=interval,
            k=k,
            seed=seed,
        ),  # fmt: skip
        "n_paid_called": int((positive & rewarded).sum()),
        "n_paid": int(positive.sum()),
        "n_called_unpaid": int((rewarded & ~positive).sum()),
        "n_called": int(rewarded.sum()),
        "unpaid_rewarded": [_row(words[i], i, shift, base_level, truth) for i in unpaid],
        "paid_ignored": [_row(words[i], i, shift, base_level, truth) for i in paid[:top]],
    }


def called_words(table: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The masks of the words an audit's word ``table`` calls rewarded and penalised: called by the floor,
    by the sign of their z."""
    called, z = np.asarray(table["called"], dtype=bool), np.asarray(table["z"], dtype=float)
    return called & (z > 0), called & (z < 0)


def _table_arguments(table: dict[str, Any], uncalled_by: UncalledRule) -> dict[str, Any]:
    """The arguments of :func:`reward_comparison` and :func:`lexicon_precision` from an audit's word
    table (:func:`irmscope.audit.run.read_table` reads one back from ``words.csv``): the shifts beyond the
    drift, the base level, the called words by the sign of their z (as the audit calls them), and the
    bound's interval: the relative shift's, less the drift of words of its frequency."""
    if uncalled_by not in ("bound", "estimate"):
        raise IrmscopeError(f"rank the uncalled words by 'bound' or 'estimate', not {uncalled_by!r}")
    beyond = np.asarray(table["beyond_drift"], dtype=float)
    centre = np.asarray(table["relative_shift"], dtype=float) - beyond  # the drift of words of its frequency
    low, high = (np.asarray(table[key], dtype=float) - centre for key in ("relative_low", "relative_high"))
    rewarded, penalised = called_words(table)
    return {
        "words": list(table["word"]),
        "shift": beyond,
        "base_level": np.asarray(table["base_count"], dtype=float),
        "rewarded": rewarded,
        "penalised": penalised,
        "interval": (low, high) if uncalled_by == "bound" else None,
    }


def compare_table(
    table: dict[str, Any],
    lexicon: Lexicon,
    *,
    seed: int = 0,
    uncalled_by: UncalledRule = "estimate",
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """:func:`reward_comparison` of an audit's word table with ``lexicon``, from the table alone, so an
    audit written earlier can be compared again from its ``words.csv``; ``uncalled_by``: how precision@k
    ranks the words the floor did not call (module docstring)."""
    arguments = _table_arguments(table, uncalled_by)
    return reward_comparison(lexicon=lexicon, seed=seed, n_resamples=n_resamples, **arguments)


def table_precision(
    table: dict[str, Any], lexicon: Lexicon, *, seed: int = 0, uncalled_by: UncalledRule = "estimate"
) -> dict[str, dict[str, Any]]:
    """:func:`lexicon_precision` of an audit's word table with ``lexicon`` (precision@k and its controls
    alone, without the Kendall statistics of :func:`compare_table`)."""
    return lexicon_precision(lexicon=lexicon, seed=seed, **_table_arguments(table, uncalled_by))


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
