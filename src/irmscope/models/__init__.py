"""Models: loading (packaged, tiny, local, hub), hook-site adapters, hooks to read or rewrite sites, and
batched sampling and scoring of completions.

The names below load on first use (PEP 562 ``__getattr__``): importing one light submodule, such as
:mod:`irmscope.models.sources` to check a model name, must not load torch and transformers, so that a
command given a wrong name says so in about a second instead of after the libraries' import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irmscope.models.adapters import (
        ADAPTERS,
        SITE_KINDS,
        ArchitectureAdapter,
        adapter_for,
        parse_site,
        site_name,
    )
    from irmscope.models.generation import Sampling, batches, generate_amplified, generate_completions
    from irmscope.models.hooks import (
        Capture,
        ablate,
        capture,
        capture_activations,
        intervene,
        last_token_positions,
        replace,
        steer,
    )
    from irmscope.models.loading import LoadedModel, load_model, load_tokenizer
    from irmscope.models.reading import completion_statistics, read_pairs
    from irmscope.models.sources import DEFAULT_MODEL, available_models

#: where each public name lives (a test checks that this, the imports above and ``__all__`` agree)
_HOMES = {
    "adapters": ("ADAPTERS", "SITE_KINDS", "ArchitectureAdapter", "adapter_for", "parse_site", "site_name"),
    "generation": ("Sampling", "batches", "generate_amplified", "generate_completions"),
    "hooks": (
        *("Capture", "ablate", "capture", "capture_activations", "intervene", "last_token_positions"),
        *("replace", "steer"),
    ),
    "loading": ("LoadedModel", "load_model", "load_tokenizer"),
    "reading": ("completion_statistics", "read_pairs"),
    "sources": ("DEFAULT_MODEL", "available_models"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "ADAPTERS",
    "DEFAULT_MODEL",
    "SITE_KINDS",
    "ArchitectureAdapter",
    "Capture",
    "LoadedModel",
    "Sampling",
    "ablate",
    "adapter_for",
    "available_models",
    "batches",
    "capture",
    "capture_activations",
    "completion_statistics",
    "generate_amplified",
    "generate_completions",
    "intervene",
    "last_token_positions",
    "load_model",
    "load_tokenizer",
    "parse_site",
    "read_pairs",
    "replace",
    "site_name",
    "steer",
]


def __getattr__(name: str) -> Any:
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # not cached here: the name always reads its home module's current value
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
