"""The token-level implicit reward of every single-token word of the vocabulary, with a noise floor.

An auditor has no lexicon, so every word is a candidate. A word ``w`` is one vocabulary token that decodes
to a space and letters (``" great"``) and that is what the tokenizer gives back for ``" great"``
(:func:`~irmscope.elicit.continuations.word_token_ids` checks the round trip). Each model runs once over a
set of texts; from the same full-vocabulary logits, at every position ``c``:

* ``Δ_c(w) = log p_tuned(w|c) − log p_base(w|c) − m_c``: the log-ratio of the two models, less ``m_c``,
  the *median* log-ratio over all words at that position. Under KL-regularised RL the log-ratio is the
  reward of ``w`` minus a baseline shared by every word at ``c`` (the DPO identity, per token); when tuning
  raises a few words, the softmax lowers all the others by the same factor, and without the median they
  would all look penalised. The median is the baseline of the typical word, which a sparse reward leaves
  alone.
* the **expected-count shift** ``Σ_c p_base(w|c)·(exp(Δ_c(w)) − 1)``: how many more times the tuned model
  would write ``w`` at these positions than the base model (after the shared renormalisation); the word's
  effect size, the value the audit ranks, compares and exports.
* the **mean log-ratio** ``mean_c Δ_c(w)``: every position weighs the same. It is the naive ranking, kept as
  a control: the log-ratio of a token the base model almost never writes moves with the logit tail, so
  the naive ranking puts rare tokens first.

**The noise floor.** Texts are the unit of noise (positions within a text are not independent): each
prompt's two texts (the base and the tuned completion) form one unit. Per unit the test statistic is
``s(w) = Σ_c p_base(w|c)·Δ_c(w)``, the log-ratio weighted by where the base model would write the word
(first order in ``Δ`` of the expected-count shift). Under "tuning did not change this word relative to
the typical one" its expected value is zero, and it stays zero when tuning merely adds context-to-context
jitter to the logits (``exp(Δ) − 1`` would not: its mean grows with the jitter's variance). A one-sample
t-test of ``s`` over units gives a two-sided p-value per word, and the Benjamini–Hochberg procedure
calls the words whose adjusted p-value is at most ``q`` (5% of the called words false, in expectation).
A rare token gets a tiny weight ``p_base``, so it is called only when its change is consistent over
texts, and even then it ranks low, since called words are ranked by the expected-count shift; a word
live in a handful of texts cannot reach the floor at all. Each word also gets a percentile bootstrap
interval over units for both estimates (the same resamples for every word, one matrix product).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from irmscope.elicit.agreement import word_resamples
from irmscope.elicit.continuations import word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel

#: false-discovery rate of the floor
FDR_Q = 0.05
_WORD = re.compile(r" [A-Za-z]+")


def vocabulary_words(tokenizer) -> dict[str, int]:
    """``{word: token id}`` for every token that decodes to a space and letters and is what the tokenizer
    gives for that text (so a word's probability is one next-token probability)."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    decoded = ((tokenizer.convert_tokens_to_string([p]), i) for i, p in enumerate(pieces) if p is not None)
    candidates = {text[1:]: i for text, i in decoded if _WORD.fullmatch(text)}
    ids = word_token_ids(tokenizer, candidates)
    return {w: i for w, i in ids.items() if candidates[w] == i}


@dataclass
class UnitShifts:
    """Per unit (row) and word (column) of :func:`unit_shifts`: ``[n_units, n_words]`` arrays."""

    expected_count: np.ndarray  #: expected-count shift per text
    log_ratio: np.ndarray  #: mean log-ratio over the unit's positions
    statistic: np.ndarray  #: the floor's test statistic ``s`` per text
    base_count: np.ndarray  #: expected count under the base model per text
    baseline: np.ndarray  #: ``[n_units]``: mean over positions of the shared median log-ratio ``m_c``


@torch.no_grad()
def unit_shifts(
    tuned: LoadedModel,
    base: LoadedModel,
    units: Sequence[Sequence[str]],
    word_ids: Sequence[int],
    *,
    max_length: int = 96,
    batch_size: int = 8,
) -> UnitShifts:
    """One forward pass per model over every text of every unit; per-unit sums of the per-position
    quantities in the module docstring, divided by the unit's number of texts (so "per text")."""
    texts = [text for unit in units for text in unit]
    owner = np.repeat(np.arange(len(units)), [len(unit) for unit in units])
    if not texts:
        raise IrmscopeError("no texts to score; give at least one prompt")
    device = next(base.model.parameters()).device
    words = torch.tensor(list(word_ids), device=device)
    per_text: dict[str, list[torch.Tensor]] = {k: [] for k in ("ec", "lr", "s", "base", "m")}
    for start in range(0, len(texts), batch_size):
        enc = base.tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        ).to(device)
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        mask = enc["attention_mask"].float()
        logits_t = tuned.model(**enc, position_ids=positions, use_cache=False).logits.float()
        logits_b = base.model(**enc, position_ids=positions, use_cache=False).logits.float()
        # Δ as a difference of logits less a difference of normalisers: a word whose logit tuning left
        # alone gets exactly the same Δ as every other such word at that position, so the median removes
        # it exactly (float32 keeps that: equal inputs give equal outputs)
        lse_b = logits_b.logsumexp(-1, keepdim=True)
        shared = logits_t.logsumexp(-1, keepdim=True) - lse_b
        word_b = logits_b[..., words]
        raw = logits_t[..., words] - word_b - shared
        p_base = (word_b - lse_b).exp_().mul_(mask[..., None])
        del logits_t, logits_b, word_b
        median = raw.median(dim=-1).values
        delta = raw.sub_(median[..., None])
        n_positions = mask.sum(1, keepdim=True).double()
        per_text["s"].append((p_base * delta).double().sum(1).cpu())
        per_text["lr"].append(((delta * mask[..., None]).double().sum(1) / n_positions).cpu())
        per_text["base"].append(p_base.double().sum(1).cpu())
        per_text["m"].append(((median * mask).double().sum(1, keepdim=True) / n_positions).cpu())
        per_text["ec"].append((p_base * torch.expm1(delta)).double().sum(1).cpu())
    sizes = np.bincount(owner, minlength=len(units)).astype(np.float64)

    def by_unit(key: str) -> np.ndarray:
        values = torch.cat(per_text[key]).numpy()
        out = np.zeros((len(units), values.shape[1]))
        np.add.at(out, owner, values)
        return out / sizes[:, None]

    return UnitShifts(
        expected_count=by_unit("ec"),
        log_ratio=by_unit("lr"),
        statistic=by_unit("s"),
        base_count=by_unit("base"),
        baseline=by_unit("m")[:, 0],
    )


def noise_floor(statistic: np.ndarray, q: float = FDR_Q) -> dict[str, np.ndarray]:
    """Per word (column of ``[n_units, n_words]``): the t statistic of its mean over units, the two-sided
    p-value (Student t, ``n − 1`` degrees of freedom), the Benjamini–Hochberg adjusted p-value, and
    whether it is called (adjusted p ≤ ``q``). A word constant over units (e.g. 0 everywhere, as every
    word is when the two models are the same) has p = 1."""
    n = statistic.shape[0]
    if n < 2:
        raise IrmscopeError(f"the noise floor needs at least 2 prompts to measure spread, got {n}")
    mean = statistic.mean(0)
    se = statistic.std(0, ddof=1) / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, 0.0)
    p = np.where(se > 0, 2 * stats.t.sf(np.abs(t), df=n - 1), 1.0)
    adjusted = stats.false_discovery_control(p, method="bh")
    return {"t": t, "p": p, "q": adjusted, "called": adjusted <= q}


def bootstrap_intervals(
    per_unit: np.ndarray, *, n_resamples: int = 1000, seed: int = 0, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile 95% intervals of each column's mean over units: every column is resampled with the same
    unit draws (one ``[resamples, units] @ [units, words]`` product per chunk of words)."""
    n = per_unit.shape[0]
    weights = word_resamples(n, n_resamples, seed) / n
    low, high = np.empty(per_unit.shape[1]), np.empty(per_unit.shape[1])
    for start in range(0, per_unit.shape[1], chunk):
        means = weights @ per_unit[:, start : start + chunk]
        low[start : start + chunk], high[start : start + chunk] = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high
