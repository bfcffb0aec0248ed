"""Read and write a model's activations at TransformerLens-style hook sites.

Three tools, all built on plain PyTorch forward hooks that are removed when the ``with`` block ends:

* :func:`capture_activations` runs one forward pass and returns the chosen sites at the chosen token
  positions. It stops the forward pass after the deepest block it needs, so reading early layers costs a
  fraction of a full pass (and it never computes the unembedding).
* :func:`capture` is the same recording as a context manager, for use around any call (e.g. ``generate``);
  :func:`stop_after_deepest` ends the passes it wraps after the deepest block the sites need, as
  :func:`capture_activations` does (e.g. around a cached step).
* :func:`intervene` (and its shorthands :func:`replace`, :func:`ablate`, :func:`steer`) rewrites sites
  while a block runs: ablations, activation patching, steering vectors.

Positions select tokens: ``None`` (all), an ``int`` or list of ints (the same positions in every row), or a
1-D integer tensor with one position per row (e.g. :func:`last_token_positions`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from irmscope.errors import IrmscopeError
from irmscope.models.accounting import count_stopped_pass, pass_kind
from irmscope.models.adapters import ArchitectureAdapter, adapter_for, parse_site, submodule

Positions = None | int | Sequence[int] | torch.Tensor
Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Target:
    module: nn.Module
    reads_input: bool  # True: the site is the module's first input; False: its (first) output


def resolve_site(model: nn.Module, site: str, adapter: ArchitectureAdapter | None = None) -> _Target:
    """The module and side (input or output) that holds ``site`` in ``model``."""
    adapter = adapter or adapter_for(model)
    layer, kind = parse_site(site)
    blocks = adapter.blocks(model)
    if not 0 <= layer < len(blocks):
        raise IrmscopeError(f"hook site {site!r} is out of range: the model has layers 0..{len(blocks) - 1}")
    block = blocks[layer]
    if kind == "hook_resid_pre":
        return _Target(block, reads_input=True)
    if kind == "hook_resid_post":
        return _Target(block, reads_input=False)
    if kind == "hook_attn_out":
        return _Target(submodule(block, adapter.attn_out), reads_input=False)
    if kind == "hook_mlp_out":
        return _Target(submodule(block, adapter.mlp_out), reads_input=False)
    return _Target(submodule(block, adapter.mlp_down), reads_input=True)  # mlp.hook_post


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for right- or left-padded batches."""
    seq_len = attention_mask.shape[1]
    idx = torch.arange(seq_len, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), idx, torch.full_like(idx, -1)).max(dim=1).values


def select_positions(act: torch.Tensor, positions: Positions) -> torch.Tensor:
    """``act[:, positions]`` for shared positions, ``act[row, positions[row]]`` for one per row."""
    if positions is None:
        return act
    if (
        isinstance(positions, torch.Tensor)
        and positions.ndim == 1
        and positions.shape[0] == act.shape[0]
        and positions.dtype in (torch.int32, torch.int64)
    ):
        return act[torch.arange(act.shape[0], device=act.device), positions.to(act.device)]
    if isinstance(positions, int):
        return act[:, positions]
    return act[:, list(positions)]


def _apply_at(act: torch.Tensor, positions: Positions, edit: Edit) -> torch.Tensor:
    if positions is None:
        return edit(act)
    out = act.clone()
    if isinstance(positions, torch.Tensor) and positions.ndim == 1 and positions.shape[0] == act.shape[0]:
        rows = torch.arange(act.shape[0], device=act.device)
        cols = positions.to(act.device)
        out[rows, cols] = edit(act[rows, cols])
    else:
        cols = [positions] if isinstance(positions, int) else list(positions)
        out[:, cols] = edit(act[:, cols])
    return out


def _first(value: object) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value  # type: ignore[index,return-value]


def _with_first(value: object, new: torch.Tensor) -> object:
    return (new, *value[1:]) if isinstance(value, tuple) else new  # type: ignore[index]


def _add_reader(target: _Target, read: Callable[[torch.Tensor], None]) -> torch.utils.hooks.RemovableHandle:
    if target.reads_input:

        def pre_hook(_module, args, kwargs):
            read(args[0] if args else kwargs["hidden_states"])

        return target.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(_module, _args, output):
        read(_first(output))

    return target.module.register_forward_hook(hook)


def _add_writer(target: _Target, edit: Edit) -> torch.utils.hooks.RemovableHandle:
    if target.reads_input:

        def pre_hook(_module, args, kwargs):
            if args:
                return (edit(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

        return target.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(_module, _args, output):
        return _with_first(output, edit(_first(output)))

    return target.module.register_forward_hook(hook)


@dataclass
class Capture:
    """Activations recorded by :func:`capture`: ``cap[site]`` is the latest forward pass's tensor."""

    positions: Positions = None
    activations: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def __getitem__(self, site: str) -> torch.Tensor:
        if not self.activations.get(site):
            raise KeyError(f"nothing captured at {site!r}; captured: {sorted(self.activations)}")
        return self.activations[site][-1]

    def all(self, site: str) -> list[torch.Tensor]:
        """Every forward pass's tensor at ``site`` (e.g. one per generated token under ``generate``)."""
        return self.activations.get(site, [])

    def latest(self) -> dict[str, torch.Tensor]:
        return {site: acts[-1] for site, acts in self.activations.items() if acts}


@contextmanager
def capture(model: nn.Module, sites: Sequence[str], positions: Positions = None) -> Iterator[Capture]:
    """Record ``sites`` (detached, at ``positions``) on every forward pass run inside the block."""
    adapter = adapter_for(model)
    cap = Capture(positions=positions, activations={site: [] for site in sites})
    handles = []
    try:
        for site in sites:
            store = cap.activations[site]
            handles.append(
                _add_reader(
                    resolve_site(model, site, adapter),
                    lambda act, store=store: store.append(select_positions(act.detach(), positions)),
                )
            )
        yield cap
    finally:
        for handle in handles:
            handle.remove()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once every requested site has been read."""


def deepest_layer(sites: Sequence[str]) -> int:
    return max(parse_site(site)[0] for site in sites)


@contextmanager
def stop_after_deepest(
    model: nn.Module,
    sites: Sequence[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    cache: Any = None,
) -> Iterator[None]:
    """Inside the block, a forward pass of ``model`` over ``input_ids`` (with ``attention_mask``, on top of
    key-value ``cache`` if any) ends right after the deepest block ``sites`` need, so neither later blocks
    nor the unembedding run; the pass returns nothing. Read the sites with :func:`capture`, entered
    *before* this (``with capture(...) as cap, stop_after_deepest(...)``), so its hooks run before the
    stop. The pass is counted as the share of the blocks it ran
    (:func:`~irmscope.models.accounting.count_stopped_pass`). A cache the pass wrote to holds the blocks it
    ran only: use it for nothing after."""
    blocks = adapter_for(model).blocks(model)
    deepest = deepest_layer(sites)
    kind, tokens = pass_kind(input_ids, attention_mask, cache)  # before the pass writes to the cache

    def stop(_module, _args, _output):
        raise _StopForward

    handle = blocks[deepest].register_forward_hook(stop)
    try:
        yield
    except _StopForward:
        count_stopped_pass(model, kind, tokens, deepest + 1, len(blocks))
    finally:
        handle.remove()


@torch.no_grad()
def capture_activations(
    model: nn.Module,
    sites: Sequence[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    positions: Positions = None,
    stop_early: bool = True,
) -> dict[str, torch.Tensor]:
    """One forward pass that returns ``{site: activations}`` at ``positions``.

    With ``stop_early`` the pass ends right after the deepest block a site needs, so neither later blocks
    nor the unembedding are computed (:func:`stop_after_deepest`).
    """
    if not sites:
        raise IrmscopeError("no hook sites requested; name at least one, e.g. blocks.0.hook_resid_post")
    stopping = stop_after_deepest(model, sites, input_ids, attention_mask) if stop_early else nullcontext()
    with capture(model, sites, positions) as cap, stopping:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return cap.latest()


@contextmanager
def intervene(model: nn.Module, edits: Mapping[str, Edit], positions: Positions = None) -> Iterator[None]:
    """Replace each site's activation ``a`` by ``edits[site](a)`` (at ``positions`` only) inside the block."""
    adapter = adapter_for(model)
    handles = []
    try:
        for site, edit in edits.items():
            handles.append(
                _add_writer(
                    resolve_site(model, site, adapter), lambda act, edit=edit: _apply_at(act, positions, edit)
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def replace(model: nn.Module, site: str, edit: Edit, positions: Positions = None):
    """Context manager: rewrite one site with ``edit`` (activation patching, custom edits)."""
    return intervene(model, {site: edit}, positions)


def ablate(model: nn.Module, site: str, positions: Positions = None, value: float | torch.Tensor = 0.0):
    """Context manager: set a site to ``value`` (zero-ablation by default; pass a mean for mean-ablation)."""
    return intervene(model, {site: lambda act: torch.zeros_like(act) + value}, positions)


def steer(model: nn.Module, site: str, vector: torch.Tensor, scale: float = 1.0, positions: Positions = None):
    """Context manager: add ``scale * vector`` to a site (a steering vector in its activation space)."""
    return intervene(model, {site: lambda act: act + scale * vector.to(act.dtype).to(act.device)}, positions)
