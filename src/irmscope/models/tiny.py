"""Tiny random-weight models of each supported family, for tests and the smoke preset.

They borrow the default model's tokenizer (SmolLM2's, 49,152 tokens) so they read and write real text, and
are built from a config with a fixed seed, so the same name gives the same weights. The families are those
of the models in the seed documents: Llama (SmolLM2), GPT-NeoX (Pythia), GPT-2, GPT-Neo and Qwen2, plus
Gemma 3 (the optional second real model).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    Qwen2Config,
)

from irmscope.models.packaged import packaged_tokenizer_dir
from irmscope.models.tokenizer_copies import TokenizerCopies

TINY_WIDTH = 64
TINY_LAYERS = 4
TINY_HEADS = 4
TINY_MLP = 128
TINY_CONTEXT = 512


#: Each family's config class and the settings it needs beyond the shared sizes. The shared sizes are given
#: by their generic names (``hidden_size``, ``num_hidden_layers``, ...), which every config class maps onto
#: its own fields (GPT-2's ``n_embd``, GPT-Neo's ``num_layers``) through its ``attribute_map``.
_FAMILY_CONFIGS: dict[str, tuple[type[PretrainedConfig], dict[str, Any]]] = {
    "llama": (LlamaConfig, {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "gpt_neox": (GPTNeoXConfig, {"tie_word_embeddings": False}),
    "gpt2": (GPT2Config, {"n_inner": TINY_MLP}),  # GPT-2 maps no generic name onto its MLP width
    # GPT-Neo checks its attention pattern against its layer count before the generic names are applied
    "gpt_neo": (
        GPTNeoConfig,
        {
            "num_layers": TINY_LAYERS,
            "attention_types": [[["global", "local"], TINY_LAYERS // 2]],
            "window_size": 64,
        },
    ),
    "qwen2": (Qwen2Config, {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "gemma3": (
        Gemma3TextConfig,
        {
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "head_dim": TINY_WIDTH // TINY_HEADS,
            "sliding_window": 64,
        },
    ),
}


def _tiny_config(family: str, vocab_size: int, bos: int, eos: int, pad: int) -> PretrainedConfig:
    config_class, own_settings = _FAMILY_CONFIGS[family]
    return config_class(
        vocab_size=vocab_size,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        hidden_size=TINY_WIDTH,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=TINY_HEADS,
        intermediate_size=TINY_MLP,
        max_position_embeddings=TINY_CONTEXT,
        **own_settings,
    )


def build_tiny(family: str, seed: int = 0):
    """A ``(model, tokenizer)`` pair: a random-weight ``family`` model with the default model's tokenizer.

    Each ``(family, seed)`` is built once per process; every call returns copies of that build (the
    tokenizer's as :class:`~irmscope.models.tokenizer_copies.TokenizerCopies` makes them) and leaves torch's
    random state as a fresh build leaves it (seeded with ``seed``, then drawn from by the weights'
    initialisation), so what the caller draws next cannot tell the two apart. The tests and the smoke
    preset load the same tiny models over a hundred times, and a fresh build is mostly reading the 3.5 MB
    tokenizer file."""
    if (family, seed) not in _BUILT:
        model, tokenizer = _build_tiny(family, seed)
        random_state = torch.get_rng_state()
        _BUILT[family, seed] = _Build(model, TokenizerCopies(tokenizer), random_state)
    build = _BUILT[family, seed]
    torch.manual_seed(seed)  # every device's generator, as a fresh build seeds them
    torch.set_rng_state(build.random_state)  # and the CPU's where the initialisation left it
    return copy.deepcopy(build.model), build.tokenizer.copy()


@dataclass
class _Build:
    """The first build of one ``(family, seed)`` and torch's CPU random state right after it."""

    model: Any
    tokenizer: TokenizerCopies
    random_state: torch.Tensor


_BUILT: dict[tuple[str, int], _Build] = {}


def _build_tiny(family: str, seed: int):
    from transformers import AutoModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(packaged_tokenizer_dir())  # its own: not the default model's
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = _tiny_config(family, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, pad)
    config.name_or_path = f"tiny-{family}"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model, tokenizer
