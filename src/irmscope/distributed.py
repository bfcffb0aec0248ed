"""Running the same stages on several processes (``torchrun`` / ``accelerate launch``), e.g. one per GPU.

irmscope does not launch processes itself: ``torchrun --nproc-per-node N -m irmscope ...`` or
``accelerate launch -m irmscope ...`` start N copies, set ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``, and
:func:`init_distributed` (called by the command line) joins them into one process group, NCCL on GPUs, gloo
on CPUs. Work is then split by activation-cache shard: rank ``r`` caches the shards ``i`` with
``i % world_size == r``, and SAE training reads each rank's share of the shards and averages gradients
across ranks every step, so every rank holds the same SAE. Rank 0 alone writes shared files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> None:
    """Join the process group a launcher describes in the environment; a no-op for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def my_share(n_items: int) -> list[int]:
    """This rank's items of ``range(n_items)``, dealt round-robin."""
    return list(range(rank(), n_items, world_size()))


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place across ranks (``sum``, ``mean``, ``min`` or ``max``)."""
    if world_size() == 1:
        return tensor
    ops = {
        "sum": dist.ReduceOp.SUM,
        "mean": dist.ReduceOp.SUM,
        "min": dist.ReduceOp.MIN,
        "max": dist.ReduceOp.MAX,
    }
    dist.all_reduce(tensor, op=ops[op])
    if op == "mean":
        tensor.div_(world_size())
    return tensor
