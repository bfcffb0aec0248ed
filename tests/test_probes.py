"""Reward probes (ridge, held-out scoring, shuffled controls, cross-fitting), the probe study on a tiny
model, steering, the ratings targets and DPO's implicit reward."""

import numpy as np
import pandas as pd
import pytest
import torch

from irmscope.artifacts import Samples
from irmscope.errors import IrmscopeError
from irmscope.leaderboard import METHODS, Coverage, MethodInputs
from irmscope.leaderboard.methods.endogenous import endogenous_reward
from irmscope.models import Sampling, load_model
from irmscope.models.hooks import steer
from irmscope.models.reading import completion_likelihoods
from irmscope.probes import (
    cross_fitted,
    fit_probe,
    group_split,
    held_out_score,
    probe_study,
    read_positions,
    read_residuals,
    steering_curves,
)
from irmscope.probes.experiment import review_targets
from irmscope.probes.steering import steered_completions
from irmscope.rewards import Lexicon, LexiconReward

rng = np.random.default_rng(0)
WORDS = ["good", "bad", "great", "awful", "fine", "movie", "plot", "actor"]
LEXICON = Lexicon({"good": 2.0, "great": 3.0, "bad": -2.0, "awful": -3.0})


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-llama")


def test_probe_recovers_a_linear_target_and_shuffled_labels_do_not():
    x = rng.standard_normal((300, 40))
    y = x @ rng.standard_normal(40) + 0.1 * rng.standard_normal(300)
    train, test = group_split(np.arange(300), 0.3, seed=0)
    score = held_out_score(x, y, train, test)
    assert score["pearson"]["value"] > 0.99 and score["pearson"]["low"] > 0.98
    low, high = score["shuffled_pearson_range"]
    assert abs(score["shuffled_pearson"]) < 0.2 and low < 0 < high
    assert score["shuffled_mae"] > 5 * score["mae"]
    probe = fit_probe(x, y)
    assert np.allclose(probe.predict(x[:3]), x[:3] @ probe.direction + probe.intercept)


def test_splits_and_cross_fitting_never_put_a_group_on_both_sides():
    groups = np.repeat(np.arange(40), 3)
    train, test = group_split(groups, 0.25, seed=1)
    assert not set(groups[train]) & set(groups[test]) and test.sum() == 30
    # the target is a property of the group that the features reveal only through the group's identity
    x = np.eye(40)[groups] + 0.01 * rng.standard_normal((120, 40))
    y = rng.standard_normal(40)[groups]
    in_sample = fit_probe(x, y).predict(x)
    assert np.corrcoef(in_sample, y)[0, 1] > 0.9
    predicted, chosen = cross_fitted({"identity": x}, y, groups)
    assert (
        abs(np.corrcoef(predicted, y)[0, 1]) < 0.4 and chosen == ["identity"] * 5
    )  # unseen: nothing to know
    with pytest.raises(IrmscopeError, match="NaN"):
        fit_probe(x, np.full(120, np.nan))


@pytest.mark.parametrize("width", [5, 60])  # tall (Gram eigenvectors) and wide (SVD) folds
def test_group_cv_error_matches_sklearn_ridge_refitted_per_fold(width):
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold

    from irmscope.probes.ridge import ALPHAS, group_cv_mse

    x, groups = rng.standard_normal((40, width)), np.repeat(np.arange(10), 4)
    y = (x[:, :3].sum(1) + rng.standard_normal(40))[:, None]
    squared = 0.0
    for fit, held in GroupKFold(n_splits=5).split(x, y, groups):
        squared += ((Ridge(alpha=ALPHAS[4]).fit(x[fit], y[fit, 0]).predict(x[held]) - y[held, 0]) ** 2).sum()
    assert np.isclose(group_cv_mse(x, y, groups)[4, 0], squared / 40)


def test_group_folds_choose_a_stronger_penalty_when_twins_share_a_target():
    # each group's rows are near-copies with one target: leave-one-out rewards memorising the group
    groups = np.repeat(np.arange(30), 4)
    x = rng.standard_normal((30, 50))[groups] + 0.01 * rng.standard_normal((120, 50))
    y = rng.standard_normal(30)[groups]
    assert fit_probe(x, y, groups).alpha > 100 * fit_probe(x, y).alpha


def test_pearson_interval_resamples_whole_groups():
    from irmscope.probes.ridge import pearson_ci

    truth = rng.standard_normal(30)
    predicted = truth + rng.standard_normal(30)
    twice, groups = np.repeat(truth, 2), np.repeat(np.arange(30), 2)
    by_row = pearson_ci(twice, np.repeat(predicted, 2))
    by_group = pearson_ci(twice, np.repeat(predicted, 2), groups)
    assert by_group.n == 30 and by_row.n == 60 and by_group.value == by_row.value
    assert (by_group.high - by_group.low) > 1.2 * (by_row.high - by_row.low)  # duplicates are not new data


def test_weighted_pearsons_are_those_of_the_repeated_rows_and_undefined_when_a_side_is_constant():
    """A bootstrap's correlations computed at once from how often each row was drawn equal Pearson's r of
    the repeated rows; a resample that drew one value of either side has no r (NaN), not the rounding
    residue of a weighted mean (the ratings probe's intervals on a few star ratings once took those in)."""
    from irmscope.probes.ridge import pearson, weighted_pearsons

    truth = np.array([0.1, 0.1, 0.1, 2.0, 0.1, 3.0])  # a repeated value whose weighted mean is inexact
    predicted = rng.standard_normal(6)
    weights = rng.multinomial(6, np.full(6, 1 / 6), size=400)
    r = weighted_pearsons(truth, predicted, weights)
    for row, value in zip(weights, r, strict=True):
        rows = np.repeat(np.arange(6), row)
        if np.ptp(truth[rows]) == 0:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(pearson(truth[rows], predicted[rows]), abs=1e-12)
    assert np.isnan(r).sum() > 10  # the case came up


def test_cross_fitting_chooses_the_read_out_inside_each_fold():
    groups = np.repeat(np.arange(40), 2)
    signal = rng.standard_normal((80, 10))
    y = signal[:, 0] + 0.1 * rng.standard_normal(80)
    predicted, chosen = cross_fitted({"noise": rng.standard_normal((80, 10)), "signal": signal}, y, groups)
    assert chosen == ["signal"] * 5 and np.corrcoef(predicted, y)[0, 1] > 0.95


class _WithBos:
    """A tokenizer that opens every text with a BOS token (id 1), as Llama's and Gemma's do."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.pad_token_id = tokenizer, tokenizer.pad_token_id

    def __call__(self, text, add_special_tokens=True):
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def test_pairs_open_with_the_tokens_the_policy_was_given(lm):
    """Sampling encodes a prompt with the tokenizer's special tokens, so a reading of the samples puts the
    same BOS first and counts it as prompt; a tokenizer without one (SmolLM2's) gets nothing added."""
    from types import SimpleNamespace

    from irmscope.models.readout import encode_pairs, leading_special_tokens

    assert leading_special_tokens(lm.tokenizer) == []
    bos = SimpleNamespace(tokenizer=_WithBos(lm.tokenizer))
    assert leading_special_tokens(bos.tokenizer) == [1]
    ids, mask, prompt_lengths = encode_pairs(bos, ["The film", ""], [" was good", " Bad"], None)
    plain, _, plain_lengths = encode_pairs(lm, ["The film", ""], [" was good", " Bad"], None)
    assert ids[:, 0].tolist() == [1, 1] and (prompt_lengths == plain_lengths + 1).all()
    assert ids[0, 1 : int(mask[0].sum())].tolist() == plain[0, : int(mask[0].sum()) - 1].tolist()
    with pytest.raises(IrmscopeError, match="empty text"):
        encode_pairs(bos, [""], [""], None)


def test_residuals_read_the_last_token_the_prompt_end_and_the_mean(lm):
    residuals = read_residuals(lm, ["the film was", "a"], [" good", " bad and awful"], progress=False)
    assert residuals.last.shape == (2, lm.n_layers, lm.d_model) == residuals.mean.shape
    assert residuals.prompt_end is not None and not np.allclose(residuals.last, residuals.prompt_end)
    only = read_residuals(lm, [""], [" good"], progress=False)
    assert only.prompt_end is None


def test_positions_past_the_curves_last_are_cut_before_the_pass_without_changing_the_rest(lm):
    prompts, texts = ["the film was", "", "a"], [" good and fine", " bad and awful plot " * 3, " great"]
    every = read_positions(lm, prompts, texts, layer=1, progress=False)
    first_three = read_positions(lm, prompts, texts, layer=1, progress=False, max_positions=3)
    assert len(every[1]) > 3 and [len(x) for x in first_three] == [3, 3, 1]
    for whole, cut in zip(every, first_three, strict=True):
        np.testing.assert_allclose(cut, whole[: len(cut)], rtol=1e-5, atol=1e-6)


def test_pearson_is_scipys_without_its_per_call_cost():
    from scipy import stats

    from irmscope.leaderboard.metrics import _correlation
    from irmscope.probes.ridge import pearson

    a = rng.normal(size=60)
    for b in (a + rng.normal(size=60), np.round(a + rng.normal(size=60)), -a):
        assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
        assert _correlation("spearman", a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(pearson(a, np.ones(60))) and np.isnan(pearson(a[:1], a[:1]))


def test_probe_study_finds_a_lexicon_count_on_a_tiny_model(lm):
    texts = [" ".join(rng.choice(WORDS, 12)) for _ in range(80)]
    y = LexiconReward(LEXICON).score(texts)
    study = probe_study(lm, ["the film was "] * 80, texts, targets=y, max_positions=5, progress=False)
    summary = study.summary
    assert set(summary["per_layer"]) == {"last_token", "prompt_end", "mean_pooled"}
    best = summary["best"]
    assert best["pearson"]["value"] > 0.9 and best["pearson"]["value"] > best["shuffled_pearson_range"][1]
    assert len(summary["by_position"]["curve"]) == 5
    assert study.cross_fitted.shape == (80,) and np.corrcoef(study.cross_fitted, y)[0, 1] > 0.8
    # the prompt is identical for every text, so its last token knows nothing about the continuation
    prompt_end = [row["pearson"]["value"] for row in summary["per_layer"]["prompt_end"]]
    assert all(np.isnan(r) or abs(r) < 0.3 for r in prompt_end)


def test_steering_pairs_every_scale_with_the_unsteered_completions(lm):
    prompts = ["the film was", "the plot is", "i think it"]
    site = "blocks.1.hook_resid_post"
    direction = np.random.default_rng(0).standard_normal(
        lm.d_model
    )  # its own seed: independent of test order
    result = steering_curves(
        lm,
        lm,
        directions={"test": (site, direction)},
        prompts=prompts,
        reward=LexiconReward(LEXICON),
        scales=[0.0, 8.0],
        n_random=1,
        sampling=Sampling(max_new_tokens=6, batch_size=3, progress=False),
    )
    assert set(result["curves"]) == {"test", "random 1 (test)"}
    points = result["curves"]["test"]["points"]
    assert points[0]["reward_change"] == {**points[0]["reward_change"], "value": 0.0, "low": 0.0, "high": 0.0}
    assert points[0]["example"] != points[1]["example"]  # a large step changes what the model writes
    with pytest.raises(IrmscopeError, match="zero or not finite"):
        steering_curves(
            lm,
            lm,
            directions={"zero": (site, np.zeros(lm.d_model))},
            prompts=prompts,
            reward=LexiconReward(LEXICON),
        )


def test_steered_completions_sample_each_offset_as_alone_with_common_random_numbers(lm):
    """Offsets sampled together in one batch (unsteered, and vectors at two sites) give the completions
    each gives sampled on its own, where every copy of the prompts draws the same random numbers."""
    prompts = ["the film was", "the plot is", "i think it"]
    vectors = 4 * torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(1))
    offsets = [None, ("blocks.1.hook_resid_post", vectors[0]), ("blocks.0.hook_resid_post", vectors[1])]
    together = Sampling(max_new_tokens=6, batch_size=9, progress=False)
    alone = Sampling(max_new_tokens=6, batch_size=3, progress=False)
    sampled = steered_completions(lm, prompts, offsets, together)
    assert sampled[0] == alone.complete(lm, prompts)
    for (site, vector), completions in zip(offsets[1:], sampled[1:], strict=True):
        with steer(lm.model, site, vector):
            assert completions == alone.complete(lm, prompts)
    assert sampled[1] != sampled[0] and sampled[2] != sampled[0]  # the vectors act on their own rows only
    # too many to fit one batch: each offset alone, the same completions
    assert steered_completions(lm, prompts, offsets, alone) == sampled


def test_review_targets_map_stars_to_minus_one_to_one_and_fall_back_to_labels():
    stars = pd.DataFrame({"text": ["a", "b", "c"], "rating": [1, 10, 7], "label": [0, 1, 1]})
    texts, y, kind = review_targets(stars, 2)
    assert texts == ["a", "b"] and y.tolist() == [-1.0, 1.0] and kind == "ratings"
    _, y, kind = review_targets(stars.drop(columns="rating"), 3)
    assert y.tolist() == [-1.0, 1.0, 1.0] and kind == "labels"
    assert review_targets(stars[["text"]], 3) is None


TUNED_IMPLICIT = METHODS["DPO implicit reward"]
OTHER_IMPLICIT = METHODS["DPO implicit reward (probes.dpo_model)"]


def test_dpo_implicit_reward_is_beta_times_the_log_likelihood_ratio(lm):
    samples = {
        "prompts": ["the film was", "the plot is"],
        "base_completions": [" good", " bad"],
        "tuned_completions": [" great fun", " awful"],
        "base_scores": [1.0, -1.0],
        "tuned_scores": [2.0, -2.0],
    }
    coverage = Coverage.from_samples(Samples(**samples))
    other = load_model("tiny-llama", seed=1)
    inputs = MethodInputs(coverage, other, lm, {}, dpo_beta=0.5, seed=0)
    estimates = TUNED_IMPLICIT.estimate(inputs)
    assert estimates.base is None and estimates.base_note
    ids = lm.tokenizer("the film was great fun", add_special_tokens=False, return_tensors="pt")["input_ids"]
    n_prompt = len(lm.tokenizer("the film was", add_special_tokens=False)["input_ids"])

    def manual(model):
        with torch.no_grad():
            logp = torch.log_softmax(model.model(input_ids=ids).logits[0, :-1].float(), -1)
        return float(logp[torch.arange(n_prompt - 1, ids.shape[1] - 1), ids[0, n_prompt:]].sum())

    likelihood = completion_likelihoods(lm, ["the film was"], [" great fun"]).log_likelihood[0]
    assert likelihood == pytest.approx(manual(lm), rel=1e-4)
    assert estimates.tuned[2] == pytest.approx(0.5 * (manual(other) - manual(lm)), rel=1e-3)
    same = TUNED_IMPLICIT.estimate(MethodInputs(coverage, lm, lm, {}, 0.5, 0))
    assert np.allclose(same.tuned, 0)
    # another checkpoint's implicit reward, on the same completions, when the run names one
    assert OTHER_IMPLICIT.estimate(MethodInputs(coverage, lm, lm, {}, 0.5, 0)) is None
    named = MethodInputs(coverage, lm, lm, {}, 0.5, 0, other_policies={"dpo": other})
    assert np.allclose(OTHER_IMPLICIT.estimate(named).tuned, estimates.tuned)


def test_likelihood_methods_share_one_pass_per_model(lm):
    """The DPO implicit rewards and the endogenous reward read every model's likelihoods of the coverage
    completions from one pass: the base model, which three rows read, runs over them once."""
    samples = {
        "prompts": ["the film was", "a plot"] * 5,
        "base_completions": [" dull", " thin"] * 5,
        "tuned_completions": [" great fun", " fine"] * 5,
        "base_scores": [0.0] * 10,
        "tuned_scores": [1.0] * 10,
    }
    coverage = Coverage.from_samples(Samples(**samples))
    other = load_model("tiny-llama", seed=1)
    passes = {"base": 0, "tuned": 0}
    counters = [
        lm.model.register_forward_hook(lambda *_: passes.__setitem__("base", passes["base"] + 1)),
        other.model.register_forward_hook(lambda *_: passes.__setitem__("tuned", passes["tuned"] + 1)),
    ]
    inputs = MethodInputs(coverage, other, lm, {}, 0.5, 0, other_policies={"dpo": other})
    try:
        implicit = TUNED_IMPLICIT.estimate(inputs).tuned
        endogenous = METHODS["endogenous reward"].estimate(inputs)
        assert np.allclose(OTHER_IMPLICIT.estimate(inputs).tuned, implicit)
    finally:
        for counter in counters:
            counter.remove()
    batches_per_pass = -(-len(coverage.prompts) // 16)  # completion_likelihoods reads 16 texts a batch
    assert passes == {"base": batches_per_pass, "tuned": batches_per_pass}
    alone = completion_likelihoods(lm, coverage.prompts, coverage.completions)
    assert np.array_equal(endogenous.base, endogenous_reward(alone))


def test_endogenous_reward_is_the_summed_inverse_soft_bellman_reward(lm):
    prompt, completion = "the film was", " great fun and"
    ids = lm.tokenizer(prompt + completion, add_special_tokens=False, return_tensors="pt")["input_ids"]
    n_prompt = len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0].float()
    value = torch.logsumexp(logits, -1)  # V of the state after each position
    log_pi = torch.log_softmax(logits, -1)
    per_token = [
        log_pi[t - 1, ids[0, t]] + value[t - 1] - value[t] for t in range(n_prompt, ids.shape[1])
    ]  # r(s, a) = log pi(a|s) + V(s) - V(s'), alpha = 1
    got = endogenous_reward(completion_likelihoods(lm, [prompt, "a", "the film was"], [completion, " b", ""]))
    assert got.shape == (3,) and got[0] == pytest.approx(float(sum(per_token)), rel=1e-4)
    assert got[2] == pytest.approx(0, abs=1e-5)  # no completion, no reward


@pytest.mark.parametrize("n_rows", [40, 120])  # fewer rows than features (dual form) and more (primal)
def test_grouped_probe_fits_are_scikit_learns_ridge_at_each_targets_penalty(n_rows):
    """The grouped probe's fit from one eigendecomposition equals scikit-learn's Ridge (on the standardised
    features, at the penalty each target's group folds chose), for one target and for several."""
    from sklearn.linear_model import Ridge

    from irmscope.probes.ridge import _ridge, fit_probe

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_rows, 60)) * rng.uniform(0.5, 3, 60) + rng.standard_normal(60)
    y = np.column_stack([x[:, :3].sum(1), rng.standard_normal(n_rows), x[:, 5] - x[:, 7]])
    groups = np.arange(n_rows) // 2
    directions, intercepts, alphas, _ = _ridge(x, y, groups)
    standard = (x - x.mean(0)) / x.std(0)
    for t in range(y.shape[1]):
        reference = Ridge(alpha=alphas[t]).fit(standard, y[:, t])
        assert np.allclose(standard @ (directions[t] * x.std(0)), standard @ reference.coef_, atol=1e-8)
        assert np.allclose(x @ directions[t] + intercepts[t], reference.predict(standard), atol=1e-8)
    alone = fit_probe(x, y[:, 0], groups)
    assert np.allclose(alone.direction, directions[0]) and alone.alpha == alphas[0]


def test_ridge_folds_and_candidates_in_threads_give_the_serial_results():
    from irmscope.probes.ridge import group_cv_mse, in_threads

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 2)
    candidates = {f"L{k}": rng.normal(size=(60, 12)) for k in range(4)}
    y = candidates["L2"][:, 0] + 0.1 * rng.normal(size=60)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the loop
        serial_mse = group_cv_mse(candidates["L0"], y[:, None], groups)
        serial = cross_fitted(candidates, y, groups)
        torch.set_num_threads(2)  # two workers, each with one BLAS thread
        assert np.allclose(group_cv_mse(candidates["L0"], y[:, None], groups), serial_mse, rtol=1e-12)
        threaded = cross_fitted(candidates, y, groups)
        nested = in_threads(lambda k: in_threads(lambda j: j * k, [1, 2, 3]), [1, 2])  # inner runs in place
    finally:
        torch.set_num_threads(threads)
    assert np.allclose(threaded[0], serial[0], rtol=1e-10) and threaded[1] == serial[1]
    assert nested == [[1, 2, 3], [2, 4, 6]]


@pytest.mark.parametrize("offset", [0.0, 1e4])  # features far from 0: the kernel is centred before folds
def test_group_cv_shares_one_row_kernel_and_matches_each_fold_refitted(offset):
    from sklearn.model_selection import GroupKFold

    from irmscope.probes.ridge import ALPHAS, _RowKernel, group_cv_mse, ridge_predictions

    rng = np.random.default_rng(3)
    x, groups = rng.standard_normal((36, 80)) + offset, np.repeat(np.arange(12), 3)
    y = np.stack([x[:, :4].sum(1) - 4 * offset, rng.standard_normal(36)], axis=1)
    kernel, squared = _RowKernel.of(x), np.zeros((len(ALPHAS), 2))
    for fit, held in GroupKFold(n_splits=5).split(x, y, groups):
        refitted = ridge_predictions(x[fit], y[fit], x[held])  # two products over the features per fold
        assert np.allclose(kernel.predictions(fit, held, y[fit], ALPHAS), refitted, rtol=1e-9, atol=1e-9)
        squared += ((refitted - y[held]) ** 2).sum(1)
    assert np.allclose(group_cv_mse(x, y, groups), squared / 36, rtol=1e-9)
