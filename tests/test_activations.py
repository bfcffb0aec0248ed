"""The streaming activation cache: contents, resumption, refusal to overwrite, streaming reads, digests."""

import hashlib
import json

import pytest
import torch

from irmscope.activations import ActivationStore, cache_activations, caching
from irmscope.activations.store import MANIFEST, save_manifest, shard_name
from irmscope.errors import IrmscopeError
from irmscope.models import capture_activations, load_model

TEXTS = [
    f"Review number {i}: the film was {'great' if i % 2 else 'dull'} and the cast {'shone' * (i % 3)}."
    for i in range(11)
]
SITES = ["blocks.0.hook_resid_post", "blocks.2.mlp.hook_post"]


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-llama")


def test_all_positions_match_a_direct_capture(lm, tmp_path):
    store = cache_activations(
        lm, TEXTS, SITES, tmp_path, texts_per_shard=4, batch_size=3, precision="float32", progress=False
    )
    assert store.complete and len(store.shards) == 3
    n_tokens = sum(len(lm.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert store.n_rows == n_tokens
    assert store.width("blocks.2.mlp.hook_post") == lm.model.config.intermediate_size
    enc = lm.tokenizer(TEXTS[5:6], return_tensors="pt")
    direct = capture_activations(lm.model, SITES, enc["input_ids"])
    rows = next(store.iter_batches(SITES[1], batch_size=10_000, with_meta=True, shard_indices=[1]))
    mine = rows["text_index"] == 5
    torch.testing.assert_close(rows[SITES[1]][mine], direct[SITES[1]][0], rtol=1e-4, atol=1e-5)
    assert rows["token_ids"][mine].tolist() == enc["input_ids"][0].tolist()
    assert rows["position"][mine].tolist() == list(range(enc["input_ids"].shape[1]))


def test_bfloat16_passes_store_float32_activations_close_to_exact_ones(lm, tmp_path):
    exact = cache_activations(lm, TEXTS, SITES, tmp_path / "exact", precision="float32", progress=False)
    fast = cache_activations(lm, TEXTS, SITES, tmp_path / "fast", precision="bfloat16", progress=False)
    for site in SITES:
        a, b = exact.read_all(site), fast.read_all(site)
        assert b.dtype == torch.float32 and a.shape == b.shape
        assert not torch.equal(a, b)  # the products really ran in bfloat16
        assert (a - b).norm() / a.norm() < 0.02  # bfloat16 keeps about 3 significant digits
    # the precision is part of the cache's identity: a float32 cache is never resumed as a bfloat16 one
    assert exact.manifest["precision"] == "float32" and fast.manifest["precision"] == "bfloat16"


def test_last_positions_give_one_row_per_text(lm, tmp_path):
    store = cache_activations(lm, TEXTS, SITES, tmp_path, positions="last", texts_per_shard=5, progress=False)
    assert store.n_rows == len(TEXTS)
    last_ids = [lm.tokenizer(t)["input_ids"][-1] for t in TEXTS]
    assert store.token_ids().tolist() == last_ids


def test_interrupted_run_resumes_without_redoing_shards(lm, tmp_path, monkeypatch):
    reference = cache_activations(lm, TEXTS, SITES, tmp_path / "ref", texts_per_shard=4, progress=False)
    real_write = caching.write_shard
    calls = []

    def dying_write(path, tensors):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, tensors)

    monkeypatch.setattr(caching, "write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(lm, TEXTS, SITES, tmp_path / "run", texts_per_shard=4, progress=False)
    partial = ActivationStore(tmp_path / "run")
    assert not partial.complete and len(partial.shards) == 1
    first_mtime = (tmp_path / "run" / partial.shards[0]["file"]).stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(caching, "write_shard", lambda p, t: (calls.append(p.name), real_write(p, t)))
    resumed = cache_activations(lm, TEXTS, SITES, tmp_path / "run", texts_per_shard=4, progress=False)
    assert calls == ["shard_00001.safetensors", "shard_00002.safetensors"]
    assert (tmp_path / "run" / partial.shards[0]["file"]).stat().st_mtime_ns == first_mtime
    for site in SITES:
        torch.testing.assert_close(resumed.read_all(site), reference.read_all(site))


def test_other_inputs_never_overwrite_a_cache(lm, tmp_path):
    cache_activations(lm, TEXTS, SITES, tmp_path, progress=False)
    before = ActivationStore(tmp_path).read_all(SITES[0])
    with pytest.raises(IrmscopeError, match="other inputs"):
        cache_activations(lm, TEXTS[:3], SITES, tmp_path, progress=False)
    torch.testing.assert_close(ActivationStore(tmp_path).read_all(SITES[0]), before)


def test_bad_inputs(lm, tmp_path):
    with pytest.raises(IrmscopeError, match="no texts"):
        cache_activations(lm, [], SITES, tmp_path, progress=False)
    with pytest.raises(IrmscopeError, match="no activation cache"):
        ActivationStore(tmp_path / "missing")
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(IrmscopeError, match="not empty"):
        cache_activations(lm, TEXTS, SITES, tmp_path, progress=False)


def test_shuffled_stream_covers_every_row_once(lm, tmp_path):
    store = cache_activations(lm, TEXTS, SITES[:1], tmp_path, texts_per_shard=3, progress=False)
    batches = list(store.iter_batches(SITES[0], batch_size=7, shuffle=True, seed=1, with_meta=True))
    seen = sorted(
        zip(
            torch.cat([b["text_index"] for b in batches]).tolist(),
            torch.cat([b["position"] for b in batches]).tolist(),
            strict=True,
        )
    )
    assert len(seen) == store.n_rows == len(set(seen))
    with pytest.raises(IrmscopeError, match="not in the cache"):
        next(store.iter_batches("blocks.1.hook_resid_post"))


# --- verification: digests in the manifest, checked on read and on resume ------------------------------


def _truncate(path, keep: float = 0.5) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(int(path.stat().st_size * keep))


def _flip_middle_byte(path) -> None:
    """Change one byte in the middle of the file (inside the tensor data), keeping its size."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _strip_digests(root) -> None:
    """Rewrite the manifest as versions before digests wrote it."""
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["shards"] = [
        {k: v for k, v in shard.items() if k not in ("bytes", "sha256")} for shard in manifest["shards"]
    ]
    save_manifest(root, manifest)


def test_manifest_records_each_shards_size_and_sha256(lm, tmp_path):
    store = cache_activations(lm, TEXTS, SITES, tmp_path, texts_per_shard=4, progress=False)
    for shard in store.shards:
        data = (tmp_path / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_truncated_shard_is_named_when_the_cache_is_opened(lm, tmp_path):
    cache_activations(lm, TEXTS, SITES, tmp_path, texts_per_shard=4, progress=False)
    _truncate(tmp_path / shard_name(1))
    with pytest.raises(IrmscopeError, match=r"shard_00001\.safetensors has \d+ bytes.*rerun `irmscope cache"):
        ActivationStore(tmp_path)
    (tmp_path / shard_name(1)).unlink()
    with pytest.raises(IrmscopeError, match=r"shard_00001\.safetensors is missing"):
        ActivationStore(tmp_path)


def test_a_changed_byte_is_caught_by_the_checksum_on_first_read(lm, tmp_path):
    cache_activations(lm, TEXTS, SITES, tmp_path, texts_per_shard=4, progress=False)
    _flip_middle_byte(tmp_path / shard_name(2))
    store = ActivationStore(tmp_path)  # same size: opening is fine, the full read is not
    next(store.iter_batches(SITES[0], shard_indices=[0]))
    with pytest.raises(IrmscopeError, match=r"shard_00002\.safetensors does not match the sha256"):
        store.read_all(SITES[0])


def test_an_unreadable_shard_of_an_old_manifest_is_one_line(lm, tmp_path):
    cache_activations(lm, TEXTS, SITES, tmp_path, texts_per_shard=4, progress=False)
    _strip_digests(tmp_path)
    _truncate(tmp_path / shard_name(0))
    store = ActivationStore(tmp_path)  # no sizes recorded: only safetensors can tell
    with pytest.raises(IrmscopeError, match=r"shard_00000\.safetensors cannot be read \(.*incomplete"):
        store.read_all(SITES[0])


def test_rerunning_recomputes_broken_shards_and_equals_a_fresh_cache(lm, tmp_path, capsys):
    fresh = cache_activations(lm, TEXTS, SITES, tmp_path / "fresh", texts_per_shard=3, progress=False)
    run = tmp_path / "run"
    cache_activations(lm, TEXTS, SITES, run, texts_per_shard=3, progress=False)
    _truncate(run / shard_name(0))
    _flip_middle_byte(run / shard_name(1))
    (run / shard_name(2)).unlink()
    intact_mtime = (run / shard_name(3)).stat().st_mtime_ns
    capsys.readouterr()
    resumed = cache_activations(lm, TEXTS, SITES, run, texts_per_shard=3, progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("/")[-1].split()[0] for line in lines] == [shard_name(i) for i in range(3)]
    assert all(line.endswith("recomputing it") for line in lines)
    assert (run / shard_name(3)).stat().st_mtime_ns == intact_mtime
    assert resumed.complete and resumed.shards == fresh.shards
    for site in SITES:
        torch.testing.assert_close(resumed.read_all(site), fresh.read_all(site), rtol=0, atol=0)


def test_rerunning_on_an_old_manifest_checks_its_shards_and_records_their_digests(lm, tmp_path, capsys):
    fresh = cache_activations(lm, TEXTS, SITES, tmp_path / "fresh", texts_per_shard=4, progress=False)
    run = tmp_path / "run"
    cache_activations(lm, TEXTS, SITES, run, texts_per_shard=4, progress=False)
    _strip_digests(run)
    _truncate(run / shard_name(1))
    capsys.readouterr()
    resumed = cache_activations(lm, TEXTS, SITES, run, texts_per_shard=4, progress=False)
    (line,) = capsys.readouterr().out.splitlines()
    assert shard_name(1) in line and "cannot be read" in line
    assert resumed.shards == fresh.shards  # every shard now carries its digest again
    torch.testing.assert_close(resumed.read_all(SITES[1]), fresh.read_all(SITES[1]), rtol=0, atol=0)
