"""What a model name means, decided without loading a model or its libraries.

``load_model`` accepts a packaged model name, ``tiny-<family>``, a local Hugging Face folder or a hub id
(see :mod:`irmscope.models.loading`). This module classifies a name into one of those, or fails with a
one-line hint, importing neither torch nor transformers: the command line checks a run's model names before
the pipeline's libraries load (about 15 s on the 2-core machine), so a typo is reported at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from irmscope.errors import IrmscopeError
from irmscope.models.packaged import PACKAGED_MODELS

DEFAULT_MODEL = "smollm2-135m"
#: the families ``tiny-<family>`` builds (:mod:`irmscope.models.tiny` holds their configs and checks that
#: it covers exactly these)
TINY_FAMILIES: tuple[str, ...] = ("llama", "gpt_neox", "gpt2", "gpt_neo", "qwen2", "gemma3")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_source(spec: str) -> tuple[str, str]:
    """Classify ``spec`` as ``('packaged'|'tiny'|'local'|'hub', value)``, or fail with a one-line hint."""
    if spec in PACKAGED_MODELS:
        return "packaged", spec
    if spec.startswith("tiny-") and spec[5:] in TINY_FAMILIES:
        return "tiny", spec[5:]
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise IrmscopeError(
                f"{spec} is not a Hugging Face model folder (no config.json); "
                "give a folder written by save_pretrained, or a model name from `irmscope models`"
            )
        return "local", str(path)
    if spec.startswith(("/", ".", "~")) or os.sep in spec and not _HUB_ID.match(spec):
        raise IrmscopeError(f"no such model folder: {spec}; check the path, or see `irmscope models`")
    if _HUB_ID.match(spec):
        return "hub", spec
    raise IrmscopeError(
        f"unknown model {spec!r}; use one of {', '.join(model_names())}, a local folder, "
        "or a hub id owner/name (see `irmscope models`)"
    )


def model_names() -> list[str]:
    return [*PACKAGED_MODELS, *(f"tiny-{family}" for family in TINY_FAMILIES)]


def available_models() -> list[dict[str, str]]:
    """What ``irmscope models`` lists: the packaged models (and whether installed) and the tiny builders."""
    rows = [
        {
            "name": m.name,
            "kind": "packaged",
            "installed": "yes" if m.installed() else f"no: {m.install_hint}",
            "description": m.description,
            "license": m.license,
        }
        for m in PACKAGED_MODELS.values()
    ]
    rows += [
        {
            "name": f"tiny-{family}",
            "kind": "tiny (random weights, tests)",
            "installed": "yes",
            "description": f"tiny random {family} model with SmolLM2's tokenizer",
            "license": "-",
        }
        for family in TINY_FAMILIES
    ]
    return rows
