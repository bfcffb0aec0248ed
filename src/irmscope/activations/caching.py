"""Stream a model's activations over a list of texts into an :class:`~.store.ActivationStore` folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from irmscope.activations.store import (
    MANIFEST,
    META_KEYS,
    ActivationStore,
    save_manifest,
    shard_name,
    write_shard,
)
from irmscope.distributed import barrier, is_main, my_share, rank, world_size
from irmscope.errors import IrmscopeError, one_line
from irmscope.io import file_digest, fingerprint, verify_file, write_json
from irmscope.models.generation import encoded_batches, length_order
from irmscope.models.hooks import capture_activations, last_token_positions
from irmscope.models.loading import LoadedModel
from irmscope.models.precision import Precision, matmul_precision, resolve_precision

PositionMode = Literal["all", "last"]


def cache_activations(
    lm: LoadedModel,
    texts: Sequence[str],
    sites: Sequence[str],
    out_dir: str | Path,
    *,
    positions: PositionMode = "all",
    max_length: int = 128,
    batch_size: int = 16,
    texts_per_shard: int = 256,
    dtype: torch.dtype = torch.float32,
    precision: Precision = "float32",
    progress: bool = True,
) -> ActivationStore:
    """Cache ``sites`` for ``texts`` under ``out_dir`` and return a reader for it.

    ``positions="all"`` stores one row per real (non-pad) token, ``"last"`` one row per text (its last
    token). Texts are truncated to ``max_length`` tokens. Running again with the same inputs resumes at the
    first missing shard; a folder holding a cache of *other* inputs is an error, never overwritten. A resumed
    run first verifies every shard listed as done (see :func:`_intact_shards`) and recomputes any that is
    missing or damaged, so a rerun always ends with a complete, correct cache.

    ``dtype`` is the stored activations'; ``precision`` that of the passes' matrix products
    (:mod:`irmscope.models.precision`; ``auto``: bfloat16 where native), part of the cache's identity.
    """
    if not texts:
        raise IrmscopeError("no texts to cache activations for; check the dataset is not empty")
    if positions not in ("all", "last"):
        raise IrmscopeError(f"positions must be 'all' or 'last', not {positions!r}")
    out_dir = Path(out_dir)
    device = next(lm.model.parameters()).device
    inputs = dict(
        model=lm.name,
        sites=list(sites),
        positions=positions,
        max_length=max_length,
        texts_per_shard=texts_per_shard,
        dtype=str(dtype),
        precision=resolve_precision(precision, device),
    )
    key = fingerprint(
        model=lm.name,
        weights=_weights_signature(lm.model),
        **{name: value for name, value in inputs.items() if name != "model"},
        texts=fingerprint(texts=list(texts)),
    )
    shared = world_size() > 1
    manifest = _resumed_manifest(out_dir, key, shared)
    if manifest is None:
        manifest = dict(fingerprint=key, **inputs, n_texts=len(texts), widths={}, shards=[], complete=False)
    if shared and is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        save_manifest(out_dir, manifest)
        barrier()
    n_shards = -(-len(texts) // texts_per_shard)
    done = {shard["index"] for shard in manifest["shards"]}
    mine = [index for index in my_share(n_shards) if index not in done]
    bar = tqdm(
        total=len(mine) * texts_per_shard, desc="caching activations", unit="text", disable=not progress
    )
    for index in mine:
        start = index * texts_per_shard
        block = list(texts[start : start + texts_per_shard])
        tensors = _activations_of_block(
            lm,
            block,
            start,
            sites=sites,
            positions=positions,
            max_length=max_length,
            batch_size=batch_size,
            dtype=dtype,
            precision=inputs["precision"],
            bar=bar,
        )
        _record_shard(out_dir, manifest, index, tensors, block, start, sites)
        if shared:  # each rank records its own shards; rank 0 merges them below
            write_json(
                out_dir / f"{RANK_PREFIX}{rank()}.json", [s for s in manifest["shards"] if s["index"] in mine]
            )
        else:
            save_manifest(out_dir, manifest)
    bar.close()
    _mark_complete(out_dir, manifest, sites, shared)
    return ActivationStore(out_dir)


def _mark_complete(out_dir: Path, manifest: dict, sites: Sequence[str], shared: bool) -> None:
    """Save the manifest as complete; under torchrun, rank 0 first merges the shards every rank recorded
    while the others wait for it."""
    if not shared:
        manifest["complete"] = True
        save_manifest(out_dir, manifest)
        return
    barrier()
    if is_main():
        _merge_rank_entries(out_dir, manifest)
        manifest["widths"] = _widths(out_dir, manifest, sites)
        manifest["complete"] = True
        save_manifest(out_dir, manifest)
        _remove_rank_entries(out_dir)  # only once the manifest lists their shards
    barrier()


def _resumed_manifest(out_dir: Path, key: str, shared: bool) -> dict | None:
    """The manifest of an earlier run on the same inputs, its shard list cut to the shards that are intact
    (None: no earlier run). Under torchrun rank 0 verifies it and merges the shards any rank finished
    while the others wait, so no rank sees a half-made manifest."""
    if shared and not is_main():
        barrier()  # rank 0 checks the folder and writes the manifest first
    manifest = _open_manifest(out_dir, key)
    if manifest is not None and (not shared or is_main()):
        if shared:  # shards finished by any rank of an earlier, interrupted run count as done, if intact
            _merge_rank_entries(out_dir, manifest)
        n_listed = len(manifest["shards"])
        manifest["shards"] = _intact_shards(out_dir, manifest)
        manifest["complete"] = bool(manifest.get("complete")) and len(manifest["shards"]) == n_listed
        save_manifest(out_dir, manifest)
        if shared:  # merged above; the other ranks read the verified manifest after the barrier
            _remove_rank_entries(out_dir)
    return manifest


def _record_shard(
    out_dir: Path,
    manifest: dict,
    index: int,
    tensors: dict[str, torch.Tensor],
    block: list[str],
    start: int,
    sites: Sequence[str],
) -> None:
    """Write shard ``index`` and list it in ``manifest`` with its digest (of the bytes on disk, as readers
    will see them), so a resumed run can verify it."""
    write_shard(out_dir / shard_name(index), tensors)
    manifest["widths"] = {site: int(tensors[site].shape[1]) for site in sites}
    manifest["shards"].append(
        dict(
            index=index,
            file=shard_name(index),
            rows=int(tensors["token_ids"].shape[0]),
            first_text=start,
            n_texts=len(block),
            **file_digest(out_dir / shard_name(index)),
        )
    )
    manifest["shards"].sort(key=lambda shard: shard["index"])


def _merge_rank_entries(out_dir: Path, manifest: dict) -> None:
    """Add the shards the ranks recorded apart to ``manifest``, in order (their records are removed once
    the manifest is saved)."""
    known = {shard["index"] for shard in manifest["shards"]}
    manifest["shards"] += [e for e in _rank_entries(out_dir) if e["index"] not in known]
    manifest["shards"].sort(key=lambda shard: shard["index"])


def _remove_rank_entries(out_dir: Path) -> None:
    for path in out_dir.glob(f"{RANK_PREFIX}*.json"):
        path.unlink()


RANK_PREFIX = "shards.rank"


def _rank_entries(out_dir: Path) -> list[dict]:
    """The shard entries that ranks of a multi-process run wrote beside the manifest."""
    entries: list[dict] = []
    for path in sorted(out_dir.glob(f"{RANK_PREFIX}*.json")):
        entries += json.loads(path.read_text())
    return entries


def _intact_shards(out_dir: Path, manifest: dict) -> list[dict]:
    """The manifest's shard entries whose files pass verification; the others are dropped, one line each.

    An entry with a recorded digest is checked against it (size and sha256). Entries from manifests written
    before digests were recorded cannot be checked that way, so such a shard counts as intact when
    safetensors opens it (its header check catches truncation) and every tensor has the listed row count;
    its digest is then recorded, so later reads and resumes check it in full. A changed byte inside such a
    shard's data goes unnoticed: nothing recorded what it was.
    """
    intact = []
    for entry in manifest["shards"]:
        path = out_dir / entry["file"]
        if "sha256" in entry:
            problem = verify_file(path, entry)
        else:
            problem = _legacy_shard_problem(path, [*manifest["sites"], *META_KEYS], int(entry["rows"]))
            entry = {**entry, **file_digest(path)} if problem is None else entry
        if problem is None:
            intact.append(entry)
        else:
            print(f"[irmscope] activation cache shard {problem}; recomputing it", flush=True)
    return intact


def _legacy_shard_problem(path: Path, keys: list[str], rows: int) -> str | None:
    """None when ``path`` opens with safetensors and each of ``keys`` has ``rows`` rows, else the problem."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in keys:
                found = handle.get_slice(key).get_shape()[0]
                if found != rows:
                    return f"{path} has {found} rows of {key}, not the {rows} listed"
    except (SafetensorError, OSError) as err:
        return f"{path} cannot be read ({one_line(err)})"
    return None


def _widths(out_dir: Path, manifest: dict, sites: Sequence[str]) -> dict[str, int]:
    with safe_open(str(out_dir / manifest["shards"][0]["file"]), framework="pt") as handle:
        return {site: int(handle.get_slice(site).get_shape()[1]) for site in sites}


def _weights_signature(model: torch.nn.Module) -> str:
    """A cheap signature of the weights (a few parameter sums), so a retuned model never reuses a cache."""
    params = list(model.parameters())
    picks = [params[0], params[len(params) // 2], params[-1]]
    return ",".join(f"{p.double().sum().item():.6e}" for p in picks)


def check_cache_folder(out_dir: str | Path) -> bool:
    """Check before any work that ``out_dir`` can take an activation cache: a new or empty folder, or one
    holding a cache (resumed when it is of the same inputs, else refused by :func:`cache_activations`).
    Returns whether it holds a cache."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise IrmscopeError(f"--out {out_dir} is a file; give a folder for the activation cache")
    for parent in out_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise IrmscopeError(f"--out {out_dir}: {parent} is a file, not a folder; choose another path")
    if (out_dir / MANIFEST).is_file():
        return True
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise IrmscopeError(f"{out_dir} is not empty and holds no activation cache; choose an empty folder")
    return False


def _open_manifest(out_dir: Path, key: str) -> dict | None:
    path = out_dir / MANIFEST
    if not path.is_file():
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise IrmscopeError(
                f"{out_dir} is not empty and holds no activation cache; choose an empty folder"
            )
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("fingerprint") != key:
        raise IrmscopeError(
            f"{out_dir} holds an activation cache of other inputs or settings; "
            "choose another folder or delete that one"
        )
    return manifest


@torch.no_grad()
def _activations_of_block(
    lm: LoadedModel,
    texts: list[str],
    first_text: int,
    *,
    sites: Sequence[str],
    positions: PositionMode,
    max_length: int,
    batch_size: int,
    dtype: torch.dtype,
    precision: Precision,
    bar: tqdm,
) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {
        key: [] for key in [*sites, "token_ids", "text_index", "position"]
    }
    device = next(lm.model.parameters()).device
    # batched by length, so padding costs little; the rows are put back in text order at the end
    order = length_order(texts)
    text_of = torch.as_tensor(order, device=device) + first_text
    # one autocast block for all the batches, so each weight is rounded once
    with matmul_precision(precision, device):
        for start, enc in encoded_batches(lm, [texts[i] for i in order], batch_size, max_length, device):
            mask = enc["attention_mask"].bool()
            if positions == "last":
                select = last_token_positions(enc["attention_mask"])
                acts = capture_activations(
                    lm.model, sites, enc["input_ids"], enc["attention_mask"], positions=select
                )
                rows = torch.arange(len(select), device=device)
                token_ids = enc["input_ids"][rows, select]
                text_index = text_of[rows + start]
                # positions counted from the first real token, so they do not depend on padding
                position = mask.sum(dim=1) - 1
            else:
                acts = capture_activations(lm.model, sites, enc["input_ids"], enc["attention_mask"])
                acts = {site: value[mask] for site, value in acts.items()}
                token_ids = enc["input_ids"][mask]
                row_of = torch.arange(mask.shape[0], device=device).unsqueeze(1).expand_as(mask)
                text_index = text_of[row_of[mask] + start]
                position = (mask.cumsum(dim=1) - 1)[mask]
            for site in sites:
                parts[site].append(acts[site].to(dtype).cpu())
            parts["token_ids"].append(token_ids.to(torch.int32).cpu())
            parts["text_index"].append(text_index.to(torch.int64).cpu())
            parts["position"].append(position.to(torch.int32).cpu())
            bar.update(enc["input_ids"].shape[0])
    rows = {key: torch.cat(values) for key, values in parts.items()}
    in_text_order = torch.argsort(rows["text_index"], stable=True)  # each text's tokens stay in order
    return {key: values[in_text_order] for key, values in rows.items()}


def cache_review_activations(
    out: Path,
    *,
    model: str,
    data: str,
    split: str,
    n_texts: int,
    sites: Sequence[str] | None,
    positions: PositionMode,
    max_length: int,
    batch_size: int,
    overwrite: bool,
) -> ActivationStore:
    """Cache ``model``'s activations over ``n_texts`` reviews of ``data`` into ``out``, resuming the cache
    the folder holds, or, with ``overwrite``, discarding it and starting afresh; the library half of
    ``irmscope cache-activations``. ``sites`` defaults to every block's MLP output.

    One job per cache folder: the folder's lock is held throughout (under torchrun the ranks of one job
    share the folder, so rank 0 holds it). The folder is checked before the model loads, so a folder
    that is not a cache fails fast; and the old cache is removed only after the model and texts loaded,
    so one that fails to load leaves it in place.
    """
    from irmscope.data import load_reviews
    from irmscope.locking import ACTIVATION_CACHE, output_lock
    from irmscope.models import load_model
    from irmscope.validation import remove

    with output_lock(out, ACTIVATION_CACHE) if is_main() else nullcontext():
        holds_cache = check_cache_folder(out)
        lm = load_model(model)
        texts = list(load_reviews(data, split=split, limit=n_texts)["text"])
        if overwrite and holds_cache:
            if is_main():
                remove([out])
            barrier()
        return cache_activations(
            lm,
            texts,
            sites or lm.sites(("mlp.hook_post",)),
            out,
            positions=positions,
            max_length=max_length,
            batch_size=batch_size,
        )
