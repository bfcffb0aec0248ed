"""Architecture adapters: where each model family keeps the modules that irmscope's hook sites read.

Hook sites use TransformerLens's names so researchers recognise them:

=========================== ====================================================================
site                        what it holds
=========================== ====================================================================
``blocks.L.hook_resid_pre``  the residual stream entering block L
``blocks.L.hook_resid_post`` the residual stream leaving block L (before the final norm)
``blocks.L.hook_attn_out``   what block L's attention adds to the residual stream
``blocks.L.hook_mlp_out``    what block L's MLP adds to the residual stream
``blocks.L.mlp.hook_post``   the MLP's hidden activation: the input of its down projection (the main
                             paper's SAEs read this site)
=========================== ====================================================================

An adapter only *names modules*; :mod:`irmscope.models.hooks` attaches the hooks. Supporting a new family
means adding one :class:`ArchitectureAdapter` entry to :data:`ADAPTERS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from irmscope.errors import IrmscopeError

SITE_KINDS: tuple[str, ...] = (
    "hook_resid_pre",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "mlp.hook_post",
)
_SITE_RE = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|mlp\.hook_post)$"
)


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Dotted attribute paths, relative to the causal-LM module, of the parts each hook site reads.

    ``attn_out`` and ``mlp_out`` name the module whose *output* is added to the residual stream: for most
    families that is the attention / MLP block itself; Gemma 3 normalises both outputs before adding them,
    so there they are the post-norms.
    """

    family: str
    layers: str  # the ModuleList of transformer blocks
    attn_out: str  # relative to a block
    mlp_out: str  # relative to a block
    mlp_down: str  # relative to a block: the MLP's down projection (its input is mlp.hook_post)
    final_norm: str

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return submodule(model, self.layers)

    def n_layers(self, model: nn.Module) -> int:
        return len(self.blocks(model))

    def final_norm_module(self, model: nn.Module) -> nn.Module:
        return submodule(model, self.final_norm)


_LLAMA_LIKE = dict(
    layers="model.layers",
    attn_out="self_attn",
    mlp_out="mlp",
    mlp_down="mlp.down_proj",
    final_norm="model.norm",
)
_GPT2_LIKE = dict(
    layers="transformer.h",
    attn_out="attn",
    mlp_out="mlp",
    mlp_down="mlp.c_proj",
    final_norm="transformer.ln_f",
)

ADAPTERS: dict[str, ArchitectureAdapter] = {
    "llama": ArchitectureAdapter("llama", **_LLAMA_LIKE),
    "mistral": ArchitectureAdapter("mistral", **_LLAMA_LIKE),
    "qwen2": ArchitectureAdapter("qwen2", **_LLAMA_LIKE),
    "gemma3_text": ArchitectureAdapter(
        "gemma3_text",
        layers="model.layers",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        mlp_down="mlp.down_proj",
        final_norm="model.norm",
    ),
    "gpt2": ArchitectureAdapter("gpt2", **_GPT2_LIKE),
    "gpt_neo": ArchitectureAdapter("gpt_neo", **_GPT2_LIKE),
    "gpt_neox": ArchitectureAdapter(
        "gpt_neox",
        layers="gpt_neox.layers",
        attn_out="attention",
        mlp_out="mlp",
        mlp_down="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
    ),
}


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for ``model``'s family (its ``config.model_type``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise IrmscopeError(
            f"model family {model_type!r} has no hook-site adapter; supported: {', '.join(sorted(ADAPTERS))} "
            "(add an ArchitectureAdapter in irmscope/models/adapters.py)"
        )
    return ADAPTERS[model_type]


def parse_site(site: str) -> tuple[int, str]:
    """Split ``'blocks.3.hook_resid_post'`` into ``(3, 'hook_resid_post')``."""
    match = _SITE_RE.match(site)
    if not match:
        raise IrmscopeError(
            f"unknown hook site {site!r}; use blocks.<layer>.<kind> with kind one of {', '.join(SITE_KINDS)}"
        )
    return int(match.group(1)), match.group(2)


def site_name(layer: int, kind: str) -> str:
    """The TransformerLens-style name of ``kind`` at ``layer``."""
    if kind not in SITE_KINDS:
        raise IrmscopeError(f"unknown hook kind {kind!r}; use one of {', '.join(SITE_KINDS)}")
    return f"blocks.{layer}.{kind}"


def all_sites(n_layers: int, kinds: tuple[str, ...] = SITE_KINDS) -> list[str]:
    """Every site of the given kinds, layer by layer."""
    return [site_name(layer, kind) for layer in range(n_layers) for kind in kinds]


def submodule(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module
