"""The main paper's reconstruction of the implicit reward lexicon from SAE features (§4.3, Appendix E.2).

For each contrastive triple (positive, neutral, negative input, differing only in the last word) and each
selected layer ``l``, the SAE of that layer encodes the MLP activation at the sentiment token into feature
activations ``f_l``. Then

* the *sentiment activation deltas* are ``Δ+ = Σ_l ‖f_l(x+) − f_l(x0)‖`` and
  ``Δ− = −Σ_l ‖f_l(x−) − f_l(x0)‖`` (the paper negates the negative one to give it a polarity);
* a linear regression ``R`` maps the concatenated features ``A_concat(x+)`` to ``Δ+`` and ``A_concat(x−)``
  to ``Δ−`` (one row each);
* ``R`` applied to the features of single-token lexicon words in context, averaged over the contexts and
  scaled to ``[-4, 4]``, is the reconstructed lexicon.

Decisions the paper leaves open, taken here once:

* **Scaling to [-4, 4]**: divide by the largest absolute value and multiply by 4, so zero stays zero and
  signs are kept (sign agreement is a reported metric). Rank metrics do not depend on it.
* **Held-out words**: a seeded hash puts each word in the fitting or the held-out set; ``R`` never sees a
  row whose word is held out, and agreement is measured on held-out words only.
* **Averaging over occurrences**: ``R`` is linear, so the mean prediction over a word's contexts is ``R``
  of its mean features; we average the features.

Variants (the faithful one is always reported; the others sit beside it, never instead):

* ``faithful``: ordinary least squares on ``±Δ``, as in the paper. With more features than rows it is the
  minimum-norm interpolating solution, which generalises poorly.
* ``ridge-delta``: the same targets with ridge regression, its penalty chosen by cross-validation.
* ``ridge-value``: ridge regression straight onto the lexicon values of the fitting words (neutral words
  count 0): a supervised read-out that uses the reward's values, not just its polarity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from irmscope.data.triples import ContrastiveTriple
from irmscope.elicit.continuations import continuation_activations, word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.sae.model import SAE

Variant = Literal["faithful", "ridge-delta", "ridge-value"]
VARIANTS: tuple[Variant, ...] = ("faithful", "ridge-delta", "ridge-value")
LEXICON_RANGE = 4.0
_RIDGE_ALPHAS = np.logspace(-2, 5, 15)


def is_held_out(word: str, fraction: float = 0.3, seed: int = 0) -> bool:
    """Whether ``word`` is held out from fitting: a seeded hash, so the split never depends on word order."""
    digest = hashlib.sha256(f"{seed}:{word.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def encode_sites(activations: Mapping[str, torch.Tensor], saes: Mapping[str, SAE]) -> list[np.ndarray]:
    """SAE feature activations per site (in ``saes``' order), each ``[..., d_sae]`` as float64 numpy."""
    blocks = []
    for site, sae in saes.items():
        with torch.no_grad():
            blocks.append(sae.encode(activations[site].to(sae.W_dec.device)).double().cpu().numpy())
    return blocks


@dataclass
class TripleFeatures:
    """Per-layer SAE features at the sentiment token of each triple's three inputs."""

    positive: list[np.ndarray]  # one [n_triples, d_sae] block per layer
    neutral: list[np.ndarray]
    negative: list[np.ndarray]

    @property
    def n(self) -> int:
        return self.positive[0].shape[0]


def triple_features(
    lm: LoadedModel,
    triples: Sequence[ContrastiveTriple],
    saes: Mapping[str, SAE],
    max_context_tokens: int = 48,
) -> TripleFeatures:
    """Run every triple's shared prefix once and its three last words on top (see :mod:`.continuations`)."""
    if not triples:
        raise IrmscopeError(
            "no contrastive triples to elicit from; build some with build_contrastive_triples"
        )
    ids = []
    for t in triples:
        found = word_token_ids(lm.tokenizer, [t.positive_word, t.neutral_word, t.negative_word])
        if len(found) != 3:
            raise IrmscopeError(f"triple words {t.texts[0][-30:]!r}... are not single tokens for this model")
        ids.append([found[t.positive_word], found[t.neutral_word], found[t.negative_word]])
    contexts = [t.prefix.rstrip() for t in triples]
    result = continuation_activations(lm, contexts, ids, list(saes), max_context_tokens=max_context_tokens)
    blocks = encode_sites(result.activations, saes)  # each [n, 3, d_sae]
    return TripleFeatures(
        positive=[b[:, 0] for b in blocks],
        neutral=[b[:, 1] for b in blocks],
        negative=[b[:, 2] for b in blocks],
    )


def word_features(
    lm: LoadedModel,
    words: Sequence[str],
    contexts: Sequence[str],
    saes: Mapping[str, SAE],
    max_context_tokens: int = 48,
) -> tuple[list[str], np.ndarray]:
    """The single-token ``words`` (others dropped) and their SAE features after each context, averaged.

    Returns the kept words and a ``[n_words, sum of d_sae]`` matrix (layers concatenated in ``saes`` order).
    """
    ids = word_token_ids(lm.tokenizer, words)
    if not ids:
        raise IrmscopeError("none of the words is a single token after a space for this model")
    kept = list(ids)
    result = continuation_activations(lm, contexts, list(ids.values()), list(saes), max_context_tokens)
    blocks = encode_sites(result.activations, saes)  # each [n_contexts, n_words, d_sae]
    return kept, np.concatenate([b.mean(axis=0) for b in blocks], axis=1)


def sentiment_deltas(features: TripleFeatures) -> tuple[np.ndarray, np.ndarray]:
    """``(Δ+, Δ−)`` per triple: summed per-layer distances from the neutral input; ``Δ−`` negated."""
    plus = sum(
        np.linalg.norm(p - z, axis=1) for p, z in zip(features.positive, features.neutral, strict=True)
    )
    minus = sum(
        np.linalg.norm(m - z, axis=1) for m, z in zip(features.negative, features.neutral, strict=True)
    )
    return np.asarray(plus), -np.asarray(minus)


def _scale(values: np.ndarray) -> np.ndarray:
    peak = np.abs(values).max()
    return values * (LEXICON_RANGE / peak) if peak > 0 else values


def training_rows(
    triples: Sequence[ContrastiveTriple],
    features: TripleFeatures,
    variant: Variant,
    held_out: set[str],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The regression's ``(X, y, words)``: one row per positive and per negative input whose word is fitted.

    ``ridge-value`` also fits the neutral inputs (target 0), which anchors its zero.
    """
    plus, minus = sentiment_deltas(features)
    X, y, words = [], [], []
    pos = np.concatenate(features.positive, axis=1)
    neg = np.concatenate(features.negative, axis=1)
    neu = np.concatenate(features.neutral, axis=1)
    for i, t in enumerate(triples):
        rows = [
            (pos[i], plus[i], t.positive_value, t.positive_word),
            (neg[i], minus[i], t.negative_value, t.negative_word),
        ]
        if variant == "ridge-value":
            rows.append((neu[i], 0.0, 0.0, t.neutral_word))
        for x, delta, value, word in rows:
            if word.lower() in held_out:
                continue
            X.append(x)
            y.append(value if variant == "ridge-value" else delta)
            words.append(word.lower())
    if len(X) < 2:
        raise IrmscopeError("fewer than 2 triple rows left after holding words out; build more triples")
    y_arr = np.asarray(y)
    if variant != "ridge-value":
        y_arr = _scale(y_arr)  # "normalised for compatibility with the lexicon" (App. E.2)
    return np.stack(X), y_arr, words


def fit_regression(X: np.ndarray, y: np.ndarray, variant: Variant):
    """OLS for ``faithful``; ridge with a cross-validated penalty otherwise (scikit-learn)."""
    from sklearn.linear_model import LinearRegression, RidgeCV

    if variant not in VARIANTS:
        raise IrmscopeError(f"unknown IRM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    model = LinearRegression() if variant == "faithful" else RidgeCV(alphas=_RIDGE_ALPHAS)
    return model.fit(X, y)


def reconstruct_lexicon(regression, words: Sequence[str], features: np.ndarray) -> dict[str, float]:
    """``R`` on each word's features, scaled to [-4, 4] (largest absolute value → 4)."""
    return dict(zip(words, _scale(regression.predict(features)).tolist(), strict=True))


def shuffled(y: np.ndarray, seed: int) -> np.ndarray:
    """The targets in a seeded random order: the shuffled-label control."""
    return np.random.default_rng(seed).permutation(y)
