"""The key/value cache's name in a causal language model's forward arguments and outputs.

transformers 5.24 renamed ``past_key_values`` to ``cache``, as a forward argument and as the output's field.
The old argument still works there, until 5.40, but every call with it warns (a ``FutureWarning`` that
filled the pipeline's log and the tests' summary; pyproject's pytest settings make it an error); reading
the old output field logs a warning once per process instead, which no test filter catches, so nothing
reads it but :func:`returned_cache`. The transformers releases before 5.24, which irmscope also supports,
know only the old name. So every cached pass names the cache through these two helpers, which read the
name off the installed transformers once.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from transformers.modeling_outputs import CausalLMOutputWithPast

#: ``"cache"`` from transformers 5.24 on, ``"past_key_values"`` before
CACHE_NAME: str = (
    "cache" if "cache" in {field.name for field in fields(CausalLMOutputWithPast)} else "past_key_values"
)


def cache_argument(cache: Any) -> dict[str, Any]:
    """``{name: cache}``, to pass a key/value cache to a forward call: ``model(..., **cache_argument(c))``."""
    return {CACHE_NAME: cache}


def returned_cache(output: Any) -> Any:
    """The key/value cache a forward call with ``use_cache=True`` returned in ``output``."""
    return getattr(output, CACHE_NAME)
