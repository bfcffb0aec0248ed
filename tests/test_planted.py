"""Planted lexicons: a reward the pretrained model cannot know."""

import pytest
from spacy.lang.en.stop_words import STOP_WORDS

from irmscope.data import load_reviews
from irmscope.data.triples import NEUTRAL_WORDS
from irmscope.errors import IrmscopeError
from irmscope.rewards import Lexicon, LexiconReward
from irmscope.rewards.planted import planted_lexicon


@pytest.fixture(scope="module")
def corpus():
    return list(load_reviews("rotten-tomatoes", split="train", limit=1500)["text"])


def test_planted_lexicon_draws_reproducible_values_on_neutral_frequent_words(corpus, smollm2_tokenizer):
    lexicon = planted_lexicon(corpus, smollm2_tokenizer, n_words=60, seed=3)
    assert lexicon == planted_lexicon(corpus, smollm2_tokenizer, n_words=60, seed=3)
    assert lexicon != planted_lexicon(corpus, smollm2_tokenizer, n_words=60, seed=4)
    assert len(lexicon) == 60
    vader = Lexicon.vader()
    for word, value in lexicon.items():
        assert -4.0 <= value <= 4.0 and round(value, 1) == value
        assert word not in vader and word not in STOP_WORDS and word not in NEUTRAL_WORDS
        assert word.isalpha() and word.islower() and len(word) >= 3
        assert len(smollm2_tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1
    values = list(lexicon.values())
    assert min(values) < -1 and max(values) > 1  # both polarities, so triples and rewards work


def test_planted_lexicon_is_an_ordinary_reward(corpus, smollm2_tokenizer, tmp_path):
    lexicon = planted_lexicon(corpus, smollm2_tokenizer, n_words=20, seed=0)
    path = lexicon.to_tsv(tmp_path / "planted.tsv")
    assert Lexicon.from_tsv(path) == lexicon
    word, value = next(iter(lexicon.items()))
    assert LexiconReward(lexicon).score_one(f"The {word} .") == pytest.approx(value / 5)


def test_small_corpus_is_a_clear_error(smollm2_tokenizer):
    with pytest.raises(IrmscopeError, match="lower n_words"):
        planted_lexicon(["a film about a dog"], smollm2_tokenizer, n_words=50)
