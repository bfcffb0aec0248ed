"""Reading the residual stream (``blocks.L.hook_resid_post`` of every block) of texts for reward probes.

A probe reads one position of one layer. The probe study asks *which* position carries the reward: the
last token of a completion (where the model has seen all of it), the last token of the prompt (before it
has written anything), or every token of the completion (how early the reward is predictable). A fourth
read-out, the mean over all tokens of the text, suits rewards that are sums over tokens (a lexicon
reward): a single position of a small model cannot hold a 60-token sum, but the mean of per-token states
is linear in it whenever each state encodes its token's value. Texts come
as a prompt and a continuation, so the two positions are exact token indices rather than guesses from
characters; a text without a prompt (a review) has an empty one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from irmscope.errors import IrmscopeError
from irmscope.io import write_npz
from irmscope.models.adapters import site_name
from irmscope.models.generation import batches
from irmscope.models.hooks import capture_activations
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import Precision, matmul_precision
from irmscope.models.reading import PairBatch, Reader, input_order, read_pairs
from irmscope.models.readout import encode_pairs, pooling_weights


@dataclass(frozen=True)
class Residuals:
    """Residual-stream rows of ``n`` texts.

    ``last[i, l]`` and ``prompt_end[i, l]`` are text ``i``'s activation leaving block ``layers[l]`` at its
    last token and at its prompt's last token (``None`` when no text has a prompt); ``mean[i, l]`` is the
    mean over the text's tokens (the first left out: an attention sink with an outsized norm).
    """

    layers: list[int]
    last: np.ndarray
    prompt_end: np.ndarray | None
    mean: np.ndarray

    def by_position(self) -> dict[str, np.ndarray]:
        """Each read-out by name (``last_token``, ``prompt_end`` when there is one, ``mean_pooled``)."""
        kinds = {"last_token": self.last}
        if self.prompt_end is not None:
            kinds["prompt_end"] = self.prompt_end
        kinds["mean_pooled"] = self.mean
        return kinds

    def at(self, position: str, layer: int) -> np.ndarray:
        """The rows of one read-out at one layer."""
        return self.by_position()[position][:, self.layers.index(layer)]


def save_residuals(residuals: Residuals, path: Path) -> None:
    """Write ``residuals`` to one ``.npz`` file (float32), readable with :func:`load_residuals`."""
    arrays = {"layers": np.asarray(residuals.layers), "last": residuals.last, "mean": residuals.mean}
    if residuals.prompt_end is not None:
        arrays["prompt_end"] = residuals.prompt_end
    write_npz(path, {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()})


def load_residuals(path: Path) -> Residuals:
    """Read what :func:`save_residuals` wrote."""
    if not Path(path).is_file():
        raise IrmscopeError(f"no saved residuals at {path}; rerun the read-samples stage")
    saved = np.load(path)
    return Residuals(
        layers=saved["layers"].tolist(),
        last=saved["last"],
        prompt_end=saved["prompt_end"] if "prompt_end" in saved else None,
        mean=saved["mean"],
    )


def _check(prompts: Sequence[str], continuations: Sequence[str]) -> None:
    if not continuations:
        raise IrmscopeError("no texts to probe; check the dataset or the completions are not empty")
    if len(prompts) != len(continuations):
        raise IrmscopeError(f"{len(prompts)} prompts but {len(continuations)} continuations; they must pair")


class ResidualReadout(Reader):
    """The :class:`Residuals` of one model (``label``) at ``layers``, folded over :func:`read_pairs`'s
    batches of ``n`` texts; :meth:`result` gives them in the texts' order, with the prompt-end read-out when
    the texts ``have_prompts``."""

    def __init__(self, label: str, layers: Sequence[int], n: int, have_prompts: bool = True) -> None:
        self.label, self.layers = label, list(layers)
        self._sites = [site_name(layer, "hook_resid_post") for layer in self.layers]
        self._rows: list[np.ndarray] = []
        self._parts: dict[str, list[np.ndarray]] = {"last": [], "prompt_end": [], "mean": []}
        self._has_prompt, self._n = have_prompts, n

    def sites(self, label: str) -> Sequence[str]:
        return self._sites if label == self.label else ()

    def update(self, batch: PairBatch) -> None:
        acts = batch.activations[self.label]
        stacked = torch.stack([acts[site] for site in self._sites], dim=1).float().cpu()  # [b, layer, seq, d]
        mask, rows = batch.mask, torch.arange(len(batch.mask))
        self._rows.append(batch.rows)
        self._parts["last"].append(stacked[rows, :, mask.sum(1) - 1].numpy())
        self._parts["prompt_end"].append(stacked[rows, :, (batch.prompt_lengths - 1).clamp(min=0)].numpy())
        self._parts["mean"].append(torch.einsum("blsd,bs->bld", stacked, pooling_weights(mask)).numpy())

    def result(self) -> Residuals:
        inverse = input_order(self._rows, self._n, "the read-out")
        joined = {name: np.concatenate(parts)[inverse] for name, parts in self._parts.items()}
        return Residuals(
            self.layers, joined["last"], joined["prompt_end"] if self._has_prompt else None, joined["mean"]
        )


def model_layers(lm: LoadedModel, layers: Sequence[int] | None) -> list[int]:
    """``layers`` as block indices of ``lm`` (negative ones count from the end); ``None``: every block."""
    return list(range(lm.n_layers)) if layers is None else [layer % lm.n_layers for layer in layers]


def read_residuals(
    lm: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    layers: Sequence[int] | None = None,
    max_length: int | None = 128,
    batch_size: int = 16,
    progress: bool = True,
    precision: Precision = "float32",
) -> Residuals:
    """The residual stream at every layer (or ``layers``) at each text's last token, its prompt's end, and
    averaged over its tokens; texts are cut to ``max_length`` tokens (``None``: never). ``precision``: of the
    passes' matrix products (:mod:`irmscope.models.precision`)."""
    _check(prompts, continuations)
    readout = ResidualReadout("model", model_layers(lm, layers), len(prompts), have_prompts=any(prompts))
    read_pairs(
        {"model": lm}, prompts, continuations, [readout], max_length=max_length, batch_size=batch_size,
        progress=progress, desc="residuals", precision=precision,
    )  # fmt: skip
    return readout.result()


@torch.no_grad()
def read_positions(
    lm: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    layer: int,
    max_length: int | None = 128,
    batch_size: int = 16,
    progress: bool = True,
    precision: Precision = "float32",
    max_positions: int | None = None,
) -> list[np.ndarray]:
    """For each text, the residual stream leaving block ``layer`` at every continuation token, in order
    (position 0 is the continuation's first token, as the probe study's Fig. 5), or at its first
    ``max_positions``; ``precision`` as :func:`read_residuals`'.

    The pass is causal, so tokens after a row's last kept position cannot change what is read: they are cut
    before the pass. That saves work only where continuations are longer than ``max_positions`` (the
    pipeline's curve reads completions of 32 tokens against 64 positions, so there it saves nothing)."""
    _check(prompts, continuations)
    if max_positions is not None and max_positions < 1:
        raise IrmscopeError(f"max_positions must be at least 1; got {max_positions}")
    site = site_name(layer % lm.n_layers, "hook_resid_post")
    device = next(lm.model.parameters()).device
    out: list[np.ndarray] = []
    for _, prompt_chunk, continuation_chunk in batches(
        prompts, continuations, size=batch_size, progress=progress, desc="positions"
    ):
        ids, mask, n_prompt = encode_pairs(lm, prompt_chunk, continuation_chunk, max_length)
        ends = mask.sum(1) if max_positions is None else torch.minimum(mask.sum(1), n_prompt + max_positions)
        width = int(ends.max())  # rows are right-padded: every kept position is left of it
        ids, mask = ids[:, :width], mask[:, :width]
        with matmul_precision(precision, device):
            acts = capture_activations(lm.model, [site], ids.to(device), mask.to(device))[site]
        acts = acts.float().cpu()
        for row, (end, first) in enumerate(zip(ends.tolist(), n_prompt.tolist(), strict=True)):
            out.append(acts[row, first:end].numpy())
    return out
