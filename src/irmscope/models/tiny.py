"""Tiny random-weight models of each supported family, for tests and the smoke preset.

They borrow the default model's tokenizer (SmolLM2's, 49,152 tokens) so they read and write real text, and
are built from a config with a fixed seed, so the same name gives the same weights. The families are those
of the models in the seed documents: Llama (SmolLM2), GPT-NeoX (Pythia), GPT-2, GPT-Neo and Qwen2, plus
Gemma 3 (the optional second real model).
"""

from __future__ import annotations

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

TINY_WIDTH = 64
TINY_LAYERS = 4
TINY_HEADS = 4
TINY_MLP = 128
TINY_CONTEXT = 512


def _tiny_config(family: str, vocab_size: int, bos: int, eos: int, pad: int) -> PretrainedConfig:
    common = dict(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    llama_like = dict(
        hidden_size=TINY_WIDTH,
        intermediate_size=TINY_MLP,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=TINY_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=TINY_CONTEXT,
        tie_word_embeddings=True,
        **common,
    )
    if family == "llama":
        return LlamaConfig(**llama_like)
    if family == "qwen2":
        return Qwen2Config(**llama_like)
    if family == "gemma3":
        return Gemma3TextConfig(**llama_like, head_dim=TINY_WIDTH // TINY_HEADS, sliding_window=64)
    if family == "gpt2":
        return GPT2Config(
            n_embd=TINY_WIDTH,
            n_layer=TINY_LAYERS,
            n_head=TINY_HEADS,
            n_inner=TINY_MLP,
            n_positions=TINY_CONTEXT,
            **common,
        )
    if family == "gpt_neo":
        return GPTNeoConfig(
            hidden_size=TINY_WIDTH,
            num_layers=TINY_LAYERS,
            num_heads=TINY_HEADS,
            intermediate_size=TINY_MLP,
            max_position_embeddings=TINY_CONTEXT,
            attention_types=[[["global", "local"], TINY_LAYERS // 2]],
            window_size=64,
            **common,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=TINY_WIDTH,
            num_hidden_layers=TINY_LAYERS,
            num_attention_heads=TINY_HEADS,
            intermediate_size=TINY_MLP,
            max_position_embeddings=TINY_CONTEXT,
            tie_word_embeddings=False,
            **common,
        )
    raise KeyError(family)


TINY_FAMILIES: tuple[str, ...] = ("llama", "gpt_neox", "gpt2", "gpt_neo", "qwen2", "gemma3")


def build_tiny(family: str, seed: int = 0):
    """A ``(model, tokenizer)`` pair: a random-weight ``family`` model with the default model's tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(packaged_tokenizer_dir())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = _tiny_config(family, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, pad)
    config.name_or_path = f"tiny-{family}"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model, tokenizer
