"""The fast exact sampler that replaces ``torch.multinomial(weights, 1)`` while models generate."""

import numpy as np
import pytest
import torch
from scipy import stats

from irmscope.models.categorical import fast_multinomial, inverse_cdf_sample


def test_inverse_cdf_draws_each_row_from_its_own_distribution():
    """Frequencies match the weights (chi-square), weights need not sum to 1, a zero weight is never drawn,
    and each row keeps its own distribution across the blocks the rows are split into."""
    first = torch.tensor([0.0, 1.0, 2.0, 0.0, 7.0])  # unnormalised, zeros at both ends and inside
    second = torch.tensor([5.0, 0.0, 0.0, 5.0, 0.0])
    weights = torch.stack([first, second] * 40)  # 80 rows: more than one block
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([inverse_cdf_sample(weights, generator) for _ in range(500)], 1)
    assert draws.shape == (80, 500) and draws.dtype == torch.int64
    for row, expected in ((0, first), (1, second)):
        counts = np.bincount(draws[row::2].flatten().numpy(), minlength=5)
        assert counts[expected.numpy() == 0].sum() == 0
        support = expected.numpy() > 0
        p = stats.chisquare(counts[support], expected.numpy()[support] / expected.sum().item() * counts.sum())
        assert p.pvalue > 1e-3


def test_a_seeded_draw_repeats_and_a_one_hot_row_is_exact():
    weights = torch.softmax(torch.randn(64, 1000), -1)
    a = inverse_cdf_sample(weights, torch.Generator().manual_seed(3))
    b = inverse_cdf_sample(weights, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    one_hot = torch.zeros(3, 10)
    one_hot[torch.arange(3), torch.tensor([0, 4, 9])] = 1.0
    assert inverse_cdf_sample(one_hot).flatten().tolist() == [0, 4, 9]


def test_fast_multinomial_swaps_in_only_what_it_handles_and_restores_torch():
    original = torch.multinomial
    weights = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    with fast_multinomial():
        assert torch.multinomial is not original
        torch.manual_seed(0)
        drawn = torch.multinomial(weights, 1)
        torch.manual_seed(0)
        assert torch.equal(drawn, inverse_cdf_sample(weights))  # the global generator, as generate seeds it
        assert torch.multinomial(weights, 2).shape == (2, 2)  # two samples: torch's own function
        with pytest.raises(RuntimeError):  # bad weights get torch's own error
            torch.multinomial(torch.tensor([[0.5, -1.0]]), 1)
    assert torch.multinomial is original
    with pytest.raises(ValueError), fast_multinomial():
        raise ValueError("restored even when the block fails")
    assert torch.multinomial is original


def test_groups_share_the_random_numbers_the_first_group_would_draw_alone():
    """Each group that copies a 40-row batch (more than one block; blocks straddle the groups) draws what
    that batch draws alone with the same seed; rows that do not split evenly are refused."""
    alone_weights = torch.softmax(torch.randn(40, 500), -1)
    groups = [alone_weights, torch.softmax(torch.randn(40, 500), -1), alone_weights]
    drawn = inverse_cdf_sample(torch.cat(groups), torch.Generator().manual_seed(5), groups=3)
    alone = inverse_cdf_sample(alone_weights, torch.Generator().manual_seed(5))
    assert torch.equal(drawn[:40], alone) and torch.equal(drawn[80:], alone)
    with pytest.raises(ValueError, match="equal groups"):
        inverse_cdf_sample(torch.ones(5, 3), groups=2)
    with pytest.raises(ValueError, match="common random numbers"), fast_multinomial(groups=2):
        torch.multinomial(torch.ones(4, 3), 2)


@pytest.mark.parametrize(
    "bad",
    [
        [[0.5, float("nan")]],
        [[0.5, float("inf")]],
        [[0.5, -1e-9]],  # a negative weight whose row still sums positive
        [[0.2, 0.8], [0.0, 0.0]],  # a row of zeros
        [[float("inf"), -float("inf")]],
    ],
)
def test_weights_the_fast_draw_cannot_take_go_to_torch(bad):
    from irmscope.models.categorical import _handles

    assert not _handles(torch.tensor(bad), 1, None)
    assert _handles(torch.tensor([[0.0, 1.0], [0.3, 0.7]]), 1, None)
    assert _handles(torch.zeros(0, 4), 1, None) and inverse_cdf_sample(torch.zeros(0, 4)).shape == (0, 1)
