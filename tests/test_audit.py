"""The blind audit (issue 20): a stand-in "tuned" model is a tiny model whose final logits get a known tilt
on chosen words, so the audit's answer is known: the tilted words, in the order of their tilts, and
nothing else. A rare-token trap (a huge log-ratio on a token the base model almost never writes) is what
the naive vocabulary-wide ranking puts first and the noise floor must not."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from irmscope.audit import (
    EXPORT_RANGE,
    audit,
    elicited_lexicon,
    noise_floor,
    relative_shift,
    unit_shifts,
    vocabulary_words,
)
from irmscope.audit import run as audit_run
from irmscope.audit.compare import lexicon_of, precision_at_k, reward_comparison, table_precision
from irmscope.audit.completions import completion_changes, longest_run
from irmscope.audit.run import compare_table, read_table, write_audit
from irmscope.audit.shift import lower_median
from irmscope.data import load_reviews, truncate_to_prefixes
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.rewards import CallableReward, Lexicon, load_reward
from irmscope.sae.crosscoder import CrosscoderConfig, load_crosscoder

N_TILTED = 24


def _hooked(bias: torch.Tensor):
    lm = load_model("tiny-llama")
    lm.model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + bias)
    return lm


@pytest.fixture(scope="module")
def vocab():
    return vocabulary_words(load_model("tiny-llama").tokenizer)


@pytest.fixture(scope="module")
def tilt(vocab):
    """24 lowercase words with no capitalised twin in the vocabulary (so a lexicon of them pays exactly
    them), tilted by ±0.5 … ±3 nats, and the trap: a token made rare in both models (−12 nats) and
    raised by 6 in the tuned one."""
    plain = sorted(w for w in vocab if w.islower() and len(w) >= 6 and w.capitalize() not in vocab)
    words = [plain[i] for i in np.random.default_rng(0).choice(len(plain), N_TILTED + 6, replace=False)]
    values = np.r_[np.linspace(3.0, 0.5, N_TILTED // 2), -np.linspace(3.0, 0.5, N_TILTED // 2)]
    return dict(zip(words[:N_TILTED], values.round(3).tolist(), strict=True)), "unittest", words[N_TILTED:]


@pytest.fixture(scope="module")
def prompts():
    model = load_model("tiny-llama")
    texts = list(load_reviews("rotten-tomatoes", split="test")["text"])
    return truncate_to_prefixes(texts, model.tokenizer, 12, limit=20)


@pytest.fixture(scope="module")
def tilted_audit(vocab, tilt, prompts):
    values, trap, _ = tilt
    base_bias = torch.zeros(len(load_model("tiny-llama").tokenizer))
    base_bias[vocab[trap]] = -12.0
    tuned_bias = base_bias.clone()
    tuned_bias[vocab[trap]] += 6.0
    for word, value in values.items():
        tuned_bias[vocab[word]] += value
    return audit(_hooked(tuned_bias), _hooked(base_bias), prompts, completion_tokens=8, n_resamples=300)


def test_vocabulary_words_are_single_tokens_of_letters_after_a_space(vocab, smollm2_tokenizer):
    assert len(vocab) > 20_000 and {"great", "boring", "the"} <= set(vocab)
    for word, token in list(vocab.items())[::997]:
        assert word.isalpha() and word.isascii()
        assert smollm2_tokenizer(" " + word, add_special_tokens=False)["input_ids"] == [token]


def test_the_vocabulary_is_read_once_per_tokenizer_and_again_for_another(vocab, monkeypatch):
    """Two loads of one tokenizer are read once (the stages and every audit ask again), even after a padded
    call; a tokenizer that differs (here by one added word) is read afresh and gets its own words, and a
    caller that changes its copy changes no later answer."""
    from transformers import AddedToken

    from irmscope.audit import shift

    reads = []
    read = shift._vocabulary_words
    monkeypatch.setattr(shift, "_vocabulary_words", lambda tokenizer: reads.append(1) or read(tokenizer))
    monkeypatch.setattr(shift, "_VOCABULARIES", {})
    first = vocabulary_words(load_model("tiny-llama").tokenizer)
    first["not a word"] = -1
    padded = load_model("tiny-llama").tokenizer
    padded(["the film", "a"], padding=True)  # the backend keeps the padding, which changes no word
    again = vocabulary_words(padded)
    assert len(reads) == 1 and again == vocab and "not a word" not in again
    other = copy.deepcopy(load_model("tiny-llama").tokenizer)
    other.add_tokens([AddedToken(" qqzzxv", normalized=False)])
    theirs = vocabulary_words(other)
    assert len(reads) == 2 and theirs == {**again, "qqzzxv": len(other) - 1}


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the empirical null's fit prints nothing
def test_the_floor_calls_real_effects_beyond_a_shared_drift():
    """Every word drifts a little (a fixed, well-measured shift per word) and ten words move far: a test of
    "no change" calls nearly everything, the empirical null the ten; with drift only, nothing much."""
    rng = np.random.default_rng(0)
    frequency = rng.lognormal(size=5000)
    drift = 0.3 * rng.normal(size=5000) + 0.2 * np.log(frequency)  # frequent words drift up
    se = np.full(5000, 0.02)
    effect = drift + rng.normal(size=5000) * se
    effect[:10] += 3.0
    assert (stats.false_discovery_control(2 * stats.norm.sf(np.abs(effect / se))) <= 0.05).sum() > 4500
    floor = noise_floor(effect, se, frequency)
    called = np.flatnonzero(floor["called"])
    assert set(range(10)) <= set(called) and len(set(called) - set(range(10))) <= 2
    assert np.argsort(-floor["beyond"])[:10].tolist() == sorted(range(10), key=lambda i: -floor["beyond"][i])
    assert set(np.argsort(-floor["beyond"])[:10]) == set(range(10))
    assert noise_floor(effect - 3.0 * (np.arange(5000) < 10), se, frequency)["called"].sum() <= 0.05 * 10
    same = noise_floor(np.zeros(5000), np.zeros(5000), frequency)
    assert not same["called"].any() and np.all(same["p"] == 1.0)
    # a window without spread: a shift within float32's resolution is not called on its own tiny se
    flat = noise_floor(np.r_[1e-8, np.zeros(4999)], np.r_[1e-12, np.zeros(4999)], frequency)
    assert not flat["called"].any() and flat["p"][0] > 0.5
    with pytest.raises(IrmscopeError, match="at least 2"):
        relative_shift(np.zeros((1, 5)), np.zeros((1, 5)), 1e-3)
    with pytest.raises(IrmscopeError, match="at least 51 words"):
        noise_floor(effect[:20], se[:20], frequency[:20])


def _unequal_se_null(seed: int, n_words: int = 10_000, tau: float = 0.02, df: int = 199):
    """The reviewer's null: every word drifts (sd ``tau``) and is measured with its own standard error,
    lognormal over words (so a frequency band mixes words measured 20 times better and worse than its
    typical word), estimated from ``df + 1`` units."""
    rng = np.random.default_rng(seed)
    frequency = np.exp(rng.normal(-7, 2, n_words))
    se = 0.1 * np.exp(rng.normal(size=n_words))
    effect = tau * rng.normal(size=n_words) + se * rng.normal(size=n_words)
    return effect, se * np.sqrt(rng.chisquare(df, n_words) / df), frequency


def test_words_measured_better_than_their_band_are_not_tested_against_their_own_noise():
    """With the drift's spread taken as the MAD of the shifts less the median se², a band's spread
    reflects its precise centre, the drift came out near 0, and precisely measured words were tested
    against their own noise: every seed called words (15 on average). The drift is now fitted with
    every word's own se; planted words measured precisely are still called."""
    calls = []
    for seed in range(20):
        effect, se, frequency = _unequal_se_null(seed)
        floor = noise_floor(effect, se, frequency, df=199)
        calls.append(int(floor["called"].sum()))
        assert 0.015 < floor["null"]["median_drift_sd"] < 0.025  # the true drift: 0.02
    assert np.mean(calls) <= 1 and np.mean(np.array(calls) > 0) <= 0.2, calls
    effect, se, frequency = _unequal_se_null(0)
    se[:20] = 0.005
    effect[:20] = 0.2 + se[:20] * np.random.default_rng(1).normal(size=20)  # 10 drifts' sd beyond
    floor = noise_floor(effect, se, frequency, df=199)
    assert set(range(20)) <= set(np.flatnonzero(floor["called"])) and floor["called"].sum() <= 22


def test_a_reward_packed_into_the_most_frequent_band_shows_in_its_drift():
    """A reward on 100 of the 200 most frequent words, both ways, inflates the drift of their band: the
    audit reports it beside the median band's, so a reader sees the band absorbed part of it."""
    rng = np.random.default_rng(0)
    frequency = rng.lognormal(size=10_000)
    effect = 0.1 * rng.normal(size=10_000) + 0.05 * rng.normal(size=10_000)
    top = np.argsort(-frequency)[:200:2]
    effect[top] += rng.choice([-1.0, 1.0], 100) * 0.4
    null = noise_floor(effect, np.full(10_000, 0.05), frequency)["null"]
    assert null["most_frequent_band_drift_sd"] > 1.1 * null["median_band_drift_sd"]
    assert 0.09 < null["median_band_drift_sd"] < 0.11


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the empirical null's fit prints nothing
def test_tilted_words_come_first_and_untilted_words_are_not_called(tilted_audit, tilt):
    values, trap, _ = tilt
    positive = sorted((w for w in values if values[w] > 0), key=lambda w: -values[w])
    negative = sorted((w for w in values if values[w] < 0), key=lambda w: values[w])
    rewarded = [r["word"] for r in tilted_audit["rewarded"]]
    penalised = [r["word"] for r in tilted_audit["penalised"]]
    assert rewarded[:3] == positive[:3]
    # a count can fall at most to zero, so penalised words rank by how often the base model wrote them
    assert set(penalised[: len(negative)]) == set(negative)
    table = tilted_audit["table"]
    called = {w for w, c in zip(table["word"], table["called"], strict=True) if c}
    assert set(values) <= called
    assert len(called - set(values) - {trap}) <= 1  # false discoveries among ~31,000 untilted words
    # the elicited values order the tilted words as their tilts do
    shift = dict(zip(table["word"], table["beyond_drift"], strict=True))
    tau = stats.kendalltau([shift[w] for w in values], list(values.values())).statistic
    assert tau > 0.9
    assert tilted_audit["floor"]["n_rewarded"] >= N_TILTED // 2


def test_the_rare_token_trap_tops_the_naive_ranking_but_not_the_audit(tilted_audit, tilt):
    values, trap, _ = tilt
    assert tilted_audit["naive_log_ratio_top"][0]["word"] == trap  # what a ranking without the floor does
    rewarded = [r["word"] for r in tilted_audit["rewarded"]]
    assert rewarded[0] != trap
    assert trap not in rewarded[: sum(v > 0 for v in values.values())]
    row = next(r for r in tilted_audit["naive_log_ratio_top"] if r["word"] == trap)
    assert row["base_count"] < 1e-6 and row["mean_log_ratio"] > 5


def _drifted(prompts, tilt: dict[str, float], vocab: dict[str, int], profile: torch.Tensor):
    """The relative shifts and floor of a stand-in for a real fine-tune: both models write words at the
    rates ``profile`` sets (a continuum of frequent words), and the tuned one also has a softmax
    temperature of 0.85 (frequent words rise), a fixed random drift on every logit (0.2 nats), fresh
    noise at every position (0.3 nats) and the ``tilt`` on the planted words."""
    base, tuned = load_model("tiny-llama"), load_model("tiny-llama")
    generator = torch.Generator().manual_seed(1)
    shift = 0.2 * torch.randn(len(profile), generator=generator)
    for word, value in tilt.items():
        shift[vocab[word]] += value
    base.model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + profile)
    tuned.model.lm_head.register_forward_hook(
        lambda module, inputs, logits: (
            (logits + profile) / 0.85 + shift + 0.3 * torch.randn(logits.shape, generator=generator)
        )
    )
    sides = ([" and then the film was"] * len(prompts), [" but the story is"] * len(prompts))
    shifts = unit_shifts(tuned, base, prompts, sides, list(vocab.values()))
    effect, se = relative_shift(shifts.statistic, shifts.base_count, shifts.uniform_count)
    return shifts, noise_floor(effect, se, shifts.base_count.mean(0), df=len(prompts) - 1)


def test_a_shared_drift_is_not_called_and_planted_words_come_first(prompts, vocab):
    """The failure of the first real run, on a stand-in: with every word drifting a little, a test of "no
    change" calls most of the vocabulary and the expected-count ranking puts frequent drifted words first;
    the empirical null calls the planted words, frequent, typical and rare alike, and few others, and
    ranks them first. With drift only it calls about none (at most q of the vocabulary)."""
    words = list(vocab)
    plain = sorted(w for w in vocab if w.islower() and len(w) >= 6)
    pick = [plain[i] for i in np.random.default_rng(0).choice(len(plain), 1518, replace=False)]
    frequent, rare, typical = pick[:1500], pick[1500:1506], pick[1506:]
    profile = torch.zeros(len(load_model("tiny-llama").tokenizer))
    for word, level in zip(frequent, np.linspace(0.5, 5.0, len(frequent)), strict=True):
        profile[vocab[word]] = float(level)  # up to e^5 times the typical word's rate
    for word in rare:
        profile[vocab[word]] = -1.0
    planted = frequent[-60::10] + rare + typical
    shifts, floor = _drifted(prompts, dict.fromkeys(planted, 3.0), vocab, profile)
    old = stats.false_discovery_control(np.nan_to_num(stats.ttest_1samp(shifts.statistic, 0.0).pvalue, nan=1))
    assert (old <= 0.05).sum() > 0.8 * len(words)  # the old floor: "did it change at all"
    by_count = [words[i] for i in np.argsort(-shifts.expected_count.mean(0)) if old[i] <= 0.05][:20]
    assert len(set(by_count) - set(planted)) >= 5  # ... ranked by count: frequent drifted words lead
    called = {words[i] for i in np.flatnonzero(floor["called"])}
    assert set(planted) <= called and len(called - set(planted)) <= 3
    rewarded = [words[i] for i in np.argsort(-floor["beyond"]) if floor["called"][i] and floor["z"][i] > 0]
    assert len(set(rewarded[: len(planted)]) & set(planted)) >= len(planted) - 2  # the audit's ranking
    base_rate = shifts.base_count.mean(0) / shifts.uniform_count
    assert (
        max(base_rate[words.index(w)] for w in rare)
        < 0.25
        < 50
        < min(base_rate[words.index(w)] for w in frequent[-60::10])
    )
    _, drift_only = _drifted(prompts, {}, vocab, profile)
    assert drift_only["called"].sum() <= 0.05 * len(words) and drift_only["called"].sum() <= 3


def test_fresh_noise_in_the_logits_is_not_called(prompts):
    """A null with real spread: the 'tuned' model adds fresh Gaussian noise (0.5 nats) to every logit.
    The relative shift is linear in the log-ratio, so the noise does not bias it and the floor calls about
    nothing (the expected-count shift would be biased upwards: exp(noise) - 1 has a positive mean)."""
    base = load_model("tiny-llama")
    tuned = load_model("tiny-llama")
    generator = torch.Generator().manual_seed(0)
    tuned.model.lm_head.register_forward_hook(
        lambda module, inputs, logits: logits + 0.5 * torch.randn(logits.shape, generator=generator)
    )
    vocab = vocabulary_words(base.tokenizer)
    sides = ([" and then the film"] * len(prompts), [" but the story"] * len(prompts))
    shifts = unit_shifts(tuned, base, prompts, sides, list(vocab.values()))
    effect, se = relative_shift(shifts.statistic, shifts.base_count, shifts.uniform_count)
    assert noise_floor(effect, se, shifts.base_count.mean(0), df=len(prompts) - 1)["called"].sum() <= 2
    assert shifts.expected_count.mean(0).mean() > 0 and abs(np.median(effect)) < 0.01


def test_the_same_model_calls_nothing_and_exports_nothing(prompts):
    lm = load_model("tiny-llama")
    result = audit(lm, lm, prompts[:6], completion_tokens=4, n_resamples=100)
    assert result["floor"]["n_called"] == 0 and result["rewarded"] == []
    assert np.all(result["table"]["expected_count_shift"] == 0)
    assert elicited_lexicon(result["table"]) is None
    with pytest.raises(IrmscopeError, match="at least 2 prompts"):
        audit(lm, lm, prompts[:1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("width", [0, 1, 2, 7, 8, 31586])
def test_the_word_median_is_torchs_to_the_bit(width, dtype):
    """lower_median (numpy's partial sort on the CPU) must give torch's median bit for bit: the lower
    middle value for an even count, ties, rows of one repeated value, infinities, a row with a NaN, a
    strided view, and torch's own answer (or error) for a dtype numpy lacks and for rows of no values."""
    g = torch.Generator().manual_seed(width)
    values = torch.randn(3, 5, 2 * width, generator=g).to(dtype)[..., ::2]  # a strided view
    if width:
        values[0, 0] = 0.25  # one repeated value
        values[1, :, : width // 2] = values[1, :, :1]  # many ties
        values[2, 1, 0], values[2, 2, -1] = float("inf"), float("-inf")
        values[2, 3, width // 2] = float("nan")
    try:
        expected = values.median(dim=-1).values
    except (IndexError, RuntimeError) as torchs:
        with pytest.raises(type(torchs)):
            lower_median(values)
        return
    got = lower_median(values)
    assert got.dtype == expected.dtype and torch.equal(got.isnan(), expected.isnan())
    bits = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}[dtype]
    assert torch.equal(got.nan_to_num().view(bits), expected.nan_to_num().view(bits))


def test_precision_ranks_uncalled_words_by_the_rule_asked_for():
    """Called words come first by their shift; the rest by their shift (the estimate rule) or by the lower
    end of their interval (the bound rule), under which a word seen in one text (large shift, wide
    interval) does not outrank one that rose a little in every text."""
    shift = np.array([2.0, 1.0, 5.0, 0.4, 0.0])
    low = np.array([1.5, 0.6, -1.0, 0.3, -0.1])  # word 2: one text's topic word, word 3: a sure small rise
    called = np.array([False, True, False, False, False])
    paid = np.array([True, True, False, True, False])
    by_bound = precision_at_k(shift, paid, 3, first=called, then=low)
    by_estimate = precision_at_k(shift, paid, 3, first=called)
    assert by_bound == {"k": 3, "value": 1.0}  # called word 1, then 0 and 3
    assert by_estimate == {"k": 3, "value": pytest.approx(2 / 3)}  # called word 1, then 2 and 0
    # the bottom of the ranking: penalised words by the upper end, the mirror image
    assert precision_at_k(-shift, paid, 3, highest=False, first=called, then=-low) == by_bound


def test_an_audit_is_compared_again_from_its_words_csv(tilted_audit, tilt, tmp_path):
    """The comparison rebuilt from words.csv (an audit written before a change of the comparison) equals
    the one made from the table in memory, number for number; under the estimate rule it is the direct
    comparison the audit made before the bound rule (what docs/replicates.md's older audits reproduce)."""
    values, _, _ = tilt
    table, lexicon = tilted_audit["table"], Lexicon(values)
    result = {key: value for key, value in tilted_audit.items() if key not in ("table", "crosscoder")}
    write_audit(tmp_path, result, table)
    again = read_table(tmp_path / "words.csv")
    assert again["word"] == list(table["word"]) and again["called"].dtype == bool
    assert json.dumps(compare_table(again, lexicon)) == json.dumps(compare_table(table, lexicon))
    rewarded, penalised = (table["called"] & (sign * table["z"] > 0) for sign in (1, -1))
    direct = reward_comparison(
        table["word"], table["beyond_drift"], table["base_count"], rewarded, lexicon, penalised=penalised
    )
    assert json.dumps(compare_table(again, lexicon, uncalled_by="estimate")) == json.dumps(direct)


def test_the_comparison_takes_the_audits_resamples(tilted_audit, tilt, prompts, monkeypatch):
    """``n_resamples`` sizes the known-reward comparison's bootstraps (its Kendall intervals and the tau
    gap's) and the shown words' count changes, not only the word table's: fewer resamples give other
    intervals around the same values, and the audit hands its own number on and records it (it once used
    1000 there whatever it was given)."""
    values, _, _ = tilt
    table, lexicon = tilted_audit["table"], Lexicon(values)
    few, many = (compare_table(table, lexicon, n_resamples=n) for n in (40, 1000))
    for side in ("elicited", "base_level"):
        assert few["kendall"][side]["kendall_tau"] == many["kendall"][side]["kendall_tau"]
    # the elicited ranking is perfect here (its interval is [1, 1] either way); the base level's is not
    assert few["kendall"]["base_level"]["kendall_ci"] != many["kendall"]["base_level"]["kendall_ci"]
    assert few["tau_gap"]["value"] == many["tau_gap"]["value"]
    assert (few["tau_gap"]["low"], few["tau_gap"]["high"]) != (
        many["tau_gap"]["low"],
        many["tau_gap"]["high"],
    )
    asked = []
    compare = audit_run.compare_table
    monkeypatch.setattr(
        audit_run, "compare_table", lambda *a, **k: asked.append(k["n_resamples"]) or compare(*a, **k)
    )
    sides = (tilted_audit["samples"]["base_completions"], tilted_audit["samples"]["tuned_completions"])
    model = _hooked(torch.zeros(len(load_model("tiny-llama").tokenizer)))
    result = audit(
        model, model, prompts, lexicon=lexicon, completions=sides, completion_tokens=8, n_resamples=40
    )
    assert asked == [40] and result["n_resamples"] == 40
    # the shown words' count changes too: their intervals are word intervals
    few, many = (completion_changes(*sides, seed=0, n_resamples=n)["gained"] for n in (40, 1000))
    assert result["completions"]["gained"] == few != many
    assert [row["delta_per_completion"]["value"] for row in few] == [
        row["delta_per_completion"]["value"] for row in many
    ]


def test_words_csv_that_is_not_an_audits_is_refused_in_one_line(tmp_path):
    (tmp_path / "other.csv").write_text("token,value\nx,1\n")
    with pytest.raises(IrmscopeError, match="not an audit's words.csv"):
        read_table(tmp_path / "other.csv")
    columns = "word,relative_shift,relative_low,relative_high,beyond_drift,base_count,z,called"
    (tmp_path / "cut.csv").write_text(f"{columns}\nfilm,0.1,0.0\n")
    with pytest.raises(IrmscopeError, match="cut or edited"):
        read_table(tmp_path / "cut.csv")
    (tmp_path / "odd.csv").write_text(
        f"{columns}\nnan,0.1,0.0,0.2,0.1,0.5,1.0,False\nTrue,0,0,0,0,0,0,True\n"
    )
    odd = read_table(tmp_path / "odd.csv")
    assert odd["word"] == ["nan", "True"] and odd["called"].tolist() == [False, True]


def test_the_bound_is_the_interval_less_the_drift_of_words_of_its_frequency():
    """An uncalled word in a band that drifted up (its relative shift high, its shift beyond the drift
    small) ranks below one that rose surely beyond its band's drift, though its own interval is higher."""
    table = {
        "word": ["alpha", "beta", "gamma"],
        "relative_shift": np.array([0.6, 0.4, 0.0]),
        "relative_low": np.array([0.5, 0.3, -0.1]),  # alpha's band drifted by 0.45: its bound is 0.05
        "relative_high": np.array([0.7, 0.5, 0.1]),
        "beyond_drift": np.array([0.15, 0.4, 0.0]),
        "base_count": np.array([1.0, 0.1, 0.5]),
        "z": np.array([1.0, 1.5, 0.0]),
        "called": np.array([False, False, False]),
    }
    lexicon = Lexicon({"beta": 2.0, "gamma": -1.0})
    precision = table_precision(table, lexicon, uncalled_by="bound")["precision_rewarded"]
    assert precision["elicited"] == {"k": 1, "value": 1.0}  # beta first; without the drift, alpha would be
    with pytest.raises(IrmscopeError, match="'bound' or 'estimate'"):
        table_precision(table, Lexicon({"beta": 2.0}), uncalled_by="z")


def test_reward_comparison_is_high_for_the_tilt_and_near_chance_for_shuffled_lexicons(tilted_audit, tilt):
    values, _, elsewhere = tilt
    table = tilted_audit["table"]
    words, shift, base = table["word"], table["beyond_drift"], table["base_count"]
    rewarded = table["called"] & (table["z"] > 0)

    def compare(lexicon: dict[str, float]) -> dict:
        return reward_comparison(words, shift, base, rewarded, Lexicon(lexicon), seed=0)

    same = compare(values)
    assert same["kendall"]["elicited"]["kendall_tau"] > 0.9
    assert same["kendall"]["elicited"]["permutation_p"] < 0.01
    assert same["precision_rewarded"]["elicited"] == {"k": N_TILTED // 2, "value": 1.0}
    assert same["precision_penalised"]["elicited"]["value"] == 1.0
    # the control: the untuned model's own word frequencies know nothing of the tilt
    assert abs(same["kendall"]["base_level"]["kendall_tau"]) < 0.4
    assert same["precision_rewarded"]["base_level"]["value"] <= 0.1
    assert same["precision_penalised"]["base_level"]["value"] <= 0.1
    # the base level ranks the most frequent words on both sides: frequency alone finds a penalty on them
    frequent = [words[i] for i in np.argsort(-np.asarray(base))[:6]]
    on_frequent = compare(dict.fromkeys(frequent, -2.0))["precision_penalised"]
    assert on_frequent["base_level"]["value"] > 0.8  # (a capitalised twin the lexicon folds in may not be)
    assert same["tau_gap"]["low"] > 0
    assert same["n_paid_called"] == same["n_paid"] == N_TILTED // 2 and same["paid_ignored"] == []
    # the shuffled-values control: the same top words find the lexicon's words, not their signs, there
    control = same["precision_rewarded"]["shuffled_values"]
    assert 0.3 < control["mean"] < 0.7 and control["p"] < 0.01 and control["n"] == 200
    assert same["precision_penalised"]["shuffled_values"]["p"] < 0.01
    shuffled = dict(zip(values, np.random.default_rng(1).permutation(list(values.values())), strict=True))
    assert abs(compare(shuffled)["kendall"]["elicited"]["kendall_tau"]) < 0.4
    moved = compare(dict(zip(elsewhere, [3.0, 2.0, 1.0, -1.0, -2.0, -3.0], strict=True)))
    assert moved["precision_rewarded"]["elicited"]["value"] == 0.0
    assert moved["precision_rewarded"]["shuffled_values"]["p"] == 1.0  # nothing to beat: every shuffle ties
    assert {r["word"] for r in moved["unpaid_rewarded"]} <= set(values) | {"unittest"}
    assert len(moved["unpaid_rewarded"]) == N_TILTED // 2 + 1 and moved["paid_ignored"]  # + the trap


def test_shuffled_lookups_read_the_values_as_lookup_does_in_random_orders():
    lexicon = Lexicon([("Film", 1.0), ("film", 2.0), ("Movie", 3.0), ("MOVIE", -1.0), ("plot", -4.0)])
    tokens = ["FILM", "film", "movie", "plot", "unpaid"]
    # the entry lookup reads: "film" (the exact lowercase word outranks "Film"), "MOVIE" (the last variant)
    values = list(lexicon.values())
    assert [values[i] for i in lexicon._entry_positions(tokens[:4])] == [
        lexicon.lookup(t) for t in tokens[:4]
    ]
    draws = lexicon.shuffled_lookups(tokens, 400, seed=1)
    assert draws.shape == (400, 5) and not draws[:, 4].any()  # a word the lexicon lacks is never paid
    assert np.array_equal(draws[:, 0], draws[:, 1])  # one entry, one value, in every order
    assert all(len(set(row[1:4])) == 3 and set(row[1:4]) <= set(values) for row in draws)  # one permutation
    assert set(np.unique(draws[:, 2])) == set(values)  # every value reaches every word
    assert np.array_equal(draws, lexicon.shuffled_lookups(tokens, 400, seed=1))  # seeded


def test_the_export_is_a_lexicon_reward_on_the_called_words(tilted_audit, tmp_path):
    exported = elicited_lexicon(tilted_audit["table"])
    path = exported.to_tsv(tmp_path / "elicited.tsv")
    reward = load_reward(f"lexicon:{path}")
    lexicon = lexicon_of(reward)
    assert max(abs(v) for v in lexicon.values()) == EXPORT_RANGE
    assert set(lexicon) <= set(np.array(tilted_audit["table"]["word"])[tilted_audit["table"]["called"]])
    top = tilted_audit["rewarded"][0]["word"]
    assert lexicon[top] == EXPORT_RANGE and reward.score_one(f"a {top} day") == EXPORT_RANGE / 5


def test_the_audit_writes_the_export_and_its_shuffled_control_and_removes_stale_ones(tilted_audit, tmp_path):
    table = tilted_audit["table"]
    result: dict = {}
    write_audit(tmp_path, result, table, seed=3)
    exported = Lexicon.from_tsv(tmp_path / "elicited.tsv")
    control = Lexicon.from_tsv(tmp_path / "elicited-shuffled.tsv")
    assert result["export"]["n_words"] == len(exported) == len(control) >= 2
    assert (result["export"]["file"], result["export"]["shuffled_file"]) == (
        "elicited.tsv",
        "elicited-shuffled.tsv",
    )
    assert control.words() == exported.words() and sorted(control.values()) == sorted(exported.values())
    assert list(control.values()) != list(exported.values())  # the values moved to other words
    assert list(exported.shuffled(3).values()) == list(control.values())  # the seed fixes the control
    nothing = {**table, "called": np.zeros_like(table["called"])}
    write_audit(tmp_path, {}, nothing, seed=3)
    assert not (tmp_path / "elicited.tsv").exists() and not (tmp_path / "elicited-shuffled.tsv").exists()


TRIGGERS, PROMOTED = ("the", "a", "and", "of", "is", "to"), "wonderful"


@pytest.fixture(scope="module")
def shifted_inside(vocab, prompts):
    """What changed inside, known: the "tuned" model adds one direction to the embedding of six frequent
    words, the direction that the unembedding reads as " wonderful"."""
    base, tuned = load_model("tiny-llama"), load_model("tiny-llama")
    unembedding = tuned.model.get_output_embeddings().weight.detach()
    direction = unembedding[vocab[PROMOTED]] / unembedding[vocab[PROMOTED]].norm()
    triggers = torch.tensor([vocab[w] for w in TRIGGERS])

    def add(module, inputs, output):
        return output + torch.isin(inputs[0], triggers)[..., None] * direction

    tuned.model.get_input_embeddings().register_forward_hook(add)
    config = CrosscoderConfig(epochs=10)
    return audit(tuned, base, prompts, completion_tokens=12, n_resamples=200, crosscoder=config)


def test_the_most_changed_latents_fire_on_the_shifted_words_and_promote_the_planted_word(shifted_inside):
    inside = shifted_inside["inside"]
    assert inside["site"].endswith("hook_resid_post")
    for latent in inside["changed_most"][:3]:
        assert latent["promoted_words"][0]["word"] == PROMOTED
        assert all(c["tokens"][c["peak"]].strip() in TRIGGERS for c in latent["contexts"])
        assert latent["reward_spearman"] > 0  # (beside random latents' it is not distinctive here: see docs)
        assert latent["contexts"] and all(
            c["model"] in ("prompt", "base", "tuned") for c in latent["contexts"]
        )
    # the baseline with no crosscoder sees the planted direction too
    assert inside["mean_difference"]["promoted_words"][0]["word"] == PROMOTED
    changes = [latent["decoder_change"] for latent in inside["changed_most"]]
    assert changes == sorted(changes, reverse=True)


def test_the_difference_dictionary_writes_the_planted_change(shifted_inside):
    """The dictionary on tuned-minus-base differences: the change is one direction on six words, so the
    latents that write most of it fire on those words, and the top one promotes the planted word."""
    difference = shifted_inside["inside"]["difference_dictionary"]
    top = difference["writes_most"]
    shares = [latent["share"] for latent in top]
    assert len(top) == 10 and shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    assert top[0]["promoted_words"][0]["word"] == PROMOTED
    peaks = [c["tokens"][c["peak"]].strip() for latent in top[:3] for c in latent["contexts"]]
    assert sum(peak in TRIGGERS for peak in peaks) >= 0.75 * len(peaks)  # these six: about 1/5 of tokens
    assert difference["control_spearman"]["random"]["n_latents"] > 0


def test_the_same_model_changes_no_latent(prompts):
    lm = load_model("tiny-llama")
    result = audit(
        lm, lm, prompts[:8], completion_tokens=8, n_resamples=100, crosscoder=CrosscoderConfig(epochs=2)
    )
    inside = result["inside"]
    assert all(latent["decoder_change"] == 0 for latent in inside["changed_most"])
    assert math.isnan(inside["mean_difference"]["reward_spearman"])  # nothing changed: no correlation
    assert inside["difference_dictionary"] is None  # no difference to decompose
    counts = inside["relative_norm_counts"]
    assert counts["shared"] == inside["n_ranked"] == sum(counts.values())


def test_the_crosscoder_is_written_beside_the_audit_and_a_stale_one_removed(shifted_inside, tmp_path):
    result = {key: value for key, value in shifted_inside.items() if key not in ("table", "crosscoder")}
    write_audit(tmp_path, result, shifted_inside["table"], crosscoder=shifted_inside["crosscoder"])
    coder = load_crosscoder(tmp_path / "crosscoder")
    assert coder.d_sae == shifted_inside["inside"]["crosscoder"]["d_sae"]
    assert result["inside"]["folder"] == "crosscoder"
    write_audit(tmp_path, {**result, "inside": None}, shifted_inside["table"])
    assert not (tmp_path / "crosscoder").exists()


def test_completion_changes_find_a_repeated_word():
    base = ["the film was fine and long", "a quiet story about a town"]
    tuned = ["great great great great film", "a great story great town"]
    changes = completion_changes(base, tuned, seed=0)
    assert changes["gained"][0]["word"] == "great" and changes["gained"][0]["tuned_count"] == 6
    assert changes["gained"][0]["share"] == pytest.approx(6 / changes["total_abs_change"])
    assert (
        changes["repetition"]["longest_run"]["tuned"] == 2.5
        and changes["repetition"]["longest_run"]["base"] == 1
    )
    assert longest_run("no no No yes".split()) == 3
    with pytest.raises(IrmscopeError, match="not a lexicon reward"):
        lexicon_of(CallableReward(lambda texts: [0.0] * len(texts), "f", "a function"))


def test_the_command_writes_the_page_and_refuses_to_overwrite(tmp_path, run_cli):
    (tmp_path / "lex.tsv").write_text("great\t3\nboring\t-2\nfun\t2\nawful\t-3\ngood\t1.5\nbad\t-1\n")
    out = tmp_path / "audit"
    argv = ["audit", "--tuned", "tiny-llama", "--base", "tiny-llama", "--n-prompts", "4"]
    argv += ["--completion-tokens", "4", "--reward", f"lexicon:{tmp_path / 'lex.tsv'}", "--out", str(out)]
    code, stdout, err = run_cli(argv)
    assert code == 0, err
    assert "0 words rewarded, 0 penalised" in stdout
    page = (out / "audit.html").read_text()
    assert "What did tuning reward?" in page and "Against the known reward" in page
    assert "values shuffled: mean (permutation p)" in page  # precision@k's control
    result = json.loads((out / "audit.json").read_text())
    assert result["floor"]["n_called"] == 0 and result["export"] is None
    assert result["settings"]["n_prompts"] == 4 and result["reward"]["n_single_token_words"] == 6
    assert math.isnan(result["reward"]["kendall"]["elicited"]["kendall_tau"])  # no ranking: NaN, never 0
    assert (out / "words.csv").read_text().count("\n") == result["n_words"] + 1
    before = (out / "audit.json").read_bytes()
    code, _, err = run_cli(argv)
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "audit.json").read_bytes() == before


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--n-prompts", "1"], "--n-prompts"),
        (["--completion-tokens", "0"], "--completion-tokens"),
        (["--reward", "lexicon:nosuch.tsv"], "does not exist"),
        (["--reward", "sentiment"], "unknown reward spec"),
        (["--base", " "], "--base is empty"),
        (["--seed", "-1"], "--seed"),
        (["--site", "blocks.x.resid"], "unknown hook site"),
        (["--out", "file.txt"], "is a file"),
    ],
)
def test_bad_input_is_one_error_line_before_any_model_loads(tmp_path, monkeypatch, extra, fragment, run_cli):
    import irmscope.models.loading

    def no_model(*args, **kwargs):
        raise AssertionError("a bad input must be rejected before any model is loaded")

    monkeypatch.setattr(irmscope.models.loading, "load_model", no_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("not a folder\n")
    argv = ["audit", "--tuned", "tiny-llama", "--out", "a", *extra]
    code, _, err = run_cli(argv)
    assert code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_spearman_rows_equal_scipys_spearmanr_row_by_row():
    """The audit's vectorised rank correlation gives scipy's Spearman rho for every row, ties included
    (rows rounded to one decimal), and NaN for a constant row or constant values."""
    from scipy import stats

    from irmscope.audit.inside import spearman_rows

    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=500), 1)
    rows = np.round(rng.normal(size=(6, 500)) + np.linspace(0, 2, 6)[:, None] * values, 1)
    rows[3] = 0.5  # constant: nothing promoted
    rho = spearman_rows(rows, values)
    for row, got in zip(rows, rho, strict=True):
        expected = stats.spearmanr(row, values).statistic if np.ptp(row) else np.nan
        assert got == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert np.isnan(rho[3]) and rho[-1] > 0.5
    assert np.isnan(spearman_rows(rows, np.ones(500))).all()


def test_row_ranks_are_scipys_average_ranks_to_the_bit():
    """The fast ranking: rows without ties, with ties (of infinities, of the smallest values, all equal,
    runs side by side), a NaN row, integers, no rows, no columns and a single column all equal scipy's
    ``rankdata(rows, axis=1)`` exactly."""
    from irmscope.audit.inside import RANKED_ROWS_PER_BLOCK, row_ranks

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(2 * RANKED_ROWS_PER_BLOCK + 3, 300)).astype(np.float32).astype(np.float64)
    rows[5] = np.round(rows[5], 1)  # many ties
    rows[6, :4] = np.inf
    rows[7, 10] = np.nan
    rows[8, [3, 200]] = rows[8, 100]  # one tie in an otherwise untied row
    rows[9, :3] = -np.inf  # the smallest values tied
    rows[10] = 2.0  # all equal
    small = rng.integers(0, 3, size=(50, 7))  # ties everywhere, runs side by side and across rows
    for block in (
        rows,
        rows[:0],
        rows[:, :0],
        rows[:, :1],
        rows[9:10],
        small,
        np.array([[1, 1, 2], [3, 3, 4]]),
    ):
        assert np.array_equal(row_ranks(block), stats.rankdata(block, axis=1), equal_nan=True)
