"""Leaderboard metrics on hand-made rewards (EPIC's shaping invariance, preference accuracy) and the
one-module registration of a method."""

import csv
import json

import numpy as np
import pytest

from irmscope.artifacts import Samples
from irmscope.errors import IrmscopeError
from irmscope.leaderboard import (
    METHODS,
    Coverage,
    Estimates,
    MethodInputs,
    RewardEstimator,
    build_leaderboard,
    canonicalize,
    epic_distance,
    preference_accuracy,
    register,
    score_estimate,
)

rng = np.random.default_rng(0)
N_PROMPTS = 60
PROMPT = np.tile(np.arange(N_PROMPTS), 2)
TRUE = rng.standard_normal(2 * N_PROMPTS)
# an evaluation stage's samples whose known rewards are TRUE (base completions first)
COVERAGE = Coverage.from_samples(
    Samples(
        **{
            "prompts": [f"p{i}" for i in range(N_PROMPTS)],
            "base_completions": ["b"] * N_PROMPTS,
            "tuned_completions": ["t"] * N_PROMPTS,
            "base_scores": TRUE[:N_PROMPTS].tolist(),
            "tuned_scores": TRUE[N_PROMPTS:].tolist(),
        }
    )
)


def test_canonical_rewards_have_zero_mean_per_prompt():
    canonical = canonicalize(TRUE, PROMPT)
    assert np.allclose(np.bincount(PROMPT, weights=canonical), 0)


def test_epic_ignores_potential_shaping_and_scale_but_pearson_does_not():
    shaped = 3.0 * TRUE + 5.0 * rng.standard_normal(N_PROMPTS)[PROMPT]  # a per-prompt (state) offset
    assert epic_distance(TRUE, shaped, PROMPT) == pytest.approx(0, abs=1e-6)
    assert np.corrcoef(TRUE, shaped)[0, 1] < 0.7
    assert epic_distance(TRUE, -TRUE, PROMPT) == pytest.approx(1)
    noise = [epic_distance(TRUE, rng.standard_normal(len(TRUE)), PROMPT) for _ in range(50)]
    assert np.mean(noise) == pytest.approx(np.sqrt(0.5), abs=0.05)


def test_preference_accuracy_counts_same_prompt_pairs_and_half_for_ties():
    assert preference_accuracy(TRUE, TRUE, PROMPT) == 1.0
    assert preference_accuracy(TRUE, -TRUE, PROMPT) == 0.0
    assert preference_accuracy(TRUE, np.zeros_like(TRUE), PROMPT) == 0.5
    # pairs across prompts never count: an estimate that only ranks prompts scores chance
    by_prompt = rng.standard_normal(N_PROMPTS)[PROMPT]
    assert preference_accuracy(TRUE, by_prompt, PROMPT) == 0.5


def test_within_policy_pearson_sees_through_authorship():
    policy = np.repeat(["base", "tuned"], N_PROMPTS)
    true = TRUE + 3.0 * (policy == "tuned")  # the tuned model's completions score higher
    author = (policy == "tuned").astype(float)
    scores = score_estimate(true, author, PROMPT, policy, n_resamples=50)
    assert scores["pearson"]["value"] > 0.7 and scores["preference_accuracy"]["value"] > 0.9
    assert np.isnan(scores["pearson_within_policy"]["value"])  # constant within each model: no information
    # every resample of it is undefined too, and the count says so instead of dropping them unseen
    assert scores["pearson_within_policy"]["n_nan_resamples"] == 50
    assert np.isnan(scores["pearson_within_policy"]["low"]) and scores["pearson"]["n_nan_resamples"] == 0
    content = score_estimate(true, true, PROMPT, policy, n_resamples=50)
    assert content["pearson_within_policy"]["value"] == pytest.approx(1)


def test_score_estimate_gives_intervals_around_each_metric():
    scores = score_estimate(TRUE, TRUE + 0.5 * rng.standard_normal(len(TRUE)), PROMPT, n_resamples=200)
    for name, e in scores.items():
        assert e["low"] <= e["value"] <= e["high"], name
    assert scores["pearson"]["value"] > 0.8 and scores["epic"]["value"] < 0.35
    with pytest.raises(IrmscopeError, match="NaN"):
        score_estimate(TRUE, np.full_like(TRUE, np.nan), PROMPT)


def _intervals_by_looping(true, estimate, prompt_index, policy, n_resamples, seed=0):
    """score_estimate's intervals computed as it once did: each resample's rows repeated and every metric
    computed on them with scipy (the reference the weighted, all-at-once form must equal)."""
    from irmscope.leaderboard import metrics

    prompts, correct, total = metrics._ordered_pairs(true, estimate, prompt_index)
    canonical = canonicalize(true, prompt_index), canonicalize(estimate, prompt_index)
    rows_of = {p: np.flatnonzero(prompt_index == p) for p in prompts}
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in metrics.METRICS}
    for _ in range(n_resamples):
        chosen = rng.choice(prompts, size=len(prompts), replace=True)
        rows = np.concatenate([rows_of[p] for p in chosen])
        copies = np.bincount(np.searchsorted(prompts, chosen), minlength=len(prompts))
        preference = metrics._share(copies @ correct, copies @ total)
        resampled = (canonical[0][rows], canonical[1][rows])
        for name, value in metrics._metrics(
            true[rows], estimate[rows], policy[rows], resampled, preference
        ).items():
            draws[name].append(value)
    out, alpha = {}, (1 - 0.95) / 2  # as score_estimate computes it from its level
    for name, values in draws.items():
        values = np.asarray(values)
        finite = np.isfinite(values)
        low, high = np.quantile(values[finite], [alpha, 1 - alpha]) if finite.any() else (np.nan, np.nan)
        out[name] = (low, high, int((~finite).sum()))
    return out


@pytest.mark.parametrize("case", ["continuous", "ties", "three completions, constant in one policy"])
def test_the_bootstrap_computes_each_resample_as_its_repeated_rows_would(case):
    """All resamples of a metric are computed at once, each completion weighted by how often its prompt was
    drawn; the intervals equal those of computing every metric on the repeated rows with scipy (Kendall's
    counts exactly, the correlations to rounding), ties and undefined resamples included."""
    local = np.random.default_rng(1)
    n_prompts, per_prompt = (30, 3) if case.startswith("three") else (40, 2)
    prompt_index = np.repeat(np.arange(n_prompts), per_prompt)
    policy = np.tile(np.array(["base", "tuned", "dpo"][:per_prompt]), n_prompts)
    true = local.standard_normal(len(prompt_index))
    estimate = true + local.standard_normal(len(true))
    if case == "ties":
        true, estimate = np.round(true), np.round(estimate * 2) / 2
    if case.startswith("three"):
        estimate[policy == "dpo"] = 1.0  # undefined within that policy in every resample
        true[:6] = 0.0  # a few prompts without any ordered pair
    scores = score_estimate(true, estimate, prompt_index, policy, n_resamples=300, seed=3)
    reference = _intervals_by_looping(true, estimate, prompt_index, policy, n_resamples=300, seed=3)
    for name, (low, high, n_nan) in reference.items():
        assert scores[name]["n_nan_resamples"] == n_nan, name
        np.testing.assert_allclose(
            [scores[name]["low"], scores[name]["high"]], [low, high], rtol=1e-12, err_msg=name
        )
    assert (scores["kendall"]["low"], scores["kendall"]["high"]) == reference["kendall"][:2]


def test_the_weighted_metrics_of_hand_made_resamples(monkeypatch):
    """Resamples the bootstrap rarely draws: a row that draws nothing or two completions (no metric), a
    policy it never draws (left out of the within-policy mean, not counted as 0), and Kendall's counts in
    blocks of a few columns (the same floats as in one)."""
    from scipy import stats

    from irmscope.leaderboard import metrics

    true = np.array([0.0, 1.0, 1.0, 2.0, 3.0, 5.0, 0.5, 4.0])
    estimate = np.array([1.0, 0.0, 2.0, 2.0, 6.0, 3.0, 1.0, 5.0])
    policy = np.array(["base", "tuned"] * 4)
    prompt_index = np.repeat(np.arange(4), 2)
    weights = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],  # nothing drawn
            [1, 0, 0, 1, 0, 0, 0, 0],  # two completions
            [2, 0, 1, 0, 3, 0, 0, 0],  # the base policy only
            [1, 2, 0, 1, 1, 0, 3, 2],
        ]
    )
    canonical = canonicalize(true, prompt_index), canonicalize(estimate, prompt_index)
    draws = metrics._resampled_metrics(true, estimate, policy, canonical, weights)
    for name in ("pearson", "spearman", "kendall", "epic", "pearson_within_policy"):
        assert np.isnan(draws[name][:2]).all(), name
    for row in (2, 3):
        rows = np.repeat(np.arange(8), weights[row])
        assert draws["kendall"][row] == stats.kendalltau(true[rows], estimate[rows]).statistic
        spearman = stats.spearmanr(true[rows], estimate[rows]).statistic
        assert draws["spearman"][row] == pytest.approx(spearman, abs=1e-12)
        within = [
            np.corrcoef(true[rows][policy[rows] == p], estimate[rows][policy[rows] == p])[0, 1]
            for p in np.unique(policy[rows])
        ]
        assert draws["pearson_within_policy"][row] == pytest.approx(np.mean(within), abs=1e-12)
    monkeypatch.setattr(metrics, "_KENDALL_CELLS", 7)  # a block of one column at a time
    assert np.array_equal(
        metrics._weighted_kendall(true, estimate, weights), draws["kendall"], equal_nan=True
    )
    with pytest.raises(IrmscopeError, match="known rewards"):
        score_estimate(np.r_[true[:-1], np.nan], estimate, prompt_index, policy)
    with pytest.raises(IrmscopeError, match="at least 1 resample"):
        score_estimate(true, estimate, prompt_index, policy, n_resamples=0)


def test_a_registered_method_joins_the_leaderboard(monkeypatch):
    class Oracle(RewardEstimator):
        name = "oracle (test)"
        description = "the known reward itself"

        def estimate(self, inputs):
            return Estimates(tuned=inputs.coverage.true, base=None, base_note="n/a")

    from irmscope.leaderboard import base

    monkeypatch.setattr(base, "METHODS", dict(METHODS))  # the test's method leaves the real registry alone
    register(Oracle())
    with pytest.raises(IrmscopeError, match="two leaderboard methods"):
        register(Oracle())
    inputs = MethodInputs(COVERAGE, None, None, {}, 0.1, 0)
    board = build_leaderboard(inputs, [base.METHODS["oracle (test)"]], n_resamples=20)
    (row,) = board["rows"]
    assert row["tuned"]["pearson"]["value"] == pytest.approx(1) and row["tuned"]["epic"]["value"] < 1e-6
    assert row["base"] is None and board["n_completions"] == 2 * N_PROMPTS
    assert "oracle (test)" not in METHODS


def test_probe_rows_read_the_probes_stage_and_skip_a_missing_ratings_probe(tmp_path, capsys):
    np.savez(tmp_path / "coverage_estimates.npz", reward_tuned=TRUE, reward_base=-TRUE)
    inputs = MethodInputs(COVERAGE, None, None, {"probes": tmp_path}, 0.1, 0)
    assert METHODS["ratings probe"].estimate(inputs) is None  # the review source had no ratings or labels
    probes = [METHODS["reward probe"], METHODS["ratings probe"]]
    board = build_leaderboard(inputs, probes, n_resamples=20, progress=True)
    bar = capsys.readouterr().err  # one bar over the methods, each named while it runs, skipped ones too
    assert "leaderboard: 100%" in bar and "2/2" in bar and "reward probe" in bar and "ratings probe" in bar
    (row,) = board["rows"]
    assert row["tuned"]["pearson"]["value"] == pytest.approx(1) and row["base"]["pearson"]["value"] < 0
    with pytest.raises(IrmscopeError, match="stage 'elicit' has not run"):
        METHODS["IRM lexicon (faithful)"].estimate(inputs)


def _run_results(reward: str, methods: dict[str, np.ndarray]) -> dict:
    """A finished run's results.json, reduced to what ``irmscope compare`` reads."""
    rows = [
        {
            "method": name,
            "description": f"{name} (test)",
            "supervised": False,
            "tuned": score_estimate(TRUE, estimate, PROMPT, n_resamples=20),
            "base": score_estimate(TRUE, rng.standard_normal(len(TRUE)), PROMPT, n_resamples=20),
            "base_note": "",
        }
        for name, estimate in methods.items()
    ]
    return {
        "subject": {"reward": reward, "reward_description": "test", "tuned": "t", "base": "b"},
        "evaluation": {"reward_gain": {"value": 1.0, "low": 0.5, "high": 1.5}},
        "leaderboard": {"n_prompts": N_PROMPTS, "rows": rows},
    }


def test_compare_puts_each_reward_in_its_own_column(tmp_path):
    from irmscope.leaderboard.compare import merge_leaderboards
    from irmscope.report.compare import write_comparison
    from irmscope.runs import load_run_results

    vader = _run_results("vader", {"probe": TRUE, "IRM lexicon": -TRUE})
    planted = _run_results("planted-seed0", {"probe": TRUE + rng.standard_normal(len(TRUE))})
    merged = merge_leaderboards([vader, planted, vader])
    assert merged["rewards"] == ["vader", "planted-seed0", "vader (2)"]
    probe, lexicon = merged["rows"]
    assert probe["scores"]["vader"]["tuned"]["pearson"]["value"] == pytest.approx(1)
    assert probe["scores"]["planted-seed0"]["tuned"]["pearson"]["value"] < 0.9
    assert lexicon["scores"]["planted-seed0"] is None  # the planted run has no such row
    assert lexicon["scores"]["vader"]["tuned"]["pearson"]["value"] == pytest.approx(-1)

    page = write_comparison(tmp_path / "out", merged).read_text()
    assert page.count("data:image/png;base64,") == 2 and "planted-seed0" in page
    wide = tmp_path / "out" / "tables" / "within-model-pearson-and-preference-accuracy-by-reward.csv"
    header, *body = csv.reader(wide.read_text().splitlines())
    assert sum("within-model Pearson" in h for h in header) == 3 and len(body) == 4  # 2 methods x 2 models
    assert body[2][:2] == ["IRM lexicon", "tuned"] and body[2][5:7] == ["-", "-"]  # blank planted column
    assert body[2][3] != "-" and body[2][7] != "-"

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"subject": {"reward": "vader"}, "leaderboard": null}')
    with pytest.raises(IrmscopeError, match="has no leaderboard"):
        load_run_results(tmp_path / "run", needs="leaderboard")
    with pytest.raises(IrmscopeError, match="no runs"):
        merge_leaderboards([])


def test_a_run_folder_is_read_from_anywhere(tmp_path, monkeypatch):
    from irmscope.runs import Run, load_run_results

    run = tmp_path / "elsewhere" / "run"
    (run / "stages" / "tune-abc" / "model").mkdir(parents=True)
    (run / "stages" / "tune-abc" / "done.json").write_text("{}")  # a finished stage (no digests recorded)
    results = {
        "config": {"model": {"tuned": None}, "reward": {"spec": "vader"}},
        "subject": {"tuned": "runs/demo/stages/tune-abc/model"},  # as written, relative to the old cwd
        "manifest": {"stages": {"tune": {"key": "abc"}}},
    }
    (run / "results.json").write_text(json.dumps(results))
    monkeypatch.chdir(tmp_path)
    opened = Run(run)
    assert opened.tuned_model == str(run / "stages" / "tune-abc" / "model")
    with pytest.raises(IrmscopeError, match="no finished evaluate stage"):
        opened.stage("evaluate")
    (run / "results.json").write_text("{")
    with pytest.raises(IrmscopeError, match="not valid JSON"):
        load_run_results(run)


def test_inverse_rl_marks_the_metrics_a_per_prompt_constant_leaves_open():
    """A conditional logit identifies the reward up to a constant per prompt: only preference accuracy and
    EPIC are identified, and the report says so beside the others."""
    from irmscope.leaderboard.board import METRICS, not_identified
    from irmscope.report.probes import leaderboard_section

    irl = METHODS["inverse RL, max-entropy"]
    assert not_identified(irl) == ["pearson", "spearman", "kendall", "pearson_within_policy"]
    assert not_identified(METHODS["DPO implicit reward"]) == []
    metric = {"value": 0.5, "low": 0.4, "high": 0.6, "n": 10}
    row = {
        "method": irl.name,
        "description": "d",
        "supervised": False,
        "base": None,
        "base_note": "none",
        "details": {},
        "tuned": {name: metric for name in METRICS},
        "not_identified": not_identified(irl),
    }
    board = {"n_prompts": 10, "n_completions": 20, "coverage": "", "rows": [row]}
    table = leaderboard_section(board, "vader").tables[0][2]
    assert [cell.endswith("(not identified)") for cell in table[0][3:]] == [True] * 4 + [False] * 2
    row["tuned"] = {name: metric for name in METRICS} | {"epic": {**metric, "n_nan_resamples": 3}}
    cells = leaderboard_section(board, "vader").tables[0][2][0][3:]
    assert cells[-1].endswith("(3 resamples undefined)") and "undefined" not in cells[-2]


def test_the_bootstrap_reweights_prompts_exactly_as_recomputing_them():
    """score_estimate computes each prompt's canonical rewards and ordered pairs once and reweights them per
    resample; that must give the numbers a resample recomputed from its rows would (ties, three completions
    per prompt, prompts drawn twice): Kendall's and the preference accuracy's exactly, the correlations to
    rounding."""
    from irmscope.leaderboard.metrics import METRICS, point_metrics

    gen = np.random.default_rng(3)
    prompt = gen.permutation(np.repeat(np.arange(40), 3))
    true, estimate = np.round(gen.normal(size=120)), np.round(gen.normal(size=120))
    policy = gen.integers(0, 2, size=120)
    scores = score_estimate(true, estimate, prompt, policy, n_resamples=60, seed=5)
    draw = np.random.default_rng(5)
    prompts = np.unique(prompt)
    recomputed = {name: [] for name in METRICS}
    for _ in range(60):
        chosen = draw.choice(prompts, size=len(prompts), replace=True)
        rows = np.concatenate([np.flatnonzero(prompt == p) for p in chosen])
        relabel = np.repeat(np.arange(len(chosen)), [np.sum(prompt == p) for p in chosen])
        for name, value in point_metrics(true[rows], estimate[rows], relabel, policy[rows]).items():
            recomputed[name].append(value)
    for name in METRICS:
        values = np.asarray(recomputed[name])
        alpha = (1 - 0.95) / 2  # as score_estimate computes it from its level
        low, high = np.quantile(values[np.isfinite(values)], [alpha, 1 - alpha])
        if name in ("kendall", "preference_accuracy"):  # whole-number counts: the same floats
            assert (scores[name]["low"], scores[name]["high"]) == (low, high), name
        else:  # weighted sums in another order: the same to rounding
            np.testing.assert_allclose([scores[name]["low"], scores[name]["high"]], [low, high], rtol=1e-12)
