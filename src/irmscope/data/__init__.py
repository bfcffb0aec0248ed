"""Data for irmscope: review sources, prompts, contrastive triples and preference pairs.

* :func:`load_reviews` — reviews as a DataFrame (``text``, ``label``, ``rating``) from the offline
  rotten-tomatoes default, local files/folders, or the Hugging Face hub.
* :func:`truncate_to_prefixes` — the paper's 30-token prompts.
* :func:`build_contrastive_triples` — (positive, neutral, negative) inputs by a lexicon rule
  (:func:`iter_contrastive_triples`: the same, built as they are taken).
* :func:`build_preference_pairs` — chosen/rejected pairs for DPO.
"""

from irmscope.data.preferences import PREFERENCE_COLUMNS, build_preference_pairs
from irmscope.data.prompts import PROMPT_TOKENS, review_prompts, truncate_to_prefixes
from irmscope.data.reviews import ROTTEN_TOMATOES, load_reviews, strip_html_breaks
from irmscope.data.triples import (
    MIN_VALUE,
    NEUTRAL_WORDS,
    ContrastiveTriple,
    LexiconLike,
    build_contrastive_triples,
    iter_contrastive_triples,
    match_case,
    triples_to_frame,
)

__all__ = [
    "MIN_VALUE",
    "NEUTRAL_WORDS",
    "PREFERENCE_COLUMNS",
    "PROMPT_TOKENS",
    "ROTTEN_TOMATOES",
    "ContrastiveTriple",
    "LexiconLike",
    "build_contrastive_triples",
    "build_preference_pairs",
    "iter_contrastive_triples",
    "load_reviews",
    "match_case",
    "review_prompts",
    "strip_html_breaks",
    "triples_to_frame",
    "truncate_to_prefixes",
]
