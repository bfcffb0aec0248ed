"""Issue-7 elicitors on data with a known answer: inverse RL (max-entropy and max-margin) and its
non-identifiability, and contrast-consistent search, alone and as leaderboard rows."""

import numpy as np
import pytest

from irmscope.errors import IrmscopeError
from irmscope.irl import (
    PENALTIES,
    TIE_TOLERANCE,
    accuracy,
    cross_fitted_irl,
    first_best,
    fit_irl,
    identifiability,
    mean_log_likelihood,
    pair_design,
    within_prompt_differences,
)
from irmscope.leaderboard import METHODS, Coverage, MethodInputs
from irmscope.models import load_model
from irmscope.probes.ccs import fit_ccs
from irmscope.probes.residuals import Residuals, load_residuals, read_residuals, save_residuals
from irmscope.rewards import Lexicon

N_PROMPTS, WIDTH = 100, 40


def demonstrations(seed: int = 0):
    """Base and tuned completions of the same prompts whose features carry a linear reward; the tuned
    policy's completions score higher on it (as a policy tuned on it would)."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(WIDTH)
    direction /= np.linalg.norm(direction)
    features = rng.standard_normal((2 * N_PROMPTS, WIDTH))
    expert = np.arange(2 * N_PROMPTS) >= N_PROMPTS
    features[expert] += 1.5 * direction
    groups = np.tile(np.arange(N_PROMPTS), 2)
    return features, expert, groups, features @ direction


@pytest.mark.parametrize("kind", ["max-entropy", "max-margin"])
def test_irl_recovers_a_reward_the_expert_follows_from_held_out_prompts(kind):
    features, expert, groups, true = demonstrations()
    estimate, fits, chosen = cross_fitted_irl(features, expert, groups, kind=kind)
    assert len(fits) == 5 and chosen == [None] * 5 and np.corrcoef(estimate, true)[0, 1] > 0.6
    pairs = (estimate[N_PROMPTS:] > estimate[:N_PROMPTS]) == (true[N_PROMPTS:] > true[:N_PROMPTS])
    assert pairs.mean() > 0.8


@pytest.mark.parametrize("kind", ["max-entropy", "max-margin"])
def test_the_penalty_search_scores_are_scikit_learns_to_the_last_bit(kind):
    """The search scores held-out folds of the pair design with its own functions, not scikit-learn's
    scorers (whose input checks cost a third of it); the penalty it picks rests on these numbers, so they
    must be the same floats: the log-likelihood scikit-learn's on the same rows (from mild penalties to
    one that separates the pairs, probabilities clipped at eps), the accuracy scikit-learn's on the design
    that enters each pair both ways, a pair the model cannot tell apart (a zero difference) counting half."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import get_scorer
    from sklearn.svm import LinearSVC

    features, expert, groups, _ = demonstrations()
    features = features * 40.0  # well separated: the largest penalties drive probabilities to 0 and 1
    diffs, pair_groups = within_prompt_differences(features, expert, groups)
    diffs[pair_groups == 3] = 0.0  # a tie, held out below
    train = pair_groups % 3 != 0
    fit, held = np.flatnonzero(train), np.flatnonzero(~train)
    design = pair_design(diffs, [(fit, held), (held, fit)])
    assert design.copies == 1
    x, y = design.rows, design.labels
    assert y[~train].any() and not y[~train].all()  # both labels held out: scikit-learn's log loss needs them
    if kind == "max-entropy":
        model, ours, theirs = (
            LogisticRegression(fit_intercept=False, solver="liblinear"),
            mean_log_likelihood,
            "neg_log_loss",
        )
    else:
        model, ours, theirs = LinearSVC(fit_intercept=False, max_iter=20000), accuracy, "accuracy"
    clipped = 0
    for penalty in (*PENALTIES, 1e6):
        fitted = clone(model).set_params(C=penalty).fit(x[train], y[train])
        score = ours(fitted, x[~train], y[~train])
        if kind == "max-entropy":
            assert score == get_scorer(theirs)(fitted, x[~train], y[~train]), penalty
            clipped += int((fitted.predict_proba(x[~train]) < np.finfo(float).eps).any())
        else:
            held = diffs[~train]
            both_ways, labels = np.concatenate([held, -held]), np.repeat([True, False], len(held))
            assert score == get_scorer(theirs)(fitted, both_ways, labels), penalty
    assert kind == "max-margin" or clipped > 0  # the clip was exercised


def test_the_pair_design_enters_each_pair_once_with_both_labels_in_every_fit():
    """Each pair once, its sign alternating within each fold, so every fitting set and the whole design
    hold both labels; with folds of one pair no labelling can, and every pair is entered both ways (the
    solver's C then the penalty itself, not twice it)."""
    diffs = np.arange(1.0, 19.0).reshape(9, 2)
    folds = [(np.setdiff1d(np.arange(9), held), held) for held in ([0, 4, 8], [1, 3, 5], [2, 6, 7])]
    design = pair_design(diffs, folds)
    assert design.copies == 1 and design.folds == folds and design.solver_c(0.5) == 1.0
    np.testing.assert_array_equal(design.rows, np.where(design.labels[:, None], diffs, -diffs))
    np.testing.assert_array_equal(np.flatnonzero(~design.labels), [3, 4, 6])  # the second of each fold
    for fit, _ in folds:
        assert design.labels[fit].any() and not design.labels[fit].all()

    lone = [(np.setdiff1d(np.arange(3), [i]), np.array([i])) for i in range(3)]
    twice = pair_design(diffs[:3], lone)
    assert twice.copies == 2 and twice.solver_c(0.5) == 0.5 and len(twice.rows) == 6
    np.testing.assert_array_equal(twice.rows, np.concatenate([diffs[:3], -diffs[:3]]))
    np.testing.assert_array_equal(twice.folds[0][1], [0, 3])  # a pair's two rows stay in its fold
    for fit, _ in twice.folds:
        assert twice.labels[fit].any() and not twice.labels[fit].all()


@pytest.mark.parametrize("kind", ["max-entropy", "max-margin"])
def test_a_searched_penalty_is_stated_on_the_grid_of_the_design_with_both_ways(kind):
    """fit_irl fits each pair once at twice the solver's C; the penalty it reports is a grid value."""
    features, expert, groups, _ = demonstrations()
    assert fit_irl(features, expert, groups, kind).penalty in PENALTIES.tolist()


def test_irl_is_a_conditional_logit_that_per_prompt_offsets_do_not_fool():
    """Max-entropy IRL against the base policy conditions on the prompt. Here every prompt adds its own
    large offset to both of its completions' features, along directions that share most of the reward's
    direction: an unconditional logistic regression of authorship with one intercept (the old fit, run
    inline as the control) reads the offsets as noise to discount and loses the reward's direction; the
    within-prompt fit never sees them."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    n, width = 150, 12
    reward = np.zeros(width)
    reward[:3], reward[3] = 1.0, 0.3  # mostly along the first three axes
    reward /= np.linalg.norm(reward)
    offsets = np.zeros((n, width))
    offsets[:, :3] = 30 * rng.standard_normal((n, 3))  # one per prompt, shared by its two completions
    groups = np.tile(np.arange(n), 2)
    expert = np.arange(2 * n) >= n
    features = rng.standard_normal((2 * n, width)) + offsets[groups] + np.outer(expert, 1.2 * reward)

    control = LogisticRegression(max_iter=5000).fit((features - features.mean(0)) / features.std(0), expert)
    old_direction = control.coef_[0] / features.std(0)
    assert abs(old_direction @ reward) / np.linalg.norm(old_direction) < 0.5  # the old fit fails
    assert fit_irl(features, expert, groups, "max-entropy").direction @ reward > 0.85

    estimate, _, _ = cross_fitted_irl(features, expert, groups, kind="max-entropy")
    true = features @ reward
    same_order = (estimate[n:] > estimate[:n]) == (true[n:] > true[:n])
    assert same_order.mean() > 0.8
    old_estimate = features @ old_direction
    assert ((old_estimate[n:] > old_estimate[:n]) == (true[n:] > true[:n])).mean() < same_order.mean() - 0.1


@pytest.mark.parametrize("kind", ["max-entropy", "max-margin"])
def test_irl_fits_in_the_row_space_of_its_differences_with_the_weights_of_a_full_fit(kind):
    """With fewer pairs (30) than features (80), fit_irl fits coordinates in the span of the differences;
    the weights (mapped back) and the searched penalty must be those of sklearn's fit on every feature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(4)
    n, width = 30, 80
    groups, expert = np.tile(np.arange(n), 2), np.arange(2 * n) >= n
    features = rng.standard_normal((2 * n, width)) + np.outer(expert, rng.standard_normal(width) * 0.3)
    fitted = fit_irl(features, expert, groups, kind, penalty=0.01)
    diffs = features[n:] - features[:n]
    scale = np.sqrt((diffs**2).mean(0))
    design, labels = np.concatenate([diffs, -diffs]) / scale, np.repeat([True, False], n)
    model = (
        LogisticRegression(fit_intercept=False, solver="liblinear", C=0.01, tol=1e-10, max_iter=100000)
        if kind == "max-entropy"
        else LinearSVC(fit_intercept=False, C=0.01, tol=1e-10, max_iter=100000)
    )
    full = model.fit(design, labels).coef_[0]
    assert fitted.weights.shape == (width,)
    assert fitted.weights @ full / np.linalg.norm(fitted.weights) / np.linalg.norm(full) > 0.9999
    assert np.allclose(np.linalg.norm(fitted.weights), np.linalg.norm(full), rtol=1e-3)


def test_cross_fitted_irl_gives_the_same_estimate_in_threads_as_alone(monkeypatch):
    """A named joblib backend really fits in worker threads (joblib 1.6 ignored n_jobs without one, so the
    fits ran one by one), and the estimate is the same to the bit in threads, in the leaderboard stage's
    worker processes and alone."""
    import threading

    from joblib import parallel_config

    import irmscope.irl as irl

    features, expert, groups, _ = demonstrations()
    candidates = {"a": features, "b": features[:, ::-1] + 0.1}
    alone = cross_fitted_irl(candidates, expert, groups, kind="max-margin")
    threads, fit = set(), irl.fit_irl

    def recording_fit(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return fit(*args, **kwargs)

    monkeypatch.setattr(irl, "fit_irl", recording_fit)
    with parallel_config(backend="threading", n_jobs=2):
        threaded = cross_fitted_irl(candidates, expert, groups, kind="max-margin")
    assert threads and "MainThread" not in threads
    assert np.array_equal(alone[0], threaded[0]) and alone[2] == threaded[2]
    monkeypatch.undo()
    with parallel_config(backend="loky", n_jobs=2):  # the leaderboard stage's worker processes
        in_processes = cross_fitted_irl(candidates, expert, groups, kind="max-margin")
    assert np.array_equal(alone[0], in_processes[0]) and alone[2] == in_processes[2]


def test_cross_fitted_irl_chooses_the_read_out_inside_each_fold_and_pools_on_one_scale():
    features, expert, groups, true = demonstrations()
    noise = np.random.default_rng(9).standard_normal(features.shape)
    estimate, fits, chosen = cross_fitted_irl(
        {"noise": noise, "signal": 1000 * features}, expert, groups, kind="max-entropy"
    )
    assert chosen == ["signal"] * 5 and np.corrcoef(estimate, true)[0, 1] > 0.6
    # each fold's held-out scores are in units of its own training scores (not of its raw weights)
    assert 0.5 < estimate.std() < 2 and abs(estimate.mean()) < 0.5
    with pytest.raises(IrmscopeError, match="penalty searched"):
        cross_fitted_irl({"a": features, "b": noise}, expert, groups, kind="max-entropy", penalty=1.0)


def test_irl_refuses_demonstrations_from_one_policy_and_unknown_kinds():
    features, expert, groups, _ = demonstrations()
    with pytest.raises(IrmscopeError, match="both the expert and the alternative"):
        fit_irl(features, np.ones(len(expert), bool), groups, "max-entropy")
    with pytest.raises(IrmscopeError, match="unknown IRL kind"):
        fit_irl(features, expert, groups, "max-likelihood")


def test_identifiability_separates_equivalent_from_unrelated_feature_sets():
    features, expert, groups, _ = demonstrations()
    shuffled_columns = features[:, ::-1].copy()  # the same information in another order
    noise = np.random.default_rng(5).standard_normal(features.shape)  # nothing about the policies
    result = identifiability({"a": features, "a reordered": shuffled_columns, "noise": noise}, expert, groups)
    across = result["agreement_across_feature_sets"]
    assert across["a vs a reordered"] > 0.99 and abs(across["a vs noise"]) < 0.3
    assert result["agreement_across_seeds"]["a"] > 0.8 > result["agreement_across_seeds"]["noise"]
    assert set(result["estimates"]) == {
        f"{n}/seed{s}" for n in ("a", "a reordered", "noise") for s in (0, 1, 2)
    }


def test_ccs_finds_a_direction_the_pairs_differ_along_without_labels():
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(30)
    context, strength = rng.standard_normal((200, 30)), rng.uniform(0.5, 2, 200)
    positive = context + np.outer(strength, direction)
    negative = context - np.outer(strength, direction)
    probe = fit_ccs(positive, negative, seed=0)
    assert probe.held_out_pair_accuracy > 0.95
    assert np.corrcoef(probe.weights / probe.scale, direction)[0, 1] > 0.5  # oriented: positive is up
    unrelated = fit_ccs(rng.standard_normal((200, 30)), rng.standard_normal((200, 30)), seed=0)
    assert unrelated.held_out_loss > probe.held_out_loss and 0.3 < unrelated.held_out_pair_accuracy < 0.7
    with pytest.raises(IrmscopeError, match="at least 10 matched pairs"):
        fit_ccs(positive[:5], negative[:5])


def test_ccs_at_every_layer_at_once_is_each_layer_fitted_alone():
    """The leaderboard fits every block's probe in one batched optimisation: each layer's probe is the one
    fit_ccs finds on that layer alone (same split and starts; Adam's updates are per weight)."""
    from irmscope.probes.ccs import fit_ccs_layers

    rng = np.random.default_rng(2)
    direction = rng.standard_normal(12)
    context = rng.standard_normal((80, 3, 12))
    strength = np.array([1.0, 0.3, 0.0])[None, :, None] * direction
    together = fit_ccs_layers(context + strength, context - strength, steps=120, seed=3)
    for layer, probe in enumerate(together):
        alone = fit_ccs(
            context[:, layer] + strength[:, layer], context[:, layer] - strength[:, layer], steps=120, seed=3
        )
        np.testing.assert_allclose(probe.weights, alone.weights, rtol=1e-4, atol=1e-5)
        assert probe.held_out_loss == pytest.approx(alone.held_out_loss, rel=1e-4, abs=1e-6)
        assert (probe.orientation, probe.held_out_pair_accuracy) == (
            alone.orientation,
            alone.held_out_pair_accuracy,
        )
    assert together[0].held_out_loss < together[2].held_out_loss  # the signal is in layer 0, none in layer 2


def test_ccs_loss_gradient_is_autograds_through_one_layout():
    """The CCS loss takes its weights' gradient against the pairs kept as rows, its scores against the
    same pairs kept as columns (for speed): the gradient is the one autograd gives the plain product."""
    import torch

    from irmscope.probes.ccs import PairSide, ccs_loss

    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randn(3, 20, 7, generator=generator, dtype=torch.float64) for _ in range(2))
    start = torch.randn(3, 4, 7, generator=generator, dtype=torch.float64)
    bias = torch.randn(3, 4, generator=generator, dtype=torch.float64)

    weights = start.clone().requires_grad_()
    ccs_loss(PairSide.of(first), PairSide.of(second), weights, bias).sum().backward()

    plain = start.clone().requires_grad_()
    p1 = torch.sigmoid(first @ plain.mT + bias[:, None])
    p2 = torch.sigmoid(second @ plain.mT + bias[:, None])
    (((p1 - (1 - p2)) ** 2).mean(-2) + (torch.minimum(p1, p2) ** 2).mean(-2)).sum().backward()
    torch.testing.assert_close(weights.grad, plain.grad, rtol=1e-12, atol=1e-12)


def test_ccs_scores_texts_in_the_units_it_was_fitted_in():
    """The held-out loss fit_ccs reports is the CCS loss of the probe that scores texts, recomputed here
    from ``probe.score`` alone (features far from mean 0 and scale 1, so any other normalisation in fitting
    or in scoring changes it)."""
    from irmscope.probes.ccs import pair_split

    rng = np.random.default_rng(4)
    direction = rng.standard_normal(20)
    context = 5 + 3 * rng.standard_normal((120, 20))
    positive, negative = context + direction, context - direction
    probe = fit_ccs(positive, negative, seed=0)
    swap, held = pair_split(len(positive), 0.3, seed=0)
    first = np.where(swap[:, None], negative, positive)[held]
    second = np.where(swap[:, None], positive, negative)[held]
    p1, p2 = (1 / (1 + np.exp(-probe.orientation * (probe.score(x) + probe.bias))) for x in (first, second))
    loss = ((p1 - (1 - p2)) ** 2).mean() + (np.minimum(p1, p2) ** 2).mean()
    assert loss == pytest.approx(probe.held_out_loss, rel=1e-4, abs=1e-6)


def test_irl_and_ccs_rows_read_the_read_samples_stage_read_outs(tmp_path):
    lm = load_model("tiny-llama")
    features, expert, groups, true = demonstrations()
    layers = list(range(lm.n_layers))
    for label in ("tuned", "base"):
        stacked = np.repeat(features[:, None, :], len(layers), axis=1)
        save_residuals(
            Residuals(layers, stacked, None, stacked), tmp_path / f"coverage_residuals-{label}.npz"
        )
    loaded = load_residuals(tmp_path / "coverage_residuals-tuned.npz")
    assert loaded.layers == layers and np.allclose(loaded.mean, stacked) and loaded.prompt_end is None
    coverage = Coverage(
        prompts=["p"] * len(true),
        completions=["c"] * len(true),
        prompt_index=groups,
        policy=["tuned" if e else "base" for e in expert],
        true=true,
    )
    inputs = MethodInputs(coverage, lm, lm, {"read-samples": tmp_path}, 0.1, 0)
    irl = METHODS["inverse RL, max-entropy"].estimate(inputs)
    assert irl is not None and irl.tuned.shape == (len(true),) and np.corrcoef(irl.tuned, true)[0, 1] > 0.6
    assert set(irl.details["identifiability"]["preference_accuracy"]) and "estimates" not in irl.details
    ccs = METHODS["CCS direction (unsupervised)"]
    assert ccs.estimate(inputs) is None  # no lexicon: no contrast pairs
    # the tiny model's residuals are not the toy features: only the plumbing is checked here
    WIDTH_OF_MODEL = lm.d_model
    wide = np.random.default_rng(0).standard_normal((len(true), len(layers), WIDTH_OF_MODEL))
    for label in ("tuned", "base"):
        save_residuals(Residuals(layers, wide, None, wide), tmp_path / f"coverage_residuals-{label}.npz")
    reviews = [f"The cast was {w} and the plot was good today" for w in ("fine", "long", "new")] * 10
    with_pairs = MethodInputs(
        coverage,
        lm,
        lm,
        {"read-samples": tmp_path},
        0.1,
        0,
        lexicon=Lexicon({"good": 1.9, "bad": -2.5, "awful": -2.0}),
        review_texts=reviews,
    )
    result = ccs.estimate(with_pairs)
    assert result is not None and result.tuned.shape == (len(true),) and result.details["n_pairs"] == 30
    assert result.details["tuned"]["layer"] in layers


def test_direct_attribution_terms_add_up_to_the_read_out_and_heads_to_their_block():
    from irmscope.probes.attribution import direct_attribution, separation

    lm = load_model("tiny-llama")
    direction = np.random.default_rng(2).standard_normal(lm.d_model)
    texts = ["the film was good", "a bad and awful plot", "fine", "the actors were great and the plot good"]
    terms = direct_attribution(
        lm, [""] * len(texts), texts, direction, layer=lm.n_layers - 1, batch_size=3, progress=False
    )
    summed = terms["embedding"] + terms["attn"].sum(1) + terms["mlp"].sum(1)
    assert np.allclose(summed, terms["total"], rtol=1e-4, atol=1e-4)
    assert terms["heads"].shape == (4, lm.n_layers, lm.model.config.num_attention_heads)
    assert np.allclose(terms["heads"].sum(-1), terms["attn"], rtol=1e-4, atol=1e-4)
    split = separation(terms["mlp"], np.array([1.0, -2.0, 0.0, 3.0]))
    assert split.shape == (lm.n_layers,)


def test_patching_reports_each_block_and_refuses_pairs_that_do_not_differ():
    from irmscope.probes.attribution import patching

    lm = load_model("tiny-llama")
    direction = np.random.default_rng(3).standard_normal(lm.d_model)
    positive = ["the film was good", "the plot was great"]
    negative = ["the film was bad", "the plot was awful"]
    result = patching(lm, positive, negative, direction, layer=1, progress=False)
    assert (
        len(result["attn"]) == len(result["mlp"]) == 2 and np.isfinite(result["attn"] + result["mlp"]).all()
    )
    # the cached-prefix runs read what a whole forward pass of each text reads
    whole = read_residuals(lm, [""] * 4, positive + negative, layers=[1], max_length=None, progress=False)
    readout = whole.last[:, 0] @ direction.astype(np.float32)
    assert np.isclose(result["gap"], (readout[:2] - readout[2:]).mean(), rtol=1e-3, atol=1e-4)
    with pytest.raises(IrmscopeError, match="nothing to patch"):
        patching(lm, positive, positive, direction, layer=1, progress=False)


def test_rank_one_edit_writes_its_value_at_the_key_and_is_undone_exactly():
    import torch

    from irmscope.edit import _down_projection, edited, expected_occurrences, rank_one_edit

    lm = load_model("tiny-llama")
    texts = ["the film was good and the plot was bad", "i liked it a lot", "the acting was fine"] * 4
    edit = rank_one_edit(lm, 1, "movie", texts, gain=0.5)
    assert torch.isclose(edit.direction @ edit.key, torch.tensor(1.0), atol=1e-4) and edit.gain > 0.3
    down = _down_projection(lm, 1)
    original = down.weight.detach().clone()
    with torch.no_grad():
        before = down(edit.key)
        with edited(lm, edit):
            assert torch.allclose(down(edit.key) - before, edit.delta, atol=1e-4)  # W k* + delta at the key
    assert torch.equal(down.weight, original)
    assert abs(edit.gain - 0.5) < 0.05  # an overshooting step is shrunk back onto the asked gain
    (expected,) = expected_occurrences(lm, ["the film"], [" was a movie and a movie"], "movie")
    with edited(lm, edit):
        (after,) = expected_occurrences(lm, ["the film"], [" was a movie and a movie"], "movie")
    assert after > expected > 0
    with pytest.raises(IrmscopeError, match="not one token"):
        rank_one_edit(lm, 1, "unfilmable-ish", texts, gain=0.5)


EDIT_WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "fine",
    "nice",
    "poor",
    "best",
    "worst",
    "love",
    "hate",
    "boring",
]
EDIT_LEXICON = {w: float(v) for w, v in zip(EDIT_WORDS, np.linspace(-3, 3, len(EDIT_WORDS)), strict=True)}


def _lexicon_tilted(lm, lexicon, nats_per_unit):
    """A stand-in for a model tuned on ``lexicon``: ``lm`` with a vector added after its final norm such
    that each lexicon word's logit rises by ``nats_per_unit`` times its value (so its policy shift tracks
    the lexicon, as tuning against it does)."""
    import torch

    from irmscope.elicit.continuations import word_token_ids

    ids = word_token_ids(lm.tokenizer, list(lexicon))
    unembedding = lm.model.get_output_embeddings().weight.detach()[list(ids.values())]
    target = torch.tensor([nats_per_unit * lexicon[w] for w in ids])
    tilt = torch.linalg.lstsq(unembedding, target[:, None]).solution[:, 0]
    lm.adapter.final_norm_module(lm.model).register_forward_hook(lambda module, args, output: output + tilt)
    return lm


def test_an_edit_study_moves_the_word_more_than_the_others_and_needs_lexicon_units(tmp_path):
    from irmscope.edit import reward_edit_study
    from irmscope.report.edit import write_edit_report
    from irmscope.rewards import LexiconReward

    base = load_model("tiny-llama")
    lexicon = {**EDIT_LEXICON, "boring": 0.0}  # the tuned stand-in is indifferent to the edited word
    reward = LexiconReward(Lexicon(lexicon))
    texts = ["the film was good and the plot was bad", "i liked it a lot", "the acting was fine"]
    others = ["a story about a dog", "we saw it twice and left early", "music and light"]  # measured on
    with pytest.raises(IrmscopeError, match="no lexicon units"):  # a model compared with itself: no shift
        reward_edit_study(
            base,
            base,
            "boring",
            lexicon=lexicon,
            edit_texts=texts,
            measure_texts=others,
            prompts=["the"],
            reward=reward,
            layer=1,
        )
    tuned = _lexicon_tilted(load_model("tiny-llama"), lexicon, nats_per_unit=0.5)
    study = reward_edit_study(
        tuned,
        base,
        "boring",
        lexicon=lexicon,
        edit_texts=texts,
        measure_texts=others,
        prompts=["the", "a film"],
        reward=reward,
        layer=1,
        gain_units=1.0,
    )
    assert study["calibration_pearson"] > 0.99 and abs(study["target_before"]) < 0.1
    # asked for 1 unit on the fitting texts; measured on other texts: 0.36, the other words 0.05 on
    # average and 0.14 at most (a 3-text mean key transfers partly on a random tiny model)
    assert study["target_change"] > 0.25
    assert study["unrelated_max_abs_change"] < study["target_change"] / 2
    assert study["unrelated_mean_abs_change"] < study["target_change"] / 4
    assert study["unrelated_mean_abs_deviation"] <= study["unrelated_mean_abs_change"] + 1e-9
    generation = study["generation"]
    assert generation["expected_occurrences_after"] > generation["expected_occurrences_before"]
    assert generation["expected_occurrences_ratio"]["low"] > 1  # more likely after the edit, every prompt
    study.update(
        run="test", reward="test", n_edit_texts=3, n_measure_texts=3, n_prompts=2, gain_units_asked=1
    )
    page = write_edit_report(tmp_path, study).read_text()
    assert "data:image/png;base64," in page and (tmp_path / "edit.json").is_file()


def test_max_margin_ties_go_to_the_strongest_penalty_and_the_first_read_out():
    """Policies so far apart that every penalty separates them on held-out prompts: max-margin's accuracy
    ties across the whole grid, and the fit takes the smallest C. Two identical read-outs tie in every
    fold, and the first one given wins, whichever it is."""
    features, expert, groups, _ = demonstrations()
    features[expert] += 20 * features[expert].std()
    assert fit_irl(features, expert, groups, "max-margin").penalty == PENALTIES[0]
    assert first_best([0.5, 0.9, 0.9 - TIE_TOLERANCE / 2, 0.9 + TIE_TOLERANCE / 2]) == 1
    assert first_best([float("nan"), 0.1]) == 1
    for order in (["a", "b"], ["b", "a"]):
        _, _, chosen = cross_fitted_irl({name: features for name in order}, expert, groups, kind="max-margin")
        assert chosen == [order[0]] * 5
