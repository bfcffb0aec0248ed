"""Tests for irmscope.rewards: Eq. 3 by hand, lexicon files, score validation, classifier reward, specs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from irmscope.errors import IrmscopeError
from irmscope.rewards import (
    CallableReward,
    ClassifierReward,
    Lexicon,
    LexiconReward,
    NoiseReward,
    Reward,
    VaderReward,
    load_reward,
)

IMDB_TRAIN = Path("/work/shared/data/imdb/train.parquet")


@pytest.fixture(scope="module")
def vader() -> VaderReward:
    return VaderReward()


# ---------------------------------------------------------------------------------------------- Eq. 3 / VADER


def test_vader_values_used_below_are_the_real_ones():
    lexicon = Lexicon.vader()
    # the literal numbers in the hand computations below, as written in vader_lexicon.txt
    expected = {"great": 3.1, "fun": 2.3, "love": 3.2, "hate": -2.7, "boring": -1.3, "awful": -2.0, ":)": 2.0}
    assert {w: lexicon[w] for w in expected} == expected
    for absent in (
        "this",
        "movie",
        "was",
        "the",
        "plot",
        "and",
        "actors",
        "were",
        "cat",
        "sat",
        "on",
        "mat",
        "!",
    ):
        assert absent not in lexicon
    assert len(lexicon) == 7506  # 7,520 lines in the file, 14 of them repeat a word (last value wins)
    assert (
        lexicon["lol"] == 1.8
    )  # 'lol' appears twice (2.9, then 1.8): the later line wins, as in vaderSentiment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("This movie was great fun", (3.1 + 2.3) / 5),  # 1.08
        ("GREAT", 3.1 / 5),  # tokens are lowercased before lookup
        ("Great", 3.1 / 5),
        ("great!", 3.1 / 5),  # spaCy splits the '!' off; '!' is not in the lexicon
        ("This movie was GREAT!!!", 3.1 / 5),
        ("The plot was boring and the actors were awful.", (-1.3 - 2.0) / 5),  # -0.66
        ("I love it :)", (3.2 + 2.0) / 5),  # 1.04: the emoticon is one spaCy token and a VADER entry
        ("The cat sat on the mat.", 0.0),  # no lexicon words
        ("", 0.0),
        ("love " * 15, 15 * 3.2 / 5),  # 9.6: just under the clip
        ("love " * 16, 10.0),  # 16 * 3.2 / 5 = 10.24 -> clipped to +10
        ("hate " * 19, -10.0),  # 19 * -2.7 / 5 = -10.26 -> clipped to -10
    ],
)
def test_eq3_by_hand(vader, text, expected):
    assert vader.score([text])[0] == pytest.approx(expected, abs=1e-12)


def test_vader_batch_matches_single_texts_and_token_values(vader):
    texts = ["This movie was great fun", "I hated it. Awful!", "", "love " * 16, "Nothing here."]
    batch = vader.score(texts)
    assert batch.dtype == np.float64 and batch.shape == (5,)
    assert list(batch) == [vader.score_one(t) for t in texts]
    assert vader.token_values("This movie was GREAT fun!") == [("GREAT", 3.1), ("fun", 2.3)]
    assert vader.score([]).shape == (0,)


def test_vader_description_is_informative_and_one_line(vader):
    assert vader.name == "vader"
    assert "VADER" in vader.description and "5" in vader.description and "[-10, 10]" in vader.description
    assert "\n" not in vader.description


# ---------------------------------------------------------------------------------------- arbitrary lexicons


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_made_up_tsv_lexicon(tmp_path):
    path = _write(
        tmp_path / "made_up.tsv",
        "# a made-up lexicon\n\nzorp\t2.0\tignored\textra\nblick\t-3.5\nFlorb\t1.0\nzorp\t4.0\n",
    )
    lexicon = Lexicon.from_tsv(path)
    assert lexicon.words() == ["blick", "Florb", "zorp"]  # duplicate 'zorp': last value wins
    assert lexicon["zorp"] == 4.0 and lexicon.get("nope") is None and len(lexicon) == 3
    assert "Florb" in lexicon and "florb" not in lexicon  # the mapping is exact ...
    assert lexicon.lookup("FLORB") == 1.0  # ... the reward's lookup is case-insensitive

    reward = load_reward(f"lexicon:{path}")
    assert reward.name == "made_up"
    assert reward.score(["zorp, zorp and blick!"])[0] == pytest.approx((4.0 + 4.0 - 3.5) / 5)  # 0.9
    assert reward.score(["florb FLORB"])[0] == pytest.approx(2.0 / 5)
    assert "'zorp'" in reward.description and "'blick'" in reward.description

    scaled = LexiconReward(lexicon, scale=1.0, clip=5.0, name="made_up_scaled")
    assert list(scaled.score(["zorp", "zorp zorp", "blick blick"])) == [4.0, 5.0, -5.0]
    assert LexiconReward(lexicon, scale=1.0, clip=None).score_one("zorp zorp") == 8.0


def test_lowercase_entry_wins_over_capitalised_twin():
    lexicon = Lexicon([("Zorp", 1.0), ("zorp", 2.0), ("ZORP", 3.0)])
    assert lexicon.lookup("Zorp") == 2.0


def test_lexicon_round_trip_and_subset(tmp_path):
    lexicon = Lexicon({"good": 1.9, "bad": -2.5, "meh": 0.1 + 0.2})
    back = Lexicon.from_tsv(lexicon.to_tsv(tmp_path / "sub" / "lex.tsv"))
    assert back == lexicon and back.words() == lexicon.words()
    sub = Lexicon.vader().subset(["bad", "notaword", "great"])
    assert sub.words() == ["bad", "great"] and sub["great"] == 3.1
    with pytest.raises(TypeError):
        lexicon["good"] = 0.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        ("good\tvery\n", "not a finite number"),
        ("good\tnan\n", "not a finite number"),
        ("good 1.9\n", "no tab-separated value"),
        ("# only a comment\n\n", "no entries"),
        ("", "no entries"),
    ],
)
def test_lexicon_file_errors(tmp_path, content, fragment):
    path = tmp_path / "lex.tsv"
    if content is not None:
        _write(path, content)
    with pytest.raises(IrmscopeError, match=fragment) as info:
        Lexicon.from_tsv(path)
    assert "\n" not in str(info.value)


def test_lexicon_reward_rejects_bad_settings():
    lexicon = Lexicon({"good": 1.0})
    for kwargs in ({"scale": 0.0}, {"scale": float("nan")}, {"clip": -1.0}):
        with pytest.raises(IrmscopeError):
            LexiconReward(lexicon, **kwargs)
    with pytest.raises(IrmscopeError):
        LexiconReward(lexicon, description="two\nlines")


# ------------------------------------------------------------------------------------- validation of scores


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_name_the_text(bad):
    texts = ["fine text", "This movie\nwas " + "x" * 200, "another"]
    reward = CallableReward(
        lambda ts: [1.0 if t != texts[1] else bad for t in ts], "my_reward", "Test reward"
    )
    with pytest.raises(IrmscopeError) as info:
        reward.score(texts)
    message = str(info.value)
    assert "\n" not in message
    assert f"reward 'my_reward' returned {bad!r} for text " in message
    assert "'This movie\\nwas xxx" in message and "..." in message and "x" * 100 not in message
    assert "finite" in message


def test_wrong_output_is_an_error():
    wrong_length = CallableReward(lambda ts: [0.0] * (len(ts) + 1), "long", "Returns too many scores")
    with pytest.raises(IrmscopeError, match="3 scores .* for 2 texts"):
        wrong_length.score(["a", "b"])
    not_numbers = CallableReward(lambda ts: [None for _ in ts], "nones", "Returns None")
    with pytest.raises(IrmscopeError, match="returned None for text 'a'"):
        not_numbers.score(["a"])
    strings = CallableReward(lambda ts: ["high" for _ in ts], "strings", "Returns strings")
    with pytest.raises(IrmscopeError, match="not numbers"):
        strings.score(["a"])
    ok = CallableReward(lambda ts: np.arange(len(ts))[:, None], "column", "Returns a column vector")
    assert list(ok.score(["a", "b"])) == [0.0, 1.0]
    with pytest.raises(IrmscopeError, match="single string"):
        ok.score("a bare string")
    with pytest.raises(IrmscopeError, match="not a string"):
        ok.score(["a", 3])  # type: ignore[list-item]
    with pytest.raises(IrmscopeError):
        CallableReward(lambda ts: ts, "", "empty name")


# ------------------------------------------------------------------------------------------------------- TRL


def test_trl_reward_func_strings(vader):
    func = vader.as_trl_reward_func()
    assert func.__name__ == "vader"
    out = func(
        prompts=["This movie was", "gr", "Plain"],
        completions=[" great fun", "eat", " text"],
        completion_ids=[[1], [2], [3]],
        trainer_state=None,
        extra_column=["a", "b", "c"],
    )
    assert isinstance(out, list) and len(out) == 3 and all(type(x) is float for x in out)
    # prompt and completion are concatenated with nothing between them, as TRL does for its model rewards
    assert out == pytest.approx([1.08, 0.62, 0.0])


def test_trl_reward_func_conversational(vader):
    func = vader.as_trl_reward_func()
    prompts = [[{"role": "user", "content": "Review this movie"}]] * 2
    completions = [
        [{"role": "assistant", "content": "Great fun!"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "Awful"}]}],
    ]
    assert func(prompts=prompts, completions=completions) == pytest.approx([1.08, -0.4])


# ------------------------------------------------------------------------------------------ classifier reward

_POS = [
    "a wonderful film with brilliant acting",
    "great story and superb cast",
    "loved it, truly excellent",
    "brilliant and moving, a great film",
    "superb direction, wonderful score",
    "excellent, I loved every minute",
]
_NEG = [
    "a terrible film with awful acting",
    "boring story and dreadful cast",
    "hated it, truly awful",
    "dreadful and dull, a terrible film",
    "awful direction, boring score",
    "terrible, I hated every minute",
]


@pytest.fixture(scope="module")
def tiny_classifier() -> ClassifierReward:
    return ClassifierReward.train(_POS + _NEG, [1] * len(_POS) + [0] * len(_NEG), min_df=1, name="tiny")


def test_classifier_synthetic(tiny_classifier):
    scores = tiny_classifier.score(["a wonderful, excellent film", "an awful, boring film"])
    assert scores[0] > 0 > scores[1]
    assert tiny_classifier.accuracy(_POS + _NEG, [1] * 6 + [0] * 6) == 1.0
    assert "positive" in tiny_classifier.description and "\n" not in tiny_classifier.description


def test_classifier_save_load_round_trip(tiny_classifier, tmp_path):
    directory = tiny_classifier.save(tmp_path / "clf")
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["classifier.json", "classifier.safetensors"]  # no pickle / joblib, no temp files left
    assert not any(p.suffix in {".pkl", ".pickle", ".joblib", ".npy", ".npz"} for p in tmp_path.rglob("*"))
    loaded = ClassifierReward.load(directory)
    texts = _POS + _NEG + ["unseen words only", "", "great great awful"]
    np.testing.assert_allclose(loaded.score(texts), tiny_classifier.score(texts), rtol=0, atol=1e-9)
    assert loaded.name == "tiny" and loaded.description == tiny_classifier.description
    assert loaded.vocabulary == tiny_classifier.vocabulary
    assert load_reward(f"classifier:{directory}").score(texts) == pytest.approx(loaded.score(texts), abs=1e-9)


def test_classifier_training_errors():
    with pytest.raises(IrmscopeError, match="no training texts"):
        ClassifierReward.train([], [])
    with pytest.raises(IrmscopeError, match="both positive"):
        ClassifierReward.train(["good", "fine"], [1, 1], min_df=1)
    with pytest.raises(IrmscopeError, match="not 0 or 1"):
        ClassifierReward.train(["good", "bad"], [1, 2], min_df=1)
    with pytest.raises(IrmscopeError, match="2 labels for 3 texts"):
        ClassifierReward.train(["good", "bad", "ok"], [1, 0], min_df=1)
    with pytest.raises(IrmscopeError, match="vocabulary"):
        ClassifierReward.train(["a", "b"], [1, 0], min_df=1)  # single letters are no tokens: empty vocabulary


def test_classifier_load_errors(tiny_classifier, tmp_path):
    with pytest.raises(IrmscopeError, match="does not exist"):
        ClassifierReward.load(tmp_path / "nowhere")
    directory = tiny_classifier.save(tmp_path / "clf")
    tensors = directory / "classifier.safetensors"
    manifest = directory / "classifier.json"
    original = tensors.read_bytes()

    tensors.write_bytes(original[:-8])  # truncated / tampered tensors
    with pytest.raises(IrmscopeError, match="corrupt"):
        ClassifierReward.load(directory)
    tensors.write_bytes(original)

    good_json = manifest.read_text()
    manifest.write_text(good_json[: len(good_json) // 2])
    with pytest.raises(IrmscopeError, match="not valid JSON"):
        ClassifierReward.load(directory)
    manifest.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(IrmscopeError, match="not an irmscope classifier"):
        ClassifierReward.load(directory)
    data = json.loads(good_json)
    data["vocabulary"] = data["vocabulary"][:-1]
    manifest.write_text(json.dumps(data))
    with pytest.raises(IrmscopeError, match="do not match"):
        ClassifierReward.load(directory)
    manifest.unlink()
    with pytest.raises(IrmscopeError, match="missing") as info:
        ClassifierReward.load(directory)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def imdb_split():
    if not IMDB_TRAIN.exists():
        pytest.skip(f"{IMDB_TRAIN} not available")
    import pandas as pd

    frame = pd.read_parquet(IMDB_TRAIN, columns=["text", "label"]).sample(n=3000, random_state=0)
    texts, labels = frame["text"].tolist(), frame["label"].astype(int).tolist()
    return texts[:2000], labels[:2000], texts[2000:], labels[2000:]


def test_classifier_on_imdb(imdb_split):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y = imdb_split
    reward = ClassifierReward.train(train_x, train_y)
    assert reward.accuracy(test_x, test_y) > 0.75
    positive, negative = reward.score(
        [
            "One of the best films I have seen: a wonderful, moving story and excellent acting.",
            "The worst movie ever made. Awful acting, a boring plot and a complete waste of time.",
        ]
    )
    assert positive > 0 > negative

    # Appendix F: the reward is the classifier's positive-class logit, i.e. sklearn's decision_function
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
    model = LogisticRegression(C=4.0, max_iter=1000, random_state=0).fit(
        vectorizer.fit_transform(train_x), train_y
    )
    expected = model.decision_function(vectorizer.transform(test_x[:200]))
    np.testing.assert_allclose(reward.score(test_x[:200]), expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------- specs


def test_load_reward_specs(tmp_path, monkeypatch):
    assert isinstance(load_reward("vader"), VaderReward)
    assert isinstance(load_reward(" VADER "), Reward)
    for spec in ("", "vader:extra", "lexicon:", "classifier:", "sentiment", "python:mod.fn"):
        with pytest.raises(IrmscopeError) as info:
            load_reward(spec)
        assert "\n" not in str(info.value)
    with pytest.raises(IrmscopeError, match="'vader', 'lexicon:PATH.tsv', 'classifier:DIR'"):
        load_reward("sentiment")
    with pytest.raises(IrmscopeError, match="does not exist"):
        load_reward(f"lexicon:{tmp_path / 'missing.tsv'}")
    monkeypatch.setenv("IRMSCOPE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(IrmscopeError, match="does not exist"):
        load_reward("classifier")


def test_reward_score_is_finite_float64_for_all_kinds(vader, tiny_classifier):
    texts = ["good", "bad", ""]
    for reward in (
        vader,
        tiny_classifier,
        CallableReward(lambda ts: [len(t) for t in ts], "length", "Text length"),
    ):
        scores = reward.score(texts)
        assert scores.dtype == np.float64 and scores.shape == (3,) and all(math.isfinite(s) for s in scores)


# ---------------------------------------------------------------------------------------------------- noise


def test_noise_reward_is_reproducible_per_text_and_unrelated_to_words():
    reward = load_reward("noise:3")
    assert isinstance(reward, NoiseReward) and reward.seed == 3
    texts = [f"a review number {i} with the word great" for i in range(2000)]
    scores = reward.score(texts)
    # the same text always scores the same, in any batch and any order
    assert reward.score(texts[::-1])[::-1] == pytest.approx(scores, abs=0)
    assert reward.score_one(texts[7]) == scores[7]
    # standard normal across distinct texts, and another seed gives independent values
    assert abs(scores.mean()) < 0.1 and abs(scores.std() - 1) < 0.1
    assert abs(np.corrcoef(scores, load_reward("noise:4").score(texts))[0, 1]) < 0.1
    # a sentiment word does not move it: noise does not read words
    good = reward.score([t + " excellent" for t in texts])
    assert abs(good.mean() - scores.mean()) < 0.15
    assert isinstance(load_reward("noise"), NoiseReward) and load_reward("noise").seed == 0
    for spec in ("noise:", "noise:x", "noise:-1"):
        with pytest.raises(IrmscopeError, match="whole-number seed"):
            load_reward(spec)


def test_a_readout_reward_scores_the_mean_pooled_residual_and_round_trips(tmp_path):
    """The exported inverse-RL reward reads the same features the probes stored: for a text given as a
    continuation with no prompt, the read-out reward's features equal read_residuals' mean-pooled row."""
    from irmscope.models import load_model
    from irmscope.probes.residuals import read_residuals
    from irmscope.rewards import ReadoutReward

    lm = load_model("tiny-llama")
    texts = ["a quiet film, and a good one", "bad", "the plot drags on and on and on"]
    stored = read_residuals(lm, [""] * 3, texts, layers=[2], progress=False).at("mean_pooled", 2)
    rng = np.random.default_rng(0)
    width = stored.shape[1]
    reward = ReadoutReward(
        "tiny-llama", 2, rng.normal(size=width), rng.normal(size=width), rng.uniform(1, 2, width), lm=lm
    )
    assert np.allclose(reward.features([""] * 3, texts), stored, atol=1e-5)
    scores = reward.score(texts)
    assert np.allclose(scores, ((stored - reward.mean) / reward.scale) @ reward.weights, atol=1e-4)
    # a prompt cut mid-word: scored on the tokens the policy wrote, as the fit read them, not re-merged
    prompts, completions = ["The act", "It was"], ["ing was fine", "n't good"]
    split = read_residuals(lm, prompts, completions, layers=[2], progress=False).at("mean_pooled", 2)
    assert np.allclose(reward.score_completions(prompts, completions), reward.of_features(split), atol=1e-4)
    whole = reward.score([p + c for p, c in zip(prompts, completions, strict=True)])
    assert not np.allclose(whole, reward.of_features(split), atol=1e-4)  # the merge the pairing avoids
    trl = reward.as_trl_reward_func()(prompts=prompts, completions=completions)
    assert np.allclose(trl, reward.score_completions(prompts, completions))
    reward.save(tmp_path / "irl")
    again = load_reward(f"readout:{tmp_path / 'irl'}")  # loads tiny-llama itself
    assert isinstance(again, ReadoutReward) and again.layer == 2
    assert np.allclose(again.score(texts), scores, atol=1e-5)
    with pytest.raises(IrmscopeError, match="holds no read-out reward"):
        load_reward(f"readout:{tmp_path}")
    with pytest.raises(IrmscopeError, match="one width"):
        ReadoutReward("tiny-llama", 2, np.ones(3), np.ones(4), np.ones(3))
