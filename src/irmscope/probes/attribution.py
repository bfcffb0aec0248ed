"""Which components write the reward direction: direct attribution through the residual stream, and
activation patching between the positive and negative texts of contrastive triples (the third question
of the project proposal "Eliciting Internal Reward Models in LLMs": rewards interpreted through circuits).

**Direct attribution.** The residual stream leaving block ``L`` is the sum of the token embedding and of
every attention and MLP output up to ``L``, so a linear read-out ``direction . resid`` (a reward probe)
splits exactly into one term per component, and an attention output splits further into one term per
head (``z_h @ W_O[h]``: exact for families that add the output projection straight to the stream, such as
Llama; not for Gemma 3, which normalises it first). The terms are averaged over each text's tokens like the
probe's mean-pooled read-out. A component *writes the reward* when its term separates texts of high and
low known reward: we report, per component, the mean term over the texts of the upper half of the reward
minus the lower half (the terms add up to the probe's own separation).

**Activation patching.** A triple's positive and negative texts differ only in their last token. Running
the negative text with one block's attention or MLP output at that token replaced by the positive run's
shows how much of the direction's difference that one output carries: ``(patched - negative) /
(positive - negative)``, averaged over triples as a ratio of means.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from irmscope.data.triples import ContrastiveTriple
from irmscope.elicit.continuations import encode_contexts
from irmscope.errors import IrmscopeError
from irmscope.models.adapters import adapter_for, site_name, submodule
from irmscope.models.generation import batches
from irmscope.models.hooks import capture, intervene
from irmscope.models.kv_cache import cache_argument, returned_cache
from irmscope.models.loading import LoadedModel
from irmscope.models.readout import encode_pairs
from irmscope.probes.residuals import Residuals
from irmscope.probes.ridge import fit_probe, group_split, pearson

#: longest contrast-pair text patched (the pipeline's pairs are cut to 64 tokens)
MAX_PAIR_TOKENS = 256
#: families whose attention output is the output projection itself (so it splits into heads exactly)
PER_HEAD_FAMILIES = {"llama", "mistral", "qwen2"}


def _output_projections(lm: LoadedModel, layers: Sequence[int]) -> list[torch.nn.Module] | None:
    adapter = adapter_for(lm.model)
    if adapter.family not in PER_HEAD_FAMILIES:
        return None
    blocks = adapter.blocks(lm.model)
    return [submodule(blocks[layer], "self_attn.o_proj") for layer in layers]


@torch.no_grad()
def direct_attribution(
    lm: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    direction: np.ndarray,
    layer: int,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Each text's read-out ``direction . mean_t resid_post[layer]`` split into the embedding's term
    (``embedding``: ``[texts]``), each block's attention and MLP terms (``attn``, ``mlp``: ``[texts,
    blocks]``) and, where exact, each head's (``heads``: ``[texts, blocks, heads]``); ``total`` is the
    read-out itself, for checking that the terms add up."""
    if not continuations:
        raise IrmscopeError("no texts to attribute; check the completions are not empty")
    layers = list(range(layer + 1))
    vector = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    if vector.shape != (lm.d_model,):
        raise IrmscopeError(f"the direction has shape {tuple(vector.shape)}; expected ({lm.d_model},)")
    sites = [site_name(0, "hook_resid_pre"), site_name(layer, "hook_resid_post")]
    sites += [site_name(i, kind) for i in layers for kind in ("hook_attn_out", "hook_mlp_out")]
    projections = _output_projections(lm, layers)
    n_heads = lm.model.config.num_attention_heads
    device = next(lm.model.parameters()).device
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("embedding", "total", "attn", "mlp", "heads")}
    for _, prompt_chunk, continuation_chunk in batches(
        prompts, continuations, size=batch_size, progress=progress, desc="attribution"
    ):
        # prompt and continuation tokenised apart, exactly as the probes read them
        ids, mask, _ = encode_pairs(lm, prompt_chunk, continuation_chunk, None)
        weights = mask.clone().float()
        weights[:, 0] = weights[:, 0] * (mask.sum(1) == 1)  # the probes' mean-pooling: first token out
        weights = weights / weights.sum(1, keepdim=True)
        head_inputs: list[torch.Tensor] = []
        handles = [
            module.register_forward_pre_hook(
                lambda _m, args, store=head_inputs: store.append(args[0].detach())
            )
            for module in projections or []
        ]
        try:
            with capture(lm.model, sites) as cap:
                lm.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()

        def term(act: torch.Tensor, weights: torch.Tensor = weights) -> torch.Tensor:  # [b, seq, d] -> [b]
            return torch.einsum("bsd,bs,d->b", act.float().cpu(), weights, vector)

        out["embedding"].append(term(cap[sites[0]]).numpy())
        out["total"].append(term(cap[sites[1]]).numpy())
        out["attn"].append(torch.stack([term(cap[site_name(i, "hook_attn_out")]) for i in layers], 1).numpy())
        out["mlp"].append(torch.stack([term(cap[site_name(i, "hook_mlp_out")]) for i in layers], 1).numpy())
        if projections is not None:
            per_layer = []
            for module, z in zip(projections, head_inputs, strict=True):
                z = z.float().cpu().unflatten(-1, (n_heads, -1))  # [batch, seq, heads, d_head]
                w_o = module.weight.detach().float().cpu().unflatten(1, (n_heads, -1))  # [d, heads, d_head]
                read = torch.einsum(
                    "dhk,d->hk", w_o, vector
                )  # what each head's output adds along the direction
                per_layer.append(torch.einsum("bshk,hk,bs->bh", z, read, weights))
            out["heads"].append(torch.stack(per_layer, 1).numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def separation(terms: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """Mean term over texts in the upper half of the known reward minus the lower half (per component)."""
    reward = np.asarray(reward, dtype=np.float64)
    upper = reward > np.median(reward)
    if upper.all() or not upper.any():
        raise IrmscopeError("the known reward is constant on these texts; nothing to separate")
    return terms[upper].mean(0) - terms[~upper].mean(0)


def _last_token_runs(lm: LoadedModel, prefix_ids: torch.Tensor, mask: torch.Tensor):
    """Run the shared prefix once; return a function that runs one last token per row on top of it,
    reading ``sites`` there with ``patches[site]`` (one row per text) written over those sites' outputs.
    Everything before the last token is the same for a pair and for every patch, so each patched run costs
    one token per row instead of a whole text."""
    device = next(lm.model.parameters()).device
    positions = (mask.cumsum(-1) - 1).clamp(min=0).to(device)  # left padding: count real tokens only
    prefix = returned_cache(
        lm.model(
            input_ids=prefix_ids.to(device),
            attention_mask=mask[:, :-1].to(device),
            position_ids=positions[:, :-1],
            use_cache=True,
        )
    )

    def overwrite(act: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        act[:, -1] = source.to(device=act.device, dtype=act.dtype)
        return act

    def run(
        last_ids: torch.Tensor, sites: Sequence[str], patches: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        edits = {
            site: (lambda act, source=source: overwrite(act, source))
            for site, source in (patches or {}).items()
        }
        with intervene(lm.model, edits), capture(lm.model, sites) as cap:
            lm.model(
                input_ids=last_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions[:, -1:],
                **cache_argument(copy.deepcopy(prefix)),  # a forward pass appends to its cache
            )
        return {site: cap[site][:, -1].float().cpu() for site in sites}

    return run


@torch.no_grad()
def patching(
    lm: LoadedModel,
    positive: Sequence[str],
    negative: Sequence[str],
    direction: np.ndarray,
    layer: int,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Recovery of ``direction . resid_post[layer]`` at the last token when one block's attention or MLP
    output there is patched from the positive text into the negative one (see the module docstring)."""
    if len(positive) != len(negative) or not positive:
        raise IrmscopeError(f"patching needs matched pairs; got {len(positive)} and {len(negative)} texts")
    vector = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    readout = site_name(layer, "hook_resid_post")
    components = [site_name(i, kind) for i in range(layer + 1) for kind in ("hook_attn_out", "hook_mlp_out")]
    clean, corrupt = [], []
    patched: dict[str, list[np.ndarray]] = {site: [] for site in components}
    for _, positive_chunk, negative_chunk in batches(
        positive, negative, size=batch_size, progress=progress, desc="patching"
    ):
        pos_ids, mask = encode_contexts(lm, positive_chunk, MAX_PAIR_TOKENS)
        neg_ids, neg_mask = encode_contexts(lm, negative_chunk, MAX_PAIR_TOKENS)
        if pos_ids.shape[1] < 2 or pos_ids.shape != neg_ids.shape or not torch.equal(mask, neg_mask):
            raise IrmscopeError(
                "a pair's texts must share every token but the last (they differ in one word)"
            )
        if not torch.equal(pos_ids[:, :-1], neg_ids[:, :-1]):
            raise IrmscopeError(
                "a pair's texts must share every token but the last (they differ in one word)"
            )
        run = _last_token_runs(lm, pos_ids[:, :-1], mask)
        pos = run(pos_ids[:, -1:], [readout, *components])
        neg = run(neg_ids[:, -1:], [readout, *components])
        clean.append((pos[readout] @ vector).numpy())
        corrupt.append((neg[readout] @ vector).numpy())
        for site in components:
            patched[site].append(
                (run(neg_ids[:, -1:], [readout], {site: pos[site]})[readout] @ vector).numpy()
            )
    clean_all, corrupt_all = np.concatenate(clean), np.concatenate(corrupt)
    gap = float((clean_all - corrupt_all).mean())
    if abs(gap) < 1e-9:
        raise IrmscopeError(
            "the direction does not tell the positive from the negative texts; nothing to patch"
        )
    recovery = {site: float((np.concatenate(v) - corrupt_all).mean() / gap) for site, v in patched.items()}
    return {
        "n_pairs": len(positive),
        "gap": gap,
        "attn": [recovery[site_name(i, "hook_attn_out")] for i in range(layer + 1)],
        "mlp": [recovery[site_name(i, "hook_mlp_out")] for i in range(layer + 1)],
    }


def reward_attribution(
    models: Mapping[str, LoadedModel],
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    reward: np.ndarray,
    groups: np.ndarray,
    readouts: Mapping[str, Residuals],
    triples: Sequence[ContrastiveTriple],
    test_fraction: float = 0.3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """For each model: a ridge probe of the known ``reward`` on its mean-pooled residual stream leaving the
    last block, fitted on the training prompts' texts (``readouts`` hold every text's read-out; penalty by
    folds of ``groups``); that direction's direct attribution over the held-out prompts' texts as a
    separation per embedding, block and head (so no term is measured on the texts it was fitted on); and
    its patching recovery per block on ``triples`` (when there are any)."""
    train, test = group_split(groups, test_fraction, seed)
    held = np.flatnonzero(test)
    result: dict[str, Any] = {"n_texts": len(held), "n_pairs": len(triples)}
    for label, lm in models.items():
        layer = lm.n_layers - 1
        features = readouts[label].at("mean_pooled", layer)
        probe = fit_probe(features[train], reward[train], groups[train])
        terms = direct_attribution(
            lm,
            [prompts[i] for i in held],
            [continuations[i] for i in held],
            probe.direction,
            layer,
            progress=progress,
        )
        truth = reward[held]
        result[label] = {
            "layer": layer,
            "held_out_pearson": pearson(probe.predict(features[held]), truth),
            "total": float(separation(terms["total"], truth)),
            "embedding": float(separation(terms["embedding"], truth)),
            "attn": separation(terms["attn"], truth).tolist(),
            "mlp": separation(terms["mlp"], truth).tolist(),
            "heads": separation(terms["heads"], truth).tolist() if "heads" in terms else None,
            "patching": (
                patching(
                    lm,
                    [t.positive for t in triples],
                    [t.negative for t in triples],
                    probe.direction,
                    layer,
                    progress=progress,
                )
                if triples
                else None
            ),
        }
    return result
