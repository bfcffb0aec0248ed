"""SAEs: the module, training on synthetic and cached activations, metrics, MMCS, SAELens-format I/O."""

from __future__ import annotations

import importlib.util
import json
import pickle

import pytest
import torch

from irmscope.activations import ActivationStore, cache_activations
from irmscope.activations.store import save_manifest, shard_name, write_shard
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.sae import (
    SAE,
    DeadLatentTracker,
    SAEConfig,
    TrainConfig,
    appendix_j_figures,
    data_center,
    dead_fraction,
    evaluate_sae,
    fvu,
    geometric_median,
    l0,
    load_sae,
    max_cosine,
    mmcs,
    save_sae,
    spliced_lm_loss,
    top_shared_features,
    train_sae,
)
from irmscope.sae.io import SAE_CFG_FILENAME, SAE_DIGEST_FILENAME, SAE_WEIGHTS_FILENAME

HAS_SAE_LENS = importlib.util.find_spec("sae_lens") is not None
SITE = "blocks.0.mlp.hook_post"
TEXTS = [
    f"Review {i}: the film was {'great' if i % 2 else 'dull'}, and the cast {'shone' if i % 3 else 'slept'}."
    for i in range(24)
]


# --- helpers -------------------------------------------------------------------------------------------


def synthetic_data(n: int = 20_000, d: int = 64, m: int = 128, p: float = 3 / 128, seed: int = 0):
    """``n`` tokens in ``d`` dims, each a sparse non-negative mix of ``m`` unit ground-truth features (about
    ``p * m`` active, magnitudes in [0.5, 1.5]) plus a constant offset the decoder bias must learn."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(m, d, generator=g)
    features = features / features.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, m, generator=g) < p) * (torch.rand(n, m, generator=g) + 0.5)
    return codes @ features + 0.3, features


def store_of(x: torch.Tensor, root, site: str = "site", rows_per_shard: int = 5_000) -> ActivationStore:
    """An activation cache folder holding ``x`` as the activations of ``site``."""
    shards = []
    for index, start in enumerate(range(0, len(x), rows_per_shard)):
        part = x[start : start + rows_per_shard]
        n = len(part)
        write_shard(
            root / shard_name(index),
            {
                site: part.contiguous(),
                "token_ids": torch.zeros(n, dtype=torch.int32),
                "text_index": torch.arange(start, start + n),
                "position": torch.zeros(n, dtype=torch.int32),
            },
        )
        shards.append(dict(index=index, file=shard_name(index), rows=n, first_text=start, n_texts=n))
    manifest = dict(model="synthetic", sites=[site], widths={site: x.shape[1]}, shards=shards, complete=True)
    save_manifest(root, manifest)
    return ActivationStore(root)


def identity_sae(width: int) -> SAE:
    """A tied ReLU SAE that reconstructs exactly: x = relu(x) - relu(-x), dictionary rows ±e_i."""
    sae = SAE(SAEConfig(d_in=width, d_sae=2 * width, tied=True))
    with torch.no_grad():
        eye = torch.eye(width)
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    x, features = synthetic_data()
    return store_of(x, tmp_path_factory.mktemp("synthetic")), x, features


@pytest.fixture(scope="module")
def lm():
    """tiny-llama after a few steps of memorising the first six of TEXTS, those the spliced losses read. A
    random model predicts almost uniformly, so ablating a site barely moves its loss (either way); a model
    that has learnt something loses it. (Six texts, not all 24: each step's 49,152-way softmax over every
    position is most of the fixture's time, and six texts learn as much in a quarter of it.)"""
    lm = load_model("tiny-llama")
    torch.manual_seed(0)
    enc = lm.tokenizer(TEXTS[:6], return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(lm.model.parameters(), lr=1e-2)
    lm.model.train()
    for _ in range(25):
        loss = lm.model(**enc, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.model.eval()
    lm.model.requires_grad_(False)
    return lm


@pytest.fixture(scope="module")
def tiny_store(lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cache")
    return cache_activations(lm, TEXTS, [SITE], root, texts_per_shard=8, progress=False)


# --- MMCS (Eq. 2) and shared features ------------------------------------------------------------------


def test_mmcs_on_hand_made_dictionaries():
    basis = torch.eye(8)
    d = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    assert mmcs(d, d) == pytest.approx(1.0)
    assert mmcs(d, 3.0 * d) == pytest.approx(1.0)  # scale does not matter, only direction
    assert mmcs(basis[:4], basis[4:]) == pytest.approx(0.0, abs=1e-12)  # orthogonal
    assert mmcs(d, d[torch.randperm(6, generator=torch.Generator().manual_seed(2))]) == pytest.approx(1.0)
    # Eq. 2 uses signed cosines: for a ReLU SAE -d is a different feature, so a flipped copy shares nothing
    assert mmcs(basis, -basis) == pytest.approx(0.0, abs=1e-12)
    assert mmcs(basis, -basis, absolute=True) == pytest.approx(1.0)
    # not symmetric: a dictionary is fully covered by a larger one holding it, not the other way round
    assert mmcs(basis[:2], basis) == pytest.approx(1.0)
    assert mmcs(basis, basis[:2]) == pytest.approx(0.25)
    best, index = max_cosine(basis[[3, 1]], basis)
    assert best.tolist() == pytest.approx([1.0, 1.0]) and index.tolist() == [3, 1]


def test_mmcs_accepts_saes_and_rejects_mismatched_widths():
    a, b = SAE(SAEConfig(8, 16)), SAE(SAEConfig(8, 32))
    assert mmcs(a, a) == pytest.approx(1.0)
    assert -1.0 <= mmcs(a, b) <= 1.0
    with pytest.raises(IrmscopeError, match="width"):
        mmcs(torch.eye(4), torch.eye(5))


def test_top_shared_features_finds_planted_features_across_sizes():
    g = torch.Generator().manual_seed(0)
    large = torch.randn(16, 32, generator=g)
    small = torch.randn(8, 32, generator=g)
    small[2] = large[11] + 0.01 * torch.randn(32, generator=g)
    small[5] = large[4] + 0.05 * torch.randn(32, generator=g)
    shared = top_shared_features(small, large, k=2)
    assert shared.index_1 == [2, 5] and shared.index_2 == [11, 4]
    assert shared.cosine[0] > shared.cosine[1] > 0.99
    # two features of the small dictionary on one feature of the large: one-to-one keeps only one
    small[6] = large[11] + 0.02 * torch.randn(32, generator=g)
    assert top_shared_features(small, large, k=2, one_to_one=False).index_2 == [11, 11]
    assert top_shared_features(small, large, k=2).index_2[1] != 11


def test_one_to_one_matching_equals_brute_force_greedy():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, 16, generator=g), torch.randn(25, 16, generator=g)
    sims = (a / a.norm(dim=1, keepdim=True)).double() @ (b / b.norm(dim=1, keepdim=True)).double().T
    taken, rows, cols = [], set(), set()
    for flat in torch.argsort(sims.flatten(), descending=True).tolist():
        i, j = divmod(flat, 25)
        if i not in rows and j not in cols:
            rows.add(i), cols.add(j), taken.append((i, j))
    shared = top_shared_features(a, b, k=10)
    assert list(zip(shared.index_1, shared.index_2, strict=True)) == taken[:10]


# --- the module ----------------------------------------------------------------------------------------


def test_sae_shapes_tied_view_and_topk_sparsity():
    x = torch.randn(5, 8)
    tied = SAE(SAEConfig(8, 16, tied=True))
    assert tied.W_enc.shape == (8, 16) and torch.equal(tied.W_enc, tied.W_dec.T)
    assert {name for name, _ in tied.named_parameters()} == {"W_dec", "b_enc", "b_dec"}
    recon, latents = SAE(SAEConfig(8, 16, architecture="topk", k=3))(x)
    assert recon.shape == x.shape and latents.shape == (5, 16)
    assert ((latents != 0).sum(dim=1) <= 3).all() and (latents >= 0).all()
    assert torch.allclose(identity_sae(8).reconstruct(x), x, atol=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_topk_sparse_decoding_equals_the_dense_product_with_its_gradients(tied):
    """forward() decodes a TopK SAE from its k active rows; it must match latents @ W_dec exactly."""
    torch.manual_seed(0)
    sae = SAE(SAEConfig(16, 64, architecture="topk", k=5, tied=tied, dtype="float64"))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    recon, latents = sae(x)
    assert torch.allclose(recon, sae.decode(sae.encode(x)), atol=1e-12)
    assert torch.equal(latents, sae.encode(x))
    recon.pow(2).sum().backward()
    sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()
    sae.decode(sae.encode(x)).pow(2).sum().backward()
    for name, p in sae.named_parameters():
        assert torch.allclose(p.grad, sparse_grads[name], atol=1e-10), name


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(d_in=8, d_sae=0), "d_sae"),
        (dict(d_in=0, d_sae=8), "d_in"),
        (dict(d_in=8, d_sae=4, architecture="topk", k=5), "exceeds d_sae"),
        (dict(d_in=8, d_sae=4, architecture="topk"), "needs k"),
        (dict(d_in=8, d_sae=4, k=2), "only to architecture='topk'"),
        (dict(d_in=8, d_sae=4, architecture="gated"), "unknown SAE architecture"),
    ],
)
def test_bad_sae_configs_are_user_errors(bad, match):
    with pytest.raises(IrmscopeError, match=match):
        SAEConfig(**bad)


def test_bad_training_inputs_are_user_errors(synthetic):
    store, _, _ = synthetic
    with pytest.raises(IrmscopeError, match="d_sae"):
        TrainConfig(d_sae=0)
    with pytest.raises(IrmscopeError, match="exceeds d_sae"):
        TrainConfig(d_sae=8, architecture="topk", k=9)
    with pytest.raises(IrmscopeError, match="batch_size"):
        TrainConfig(d_sae=8, batch_size=0)
    with pytest.raises(IrmscopeError, match="not in the activation cache"):
        train_sae(store, "blocks.9.hook_resid_post", TrainConfig(d_sae=8), progress=False)
    with pytest.raises(IrmscopeError, match="does not match"):
        train_sae(store, "site", TrainConfig(d_sae=8), init=SAE(SAEConfig(64, 16)), progress=False)


# --- training on synthetic sparse data ------------------------------------------------------------------

# (architecture, tied, k, FVU bound). Measured FVUs on this data (3 epochs, seed 0): 0.053, 0.081, 0.059,
# 0.103. Tied SAEs do worse: a unit-norm encoder row cannot scale or inhibit, it can only project.
VARIANTS = [
    ("relu", False, None, 0.08),
    ("relu", True, None, 0.12),
    ("topk", False, 6, 0.08),
    ("topk", True, 6, 0.13),
]


@pytest.mark.parametrize("architecture, tied, k, bound", VARIANTS)
def test_variants_learn_the_ground_truth_features(synthetic, architecture, tied, k, bound):
    store, x, features = synthetic
    config = TrainConfig(
        d_sae=128, architecture=architecture, k=k, tied=tied, batch_size=64, lr=3e-3, log_every=50
    )
    sae, log = train_sae(store, "site", config, seed=0, progress=False)
    metrics = evaluate_sae(sae, x[:4_000])
    assert metrics.fvu < bound
    assert mmcs(features, sae) > 0.95  # nearly every true feature has a learned twin
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(128), atol=1e-5)  # unit-norm rows held
    assert log.n_tokens == 3 * len(x) and log.step[-1] == log.n_steps
    assert log.loss[-1] < log.loss[0]
    if architecture == "topk":
        assert 0.8 * k < metrics.l0 <= k
    else:
        assert metrics.l0 < 20  # sparse: about 3 features are truly active per token


def test_normalized_training_is_scale_free_and_folds_the_scale_back(synthetic, tmp_path):
    _, x, features = synthetic
    x = x[:10_000]
    config = TrainConfig(d_sae=128, tied=False, batch_size=64, lr=3e-3, normalize_activations=True)
    runs = {}
    for factor in (1.0, 50.0):  # the same data at 50x the scale; a raw L1 coefficient would mean 50x less
        store = store_of(x * factor, tmp_path / str(factor))
        sae, log = train_sae(store, "site", config, progress=False)
        assert log.activation_scale == pytest.approx(
            (64 / (x * factor).pow(2).sum(dim=1).mean().item()) ** 0.5
        )
        runs[factor] = (sae, evaluate_sae(sae, x[:4_000] * factor))  # the SAE reads raw activations
    (small, small_metrics), (large, large_metrics) = runs[1.0], runs[50.0]
    assert small_metrics.fvu < 0.1 and mmcs(features, small) > 0.95
    assert large_metrics.fvu == pytest.approx(small_metrics.fvu, rel=0.02)
    assert large_metrics.l0 == pytest.approx(small_metrics.l0, rel=0.02)
    assert mmcs(small, large) > 0.99
    assert torch.allclose(large.W_dec.norm(dim=1), torch.ones(128), atol=1e-5)


def test_training_is_deterministic_given_the_seed(synthetic):
    store, _, _ = synthetic
    config = TrainConfig(d_sae=32, epochs=1, batch_size=256, b_dec_init="geometric_median")
    runs = [train_sae(store, "site", config, seed=seed, progress=False)[0] for seed in (7, 7, 8)]
    assert all(
        torch.equal(a, b)
        for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values(), strict=True)
    )
    assert not torch.equal(runs[0].W_dec, runs[2].W_dec)


def test_dead_latent_tracking_counts_a_forced_dead_latent(synthetic):
    store, x, _ = synthetic
    init = SAE(SAEConfig(64, 32, tied=False), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        init.b_enc[5] = -1e4  # its pre-activation is always negative, so ReLU never lets it fire
    config = TrainConfig(d_sae=32, tied=False, epochs=1, batch_size=256, dead_window=2_000)
    sae, log = train_sae(store, "site", config, init=init, progress=False)
    assert 5 in log.dead_latents
    assert log.dead_fraction[-1] == pytest.approx(len(log.dead_latents) / 32)
    assert evaluate_sae(sae, x[:2_000]).dead_fraction >= 1 / 32


def test_auxk_loss_revives_latents_that_topk_never_selects(synthetic):
    store, x, _ = synthetic
    runs = {}
    for coefficient in (0.0, 1 / 32):
        init = SAE(
            SAEConfig(64, 128, architecture="topk", k=4, tied=False),
            generator=torch.Generator().manual_seed(0),
        )
        with torch.no_grad():
            init.b_enc[:64] = -1.5  # half the latents start too low to be among the top 4: no gradient
        config = TrainConfig(
            d_sae=128,
            architecture="topk",
            k=4,
            tied=False,
            epochs=1,
            batch_size=256,
            lr=3e-3,
            aux_k_coefficient=coefficient,
            dead_window=2_000,
        )
        sae, _ = train_sae(store, "site", config, init=init, progress=False)
        runs[coefficient] = evaluate_sae(sae, x[:4_000])
    # measured: 39% dead and FVU 0.42 without AuxK; 1% dead and FVU 0.22 with it
    assert runs[0.0].dead_fraction > 0.3 and runs[1 / 32].dead_fraction < 0.05
    assert runs[1 / 32].fvu < runs[0.0].fvu - 0.1
    with pytest.raises(IrmscopeError, match="topk. only"):
        TrainConfig(d_sae=8, aux_k_coefficient=0.1)


def test_dead_latent_tracker_window():
    tracker = DeadLatentTracker(d_sae=3, window=10)
    assert not tracker.dead_mask.any()
    tracker.update(torch.tensor([[1.0, 0.0, 0.0]] * 4))
    assert tracker.dead_mask.tolist() == [False, True, True]  # fewer than 10 tokens: never fired = dead
    tracker.update(torch.tensor([[0.0, 2.0, 0.0]] * 4))
    tracker.update(torch.tensor([[0.0, 0.0, 0.0]] * 4))
    assert tracker.dead_mask.tolist() == [False, False, True]  # latent 0 last fired 8 tokens ago
    tracker.update(torch.tensor([[0.0, 0.0, 0.0]] * 4))
    assert tracker.dead_mask.tolist() == [True, False, True]  # now 12 > 10 tokens ago
    assert tracker.dead_fraction == pytest.approx(2 / 3)


def test_decoder_bias_starts_at_the_data_center(synthetic):
    store, x, _ = synthetic
    assert torch.allclose(data_center(store, "site", "mean"), x.mean(dim=0), atol=1e-5)
    bulk = torch.zeros(200, 4) + torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    with_outliers = torch.cat([bulk, torch.full((10, 4), 100.0)])
    median = geometric_median(with_outliers)
    assert median.norm() < 0.5 < with_outliers.mean(dim=0).norm()


# --- metrics -------------------------------------------------------------------------------------------


def test_reconstruction_and_sparsity_metrics():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0)) + 5.0
    assert fvu(x, x) == 0.0
    assert fvu(x, x.mean(dim=0).expand_as(x)) == pytest.approx(1.0)
    latents = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    assert l0(latents) == 1.5 and dead_fraction(latents) == 0.5
    sae = SAE(SAEConfig(6, 12), generator=torch.Generator().manual_seed(0))
    streamed = evaluate_sae(sae, iter(x.split(7)))
    whole = evaluate_sae(sae, x, batch_size=10_000)
    assert streamed.fvu == pytest.approx(fvu(x, sae.reconstruct(x)), rel=1e-9)
    assert streamed.fvu == pytest.approx(whole.fvu, rel=1e-9) and streamed.n_tokens == 300
    figures = appendix_j_figures(whole)
    assert figures["true_sparsity"] == whole.l0 and figures["true_sparsity_scaled"] == whole.l0 / 100
    assert figures["decoder_row_nonzero"] == 6.0
    with pytest.raises(IrmscopeError, match="d_in=6"):
        evaluate_sae(sae, torch.zeros(3, 5))


def test_spliced_lm_loss_identity_costs_nothing_and_ablation_costs_something(lm):
    width = lm.model.config.intermediate_size
    result = spliced_lm_loss(lm, identity_sae(width), SITE, TEXTS[:6], batch_size=4)
    assert result.n_tokens > 0
    assert abs(result.increase) < 1e-4
    assert result.ablation_increase > 0.01
    assert result.fraction_recovered == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(IrmscopeError, match="width"):
        spliced_lm_loss(lm, identity_sae(width // 2), SITE, TEXTS[:2])


# --- training from a real activation cache -------------------------------------------------------------


def test_training_on_cached_tiny_llama_activations(lm, tiny_store, tmp_path):
    width = tiny_store.width(SITE)
    config = TrainConfig(d_sae=2 * width, tied=False, epochs=4, batch_size=32, lr=3e-3, log_every=5)
    sae, log = train_sae(tiny_store, SITE, config, out_dir=tmp_path / "sae", progress=False)
    metrics = evaluate_sae(sae, tiny_store, site=SITE)
    assert metrics.n_tokens == tiny_store.n_rows and metrics.fvu < 0.5
    assert log.loss[-1] < log.loss[0] and log.tokens_per_second > 0
    saved = json.loads((tmp_path / "sae" / "training_log.json").read_text())
    assert saved["n_steps"] == log.n_steps and len(saved["loss"]) == len(log.loss)
    loaded = load_sae(tmp_path / "sae")
    assert loaded.metadata["hook_name"] == SITE and loaded.metadata["model_name"] == "tiny-llama"
    spliced = spliced_lm_loss(lm, loaded, SITE, TEXTS[:4])
    assert spliced.increase < spliced.ablation_increase  # better than removing the site's output
    with pytest.raises(IrmscopeError, match="not in the activation cache"):
        train_sae(tiny_store, "blocks.0.hook_resid_post", config, progress=False)


# --- save / load ---------------------------------------------------------------------------------------

SAVE_VARIANTS = [
    SAEConfig(16, 40),
    SAEConfig(16, 40, tied=True),
    SAEConfig(16, 40, architecture="topk", k=5),
    SAEConfig(16, 40, apply_b_dec_to_input=False),
]
SAVE_IDS = ["relu", "tied", "topk", "no-b_dec-input"]


def _random_sae(config: SAEConfig) -> SAE:
    sae = SAE(config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.normal_(generator=torch.Generator().manual_seed(1))
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(2))
    return sae


@pytest.mark.parametrize("config", SAVE_VARIANTS, ids=SAVE_IDS)
def test_save_load_round_trip_is_exact(config, tmp_path, monkeypatch):
    sae = _random_sae(config)
    save_sae(sae, tmp_path, hook_name=SITE, model_name="tiny-llama")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [SAE_CFG_FILENAME, SAE_DIGEST_FILENAME, SAE_WEIGHTS_FILENAME]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading an SAE must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = load_sae(tmp_path)
    assert loaded.config == config
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(loaded, name), getattr(sae, name))
    x = torch.randn(10, 16)
    assert torch.equal(loaded(x).reconstruction, sae(x).reconstruction)
    assert loaded.metadata["hook_name"] == SITE


def test_load_errors(tmp_path):
    with pytest.raises(IrmscopeError, match="not an SAE folder"):
        load_sae(tmp_path)
    save_sae(SAE(SAEConfig(4, 8)), tmp_path)
    cfg = json.loads((tmp_path / SAE_CFG_FILENAME).read_text())
    (tmp_path / SAE_CFG_FILENAME).write_text(json.dumps({**cfg, "architecture": "jumprelu"}))
    with pytest.raises(IrmscopeError, match="standard and topk"):
        load_sae(tmp_path)
    (tmp_path / SAE_CFG_FILENAME).write_text(json.dumps({**cfg, "d_sae": 9}))
    with pytest.raises(IrmscopeError, match="shape"):
        load_sae(tmp_path)


def test_a_damaged_weights_file_is_named(tmp_path):
    sae = _random_sae(SAEConfig(16, 40))
    weights = tmp_path / SAE_WEIGHTS_FILENAME
    save_sae(sae, tmp_path)
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:  # one byte changed inside W_enc, same size
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IrmscopeError, match=r"sae_weights\.safetensors does not match the sha256.*train"):
        load_sae(tmp_path)
    save_sae(sae, tmp_path)
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(IrmscopeError, match=rf"safetensors has {size // 2} bytes, not the {size} recorded"):
        load_sae(tmp_path)
    (tmp_path / SAE_DIGEST_FILENAME).unlink()  # as SAELens or an older irmscope writes a folder
    with pytest.raises(IrmscopeError, match=r"sae_weights\.safetensors cannot be read \(.*delete the"):
        load_sae(tmp_path)
    save_sae(sae, tmp_path)
    (tmp_path / SAE_DIGEST_FILENAME).unlink()
    assert torch.equal(load_sae(tmp_path).W_enc, sae.W_enc)  # no digest: loads unchecked


# --- SAELens compatibility ------------------------------------------------------------------------------


@pytest.mark.skipif(
    not HAS_SAE_LENS, reason="sae-lens is not installed (scripts/setup.sh installs it, with constraints.txt)"
)
@pytest.mark.parametrize("config", SAVE_VARIANTS, ids=SAVE_IDS)
def test_sae_lens_loads_our_files_and_we_load_theirs(config, tmp_path):
    from sae_lens import SAE as SAELensSAE

    sae = _random_sae(config)
    save_sae(sae, tmp_path / "ours", hook_name=SITE)
    theirs = SAELensSAE.load_from_disk(tmp_path / "ours")
    assert theirs.cfg.architecture() == ("topk" if config.architecture == "topk" else "standard")
    assert theirs.cfg.metadata.hook_name == SITE
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(theirs, name).detach(), getattr(sae, name).detach())
    x = torch.randn(12, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x), rtol=0, atol=1e-6)
        latents = sae.encode(x)
        torch.testing.assert_close(theirs.decode(latents), sae.decode(latents), rtol=0, atol=1e-6)
    # and back: a folder SAELens wrote loads here with the same outputs and the same cfg.json keys
    theirs.save_model(tmp_path / "theirs")
    ours_cfg = json.loads((tmp_path / "ours" / SAE_CFG_FILENAME).read_text())
    their_cfg = json.loads((tmp_path / "theirs" / SAE_CFG_FILENAME).read_text())
    assert set(ours_cfg) == set(their_cfg)
    reloaded = load_sae(tmp_path / "theirs")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).reconstruction, theirs(x), rtol=0, atol=1e-6)


def test_dictionary_trainers_use_fused_adam_with_the_default_update():
    from irmscope.sae.train import adam

    torch.manual_seed(0)
    start = torch.randn(64, 32)
    updated = []
    for fused in (True, False):
        weight = torch.nn.Parameter(start.clone())
        optimizer = adam([weight], lr=1e-2) if fused else torch.optim.Adam([weight], lr=1e-2)
        assert optimizer.defaults["fused"] is (True if fused else None)
        for step in range(5):
            optimizer.zero_grad()
            (weight.sin() * (step + 1)).sum().backward()
            optimizer.step()
        updated.append(weight.detach())
    assert torch.allclose(updated[0], updated[1], rtol=1e-5, atol=1e-7)
