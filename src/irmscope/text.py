"""The word tokenizer of the paper's Eq. 3: spaCy's rule-based English tokenizer.

``spacy.blank("en")`` needs no model download; its tokenizer rules (prefixes, suffixes, infixes, special
cases such as "don't" → "do", "n't" and emoticons) are the English language defaults, the same rules the
paper's ``en_core_web_md`` pipeline tokenizes with. Rewards and contrastive triples share this one instance.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.Lock()


@functools.cache
def english_tokenizer() -> Any:
    """spaCy's English tokenizer, built once per process; ``english_tokenizer()(text)`` gives a ``Doc``."""
    with _LOCK:
        import spacy

        return spacy.blank("en").tokenizer
