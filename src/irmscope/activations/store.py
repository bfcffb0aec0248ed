"""A streaming activation cache on disk: safetensors shards plus a JSON manifest.

Layout of a cache folder::

    manifest.json              model, sites, positions mode, token limits, a fingerprint of the inputs,
                               and the list of finished shards, each with its size and sha256
    shard_00000.safetensors    one tensor per site ([rows, width]) plus token_ids, text_index, position

Each shard covers a fixed block of input texts and is written atomically, so a killed caching run resumes at
the first missing shard, and a reader never sees a half-written one. The reader streams one shard at a time,
so a cache larger than memory can feed an SAE trainer.

Atomic writes do not protect a shard *after* it was written (a full disk during a copy, a truncated sync,
bit rot), so the reader checks every shard against the size and sha256 the manifest recorded and stops with
one line naming the bad file instead of training on garbage or dying in safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from irmscope.errors import IrmscopeError, one_line
from irmscope.io import atomic_write, verify_file, write_json

MANIFEST = "manifest.json"
META_KEYS = ("token_ids", "text_index", "position")
SHARD_FIX = "delete it and rerun `irmscope cache-activations` (same arguments) to recompute it"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def bad_shard(problem: str) -> IrmscopeError:
    """The one-line error for a shard that fails verification: what is wrong with it and how to fix it."""
    return IrmscopeError(f"activation cache shard {problem}; {SHARD_FIX}")


@dataclass
class ActivationStore:
    """Read access to a finished (or partly finished) activation cache folder.

    Verification is split by cost. Opening the store checks that every listed shard exists and has the size
    the manifest recorded (one ``stat`` each), which catches truncation, the common corruption, before any
    work starts. The sha256, which needs a full read, is checked the first time each shard is loaded rather
    than on open: readers stream every shard anyway, so hashing then reads nothing a reader would not (the
    hash warms the page cache for the load that follows), and opening a large cache stays instant. Each
    shard is hashed once per store, not once per epoch. Manifests written before digests were recorded have
    neither; their shards are checked only by safetensors' own header checks, turned into the same error.
    """

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise IrmscopeError(
                f"no activation cache at {self.root} (missing {MANIFEST}); "
                "create one with `irmscope cache-activations`"
            )
        self.manifest: dict = json.loads(path.read_text())
        self._hashed: set[int] = set()
        for shard in self.manifest["shards"]:
            problem = verify_file(self.root / shard["file"], shard, check_hash=False)
            if problem is not None:
                raise bad_shard(problem)

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def shards(self) -> list[dict]:
        return list(self.manifest["shards"])

    @property
    def n_rows(self) -> int:
        return sum(shard["rows"] for shard in self.shards)

    def width(self, site: str) -> int:
        return int(self.manifest["widths"][site])

    def _check_site(self, site: str) -> None:
        if site not in self.manifest["sites"]:
            raise IrmscopeError(
                f"site {site!r} is not in the cache at {self.root}; it holds {', '.join(self.sites)}"
            )

    def load_shard(self, index: int, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tensors ``keys`` of shard ``index``, its sha256 checked on its first load by this store."""
        shard = self.manifest["shards"][index]
        path = self.root / shard["file"]
        if index not in self._hashed:
            problem = verify_file(path, shard)
            if problem is not None:
                raise bad_shard(problem)
            self._hashed.add(index)
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in keys}
        except (SafetensorError, OSError) as err:
            raise bad_shard(f"{path} cannot be read ({one_line(err)})") from None

    def iter_batches(
        self,
        site: str,
        batch_size: int = 4096,
        shuffle: bool = False,
        seed: int = 0,
        with_meta: bool = False,
        shard_indices: Sequence[int] | None = None,
    ) -> Iterator[torch.Tensor | dict[str, torch.Tensor]]:
        """Yield ``[batch, width]`` activation batches of ``site``, one shard in memory at a time.

        ``shuffle`` permutes the shard order and the rows within each shard (seeded). ``with_meta`` yields
        dicts that also carry token_ids, text_index and position. ``shard_indices`` restricts the read (e.g.
        to one rank's share).
        """
        self._check_site(site)
        rng = np.random.default_rng(seed)
        order = list(shard_indices) if shard_indices is not None else list(range(len(self.shards)))
        if shuffle:
            rng.shuffle(order)
        keys = [site, *META_KEYS] if with_meta else [site]
        for index in order:
            shard = self.load_shard(index, keys)
            rows = shard[site].shape[0]
            perm = torch.from_numpy(rng.permutation(rows)) if shuffle else torch.arange(rows)
            for start in range(0, rows, batch_size):
                idx = perm[start : start + batch_size]
                if with_meta:
                    yield {key: value[idx] for key, value in shard.items()}
                else:
                    yield shard[site][idx]

    def read_all(self, site: str) -> torch.Tensor:
        """Every row of ``site`` in one tensor (only for caches that fit in memory)."""
        return torch.cat(list(self.iter_batches(site, batch_size=1 << 30)))

    def token_ids(self) -> torch.Tensor:
        return self.read_meta("token_ids")

    def read_meta(self, key: str) -> torch.Tensor:
        """Every row's ``token_ids``, ``text_index`` or ``position``, in row order."""
        if key not in META_KEYS:
            raise IrmscopeError(f"unknown row field {key!r}; choose one of {', '.join(META_KEYS)}")
        return torch.cat([self.load_shard(i, [key])[key] for i in range(len(self.shards))])


def save_manifest(root: Path, manifest: dict) -> None:
    write_json(root / MANIFEST, manifest)
