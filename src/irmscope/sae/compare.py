"""Compare two learned dictionaries: Mean Max Cosine Similarity (Eq. 2) and the features they share.

The main paper trains two SAEs of different sizes on the same layer and keeps the features that appear in
both (§4.4, Appendix E.1 step 5), following Sharkey et al.: a feature found at two dictionary sizes is more
likely a real feature of the model than an artefact of one training run. A dictionary is the ``[n, d_in]``
matrix of decoder rows, one feature per row (an :class:`~irmscope.sae.model.SAE` may be passed instead).

Cosines are *signed*, as in Eq. 2: a ReLU latent fires only in one direction, so ``d`` and ``-d`` are
different features and a sign-flipped copy does not count as shared. ``absolute=True`` compares
directions up to sign instead, for dictionaries whose features have no sign (e.g. PCA components).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from irmscope.errors import IrmscopeError
from irmscope.sae.model import SAE

Dictionary = torch.Tensor | SAE
_CHUNK = 4096


def as_dictionary(dictionary: Dictionary) -> torch.Tensor:
    """The ``[n, d_in]`` feature matrix of an SAE (its decoder rows) or of a given matrix."""
    matrix = dictionary.dictionary if isinstance(dictionary, SAE) else dictionary
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2 or matrix.shape[0] == 0:
        raise IrmscopeError("a dictionary is a non-empty [n_features, d_in] matrix or an SAE")
    return matrix.detach()


def _unit_rows(matrix: torch.Tensor) -> torch.Tensor:
    matrix = matrix.double()
    return matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _pair(d1: Dictionary, d2: Dictionary) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_dictionary(d1), as_dictionary(d2)
    if a.shape[1] != b.shape[1]:
        raise IrmscopeError(
            f"dictionaries of width {a.shape[1]} and {b.shape[1]} cannot be compared; use SAEs of one site"
        )
    return _unit_rows(a), _unit_rows(b.to(a.device))


def cosine_matrix(d1: Dictionary, d2: Dictionary) -> torch.Tensor:
    """``[n1, n2]`` cosine similarities between every feature of ``d1`` and every feature of ``d2``."""
    a, b = _pair(d1, d2)
    return a @ b.T


def max_cosine(d1: Dictionary, d2: Dictionary, absolute: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each feature of ``d1``: its highest cosine with any feature of ``d2``, and that feature's index.

    Computed in chunks of ``d1``'s rows, so two dictionaries of tens of thousands of features fit in memory.
    """
    a, b = _pair(d1, d2)
    best, index = [], []
    for chunk in a.split(_CHUNK):
        sims = chunk @ b.T
        if absolute:
            sims = sims.abs()
        values, indices = sims.max(dim=1)
        best.append(values)
        index.append(indices)
    return torch.cat(best), torch.cat(index)


def mmcs(d1: Dictionary, d2: Dictionary, absolute: bool = False) -> float:
    """Mean Max Cosine Similarity, Eq. 2: the mean over ``d1``'s features of their best cosine in ``d2``.

    Not symmetric: it asks how well ``d2`` covers ``d1``. 1 when every feature of ``d1`` appears in ``d2``
    (in any order), about 0 for unrelated random directions in high dimension.
    """
    return float(max_cosine(d1, d2, absolute)[0].mean())


@dataclass
class SharedFeatures:
    """The ``k`` features of ``d1`` best matched in ``d2``: ``index_1[i]`` pairs with ``index_2[i]``."""

    index_1: list[int]
    index_2: list[int]
    cosine: list[float]

    def __len__(self) -> int:
        return len(self.index_1)

    def pairs(self) -> list[tuple[int, int, float]]:
        return list(zip(self.index_1, self.index_2, self.cosine, strict=True))


def top_shared_features(
    d1: Dictionary, d2: Dictionary, k: int, absolute: bool = False, one_to_one: bool = True
) -> SharedFeatures:
    """The top ``k`` most similar features between ``d1`` and ``d2`` (§4.4; the paper's ``D_g``: the
    features of ``d1`` that contribute most to ``MMCS(d1, d2)``), best first.

    With ``one_to_one`` each feature of ``d2`` is used at most once (greedy by cosine), so two features of
    the smaller dictionary that both land on one feature of the larger do not both count as shared.
    """
    a, b = _pair(d1, d2)
    if not isinstance(k, int) or k < 1:
        raise IrmscopeError(f"k (the number of shared features) must be a positive integer, not {k!r}")
    k = min(k, a.shape[0], b.shape[0] if one_to_one else a.shape[0])
    if not one_to_one:
        best, index = max_cosine(a, b, absolute)
        order = torch.argsort(best, descending=True, stable=True)[:k]
        return SharedFeatures(order.tolist(), index[order].tolist(), best[order].tolist())
    # Greedy matching: visit pairs best first and take one when neither feature is used yet. The first k
    # greedy pairs always lie among each row's top k candidates (a row's better columns can only have been
    # taken by the fewer than k pairs chosen before), so only those n1 * k candidates are sorted.
    rows, cols, values = [], [], []
    for offset, chunk in zip(range(0, a.shape[0], _CHUNK), a.split(_CHUNK), strict=True):
        sims = chunk @ b.T
        if absolute:
            sims = sims.abs()
        top = sims.topk(min(k, b.shape[0]), dim=1)
        rows.append(
            (torch.arange(chunk.shape[0], device=sims.device) + offset)[:, None].expand_as(top.indices)
        )
        cols.append(top.indices)
        values.append(top.values)
    row, col, value = (torch.cat(parts).flatten() for parts in (rows, cols, values))
    order = torch.argsort(value, descending=True, stable=True)
    used_1: set[int] = set()
    used_2: set[int] = set()
    out = SharedFeatures([], [], [])
    for i, j, cos in zip(row[order].tolist(), col[order].tolist(), value[order].tolist(), strict=True):
        if i in used_1 or j in used_2:
            continue
        used_1.add(i)
        used_2.add(j)
        out.index_1.append(i)
        out.index_2.append(j)
        out.cosine.append(cos)
        if len(out) == k:
            break
    return out
