"""Known answers for chunk PPO, in one process with no robots."""

import numpy as np
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig, normalized
from tests.chunks import bandit_chunk


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
