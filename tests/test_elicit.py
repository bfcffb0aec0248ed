"""Word-level reward elicitation: continuations, agreement metrics, the IRM regression, the policy shift."""

import io
import math

import numpy as np
import pytest
import torch
from scipy import stats
from tqdm.auto import tqdm

from irmscope.data.triples import ContrastiveTriple
from irmscope.elicit.agreement import (
    _kendall_bootstrap_ci,
    agreement,
    lexicon_agreement,
    lexicon_gap,
    pairwise_signs,
    resampled_taus,
    tau_distance,
    tau_gap,
    untied_pairs,
    within_sign_permutations,
)
from irmscope.elicit.continuations import continuation_activations, word_token_ids
from irmscope.elicit.irm import (
    VARIANTS,
    TripleFeatures,
    fit_regression,
    is_held_out,
    lemma_key,
    null_reconstructions,
    permuted_targets,
    reconstruct_lexicon,
    sentiment_deltas,
    training_rows,
)
from irmscope.elicit.lexicon_study import random_saes
from irmscope.elicit.policy_shift import ESTIMATES, policy_shift
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.models.hooks import capture_activations
from irmscope.sae import SAE, SAEConfig


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_continuations_match_running_each_sequence_alone(family):
    lm = load_model(family)
    contexts = ["The movie was really", "I think that this film is quite a"]  # different lengths: padding
    words = word_token_ids(lm.tokenizer, ["good", "bad", "fun", "boring"])
    sites = ["blocks.1.mlp.hook_post", "blocks.0.hook_resid_post"]
    result = continuation_activations(lm, contexts, list(words.values()), sites=sites, rows_per_step=3)
    for i, context in enumerate(contexts):
        logits = lm.model(**lm.tokenizer([context], return_tensors="pt")).logits[0, -1]
        log_probs = torch.log_softmax(logits, -1)
        for j, (word, token) in enumerate(words.items()):
            enc = lm.tokenizer([f"{context} {word}"], return_tensors="pt")
            alone = capture_activations(
                lm.model, sites, enc["input_ids"], enc["attention_mask"], positions=-1
            )
            for site in sites:
                torch.testing.assert_close(
                    result.activations[site][i, j], alone[site][0], atol=1e-5, rtol=1e-4
                )
            assert result.log_probs[i, j].item() == pytest.approx(log_probs[token].item(), abs=1e-5)


def test_continuations_come_back_in_the_contexts_order():
    """Contexts are read in batches of similar length, not in the order given; every row of the result is
    still its own context's, with its own word."""
    lm = load_model("tiny-llama")
    contexts = ["I think that this film is quite a", "So", "The movie was really", "It was", "Well"]
    ids = list(word_token_ids(lm.tokenizer, ["good", "bad", "fun", "boring", "great"]).values())
    per_context = [[token] for token in ids[: len(contexts)]]
    site = "blocks.0.hook_resid_post"
    together = continuation_activations(lm, contexts, per_context, sites=[site], contexts_per_batch=2)
    for i, context in enumerate(contexts):
        alone = continuation_activations(lm, [context], [per_context[i]], sites=[site])
        torch.testing.assert_close(
            together.activations[site][i], alone.activations[site][0], atol=1e-5, rtol=1e-4
        )
        assert together.log_probs[i, 0].item() == pytest.approx(alone.log_probs[0, 0].item(), abs=1e-5)


def test_continuations_take_one_word_list_per_context():
    lm = load_model("tiny-llama")
    ids = word_token_ids(lm.tokenizer, ["good", "bad"])
    shared = continuation_activations(
        lm, ["It was", "So"], list(ids.values()), sites=["blocks.0.mlp.hook_post"]
    )
    per_row = continuation_activations(
        lm, ["It was", "So"], [[ids["bad"]], [ids["good"]]], sites=["blocks.0.mlp.hook_post"]
    )
    act = "blocks.0.mlp.hook_post"
    torch.testing.assert_close(per_row.activations[act][0, 0], shared.activations[act][0, 1])
    torch.testing.assert_close(per_row.activations[act][1, 0], shared.activations[act][1, 0])
    with pytest.raises(IrmscopeError, match="contexts but"):
        continuation_activations(lm, ["It was"], [[1], [2]])


def test_word_token_ids_keep_single_tokens_only(smollm2_tokenizer):
    ids = word_token_ids(smollm2_tokenizer, ["good", "antidisestablishmentarianism"])
    assert list(ids) == ["good"]


def test_word_token_ids_in_one_batch_equal_one_tokenizer_call_per_word(smollm2_tokenizer):
    """One batched call gives every word the id a call of the tokenizer on that word alone gives, whatever
    an earlier padded call left set: over the vocabulary's own words, capitals, accents, apostrophes,
    special tokens, spaces, repeats and the empty string."""
    vocabulary = [token.lstrip("Ġ") for token in smollm2_tokenizer.get_vocab()][:3000]
    words = vocabulary + ["Good", "naïve", "don't", "<|endoftext|>", "<|im_start|>", "a b", " ", "", "good"]

    def one_by_one(tokenizer, words):
        alone = {w: tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in dict.fromkeys(words)}
        return {w: ids[0] for w, ids in alone.items() if len(ids) == 1}

    expected = one_by_one(smollm2_tokenizer, words)
    smollm2_tokenizer(["a padded call", "leaves"], padding=True, truncation=True, max_length=8)  # no trace
    assert word_token_ids(smollm2_tokenizer, words) == expected
    assert list(word_token_ids(smollm2_tokenizer, words)) == list(expected)  # first-seen order kept
    assert 1000 < len(expected) < len(set(words))  # both kinds of word are there
    assert word_token_ids(smollm2_tokenizer, []) == {}


def test_agreement_extremes_and_degenerate_input():
    x = np.arange(10.0)
    assert agreement(x, x).kendall_tau == pytest.approx(1.0)
    assert agreement(-x, x).kendall_tau == pytest.approx(-1.0)
    assert agreement(-x, x).sign_agreement == pytest.approx(0.0)  # 0 has no sign; -1..-9 vs 1..9 disagree
    constant = agreement(np.zeros(10), x)
    assert math.isnan(constant.kendall_tau) and math.isnan(constant.kendall_p)
    with pytest.raises(IrmscopeError, match="NaN"):
        agreement([np.nan] * 6, x[:6])


def test_bootstrap_interval_is_kendall_tau_b_of_resamples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=80)
    y = np.round(x + rng.normal(size=80))  # ties in y
    low, high = _kendall_bootstrap_ci(x, y, 400, seed=3)
    draws = rng.integers(0, 80, size=(400, 80))
    reference = [stats.kendalltau(x[i], y[i]).statistic for i in draws]
    assert low == pytest.approx(np.percentile(reference, 2.5), abs=0.03)
    assert high == pytest.approx(np.percentile(reference, 97.5), abs=0.03)
    a = agreement(x, y)
    assert a.kendall_ci[0] < a.kendall_tau < a.kendall_ci[1]
    assert a.kendall_tau == pytest.approx(stats.kendalltau(x, y).statistic)


def test_lexicon_agreement_splits_negative_words():
    truth = {f"w{i}": v for i, v in enumerate([-3, -2, -1.5, -1, -0.5, 0.5, 1, 2, 3, 4])}
    elicited = {w: v * 2 for w, v in truth.items()}
    result = lexicon_agreement(elicited, truth)
    assert result["all"]["kendall_tau"] == pytest.approx(1.0)
    assert result["negative"]["n"] == 5 and result["negative"]["kendall_tau"] == pytest.approx(1.0)
    with pytest.raises(IrmscopeError, match="share none"):
        lexicon_agreement({"a": 1.0}, {"b": 1.0})


def test_held_out_split_is_seeded_and_about_the_right_size():
    words = [f"word{i}" for i in range(2000)]
    held = [w for w in words if is_held_out(w, 0.3, seed=0)]
    assert 0.26 < len(held) / len(words) < 0.34
    assert held == [w for w in reversed(words) if is_held_out(w, 0.3, seed=0)][::-1]
    assert held != [w for w in words if is_held_out(w, 0.3, seed=1)]
    assert is_held_out("Great", 0.3) == is_held_out("great", 0.3)


INFLECTIONS = [
    ("love", "loved", "loving", "loves"),
    ("hate", "hated", "hates", "hating"),
    ("happy", "happier", "happiest", "happily", "happiness"),
    ("stop", "stopped", "stopping", "stops"),
    ("great", "greater", "greatest", "greatly"),
    ("bore", "bored", "boring", "bores"),
    ("sad", "sadly", "sadness"),
    ("enjoy", "enjoyed", "enjoying", "enjoys"),
    ("worry", "worried", "worries", "worrying"),
]


def test_held_out_split_keeps_every_inflection_of_a_lemma_on_one_side():
    for family in INFLECTIONS:
        assert len({lemma_key(w) for w in family}) == 1, family
    assert lemma_key("bless") != lemma_key("bles") and lemma_key("good") != lemma_key("goodbye")
    for seed in range(20):
        for family in INFLECTIONS:
            assert len({is_held_out(w, 0.3, seed) for w in family}) == 1, (seed, family)


def _inflection_pairs(words: set[str]) -> list[tuple[str, str]]:
    """Pairs of lexicon words one of which is a regular inflection of the other (plural, past, participle,
    comparative, superlative), spelling rules included (a dropped "e", y → i, a doubled consonant)."""
    pairs = []
    for word in sorted(words):
        forms = set()
        for suffix in ("s", "es", "ed", "d", "ing", "er", "est"):
            forms |= {word + suffix, word[:-1] + suffix if word.endswith("e") else ""}
            forms |= {word[:-1] + "i" + suffix if word.endswith("y") else ""}
            if (
                len(word) > 2
                and word[-1] not in "aeiouwxy"
                and word[-2] in "aeiou"
                and word[-3] not in "aeiou"
            ):
                forms.add(word + word[-1] + suffix)
        pairs += [(word, form) for form in sorted(forms) if form in words and form != word]
    return pairs


def test_lemma_key_keeps_regular_inflections_of_the_vader_lexicon_together():
    """Measured on the shipped VADER lexicon, not hand-picked families; suffix stripping alone (the first
    version) split 17% of the pairs, so this test fails on it."""
    from irmscope.rewards import load_reward

    words = {w.lower() for w in load_reward("vader").lexicon if w.isalpha()}
    pairs = _inflection_pairs(words)
    split = [(a, b) for a, b in pairs if lemma_key(a) != lemma_key(b)]
    assert len(pairs) > 2000 and len(split) / len(pairs) < 0.04, split[:20]
    for family in [
        ("suffer", "suffered", "suffering"),
        ("attacker", "attackers"),
        ("agree", "agreed"),
        ("horrible", "horribly"),
        ("cry", "cried"),
        ("winner", "winners"),
        ("angry", "angrier"),
    ]:
        assert len({lemma_key(w) for w in family}) == 1, family  # the reviewer's counterexamples


def test_tau_distance_is_the_share_of_discordant_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    i, j = np.triu_indices(30, k=1)
    discordant = np.mean(np.sign(x[i] - x[j]) != np.sign(y[i] - y[j]))
    assert tau_distance(stats.kendalltau(x, y).statistic) == pytest.approx(discordant)


def _word_regression_data(rng, signal: float, n_fit: int = 60, n_held: int = 40, width: int = 15):
    """Fitting words (three noisy rows each) and held-out words whose features carry ``signal`` times
    their value along one direction; no signal: features and values independent."""
    direction = rng.normal(size=width)
    direction /= np.linalg.norm(direction)
    values = rng.uniform(-4, 4, n_fit + n_held)
    words = [f"w{i}" for i in range(n_fit + n_held)]
    centre = signal * np.outer(values, direction) / 4 + rng.normal(size=(n_fit + n_held, width))
    rows = np.repeat(np.arange(n_fit), 3)
    X = centre[rows] + 0.3 * rng.normal(size=(len(rows), width))
    row_words = [words[r] for r in rows]
    return X, values[rows], row_words, dict(zip(words, values, strict=True)), words[n_fit:], centre[n_fit:]


@pytest.mark.parametrize("variant", ["faithful", "ridge-delta", "ridge-value"])
def test_the_permutation_null_refits_exactly_what_fit_regression_fits(variant):
    X, values, row_words, lexicon, _, held = _word_regression_data(np.random.default_rng(1), 1.0)
    y = values if variant == "ridge-value" else np.sign(values) * np.abs(values + 0.5)
    targets = permuted_targets(y, row_words, lexicon, variant, 5, seed=0)
    null = null_reconstructions(X, targets, row_words, variant, held)
    for k in range(5):
        refit = fit_regression(X, targets[:, k], variant, row_words).predict(held)
        assert np.allclose(null[:, k], refit, atol=1e-6), (variant, k)
    # one value per word: a word's rows move together
    first = {w: t for w, t in zip(row_words, targets[:, 0], strict=True)}
    assert all(first[w] == t for w, t in zip(row_words, targets[:, 0], strict=True))


def _permutation_p(rng, signal: float, n_fit: int = 60) -> float:
    X, y, row_words, lexicon, held_words, held = _word_regression_data(rng, signal, n_fit)
    null = null_reconstructions(
        X,
        permuted_targets(y, row_words, lexicon, "ridge-value", 200, rng.integers(1 << 30)),
        row_words,
        "ridge-value",
        held,
    )
    elicited = fit_regression(X, y, "ridge-value", row_words).predict(held)
    result = agreement(elicited, [lexicon[w] for w in held_words], null=null)
    assert result.n_permutations == 200
    return result.permutation_p


def test_permutation_p_values_are_uniform_without_signal_and_small_with_it():
    rng = np.random.default_rng(7)
    null_p = np.array([_permutation_p(rng, 0.0) for _ in range(100)])
    assert stats.kstest(null_p, "uniform").pvalue > 0.01
    assert 0.01 <= np.mean(null_p < 0.05) <= 0.11  # binomial band around 5% for 100 draws
    # with signal: small, though never tiny: where the features order words by value, a refit on permuted
    # values that happens to load on that axis also ranks held-out words well (in either direction), so
    # the null is wide (its 95% range reached +-0.6 at signal 3 on 60 fitting words)
    assert max(_permutation_p(rng, 2.0, n_fit=150) for _ in range(3)) < 0.02


def test_agreement_without_a_null_permutes_the_elicited_values():
    x = np.arange(20.0)
    result = agreement(x, x)
    assert result.n_permutations == 200 and result.permutation_p == pytest.approx(1 / 201)
    low, high = result.permutation_range
    assert -0.4 < low < 0 < high < 0.4
    with pytest.raises(IrmscopeError, match="permutation null"):
        agreement(x, x, null=np.zeros((5, 3)))


@pytest.mark.parametrize("draws", [300, 2**24 - 1, 2**24])
def test_resampled_taus_are_scipys_tau_b_of_the_resampled_words_and_the_matrix_forms_to_the_bit(draws):
    """The fast form (tie groups for the denominators, a float32 product for the numerator while a
    resample's total count is below 2**24) equals the three float64 matrix products it replaced to the
    bit, on either side of that switch, and scipy's tau-b of the resampled words (each draw a word) to
    rounding; ties in both variables, and a read-out close to y, so the sums are large."""
    rng = np.random.default_rng(draws)
    n = 300
    y = np.round(rng.normal(size=n), 1)  # ties
    x = np.round(y + 0.3 * rng.normal(size=n), 1)
    counts = rng.multinomial(draws, np.full(n, 1 / n), size=6).astype(float)
    sy = np.sign(y[:, None] - y[None, :])

    def quad(matrix):
        return np.einsum("bi,bi->b", counts @ matrix, counts)

    sx = np.sign(x[:, None] - x[None, :])
    matrix_form = quad(sx * sy) / np.sqrt(quad(np.abs(sx)) * quad(np.abs(sy)))
    taus = resampled_taus([x, y], y, counts)
    assert np.array_equal(taus[0], matrix_form) and np.all(taus[1] == 1.0)
    assert np.array_equal(untied_pairs(x, counts), quad(np.abs(sx)))
    if draws < 10_000:
        words = np.repeat(np.arange(n), counts[0].astype(int))
        assert taus[0, 0] == pytest.approx(stats.kendalltau(x[words], y[words]).statistic, abs=1e-12)


def test_pairwise_signs_are_the_float_forms_signs_and_keep_its_nan():
    """Compared in int8, the signs of every pairwise difference are the float form's: ties, the smallest
    subnormal against 0, differences that overflow to ±inf; with an infinity or NaN among the values the
    float form itself, NaN included (inf - inf). (That every tau is unchanged for finite values follows,
    and the matrix-form test above checks it to the bit.)"""
    rng = np.random.default_rng(3)
    values = np.r_[np.round(rng.normal(size=200), 1), 5e-324, 0.0, -5e-324, 1.7e308, -1.7e308, 1e-300]
    with np.errstate(all="raise"):  # finite values: no subtraction, so nothing overflows
        signs = pairwise_signs(values)
    with np.errstate(over="ignore", invalid="ignore"):  # the float form's own warnings
        assert signs.dtype == np.int8 and np.array_equal(signs, np.sign(values[:, None] - values[None, :]))
        for odd in (np.r_[values, np.inf, -np.inf], np.r_[values, np.nan]):
            expected = np.sign(odd[:, None] - odd[None, :])
            assert np.array_equal(pairwise_signs(odd), expected, equal_nan=True)


def test_resampled_taus_leave_float32_where_it_would_round():
    """Past a total count of 2**24 a float32 product would round (16,777,219 concordant draws against
    one word become 16,777,218 in float32, and tau would no longer be 1); weights that are not whole
    numbers never take the float32 path; no words give no ties and NaN taus."""
    y = np.array([0.0, 1.0, 2.0])
    assert resampled_taus([y], y, np.array([[2.0**24 + 1, 2.0, 0.0]]))[0, 0] == 1.0
    x, weights = np.array([0.0, 2.0, 1.0]), np.array([[0.3, 1.7, 1.0], [1.1, 0.2, 1.7]])
    sx, sy = (np.sign(v[:, None] - v[None, :]) for v in (x, y))

    def quad(matrix):
        return np.einsum("bi,bi->b", weights @ matrix, weights)

    expected = quad(sx * sy) / np.sqrt(quad(np.abs(sx)) * quad(np.abs(sy)))  # float32 would miss by ~1e-8
    assert np.allclose(resampled_taus([x], y, weights)[0], expected, rtol=1e-13, atol=0)
    assert np.isnan(resampled_taus([np.zeros(0)], np.zeros(0), np.zeros((2, 0)))).all()


def test_the_gap_uses_the_same_word_resamples_for_both_models():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=200)
    base = truth + rng.normal(size=200)
    alike = base + 0.05 * rng.normal(size=200)  # as good as the base model, word for word
    gap = tau_gap(alike, base, truth)
    single = agreement(base, truth).kendall_ci
    assert gap["low"] <= gap["value"] <= gap["high"] and gap["low"] < 0 < gap["high"]
    assert gap["high"] - gap["low"] < (single[1] - single[0]) / 3  # pairing cancels the shared words
    better = tau_gap(truth + 0.2 * rng.normal(size=200), base, truth)
    assert better["low"] > 0.2 and better["n_nan_resamples"] == 0
    expected = stats.kendalltau(truth + 0, truth).statistic - stats.kendalltau(base, truth).statistic
    assert tau_gap(truth, base, truth)["value"] == pytest.approx(expected)
    words = [f"w{i}" for i in range(200)]
    as_dicts = [dict(zip(words, v, strict=True)) for v in (alike, base, truth)]
    split = lexicon_gap(*as_dicts, words)
    assert (
        split["all"]["value"] == pytest.approx(gap["value"]) and split["negative"]["n"] == (truth < 0).sum()
    )


def _triple(pos: str, neg: str, pv: float, nv: float) -> ContrastiveTriple:
    return ContrastiveTriple(
        f"It was {pos}", "It was usual", f"It was {neg}", pos, "usual", neg, pv, nv, 7, 0
    )


def test_sentiment_deltas_sum_layer_distances_and_negate_the_negative():
    f = TripleFeatures(
        positive=[np.array([[3.0, 4.0]]), np.array([[1.0, 0.0]])],
        neutral=[np.zeros((1, 2)), np.zeros((1, 2))],
        negative=[np.array([[0.0, 2.0]]), np.array([[0.0, 0.0]])],
    )
    plus, minus = sentiment_deltas(f)
    assert plus.tolist() == [6.0] and minus.tolist() == [-2.0]


def test_training_rows_leave_held_out_words_out():
    triples = [_triple("good", "bad", 1.9, -2.5), _triple("great", "awful", 3.1, -2.0)]
    f = TripleFeatures(positive=[np.eye(2)], neutral=[np.zeros((2, 2))], negative=[-np.eye(2)])
    X, y, words = training_rows(triples, f, "faithful", held_out={"awful"})
    assert words == ["good", "bad", "great"] and X.shape == (3, 2)
    assert np.abs(y).max() == pytest.approx(4.0) and (np.sign(y) == [1, -1, 1]).all()
    _, y_value, words_value = training_rows(triples, f, "ridge-value", held_out=set())
    assert words_value.count("usual") == 2 and y_value.tolist()[:3] == [1.9, -2.5, 0.0]


def test_regression_recovers_a_linear_lexicon_on_held_out_words():
    """Features that encode each word's value linearly: every variant must rank held-out words right."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=40)
    values = {f"w{i}": float(v) for i, v in enumerate(rng.uniform(-4, 4, size=300))}
    embed = {w: v * direction / 4 + 0.05 * rng.normal(size=40) for w, v in values.items()}
    words = list(values)
    pos = [w for w in words if values[w] >= 1]
    neg = [w for w in words if values[w] <= -1]
    triples = [_triple(p, n, values[p], values[n]) for p, n in zip(pos, neg, strict=False)]
    f = TripleFeatures(
        positive=[np.stack([embed[t.positive_word] for t in triples])],
        neutral=[np.stack([0.05 * rng.normal(size=40) for _ in triples])],
        negative=[np.stack([embed[t.negative_word] for t in triples])],
    )
    held = {w for w in words if is_held_out(w, 0.3)}
    test_words = sorted(held)
    matrix = np.stack([embed[w] for w in test_words])
    for variant in ("faithful", "ridge-delta", "ridge-value"):
        X, y, row_words = training_rows(triples, f, variant, held)
        elicited = reconstruct_lexicon(fit_regression(X, y, variant, row_words), test_words, matrix)
        assert max(abs(v) for v in elicited.values()) == pytest.approx(4.0)
        assert lexicon_agreement(elicited, values, test_words)["all"]["kendall_tau"] > 0.6, variant


def test_random_saes_keep_shape_and_centre_but_not_the_dictionary():
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=4))
    with torch.no_grad():
        sae.b_dec.fill_(0.5)
    control = random_saes({"s": sae}, seed=0)["s"]
    assert control.config == sae.config and torch.equal(control.b_dec, sae.b_dec)
    assert not torch.equal(control.W_dec, sae.W_dec)


def test_trained_and_random_dictionaries_encode_one_reading_of_the_triples_and_words(monkeypatch):
    """The random-feature control reads the same activations as the trained SAEs: the model runs over
    the triples once and over the words once, and each set of features equals its dictionary's alone."""
    from irmscope.elicit import irm
    from irmscope.elicit.lexicon_study import StudyInputs, _feature_sets

    lm = load_model("tiny-llama")
    site = "blocks.1.hook_resid_post"
    saes = {site: SAE(SAEConfig(d_in=lm.d_model, d_sae=16, architecture="topk", k=4))}
    triples = [_triple("good", "bad", 1.9, -2.5), _triple("great", "awful", 3.1, -2.0)]
    truth = {"good": 1.9, "bad": -2.5, "great": 3.1, "awful": -2.0, "fun": 2.3}
    inputs = StudyInputs(truth, triples, ["The film was", "I found it"], max_context_tokens=8)
    reads = []
    read = irm.continuation_activations
    monkeypatch.setattr(irm, "continuation_activations", lambda *a, **k: reads.append(1) or read(*a, **k))
    sets = dict(_feature_sets(lm, saes, inputs, ["good", "fun", "awful"]))
    assert len(reads) == 2 and list(sets) == ["real", "random-features"]
    for name, dictionaries in (("real", saes), ("random-features", random_saes(saes, inputs.seed))):
        alone = irm.triple_features(lm, triples, dictionaries, max_context_tokens=8)
        np.testing.assert_array_equal(sets[name].features.negative[0], alone.negative[0])
        words, matrix = irm.word_features(lm, ["good", "fun", "awful"], inputs.contexts, dictionaries, 8)
        assert sets[name].words == words and np.array_equal(sets[name].word_matrix, matrix)


def test_a_study_moves_its_progress_bar_once_for_the_reads_and_once_per_variant_and_feature_set():
    """The elicitation takes minutes at the demo's size, so its study counts its steps on a bar: the
    model's reads, then every variant's fits for the trained and the random dictionaries."""
    from irmscope.data.triples import build_contrastive_triples
    from irmscope.elicit.lexicon_study import READS, SETUPS, STUDY_STEPS, StudyInputs, lexicon_study

    lm = load_model("tiny-llama")
    saes = {"blocks.1.hook_resid_post": SAE(SAEConfig(d_in=lm.d_model, d_sae=16, architecture="topk", k=4))}
    good = ["good", "great", "fun", "lovely", "nice", "superb", "fine", "brilliant", "charming", "wonderful"]
    bad = ["bad", "awful", "dull", "boring", "poor", "weak", "terrible", "bland", "silly", "sloppy"]
    truth = {w: 1 + i / 5 for i, w in enumerate(good)} | {w: -1 - i / 5 for i, w in enumerate(bad)}
    texts = [f"The movie was {good[i % 10]} and the plot was {bad[(3 * i) % 10]} overall." for i in range(60)]
    triples = build_contrastive_triples(texts, truth, lm.tokenizer, seed=0, max_triples=40)
    inputs = StudyInputs(
        truth, triples, ["The film was", "I found it"], held_out_fraction=0.5, max_context_tokens=8
    )
    printed = io.StringIO()
    with tqdm(total=STUDY_STEPS, desc="eliciting", file=printed) as bar:
        lexicon_study(lm, saes, inputs, n_permutations=3, bar=bar)
        assert bar.n == STUDY_STEPS == len(READS) + len(SETUPS) * len(VARIANTS)
    assert f"{STUDY_STEPS}/{STUDY_STEPS}" in printed.getvalue()
    assert all(f"reading {what}" in printed.getvalue() for what in READS)
    assert all(f"{setup}: {variant}" in printed.getvalue() for setup in SETUPS for variant in VARIANTS)


def test_the_elicitation_bar_counts_both_studies_and_the_policy_shift(monkeypatch, capsys):
    from irmscope.config import load_config
    from irmscope.elicit import reward_study
    from irmscope.elicit.lexicon_study import STUDY_STEPS

    monkeypatch.setattr(
        reward_study, "lexicon_study", lambda lm, saes, inputs, bar: bar.update(STUDY_STEPS) or {}
    )
    monkeypatch.setattr(reward_study, "_policy_shift_study", lambda *a: ({}, {}))
    monkeypatch.setattr(reward_study, "_irm_gap", lambda *a: {})
    lm = load_model("tiny-llama")
    texts = ["This movie was good and the acting was great but the ending was bad and dull overall"] * 40
    lexicon = {"good": 2.0, "great": 3.0, "bad": -2.0, "dull": -1.5}
    settings = load_config("smoke").elicit
    reward_study.elicit_lexicon_reward(
        lm, lm, tuned_saes={}, base_saes={}, lexicon=lexicon, texts=texts, shift_levels=None,
        settings=settings, progress=True,
    )  # fmt: skip
    total = 2 * STUDY_STEPS + 1
    assert f"{total}/{total}" in capsys.readouterr().err


def test_policy_shift_of_a_model_against_itself_is_zero_and_has_no_ranking():
    lm = load_model("tiny-llama")
    words = ["good", "bad", "fun", "boring", "great", "awful"]
    shift = policy_shift(lm, lm, words, ["The movie was good", "I found it"]).of()
    assert set(shift.values()) == {0.0}
    truth = dict(zip(words, [1.9, -2.5, 2.3, -1.3, 3.1, -2.0], strict=True))
    assert math.isnan(lexicon_agreement(shift, truth)["all"]["kendall_tau"])


def test_a_word_whose_logit_tuning_raised_ranks_first_in_both_policy_shift_estimates():
    """A stand-in for tuning: the 'tuned' model is the base with two words' logits moved by ±1.5 nats."""
    import copy

    from irmscope.models.loading import LoadedModel

    base = load_model("tiny-llama")
    words = ["good", "bad", "fun", "boring", "great", "awful"]
    ids = word_token_ids(base.tokenizer, words)
    tuned = LoadedModel(copy.deepcopy(base.model), base.tokenizer, "tuned")
    bias = torch.zeros(tuned.model.config.vocab_size)
    bias[ids["fun"]], bias[ids["awful"]] = 1.5, -1.5
    tuned.model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + bias)
    texts = ["The movie was good and", "I found it rather", "What a", "It was the most"]
    estimates = policy_shift(tuned, base, words, texts)
    shifts = estimates.shift
    assert set(shifts) == set(estimates.reference_level) == set(ESTIMATES)
    for estimate, shift in shifts.items():
        ranked = sorted(shift, key=shift.get)
        assert ranked[-1] == "fun" and ranked[0] == "awful", estimate
        assert shift == estimates.of(estimate)
    # the expected-count estimate is the log-ratio of summed probabilities, exactly
    lp_tuned = _log_probs_alone(tuned, texts, [ids["fun"]])
    lp_base = _log_probs_alone(base, texts, [ids["fun"]])
    expected = math.log(lp_tuned.exp().sum() / lp_base.exp().sum())
    assert shifts["expected-count"]["fun"] == pytest.approx(expected, rel=1e-6)
    assert estimates.reference_level["expected-count"]["fun"] == pytest.approx(
        math.log(lp_base.exp().sum()), rel=1e-6
    )
    with pytest.raises(IrmscopeError, match="expected-count"):
        estimates.of("expected")


@torch.no_grad()
def _log_probs_alone(lm, texts, token_ids) -> torch.Tensor:
    """The oracle: each text run alone (no batch, no padding), ``log p(word | text[:t])`` at every token."""
    rows = []
    for text in texts:
        ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
        rows.append(torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)[:, token_ids])
    return torch.cat(rows).double()


def test_shift_levels_read_in_batches_equal_each_text_read_alone():
    """The levels the read-samples stage keeps: batches of texts of different lengths (padding, length
    order, a prompt tokenised apart) give every position's log-probability sum and log expected count."""
    from irmscope.elicit.policy_shift import shift_levels

    lm = load_model("tiny-llama")
    prompts = ["The movie was", "", "I found it rather dull and", "What"]
    completions = [" good", " Bad", " long", " a film this was, truly"]
    levels = shift_levels(lm, lm, ["good", "bad", "fun"], prompts, completions, batch_size=3)
    ids = list(word_token_ids(lm.tokenizer, ["good", "bad", "fun"]).values())
    assert sorted(levels.token_ids.tolist()) == sorted(ids)
    columns = [levels.token_ids.tolist().index(i) for i in ids]
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]  # each pair tokenises as its text
    alone = [_log_probs_alone(lm, [text], ids) for text in texts]
    assert levels.n_contexts == sum(len(a) for a in alone) and levels.n_texts == 4
    for label in ("tuned", "reference"):
        for row, text_alone in enumerate(alone):  # each text's own sums, in the texts' order
            np.testing.assert_allclose(levels.log_prob_sum[label][row, columns], text_alone.sum(0), rtol=1e-5)
            np.testing.assert_allclose(
                levels.log_count[label][row, columns], text_alone.logsumexp(0), rtol=1e-5
            )
    some = levels.of_texts([0, 3])
    assert (some.n_texts, some.n_contexts) == (2, len(alone[0]) + len(alone[3]))
    pooled = torch.cat([alone[0], alone[3]])
    by_word = some.shift(lm.tokenizer, ["good", "bad", "fun"])
    for column, word in enumerate(word_token_ids(lm.tokenizer, ["good", "bad", "fun"])):
        assert by_word.reference_level["expected-count"][word] == pytest.approx(
            float(pooled[:, column].logsumexp(0))
        )
        assert by_word.reference_level["mean-log-ratio"][word] == pytest.approx(
            float(pooled[:, column].mean())
        )
    with pytest.raises(IrmscopeError, match="other words"):
        levels.shift(lm.tokenizer, ["good", "awful"])


def test_scoring_contexts_are_review_openings_chosen_without_the_lexicon(smollm2_tokenizer):
    from irmscope.data.triples import build_contrastive_triples
    from irmscope.elicit.reward_study import scoring_contexts

    texts = [
        f"review {i}: the film was good and the plot was bad, so we left early and went home"
        for i in range(40)
    ]
    contexts = scoring_contexts(texts, 8, seed=0)
    assert contexts == scoring_contexts(texts, 8, seed=0) and len(contexts) == 8
    assert all(8 <= len(c.split()) <= 30 and c.startswith("review 3") for c in contexts)  # the last reviews
    triples = build_contrastive_triples(texts, {"good": 2.0, "bad": -2.0}, smollm2_tokenizer, max_triples=5)
    assert not {t.prefix.rstrip() for t in triples} & set(contexts)  # not the slots rewarded words filled
    with pytest.raises(IrmscopeError, match="9 or more words"):
        scoring_contexts(["too short"], 1)


def test_within_sign_null_is_uniform_when_only_the_sign_carries_signal_while_the_plain_null_rejects():
    """Elicited values that know each word's sign and nothing of its size: the plain null (values permuted
    over all words) rejects, the within-sign null (true values permuted within each sign) does not."""
    rng = np.random.default_rng(3)
    within, plain = [], []
    for _ in range(100):
        truth = rng.choice([-1.0, 1.0], 60) * rng.uniform(0.5, 4.0, 60)
        elicited = np.sign(truth) + rng.normal(0.0, 0.5, 60)
        result = agreement(elicited, truth, n_resamples=10, seed=int(rng.integers(1 << 30)))
        within.append(result.within_sign_p)
        plain.append(result.permutation_p)
    assert result.n_within_sign_permutations == 200
    assert stats.kstest(within, "uniform").pvalue > 0.01
    assert 0.01 <= np.mean(np.array(within) < 0.05) <= 0.11
    assert max(plain) < 0.01
    # with the size known too, the within-sign null rejects
    ranked = agreement(truth + rng.normal(0.0, 0.3, 60), truth)
    assert ranked.within_sign_p < 0.01
    kept = within_sign_permutations(truth, 5, seed=0)
    assert (np.sign(kept) == np.sign(truth)[:, None]).all()
    assert all(sorted(kept[:, k]) == sorted(truth) for k in range(5))


@pytest.mark.parametrize("n_words", [12, 150, 151, 400])
def test_column_taus_is_scipys_tau_b_on_either_side_of_the_switch(n_words, monkeypatch):
    from scipy import stats

    from irmscope.elicit import agreement as agreement_module
    from irmscope.elicit.agreement import column_taus

    rng = np.random.default_rng(n_words)
    y = rng.integers(-3, 4, n_words).astype(float)  # ties in y
    columns = rng.integers(-2, 3, (n_words, 6)).astype(float)  # ties in the columns
    columns[:, 0] = 1.0  # no ranking: NaN, as scipy gives
    expected = [stats.kendalltau(c, y).statistic for c in columns.T]
    assert np.allclose(column_taus(columns, y), expected, equal_nan=True, atol=1e-12)
    if n_words <= 150:  # the sign-matrix form, all columns at once: each word drawn once, to the bit
        once = resampled_taus(list(columns.T), y, np.ones((1, n_words)))[:, 0]
        assert np.array_equal(column_taus(columns, y), once, equal_nan=True)
        monkeypatch.setattr(agreement_module, "SIGN_MATRIX_CELLS", 4 * n_words**2)  # blocks of 4 columns
        assert np.array_equal(column_taus(columns, y), once, equal_nan=True)


def test_a_null_tau_equal_to_the_observed_counts_whatever_the_rounding():
    """The permutation p counts null taus at least as large as the observed one; a null column ranked
    exactly like the observed one must count, even when the two taus differ in the last bits (the null's
    come from the sign-matrix form, the observed one from scipy)."""
    from scipy import stats

    from irmscope.elicit.agreement import permutation_test

    y = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 0.5])
    x = np.array([2.0, 1.0, 3.0, 6.0, 4.0, 0.0])
    observed = float(stats.kendalltau(x, y).statistic)
    null = np.stack([x, x[::-1]], axis=1)  # one column equal to x: tau equal to the observed
    p, _, n = permutation_test(observed + 1e-15, null, y)
    assert n == 2 and p == (1 + 1) / (1 + 2)
