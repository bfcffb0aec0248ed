"""Reading the same texts once with one or more models, for every statistic that needs them.

Several methods read the same (prompt, continuation) texts with the same models: the audit's per-word
shifts and the policy shift need both models' next-token distributions at every position, the probes
need each model's residual stream at every layer. A :class:`Reader` says which sites of which model it
needs (and whether it needs the logits) and folds each batch into its own sums; :func:`read_pairs` runs
every model once per batch for all the readers together. A statistic computed alone goes through the same
function with one reader, so a pipeline run and a standalone call read the same tokens the same way.

Texts are encoded as :func:`~irmscope.models.readout.encode_pairs` does: prompt and continuation tokenised
apart (the tokens the policy was given and the tokens it wrote, even where a prompt ends mid-word),
right-padded, in batches of texts of similar length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.models.generation import batches, length_order
from irmscope.models.hooks import capture, capture_activations
from irmscope.models.loading import LoadedModel
from irmscope.models.readout import encode_pairs


@dataclass
class PairBatch:
    """One batch of :func:`read_pairs`: ``rows`` says which input text each batch row is; ``logits`` and
    ``activations`` are keyed by the model's label (only the models and sites some reader asked for)."""

    rows: np.ndarray  #: ``[batch]``: the index of each row in the inputs
    input_ids: torch.Tensor  #: ``[batch, seq]``, right-padded
    mask: torch.Tensor  #: ``[batch, seq]``: 1 on real tokens
    prompt_lengths: torch.Tensor  #: ``[batch]``: each row's prompt length in tokens
    logits: dict[str, torch.Tensor]  #: label → ``[batch, seq, vocab]`` (float32)
    activations: dict[str, dict[str, torch.Tensor]]  #: label → site → ``[batch, seq, width]``
    _normalisers: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def log_normaliser(self, label: str) -> torch.Tensor:
        """``[batch, seq, 1]``: the logsumexp of the ``label`` model's logits at every position (a token's
        log-probability is its logit less this), computed once for every reader of the batch."""
        if label not in self._normalisers:
            self._normalisers[label] = self.logits[label].logsumexp(-1, keepdim=True)
        return self._normalisers[label]


class Reader:
    """A statistic folded over the batches of :func:`read_pairs`. Subclasses say what they need of each
    model (:meth:`sites`, :meth:`needs_logits`) and accumulate it in :meth:`update`."""

    def sites(self, label: str) -> Sequence[str]:
        """The hook sites of the ``label`` model this reader reads (none by default)."""
        return ()

    def needs_logits(self, label: str) -> bool:
        """Whether this reader reads the ``label`` model's logits (no by default)."""
        return False

    def update(self, batch: PairBatch) -> None:
        raise NotImplementedError(f"{type(self).__name__} must say how it reads a batch")


@torch.no_grad()
def read_pairs(
    models: Mapping[str, LoadedModel],
    prompts: Sequence[str],
    continuations: Sequence[str],
    readers: Sequence[Reader],
    *,
    max_length: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "reading",
) -> None:
    """Run every model in ``models`` once over each batch of prompt + continuation texts and hand the batch
    to every reader. A model only sites are asked of stops after the deepest one; a model no reader asks
    anything of is not run. All models must share a tokenizer (the first one encodes)."""
    if not continuations:
        raise IrmscopeError("no texts to read; check the prompts and completions are not empty")
    if len(prompts) != len(continuations):
        raise IrmscopeError(f"{len(prompts)} prompts but {len(continuations)} continuations; they must pair")
    if not models:
        raise IrmscopeError("no model to read the texts with")
    encoder = next(iter(models.values()))
    wanted = {
        label: (
            sorted({site for r in readers for site in r.sites(label)}),
            any(r.needs_logits(label) for r in readers),
        )
        for label in models
    }
    order = length_order(prompts, continuations)  # batched by length: little padding
    for _, rows in batches(order, size=batch_size, progress=progress, desc=desc):
        ids, mask, prompt_lengths = encode_pairs(
            encoder, [prompts[i] for i in rows], [continuations[i] for i in rows], max_length
        )
        logits: dict[str, torch.Tensor] = {}
        activations: dict[str, dict[str, torch.Tensor]] = {}
        for label, lm in models.items():
            sites, with_logits = wanted[label]
            device = next(lm.model.parameters()).device
            on_device = ids.to(device), mask.to(device)
            if with_logits:
                with capture(lm.model, sites) as captured:
                    out = lm.model(input_ids=on_device[0], attention_mask=on_device[1], use_cache=False)
                logits[label] = out.logits.float()
                activations[label] = {site: captured[site] for site in sites}
            elif sites:
                activations[label] = capture_activations(lm.model, sites, *on_device)
        batch = PairBatch(np.asarray(rows), ids, mask, prompt_lengths, logits, activations)
        for reader in readers:
            reader.update(batch)
