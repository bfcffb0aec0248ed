"""Choosing the features to ablate by their attributed effect on the reward, beside the explainer's choice.

The paper ablates the features its explainer labels reward-related (Table 5). At the late layers where
tuning changes the model most, that label picks few features and ablating them barely moves the reward
(README, "Table 5"). This selection asks the model instead. For a reward that values words, the reward the
policy expects from its next token at a position is ``E = Σ_t p(t)·v(t)`` over the vocabulary, with ``v``
each token's lexicon value (0 for tokens that are not lexicon words). Zeroing feature ``f`` there changes
``E`` by about ``−a_f·∂E/∂a_f`` (attribution patching: the first-order estimate of the ablation, from one
forward and one backward pass for every feature at once). Summed over the positions from which the tuned
model sampled its own completions, the score says how much removing the feature should lower the reward
the policy collects; the ``n`` highest positive scores per site are the selection.

The scores are linear in ``v``, so the features this method picks for the *opposite* reward ``−v`` are the
lowest scores. Ablating them is the control that tells removing the reward from damaging the model: an
ablation that only damaged the model would lower the reward whichever sign its features were picked for.
(Shuffled values are a weaker control when one word dominates the tuning gain: a shuffle that happens to
give that word a positive value picks much the same features.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.generation import batches
from irmscope.models.hooks import intervene
from irmscope.models.loading import LoadedModel
from irmscope.models.readout import encode_pairs
from irmscope.sae.model import SAE


def attribute_reward_to_features(
    lm: LoadedModel,
    saes: Mapping[str, SAE],
    prompts: Sequence[str],
    completions: Sequence[str],
    token_values: np.ndarray,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Per site, each feature's ``Σ a_f·∂E/∂a_f`` over the positions that predict a completion token (see the
    module docstring): the prompt's last position up to the completion's second-to-last.

    ``token_values`` holds one value per tokenizer token (:func:`irmscope.interpret.token_values`). All
    sites are attributed in the same pass, so a feature's score at an early site includes its effect
    through the later sites' activations (their encoders held fixed).
    """
    if not completions or len(prompts) != len(completions):
        raise IrmscopeError(
            f"{len(prompts)} prompts and {len(completions)} completions: need one completion per prompt"
        )
    model = lm.model
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    token_values = np.asarray(token_values, dtype=np.float32)
    if token_values.ndim != 1 or len(token_values) > vocab:
        raise IrmscopeError(f"token_values has shape {token_values.shape}; the model's vocabulary is {vocab}")
    # rows the tokenizer never produces (a vocabulary padded for speed) are not lexicon words: value 0
    values = torch.zeros(vocab, device=device)
    values[: len(token_values)] = torch.from_numpy(token_values).to(device)
    scores = {site: torch.zeros(sae.d_sae) for site, sae in saes.items()}
    latents: dict[str, torch.Tensor] = {}

    def through_latents(site: str, sae: SAE):
        def edit(act: torch.Tensor) -> torch.Tensor:
            # the site's value is unchanged; its latents become a leaf the reward's gradient reaches
            leaf = sae.encode(act).detach().requires_grad_(True)
            latents[site] = leaf
            return act + ((leaf - leaf.detach()) @ sae.W_dec.detach()).to(act.dtype)

        return edit

    edits = {site: through_latents(site, sae) for site, sae in saes.items()}
    for _, prompt_chunk, completion_chunk in batches(
        prompts, completions, size=batch_size, progress=progress, desc="reward attribution"
    ):
        ids, mask, prompt_lengths = encode_pairs(lm, prompt_chunk, completion_chunk, max_length=None)
        ids, mask = ids.to(device), mask.to(device)
        positions = torch.arange(ids.shape[1], device=device)
        predicts_completion = (positions >= prompt_lengths.to(device)[:, None] - 1) & (
            positions < mask.sum(1, keepdim=True) - 1
        )
        with torch.enable_grad(), intervene(model, edits):
            logits = model(input_ids=ids, attention_mask=mask).logits
            expected = logits.float().softmax(-1) @ values  # [batch, seq]
            sites = list(latents)
            # autograd.grad, not backward: no gradient is accumulated in the model's own parameters
            grads = torch.autograd.grad((expected * predicts_completion).sum(), [latents[s] for s in sites])
        for site, grad in zip(sites, grads, strict=True):
            scores[site] += (latents[site] * grad).sum(dim=tuple(range(grad.ndim - 1))).detach().cpu()
    return scores


@dataclass(frozen=True)
class AttributedSelection:
    """The ``n`` features per site whose ablation should most lower the reward, and the ``n`` picked the
    same way for the opposite reward (the control); each site's list is sorted by feature index."""

    features: dict[str, list[int]]
    opposite: dict[str, list[int]]


def select_by_attribution(scores: Mapping[str, torch.Tensor], n: int) -> AttributedSelection:
    """The ``n`` highest positive and the ``n`` lowest negative scores per site (fewer where fewer are)."""
    if n < 0:
        raise IrmscopeError(f"the number of features per site must be 0 or more, got {n}")

    def top(values: torch.Tensor) -> list[int]:
        order = torch.argsort(values, descending=True, stable=True)[:n]
        return sorted(int(i) for i in order if values[i] > 0)

    return AttributedSelection(
        features={site: top(s) for site, s in scores.items()},
        opposite={site: top(-s) for site, s in scores.items()},
    )
