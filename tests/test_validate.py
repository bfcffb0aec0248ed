"""Feature ablation (Table 5) and the activation frequency of reward-related features (Table 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irmscope.activations import ActivationStore
from irmscope.activations.store import save_manifest, shard_name, write_shard
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.models.hooks import intervene
from irmscope.rewards import VaderReward
from irmscope.sae import SAE, SAEConfig
from irmscope.tune.sampling import generate_completions
from irmscope.validate import (
    ablation_table,
    activation_frequency_table,
    feature_ablation,
    random_features,
    reward_under_ablation,
)

PROMPTS = ["The movie was", "I thought the acting", "Honestly the plot", "What a film"]


def test_feature_ablation_removes_exactly_the_features_contributions():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=6, d_sae=10))
    x = torch.randn(4, 6)
    latents = sae.encode(x)
    edited = feature_ablation(sae, [2, 7])(x)
    expected = x - latents[:, [2]] * sae.W_dec[2] - latents[:, [7]] * sae.W_dec[7]
    assert torch.allclose(edited, expected.detach(), atol=1e-6)
    assert torch.equal(feature_ablation(sae, [])(x), x)
    with pytest.raises(IrmscopeError, match="feature indices"):
        feature_ablation(sae, [10])


def test_random_features_match_the_counts_and_avoid_the_chosen():
    saes = {"a": SAE(SAEConfig(4, 20)), "b": SAE(SAEConfig(4, 8))}
    chosen = {"a": [1, 2, 3], "b": []}
    drawn = random_features(chosen, saes, seed=0)
    assert len(drawn["a"]) == 3 and not set(drawn["a"]) & {1, 2, 3} and drawn["b"] == []
    assert drawn == random_features(chosen, saes, seed=0) != random_features(chosen, saes, seed=1)


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-llama")


def _sae_with_bias(lm, site: str, bias: float) -> SAE:
    width = lm.model.config.intermediate_size
    sae = SAE(SAEConfig(d_in=width, d_sae=8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(bias)
        sae.W_dec.mul_(5.0)
    return sae


def test_ablating_a_silent_feature_changes_nothing_and_a_firing_one_changes_the_text(lm):
    site = "blocks.1.mlp.hook_post"
    reward = VaderReward()
    plain = generate_completions(lm, PROMPTS, 8, seed=3, progress=False)
    before = reward.score([p + c for p, c in zip(PROMPTS, plain, strict=True)])
    silent = {site: _sae_with_bias(lm, site, -1e6)}
    table = ablation_table(lm, silent, {site: [0]}, PROMPTS, reward, before, 8, seed=3, progress=False)
    assert table["related"]["change"]["value"] == 0.0 and table["random"]["change"]["value"] == 0.0
    assert table["n_features"] == {site: 1} and table["before"]["n"] == len(PROMPTS)
    firing = {site: _sae_with_bias(lm, site, 50.0)}
    with torch.no_grad():
        firing[site].W_enc.zero_()  # every latent at 50: a large, fixed edit of the site

    with intervene(lm.model, {site: feature_ablation(firing[site], [0, 1, 2])}):
        ablated = generate_completions(lm, PROMPTS, 8, seed=3, progress=False)
    assert ablated != plain
    scores = reward_under_ablation(lm, firing, {site: [0, 1, 2]}, PROMPTS, reward, 8, seed=3, progress=False)
    assert scores.shape == (len(PROMPTS),)


def test_ablation_table_without_related_features_says_so_and_checks_pairing(lm):
    reward = VaderReward()
    site = "blocks.1.mlp.hook_post"
    saes = {site: _sae_with_bias(lm, site, 0.0)}
    table = ablation_table(lm, saes, {site: []}, PROMPTS, reward, np.zeros(4), 8, progress=False)
    assert "no feature was classified" in table["note"] and "related" not in table
    with pytest.raises(IrmscopeError, match="pair up"):
        ablation_table(lm, saes, {site: [1]}, PROMPTS, reward, np.zeros(3), 8, progress=False)


def test_activation_frequency_table_on_hand_made_features(tmp_path):
    """Feature 0 fires on rows 0-4 only, feature 1 on every row; R reads feature 0, so R > 3 on rows 0-4."""
    site = "blocks.0.mlp.hook_post"
    acts = torch.zeros(10, 3)
    acts[:5, 0] = 4.0
    acts[:, 1] = 1.0
    write_shard(
        tmp_path / shard_name(0),
        {site: acts, "token_ids": torch.zeros(10, dtype=torch.long),
         "text_index": torch.zeros(10, dtype=torch.long), "position": torch.arange(10)},
    )  # fmt: skip
    save_manifest(
        tmp_path,
        {"sites": [site], "positions": "all", "widths": {site: 3}, "complete": True,
         "shards": [{"index": 0, "file": shard_name(0), "rows": 10, "first_text": 0, "n_texts": 1}]},
    )  # fmt: skip
    sae = SAE(SAEConfig(d_in=3, d_sae=3))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    store = ActivationStore(tmp_path)
    table = activation_frequency_table({site: sae}, store, np.array([1.0, 0.0, 0.0]), 0.0, {site: [0]})
    assert table["n_tokens_above_threshold"] == 5 and table["n_tokens"] == 10
    assert table["frequency_related_above"] == 1.0 and table["frequency_related_everywhere"] == 0.5
    assert table["frequency_all_above"] == pytest.approx(2 / 3) and table["frequency_all_everywhere"] == 0.5
    with pytest.raises(IrmscopeError, match="coefficients"):
        activation_frequency_table({site: sae}, store, np.ones(4), 0.0, {site: [0]})
