"""Known answers for chunk PPO, in one process with no robots."""

import numpy as np
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig
from buffers.records import EpisodeEnd, RolloutChunk


def bandit_chunks(policy, rng, n=256):
    """One-call episodes: the context is ±1 in obs[0]; reward is +1 when every action of the
    chunk has the context's sign, -1 otherwise (a contextual bandit with chunk actions)."""
    chunks, rewards = [], []
    for i in range(n):
        ctx = rng.choice([-1.0, 1.0])
        obs = np.zeros(4, np.float32)
        obs[0] = ctx
        chunk, logp, value = policy.act(obs)
        r = 1.0 if np.all(np.sign(chunk) == ctx) else -1.0
        chunks.append(RolloutChunk(
            robot_id="b", embodiment="bandit", task="bandit", episode_id=str(i), chunk_seq=0,
            policy_version=0, wall_time=0.0, horizon=2, obs={"state": np.tile(obs, (3, 1))},
            action=chunk, policy_action=chunk[None], logp=np.array([logp], np.float32),
            value=np.array([value], np.float32), reward=np.array([0.0, r], np.float32),
            success=np.array([False, r > 0]), intervened=np.zeros(2, bool),
            episode_end=EpisodeEnd("success" if r > 0 else "failure")))
        rewards.append(chunks[-1].reward)
    return chunks, rewards


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
