"""The model-diffing crosscoder (issue 20, "what changed inside"): on synthetic activations where the tuned
model writes a few directions the base model never does, the latents with the largest decoder change are
those directions; two identical models change nothing; the weights round-trip through safetensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irmscope.errors import IrmscopeError
from irmscope.sae.crosscoder import (
    MODELS,
    CrosscoderConfig,
    load_crosscoder,
    save_crosscoder,
    train_crosscoder,
)

N_SHARED, N_ONLY, WIDTH = 48, 4, 32


@pytest.fixture(scope="module")
def planted():
    """Sparse codes over 48 shared unit directions both models write and 4 only the tuned model writes."""
    g = torch.Generator().manual_seed(1)
    directions = torch.randn(N_SHARED + N_ONLY, WIDTH, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)
    n = 20_000
    codes = (torch.rand(n, N_SHARED + N_ONLY, generator=g) < 0.05).float()
    codes = codes * torch.rand(n, N_SHARED + N_ONLY, generator=g) * 3
    base = codes[:, :N_SHARED] @ directions[:N_SHARED]
    tuned = codes @ directions
    pairs = torch.stack([base, tuned], 1)  # the order of MODELS
    coder, log = train_crosscoder(pairs, CrosscoderConfig(expansion=4, k=8, epochs=20), seed=0)
    return coder, log, directions[N_SHARED:], pairs


def test_models_are_base_then_tuned():
    assert MODELS == ("base", "tuned")


def test_the_most_changed_latents_are_the_directions_only_the_tuned_model_writes(planted):
    coder, log, only, _ = planted
    assert max(log.fvu.values()) < 0.1
    changed = coder.decoder_change(model=1, reference=0)
    top = np.argsort(-changed)[:3]
    tuned_rows = coder.W_dec.detach()[torch.from_numpy(top), 1]
    cosine = torch.nn.functional.cosine_similarity(tuned_rows[:, None], only[None], dim=-1)
    # each of the top three writes one planted direction, and they are three different ones
    assert (cosine.max(1).values > 0.9).all()
    assert len(set(cosine.argmax(1).tolist())) == 3
    assert (coder.relative_decoder_norm(1)[top] > 0.9).all()
    # the shared majority stays shared
    assert np.median(coder.relative_decoder_norm(1)) == pytest.approx(0.5, abs=0.05)


def test_identical_models_leave_every_latent_shared_and_unchanged():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3_000, WIDTH, generator=g)
    coder, _ = train_crosscoder(torch.stack([x, x], 1), CrosscoderConfig(expansion=2, k=4, epochs=2))
    assert np.allclose(coder.relative_decoder_norm(1), 0.5)
    assert np.allclose(coder.decoder_change(1, 0), 0.0)


def test_the_crosscoder_round_trips_through_safetensors(planted, tmp_path):
    coder, _, _, pairs = planted
    save_crosscoder(coder, tmp_path / "cc", {"site": "blocks.3.hook_resid_post"})
    again = load_crosscoder(tmp_path / "cc")
    assert torch.equal(again(pairs[:64])[0], coder(pairs[:64])[0])
    assert torch.equal(again.scale, coder.scale)
    with pytest.raises(IrmscopeError, match="holds no crosscoder"):
        load_crosscoder(tmp_path)


def test_bad_inputs_are_refused():
    with pytest.raises(IrmscopeError, match="k must be"):
        CrosscoderConfig(k=0)
    with pytest.raises(IrmscopeError, match="NaN"):
        train_crosscoder(torch.full((10, 2, 4), float("nan")), CrosscoderConfig(expansion=1, k=2))
    with pytest.raises(IrmscopeError, match="tokens, models, width"):
        train_crosscoder(torch.zeros(10, 4), CrosscoderConfig())
