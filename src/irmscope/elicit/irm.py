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
* **Held-out words**: a seeded hash of each word's *lemma* puts it in the fitting or the held-out set, so
  every inflection of a lemma ("love", "loved", "loving") falls on one side; ``R`` never sees a row whose
  word's lemma is held out (a neutral word too), and agreement is measured on held-out words only. The lemma
  is a heuristic (:func:`lemma_key`: the Snowball stem plus suffix stripping), since no spaCy English
  model or lookup table is installed offline.
* **Penalty of the ridge variants**: chosen by folds of whole lemmas (rows of one word share its value
  and look alike, so row-level leave-one-out would let a word's other rows, or its inflections, vouch for
  it; see :func:`irmscope.probes.ridge.group_cv_mse`).
* **Permutation null**: :func:`null_reconstructions` refits ``R`` on lexicon values permuted over the
  fitting words (the whole fit, penalty choice included), all permutations from one eigendecomposition.
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

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import snowballstemmer
import torch

from irmscope.data.triples import ContrastiveTriple
from irmscope.elicit.continuations import continuation_activations, word_token_ids
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.probes.ridge import group_cv_mse, ridge_predictions
from irmscope.sae.model import SAE
from irmscope.validation import Precision

Variant = Literal["faithful", "ridge-delta", "ridge-value"]
VARIANTS: tuple[Variant, ...] = ("faithful", "ridge-delta", "ridge-value")
LEXICON_RANGE = 4.0
_RIDGE_ALPHAS = np.logspace(-2, 5, 15)


#: (suffix, replacement) tried in order, after the Snowball stem; the first that leaves a stem of 3 or more
#: letters is stripped (Snowball keeps comparatives and agent nouns: "angrier", "bitterest", "abusers")
_SUFFIXES = (
    ("iness", "y"), ("ily", "y"), ("ies", "y"), ("ied", "y"), ("iest", "y"), ("ier", "y"),
    ("ingly", ""), ("edly", ""), ("ness", ""), ("ing", ""), ("est", ""), ("ed", ""), ("er", ""),
    ("ly", ""), ("es", ""), ("s", ""),
)  # fmt: skip
_STEMMER = snowballstemmer.stemmer("english")


@functools.cache  # called for every word of every fitting set and null refit; the stemmer is slow
def lemma_key(word: str) -> str:
    """A grouping key for the inflections of a word: the Snowball (Porter2) English stem, a final "i" read
    as "y", then one suffix Snowball keeps stripped, a doubled final consonant undoubled and a final "e"
    dropped ("loved", "loving", "loves" → "lov"; "angry", "angrier", "angrily" → "angry";
    "abuser", "abusers" → "abus").

    A heuristic, not a linguistic lemma. On the VADER lexicon it puts 97% of the regular inflection pairs
    (plural, past, participle, comparative, superlative) under one key (the suffix stripping alone: 83%;
    ``tests/test_elicit.py`` counts them); it also joins derivations ("excite", "excitement") and some
    unrelated words, which only moves more words together to one side of the split, and it misses
    irregular forms ("worse", "bad")."""
    w = _STEMMER.stemWord(word.lower())
    if w.endswith("i"):
        w = w[:-1] + "y"
    for suffix, replacement in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not (suffix == "s" and w.endswith("ss")):
            w = w[: -len(suffix)] + replacement
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]
    return w[:-1] if len(w) > 3 and w.endswith("e") else w


def lemma_groups(words: Sequence[str]) -> np.ndarray:
    """Fold groups for choosing a penalty: whole lemmas, so inflections never vouch for each other."""
    return np.asarray([lemma_key(w) for w in words])


def is_held_out(word: str, fraction: float = 0.3, seed: int = 0) -> bool:
    """Whether ``word`` is held out from fitting: a seeded hash of its :func:`lemma_key`, so the split
    never depends on word order and all inflections of a lemma fall on the same side."""
    digest = hashlib.sha256(f"{seed}:{lemma_key(word)}".encode()).digest()
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


def triple_activations(
    lm: LoadedModel,
    triples: Sequence[ContrastiveTriple],
    sites: Sequence[str],
    max_context_tokens: int = 48,
    precision: Precision = "float32",
) -> dict[str, torch.Tensor]:
    """``{site: [n_triples, 3, width]}``: the activations at each triple's positive, neutral and negative
    word, each run on top of the triple's shared prefix (see :mod:`.continuations`), with ``precision``'s
    matrix products."""
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
    return continuation_activations(
        lm, contexts, ids, sites=list(sites), max_context_tokens=max_context_tokens, precision=precision
    ).activations


def triple_features(
    lm: LoadedModel,
    triples: Sequence[ContrastiveTriple],
    saes: Mapping[str, SAE],
    max_context_tokens: int = 48,
    activations: Mapping[str, torch.Tensor] | None = None,
) -> TripleFeatures:
    """Every triple's three last words' SAE features: :func:`triple_activations` (or ``activations`` read
    by it already, e.g. shared by trained and random dictionaries of the same sites) encoded by ``saes``."""
    if activations is None:
        activations = triple_activations(lm, triples, list(saes), max_context_tokens)
    blocks = encode_sites(activations, saes)  # each [n, 3, d_sae]
    return TripleFeatures(
        positive=[b[:, 0] for b in blocks],
        neutral=[b[:, 1] for b in blocks],
        negative=[b[:, 2] for b in blocks],
    )


def word_activations(
    lm: LoadedModel,
    words: Sequence[str],
    contexts: Sequence[str],
    sites: Sequence[str],
    max_context_tokens: int = 48,
    precision: Precision = "float32",
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The single-token ``words`` (others dropped) and ``{site: [n_contexts, n_words, width]}``, the
    activations at each word after each context (``precision``'s matrix products)."""
    ids = word_token_ids(lm.tokenizer, words)
    if not ids:
        raise IrmscopeError("none of the words is a single token after a space for this model")
    result = continuation_activations(
        lm,
        contexts,
        list(ids.values()),
        sites=list(sites),
        max_context_tokens=max_context_tokens,
        precision=precision,
    )
    return list(ids), result.activations


def word_features(
    lm: LoadedModel,
    words: Sequence[str],
    contexts: Sequence[str],
    saes: Mapping[str, SAE],
    max_context_tokens: int = 48,
    activations: tuple[list[str], Mapping[str, torch.Tensor]] | None = None,
) -> tuple[list[str], np.ndarray]:
    """The single-token ``words`` (others dropped) and their SAE features after each context, averaged:
    :func:`word_activations` (or ``activations``, its result read already) encoded by ``saes``.

    Returns the kept words and a ``[n_words, sum of d_sae]`` matrix (layers concatenated in ``saes`` order).
    """
    kept, read = activations or word_activations(lm, words, contexts, list(saes), max_context_tokens)
    blocks = encode_sites(read, saes)  # each [n_contexts, n_words, d_sae]
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
    held_lemmas = {lemma_key(w) for w in held_out}  # inflections outside the lexicon are held out too
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
            if lemma_key(word) in held_lemmas:
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


def fit_regression(X: np.ndarray, y: np.ndarray, variant: Variant, words: Sequence[str]):
    """OLS for ``faithful``; otherwise ridge with its penalty chosen by folds of whole ``words`` (one per
    row; see the module docstring)."""
    from sklearn.linear_model import LinearRegression, Ridge

    if variant not in VARIANTS:
        raise IrmscopeError(f"unknown IRM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "faithful":
        return LinearRegression().fit(X, y)
    alpha = _RIDGE_ALPHAS[
        group_cv_mse(X, y[:, None], lemma_groups(words), alphas=_RIDGE_ALPHAS)[:, 0].argmin()
    ]
    return Ridge(alpha=float(alpha)).fit(X, y)


def permuted_targets(
    y: np.ndarray,
    words: Sequence[str],
    lexicon: Mapping[str, float],
    variant: Variant,
    n_permutations: int,
    seed: int,
) -> np.ndarray:
    """``[rows, permutations]`` targets of :func:`training_rows` with the lexicon values permuted over the
    fitting words (a word's rows keep one value; rows of words outside ``lexicon``, the neutral ones,
    keep 0). The delta variants' targets keep each row's distance and take the permuted value's sign."""
    fitted = sorted({w for w in words if lexicon.get(w, 0.0) != 0.0})
    if len(fitted) < 2:
        raise IrmscopeError("a permutation null needs at least 2 fitting words with a lexicon value")
    index = {w: i for i, w in enumerate(fitted)}
    rows = np.array([index.get(w, -1) for w in words])
    rng = np.random.default_rng(seed)
    values = np.array([lexicon[w] for w in fitted])
    permuted = np.stack([rng.permutation(values) for _ in range(n_permutations)], axis=1)
    new = np.where(rows[:, None] >= 0, permuted[np.maximum(rows, 0)], 0.0)
    return new if variant == "ridge-value" else np.sign(new) * np.abs(y)[:, None]


def null_reconstructions(
    X: np.ndarray,
    targets: np.ndarray,
    words: Sequence[str],
    variant: Variant,
    word_matrix: np.ndarray,
) -> np.ndarray:
    """``R`` refitted to every column of ``targets`` (from :func:`permuted_targets`) and applied to the
    evaluated words' features: ``[words, permutations]``, the same fit as :func:`fit_regression` (the
    penalty chosen per column by the same word folds) from one eigendecomposition per fold. Scaling to
    [-4, 4] is left out: it does not change a ranking."""
    if variant == "faithful":
        return ridge_predictions(X, targets, word_matrix, np.zeros(1))[0]
    mse = group_cv_mse(X, targets, lemma_groups(words), alphas=_RIDGE_ALPHAS)  # [alphas, permutations]
    predicted = ridge_predictions(X, targets, word_matrix, _RIDGE_ALPHAS)  # [alphas, words, permutations]
    return predicted[mse.argmin(0), :, np.arange(targets.shape[1])].T


def reconstruct_lexicon(regression, words: Sequence[str], features: np.ndarray) -> dict[str, float]:
    """``R`` on each word's features, scaled to [-4, 4] (largest absolute value → 4)."""
    return dict(zip(words, _scale(regression.predict(features)).tolist(), strict=True))


def shuffled(y: np.ndarray, seed: int) -> np.ndarray:
    """The targets in a seeded random order: the shuffled-label control."""
    return np.random.default_rng(seed).permutation(y)
