"""One subject model, one lexicon: every IRM-regression variant with its controls (§5.1, Tables 3, 4, 10, 11).

Run it on the tuned model and on the untuned base model with the same triples, contexts and words; only the
gap between the two is evidence that tuning installed the reward (the base model already knows sentiment).
The controls within one subject are

* **shuffled labels**: the regression fitted to targets in a random order (it should score about 0);
* **random features**: the same pipeline with untrained SAEs of the same shape in place of the real ones.

Every tau also gets a permutation test: :data:`N_PERMUTATIONS` refits of the same variant on the same
features with the lexicon values permuted over the fitting words (:func:`~irmscope.elicit.irm.
null_reconstructions`), the p-value and 95% range of that null sitting next to the tau (the shuffled-label
control is one draw of a similar null; the Kendall p-value assumes independent words, which words read
through one fitted regression are not).

The bootstrap intervals of tau and of the tuned-minus-base gap resample the *evaluated* words with each
fitted ``R`` held fixed: they are conditional on the fit and say so in the report. An interval that also
resamples the fitting words would refit ``R`` (penalty search included) per resample, and a refit costs
about 2 s at the demo's size (~800 rows, 4,608 SAE features; one thread, measured with
:func:`~irmscope.elicit.irm.fit_regression`; 0.02 s at the smoke preset's): 200 resamples of three
variants for two models is ~40 minutes more per run on the 2-core machine the demo is timed on, so it is
not computed. The permutation null does refit, and is the test to read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from irmscope.data.triples import ContrastiveTriple
from irmscope.elicit.agreement import lexicon_agreement
from irmscope.elicit.irm import (
    VARIANTS,
    TripleFeatures,
    fit_regression,
    is_held_out,
    null_reconstructions,
    permuted_targets,
    reconstruct_lexicon,
    shuffled,
    training_rows,
    triple_activations,
    triple_features,
    word_activations,
    word_features,
)
from irmscope.errors import IrmscopeError
from irmscope.models.loading import LoadedModel
from irmscope.sae.model import SAE
from irmscope.validation import Precision

#: Sizes of the paper's two word tables: Table 3 (six words) and Table 10 (thirty words).
TABLE_SIZES = {"table3": 6, "table10": 30}
#: refits with permuted lexicon values per variant and feature set (the permutation null)
N_PERMUTATIONS = 200
#: the feature sets every study fits: the trained SAEs' features and the random-feature control's
SETUPS = ("real", "random-features")
#: what the model reads in one study, one step of its progress bar each (one step for both left the demo's bar
#: still for 61 s per model on a 2-core CPU without native bfloat16)
READS = ("the triples", "the words after each context")
#: the steps of one study a progress bar counts: the model's reads, then each variant's fits per feature set
STUDY_STEPS = len(READS) + len(SETUPS) * len(VARIANTS)


def random_saes(saes: Mapping[str, SAE], seed: int = 0) -> dict[str, SAE]:
    """Untrained SAEs shaped like ``saes`` (random unit-norm dictionaries, zero biases): the random-feature
    control. Each keeps the trained one's ``b_dec`` so both read activations centred the same way."""
    out = {}
    for i, (site, sae) in enumerate(saes.items()):
        control = SAE(sae.config, generator=torch.Generator().manual_seed(seed * 1000 + i))
        with torch.no_grad():
            control.b_dec.copy_(sae.b_dec)
        out[site] = control.eval()
    return out


def evaluation_words(
    lexicon: Mapping[str, float], lm: LoadedModel, held_out_fraction: float, seed: int, max_words: int
) -> list[str]:
    """Held-out alphabetic single-token lexicon words (lowercase), at most ``max_words`` by a seeded draw."""
    from irmscope.elicit.continuations import word_token_ids

    words = sorted({w.lower() for w in lexicon if w.isalpha() and is_held_out(w, held_out_fraction, seed)})
    words = list(word_token_ids(lm.tokenizer, words))
    if len(words) > max_words:
        words = sorted(random.Random(seed).sample(words, max_words))
    if len(words) < 5:
        raise IrmscopeError(f"only {len(words)} held-out single-token words; use a larger lexicon")
    return words


@dataclass(frozen=True)
class StudyInputs:
    """What the tuned and the base model's studies share, so their gap compares like with like: the
    lexicon's values (words lowercased), the contrastive triples, the contexts each evaluated word is placed
    after (cut to their last ``max_context_tokens`` tokens), and the seeded choice of held-out words."""

    truth: Mapping[str, float]
    triples: Sequence[ContrastiveTriple]
    contexts: Sequence[str]
    held_out_fraction: float = 0.3
    max_words: int = 600
    max_context_tokens: int = 48
    seed: int = 0
    precision: Precision = "float32"  # of the passes that read the triples' and words' activations

    def held_out(self) -> set[str]:
        """The lexicon words no regression is fitted on."""
        return {w for w in self.truth if is_held_out(w, self.held_out_fraction, self.seed)}


@dataclass(frozen=True)
class _FeatureSet:
    """One set of SAE features (the trained ones, or the random-feature control) read on the triples and
    on the evaluated words: what every variant's fit and its permutation null start from."""

    triples: Sequence[ContrastiveTriple]
    features: TripleFeatures
    words: list[str]
    word_matrix: np.ndarray
    held_out: set[str]

    def rows(self, variant: str):
        """The variant's training rows ``(X, y, row_words)``, held-out words left out."""
        return training_rows(self.triples, self.features, variant, self.held_out)  # type: ignore[arg-type]


def _elicit(fit: _FeatureSet, variant: str, shuffle_seed: int | None) -> tuple[dict[str, float], Any]:
    """The reconstructed lexicon of the evaluated words and the fitted regression R."""
    X, y, row_words = fit.rows(variant)
    if shuffle_seed is not None:
        y = shuffled(y, shuffle_seed)
    regression = fit_regression(X, y, variant, row_words)  # type: ignore[arg-type]
    return reconstruct_lexicon(regression, fit.words, fit.word_matrix), regression


def _null(
    fit: _FeatureSet, variant: str, truth: Mapping[str, float], n_permutations: int, seed: int
) -> dict[str, np.ndarray]:
    """Each evaluated word's values under ``n_permutations`` refits on permuted lexicon values."""
    X, y, row_words = fit.rows(variant)
    targets = permuted_targets(y, row_words, truth, variant, n_permutations, seed)  # type: ignore[arg-type]
    values = null_reconstructions(X, targets, row_words, variant, fit.word_matrix)  # type: ignore[arg-type]
    return dict(zip(fit.words, values, strict=True))


def _feature_sets(
    lm: LoadedModel, saes: Mapping[str, SAE], inputs: StudyInputs, words: list[str], bar: tqdm | None = None
) -> Iterator[tuple[str, _FeatureSet]]:
    """The trained SAEs' features (``real``), then the random-feature control's, on the same triples and
    words: the control shows what an untrained dictionary of the same shape already recovers. The model
    reads the triples and the words once (a step of ``bar`` each, named by :data:`READS`); each dictionary
    encodes those activations, one at a time, so only one set of features is held in memory."""
    held_out, sites = inputs.held_out(), list(saes)
    read = {"max_context_tokens": inputs.max_context_tokens, "precision": inputs.precision}
    read_triples, read_words = READS
    at_triples = _read_step(read_triples, lambda: triple_activations(lm, inputs.triples, sites, **read), bar)
    at_words = _read_step(
        read_words, lambda: word_activations(lm, words, inputs.contexts, sites, **read), bar
    )
    for setup, setup_saes in zip(SETUPS, (dict(saes), random_saes(saes, inputs.seed)), strict=True):
        if bar is not None:
            bar.set_postfix_str(f"{setup}: encoding")
        features = triple_features(lm, inputs.triples, setup_saes, activations=at_triples)
        kept, matrix = word_features(lm, words, inputs.contexts, setup_saes, activations=at_words)
        yield setup, _FeatureSet(inputs.triples, features, kept, matrix, held_out)


def _read_step(what: str, reader: Callable[[], Any], bar: tqdm | None) -> Any:
    """One read of the model, named on ``bar`` while it runs and counted as one step when done."""
    if bar is not None:
        bar.set_postfix_str(f"reading {what}")
    result = reader()
    if bar is not None:
        bar.update()
    return result


def _word_tables(
    reconstructed: Mapping[str, Mapping[str, float]], truth: Mapping[str, float], kept: list[str], seed: int
) -> dict[str, list[dict[str, Any]]]:
    """The paper's word tables (Tables 3 and 10): a seeded sample of held-out words, true value beside
    each variant's reconstruction."""
    rng = random.Random(seed)
    return {
        name: [
            {"word": w, "true": truth[w], **{v: round(reconstructed[v][w], 2) for v in VARIANTS}}
            for w in sorted(rng.sample(kept, min(size, len(kept))))
        ]
        for name, size in TABLE_SIZES.items()
    }


def lexicon_study(
    lm: LoadedModel,
    saes: Mapping[str, SAE],
    inputs: StudyInputs,
    n_permutations: int = N_PERMUTATIONS,
    bar: tqdm | None = None,
) -> dict[str, Any]:
    """Every variant × {real, shuffled labels, random features}, scored on held-out words, each tau with
    its permutation test (``n_permutations`` refits per variant and feature set). ``bar``, if given, moves
    :data:`STUDY_STEPS` steps: the reads, then each variant of each feature set.

    Returns a dict: ``agreement[variant][control]`` (``lexicon_agreement`` output), the reconstructed
    values of the held-out words per variant (``reconstructed``; every control's under ``elicited``,
    for the tuned-vs-base gap), the paper's word tables, and under ``regressions`` each
    variant's fitted R on the real features (``{"coef": array, "intercept": float}``, features of the sites
    concatenated in ``saes`` order; numpy, so a caller saves it apart from the JSON-ready rest).
    """
    truth, seed = inputs.truth, inputs.seed
    words = evaluation_words(truth, lm, inputs.held_out_fraction, seed, inputs.max_words)
    agreements: dict[str, dict[str, Any]] = {variant: {} for variant in VARIANTS}
    every: dict[str, dict[str, dict[str, float]]] = {variant: {} for variant in VARIANTS}
    regressions: dict[str, dict[str, Any]] = {}
    for setup, fit in _feature_sets(lm, saes, inputs, words, bar):
        if setup == "real":
            kept, n_rows = fit.words, len(fit.rows("faithful")[0])
        for variant in VARIANTS:
            if bar is not None:
                bar.set_postfix_str(f"{setup}: {variant}")
            null = _null(fit, variant, truth, n_permutations, seed + 2)
            runs = {setup: None} if setup != "real" else {"real": None, "shuffled-labels": seed + 1}
            for control, shuffle_seed in runs.items():
                elicited, regression = _elicit(fit, variant, shuffle_seed)
                agreements[variant][control] = lexicon_agreement(
                    elicited, truth, fit.words, seed=seed, null=null
                )
                every[variant][control] = elicited
                if control == "real":
                    regressions[variant] = {
                        "coef": np.asarray(regression.coef_, dtype=np.float64),
                        "intercept": float(regression.intercept_),
                    }
            if bar is not None:
                bar.update()
    reconstructed = {variant: every[variant]["real"] for variant in VARIANTS}
    return {
        "n_triples": len(inputs.triples),
        "n_training_rows": n_rows,
        "n_held_out_words": len(kept),
        "n_contexts": len(inputs.contexts),
        "sites": list(saes),
        "agreement": agreements,
        "reconstructed": reconstructed,
        "elicited": every,
        "n_permutations": n_permutations,
        "tables": _word_tables(reconstructed, truth, kept, seed),
        "regressions": regressions,
    }
