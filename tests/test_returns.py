import numpy as np
import pytest
import torch

from algorithms.ppo import clipped_policy_loss
from algorithms.returns import chunk_rewards, gae


def plain_gae_per_step(rewards, values_per_step, next_value, gamma, lam, terminal):
    """Textbook GAE over env steps, used as the reference when H = 1."""
    adv, last = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        nv = (0.0 if terminal else next_value) if t == len(rewards) - 1 else values_per_step[t + 1]
        delta = rewards[t] + gamma * nv - values_per_step[t]
        last = delta + gamma * lam * (last if t < len(rewards) - 1 else 0.0)
        adv[t] = last
    return adv


@pytest.mark.parametrize("terminal", [True, False])
def test_gae_with_horizon_one_matches_textbook(terminal):
    rng = np.random.default_rng(0)
    r, v = rng.standard_normal(13), rng.standard_normal(13)
    cr, disc = chunk_rewards(r, horizon=1, gamma=0.97)
    adv, ret = gae(cr, v, 0.5, disc, terminal, lam=0.9)
    np.testing.assert_allclose(adv, plain_gae_per_step(r, v, 0.5, 0.97, 0.9, terminal))
    np.testing.assert_allclose(ret, adv + v)


def test_chunk_rewards_discount_inside_each_call_and_short_last_call():
    r = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0])
    cr, disc = chunk_rewards(r, horizon=4, gamma=0.5)
    np.testing.assert_allclose(cr, [1 + 0.5 + 0.25 + 0.125, 2 + 1.0])
    np.testing.assert_allclose(disc, [0.5**4, 0.5**2])


def test_gae_over_chunks_golden():
    """Two calls of H = 2, gamma 0.9, lam 0.8, bootstrapped: numbers worked by hand."""
    cr, disc = chunk_rewards(np.array([1.0, 0.0, 0.0, 1.0]), horizon=2, gamma=0.9)
    adv, _ = gae(cr, np.array([0.5, 0.2]), 1.0, disc, terminal=False, lam=0.8)
    d1 = 0.9 + 0.81 * 1.0 - 0.2
    d0 = 1.0 + 0.81 * 0.2 - 0.5
    np.testing.assert_allclose(adv, [d0 + 0.81 * 0.8 * d1, d1])


def test_lambda_one_gives_discounted_return_minus_value():
    rng = np.random.default_rng(1)
    r = rng.standard_normal(12)
    cr, disc = chunk_rewards(r, horizon=3, gamma=0.99)
    v = rng.standard_normal(4)
    _, ret = gae(cr, v, 0.0, disc, terminal=True, lam=1.0)
    assert ret[0] == pytest.approx(sum(0.99**t * r[t] for t in range(12)))


def test_clipped_loss_is_plain_ppo_on_fresh_data_and_weights_stale_data():
    logp = torch.tensor([0.0, 0.5, -0.5])
    old = torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -1.0])
    fresh = clipped_policy_loss(logp, old, old, adv, clip=0.2, is_clip=2.0)
    ratio = logp.exp()
    expected = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    assert fresh.item() == pytest.approx(expected.item())
    stale = clipped_policy_loss(logp, old, old - 5.0, adv, clip=0.2, is_clip=2.0)
    assert stale.item() == pytest.approx(2.0 * expected.item())  # weight truncated at is_clip
