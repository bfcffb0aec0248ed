"""Feature ablation (Table 5) and the activation frequency of reward-related features (Table 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irmscope.activations import ActivationStore
from irmscope.activations.store import save_manifest, shard_name, write_shard
from irmscope.config import load_config
from irmscope.data import load_reviews
from irmscope.errors import IrmscopeError
from irmscope.models import load_model
from irmscope.models.generation import Sampling
from irmscope.models.hooks import intervene
from irmscope.pipeline.stages.activations import sae_corpus
from irmscope.rewards import VaderReward
from irmscope.sae import SAE, SAEConfig
from irmscope.stats import paired_ratio_ci
from irmscope.validate import (
    AblationRun,
    AttributedSelection,
    ablation_table,
    activation_frequency_table,
    attribute_reward_to_features,
    feature_ablation,
    random_features,
    select_by_attribution,
)

PROMPTS = ["The movie was", "I thought the acting", "Honestly the plot", "What a film"]
#: every completion in these tests: 8 tokens, seed 3, no bar
SAMPLING = Sampling(max_new_tokens=8, seed=3, progress=False)


def _unablated_rewards(lm) -> tuple[list[str], np.ndarray]:
    """The model's own SAMPLING completions of PROMPTS and their VADER rewards: the 'before' every ablation
    pairs with (an ablation samples with the same seed)."""
    plain = SAMPLING.complete(lm, PROMPTS)
    return plain, VaderReward().score([p + c for p, c in zip(PROMPTS, plain, strict=True)])


def _table(lm, saes, related, before, **options):
    """Table 5 on PROMPTS under the VADER reward, sampled with SAMPLING."""
    run = AblationRun(lm, saes, PROMPTS, VaderReward(), SAMPLING)
    return ablation_table(run, related, before=before, **options)


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
    plain, before = _unablated_rewards(lm)
    silent = {site: _sae_with_bias(lm, site, -1e6)}
    table = _table(lm, silent, {site: [0]}, before)
    assert table["related"]["change"]["value"] == 0.0 and table["random"]["change"]["value"] == 0.0
    assert table["n_features"] == {site: 1} and table["before"]["n"] == len(PROMPTS)
    firing = {site: _sae_with_bias(lm, site, 50.0)}
    with torch.no_grad():
        firing[site].W_enc.zero_()  # every latent at 50: a large, fixed edit of the site

    with intervene(lm.model, {site: feature_ablation(firing[site], [0, 1, 2])}):
        ablated = SAMPLING.complete(lm, PROMPTS)
    assert ablated != plain
    scores = AblationRun(lm, firing, PROMPTS, VaderReward(), SAMPLING).rewards({site: [0, 1, 2]})
    assert scores.shape == (len(PROMPTS),)


def test_ablation_table_without_related_features_says_so_and_checks_pairing(lm):
    site = "blocks.1.mlp.hook_post"
    saes = {site: _sae_with_bias(lm, site, 0.0)}
    table = _table(lm, saes, {site: []}, np.zeros(4))
    assert "no feature was classified" in table["note"] and "related" not in table
    with pytest.raises(IrmscopeError, match="pair up"):
        _table(lm, saes, {site: [1]}, np.zeros(3))


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


COMPLETIONS = [" great fun and", " was a bit slow", " made me laugh", " is not good at all"]


def _expected_reward(lm, values, edits=None) -> float:
    """Σ of E = Σ_t p(t)·v(t) over the positions that predict a completion token, measured directly."""
    total = 0.0
    with torch.no_grad(), intervene(lm.model, edits or {}):
        for prompt, completion in zip(PROMPTS, COMPLETIONS, strict=True):
            p = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = lm.tokenizer(completion, add_special_tokens=False)["input_ids"]
            logits = lm.model(input_ids=torch.tensor([p + c])).logits[0]
            total += float((logits.softmax(-1) @ values)[len(p) - 1 : len(p) + len(c) - 1].sum())
    return total


def test_reward_attribution_predicts_the_effect_of_ablating_each_feature(lm):
    """The first-order scores must match the true ablations: for each of 8 firing features, zero it and
    measure the drop in expected next-token reward directly."""
    site = "blocks.1.mlp.hook_post"
    sae = _sae_with_bias(lm, site, 0.5)
    with torch.no_grad():
        sae.W_dec.mul_(0.02)  # small edits, where a first-order estimate should hold
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    values = torch.randn(vocab, generator=torch.Generator().manual_seed(1))
    scores = attribute_reward_to_features(
        lm, {site: sae}, PROMPTS, COMPLETIONS, values.numpy(), progress=False
    )
    clean = _expected_reward(lm, values)
    drops = [clean - _expected_reward(lm, values, {site: feature_ablation(sae, [f])}) for f in range(8)]
    # small edits, so the estimates should match the true drops within a few percent (they do to about 1%;
    # counting the prompt's positions too would miss by about 60%)
    assert np.abs(drops).max() > 0
    assert np.abs(scores[site].numpy() - drops).max() < 0.05 * np.abs(drops).max()
    # padding must not matter: one text per batch gives the same scores as all four in one padded batch
    one_by_one = attribute_reward_to_features(
        lm, {site: sae}, PROMPTS, COMPLETIONS, values.numpy(), batch_size=1, progress=False
    )
    assert torch.allclose(one_by_one[site], scores[site], rtol=1e-3, atol=1e-5)
    # a second hooked site leaves the forward pass, and so the first site's scores, unchanged
    later = "blocks.2.mlp.hook_post"
    both = attribute_reward_to_features(
        lm, {site: sae, later: _sae_with_bias(lm, later, 0.5)}, PROMPTS, COMPLETIONS, values.numpy(),
        progress=False,
    )  # fmt: skip
    assert torch.allclose(both[site], scores[site], rtol=1e-3, atol=1e-5) and both[later].abs().sum() > 0


def test_select_by_attribution_takes_the_top_positive_scores_and_the_bottom_as_the_opposite():
    scores = {"a": torch.tensor([0.5, -2.0, 3.0, 0.0, 1.0, -0.1]), "b": torch.tensor([-1.0, -3.0])}
    chosen = select_by_attribution(scores, 2)
    assert chosen.features == {"a": [2, 4], "b": []} and chosen.opposite == {"a": [1, 5], "b": [0, 1]}
    with pytest.raises(IrmscopeError, match="0 or more"):
        select_by_attribution(scores, -1)


def test_ablation_table_reports_the_attributed_selection_its_controls_and_the_share_of_gain(lm):
    site = "blocks.1.mlp.hook_post"
    _, before = _unablated_rewards(lm)
    silent = {site: _sae_with_bias(lm, site, -1e6)}
    selection = AttributedSelection(features={site: [0, 1]}, opposite={site: [2, 3]})

    def table_for(saes, base):  # every call ablates the same selection on the same prompts
        return _table(lm, saes, {site: []}, before, attributed=selection, base=base)

    table = table_for(silent, before - 1.0)
    assert "related" not in table and table["attributed"]["features"] == {site: [0, 1]}
    assert table["attributed_opposite"]["features"] == {site: [2, 3]}
    assert len(table["attributed_random"]["features"][site]) == 2
    for name in ("attributed", "attributed_opposite", "attributed_random"):  # silent features: nothing moves
        assert table[name]["change"]["value"] == 0.0 and table[name]["gain_removed"]["value"] == 0.0
    firing = {site: _sae_with_bias(lm, site, 50.0)}
    with torch.no_grad():
        firing[site].W_enc.zero_()  # every latent at 50: a large, fixed edit that changes the text
    table = table_for(firing, before - 1.0)
    for name in ("attributed", "attributed_opposite", "attributed_random"):  # a gain of exactly 1 per prompt
        assert table[name]["gain_removed"]["value"] == pytest.approx(-table[name]["change"]["value"])
    noisy_base = before + np.array([1.0, -1.0, 1.0, -1.0])  # a gain whose interval straddles 0
    table = table_for(silent, noisy_base)
    assert "not above 0" in table["gain_note"] and "gain_removed" not in table["attributed"]
    with pytest.raises(IrmscopeError, match="'base' rewards"):
        _table(lm, silent, {site: [0]}, before, base=before[:2])


def test_paired_ratio_ci_covers_the_ratio_of_means_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    gain = rng.normal(2.0, 1.0, 300)
    removed = 0.4 * gain + rng.normal(0.0, 0.3, 300)
    share = paired_ratio_ci(removed, gain)
    assert share.value == pytest.approx(removed.mean() / gain.mean())
    assert share.low < 0.4 < share.high and share.high - share.low < 0.1
    with pytest.raises(IrmscopeError, match="paired"):
        paired_ratio_ci(removed, gain[:10])
    with pytest.raises(IrmscopeError, match="zero"):
        paired_ratio_ci([1.0, 2.0], [1.0, -1.0])


def test_table6_reviews_differ_in_content_from_the_sae_and_feature_texts_and_from_prompts(tmp_path):
    """A source that holds every review twice (once with stray whitespace): the reviews past the SAE
    corpus in the seeded order hold copies of SAE and feature-picking texts; Table 6's set keeps none of
    them, none that begins with a prompt, repeats none, and is as large as asked."""
    unique = [f"review number {i} says the film was {'good' if i % 2 else 'bad'}" for i in range(80)]
    source = tmp_path / "reviews.csv"
    source.write_text("text\n" + "\n".join(f'"{t}"\n"  {t} "' for t in unique) + "\n")
    sizes = ["activations.n_texts=20", "activations.n_held_out_texts=10", "activations.n_table6_texts=15"]
    config = load_config("smoke", overrides=[f"data.source={source}", *sizes])
    picked = {t.strip() for part in ("train", "held_out") for t in sae_corpus(config)[part]}
    past = [t.strip() for t in load_reviews(str(source), seed=config.seed)["text"]][30:]
    assert picked & set(past)  # taken by index alone, Table 6 would repeat SAE and feature-picking texts

    first = sae_corpus(config)["table6"][0]
    corpus = sae_corpus(config, prompts=[first.strip()[:-3], "unrelated prompt"])
    table6 = [t.strip() for t in corpus["table6"]]
    assert len(table6) == len(set(table6)) == 15
    assert not set(table6) & {t.strip() for t in corpus["train"] + corpus["held_out"]}
    assert first.strip() not in table6  # it begins with a prompt
    assert sae_corpus(config, prompts=["review number"])["table6"] == []  # every review begins so
