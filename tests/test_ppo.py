"""Known answers for chunk PPO, in one process with no robots."""

import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig, normalized
from buffers.records import EpisodeEnd
from tests.chunks import bandit_chunk, counting_chunk


def bandit_chunks(policy, rng, n=256):
    """One-call episodes: the context is ±1 in obs[0]; reward is +1 when every action of the
    chunk has the context's sign, -1 otherwise (a contextual bandit with chunk actions)."""
    chunks = [bandit_chunk(policy, rng.choice([-1.0, 1.0]), str(i), 1.0, -1.0)
              for i in range(n)]
    return chunks, [c.reward for c in chunks]


def test_ppo_solves_a_contextual_bandit():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=32,
                                      init_std=0.5))
    ppo = PPO(policy, PPOConfig(actor_lr=3e-3, critic_lr=3e-3, minibatch=64, epochs=4))

    def accuracy():
        right = 0
        for ctx in (-1.0, 1.0):
            obs = np.array([ctx, 0, 0, 0], np.float32)
            right += np.all(np.sign(policy.act(obs, deterministic=True)[0]) == ctx)
        return right / 2

    first = float(np.mean([r[-1] for r in bandit_chunks(policy, rng)[1]]))
    for _ in range(30):
        chunks, rewards = bandit_chunks(policy, rng)
        ppo.update(ppo.prepare(chunks, rewards))
    chunks, rewards = bandit_chunks(policy, rng)
    final = float(np.mean([r[-1] for r in rewards]))
    assert accuracy() == 1.0
    assert final > 0.9 > first


def test_advantages_are_normalised_within_each_task():
    adv = torch.tensor([1.0, 2.0, 3.0, 100.0, 300.0])
    task = torch.tensor([0, 0, 0, 1, 1])
    out = normalized(adv, task)
    for t in (0, 1):
        part = out[task == t]
        assert abs(float(part.mean())) < 1e-6 and abs(float(part.std(unbiased=False)) - 1) < 1e-4
    assert torch.allclose(normalized(adv, torch.zeros(5, dtype=torch.long)), normalized(adv))


def ppo_with_known_critic() -> PPO:
    """PPO (γ = λ = 0.5) whose critic reads V(s) = s[0]: on a `counting_chunk` V(obs[t]) = t,
    so advantages can be worked by hand. The critic is swapped for one linear layer because an
    MLP cannot hold an exact, readable value function; `prepare` is what is under test."""
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    ppo = PPO(policy, PPOConfig(gamma=0.5, lam=0.5))
    ppo.critic = torch.nn.Linear(3, 1)
    with torch.no_grad():
        ppo.critic.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        ppo.critic.bias.zero_()
    return ppo


# Two calls of H = 2, rewards [1, 0, 0, 1], γ = λ = 0.5, V(obs[t]) = t. Per call: reward
# R = [1 + 0.5·0, 0 + 0.5·1] = [1, 0.5], discount 0.5² = 0.25, values V(obs[0]), V(obs[2]) = [0, 2].
#   truncated: δ1 = 0.5 + 0.25·V(obs[4]) - 2 = 0.5 + 1 - 2 = -0.5            A1 = -0.5
#   terminal:  δ1 = 0.5 + 0 - 2 = -1.5 (nothing follows a terminal state)   A1 = -1.5
#   both:      δ0 = 1 + 0.25·2 - 0 = 1.5;  A0 = δ0 + 0.25·0.5·A1
# Value targets are A + V.
@pytest.mark.parametrize("outcome, adv, target", [
    ("truncated", [1.5 - 0.125 * 0.5, -0.5], [1.4375, 1.5]),
    ("failure", [1.5 - 0.125 * 1.5, -1.5], [1.3125, 0.5]),
    ("success", [1.5 - 0.125 * 1.5, -1.5], [1.3125, 0.5]),
])
def test_prepare_bootstraps_truncated_episodes_and_not_terminal_ones(outcome, adv, target):
    ppo = ppo_with_known_critic()
    chunk = counting_chunk(T=4, H=2, end=EpisodeEnd(outcome), reward=np.array([1, 0, 0, 1]))
    batch = ppo.prepare([chunk], [chunk.reward])
    np.testing.assert_allclose(batch.advantage.numpy(), adv, rtol=1e-6)
    np.testing.assert_allclose(batch.value_target.numpy(), target, rtol=1e-6)


def test_prepare_reads_each_calls_first_observation():
    """Calls of H = 2 over T = 5 steps start at obs[0], obs[2], obs[4] (the last call is
    short) and bootstrap from obs[5]. Zero rewards, truncated, V(obs[t]) = t, discounts
    [0.25, 0.25, 0.5]:  A2 = 0.5·5 - 4 = -1.5;  A1 = 0.25·4 - 2 + 0.125·A2 = -1.1875;
    A0 = 0.25·2 - 0 + 0.125·A1 = 0.3515625."""
    ppo = ppo_with_known_critic()
    chunk = counting_chunk(T=5, H=2, end=EpisodeEnd("truncated"))
    batch = ppo.prepare([chunk], [chunk.reward])
    np.testing.assert_array_equal(batch.obs[:, 0].numpy(), [0, 2, 4])
    np.testing.assert_allclose(batch.advantage.numpy(), [0.3515625, -1.1875, -1.5], rtol=1e-6)
    first_obs = torch.as_tensor(chunk.obs["state"][[0, 2, 4]])
    with torch.no_grad():  # the proximal log-prob is that of each call's own observation
        want = ppo.policy.log_prob(first_obs, torch.as_tensor(chunk.policy_action))
    torch.testing.assert_close(batch.prox_logp, want)
