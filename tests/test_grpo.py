"""GRPO: group z-scores, complete groups from a chunk stream, and a known-answer bandit."""

import dataclasses

import numpy as np
import pytest
import torch

from algorithms.grpo import GRPO, GRPOConfig, group_advantages
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPOBatch
from buffers.groups import complete_groups
from buffers.records import EpisodeEnd
from tests.chunks import bandit_chunk, counting_chunk, make_chunk


def test_group_advantages_are_z_scores_and_uniform_groups_are_dropped():
    returns = np.array([[1.0, 0.0, 0.0, 1.0], [3.0, 3.0, 3.0, 3.0], [0.0, 1.0, 2.0, 3.0]])
    adv, kept = group_advantages(returns)
    np.testing.assert_allclose(adv[0], [1, -1, -1, 1])
    np.testing.assert_allclose(adv[2], (returns[2] - 1.5) / np.std(returns[2]))
    assert kept.tolist() == [True, False, True] and not adv[1].any()


def test_complete_groups_wait_for_every_chunk_of_every_episode():
    rng = np.random.default_rng(0)

    def ep(name, parts, group="g/1"):
        return [dataclasses_replace(make_chunk(rng, T=4, episode_id=name, chunk_seq=i,
                                               end=EpisodeEnd("failure") if i == parts - 1
                                               else None), group) for i in range(parts)]

    a, b, c = ep("a", 2), ep("b", 1), ep("c", 3)
    groups, rest = complete_groups(a + b + c[:2], group_size=3)  # c is still running
    assert groups == [] and len(rest) == 5
    groups, rest = complete_groups(a + b + c, group_size=3)
    assert len(groups) == 1 and [len(e) for e in groups[0]] == [2, 1, 3] and rest == []


def dataclasses_replace(chunk, group):
    return dataclasses.replace(chunk, group=group)


def bandit_groups(policy, rng, groups=16, size=8):
    """Each group: one context (±1), `size` sampled chunks; return 1 when the chunk's sign
    matches the context."""
    chunks = []
    for g in range(groups):
        ctx = rng.choice([-1.0, 1.0])
        chunks += [bandit_chunk(policy, ctx, f"{g}-{e}", 1.0, 0.0, group=f"b/{g}")
                   for e in range(size)]
    return chunks, [c.reward for c in chunks]


def test_grpo_solves_a_contextual_bandit_and_stays_near_its_reference():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=32,
                                      init_std=0.5))
    grpo = GRPO(policy, GRPOConfig(group_size=8, lr=3e-3, minibatch=64, kl_coef=0.001))
    first = np.mean([r[-1] for r in bandit_groups(policy, rng)[1]])
    trained = []  # metrics of updates that had a mixed group (solved groups carry no signal)
    for _ in range(25):
        batch = grpo.prepare(*bandit_groups(policy, rng))
        metrics = grpo.update(batch)
        if len(batch):
            trained.append(metrics)
    final = np.mean([r[-1] for r in bandit_groups(policy, rng)[1]])
    assert final > 0.9 > first
    assert trained[-1]["kl_ref"] > 0


@pytest.mark.parametrize("kl_coef", [0.0, 1.0])
def test_kl_penalty_alone_pulls_the_policy_back_to_its_reference(kl_coef):
    """With every advantage 0 the clipped surrogate has no gradient, so whatever moves the
    policy is the KL term: a policy shifted away from its reference moves back (each mean
    number by about lr, Adam's first step), and with β = 0 it does not move at all."""
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    grpo = GRPO(policy, GRPOConfig(group_size=2, kl_coef=kl_coef, lr=1e-2, epochs=1,
                                   minibatch=64))
    with torch.no_grad():
        policy.actor[-1].bias.add_(0.5)  # after GRPO froze its reference
    obs = torch.randn(16, 3)
    chunk = grpo.reference.mean_chunk(obs).detach().reshape(16, 2, 1)
    with torch.no_grad():
        logp = policy.log_prob(obs, chunk)
    zero = torch.zeros(16)
    gap_before = (policy.mean_chunk(obs) - grpo.reference.mean_chunk(obs)).detach()
    metrics = grpo.update(PPOBatch(obs, chunk, logp, logp, advantage=zero, value_target=zero))
    gap_after = (policy.mean_chunk(obs) - grpo.reference.mean_chunk(obs)).detach()
    assert metrics["kl_ref"] > 0 and metrics["policy_loss"] == 0.0
    if kl_coef == 0.0:
        torch.testing.assert_close(gap_after, gap_before)
    else:
        assert bool((gap_after < gap_before - 0.005).all()), (gap_before, gap_after)


def test_prepare_gives_each_call_its_own_first_observation_and_its_episodes_advantage():
    """Two episodes of one group, T = 5 and H = 2: calls start at obs[0], obs[2], obs[4]
    (each observation differs), and every call of the better episode gets z-score +1."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    grpo = GRPO(policy, GRPOConfig(group_size=2))
    won = counting_chunk(5, 2, EpisodeEnd("success"), np.array([0, 0, 0, 0, 1]), "a", "g/1")
    lost = counting_chunk(5, 2, EpisodeEnd("failure"), None, "b", "g/1")
    batch = grpo.prepare([won, lost], [won.reward, lost.reward])
    np.testing.assert_array_equal(batch.obs[:, 0].numpy(), [0, 2, 4, 0, 2, 4])
    np.testing.assert_allclose(batch.advantage.numpy(), [1, 1, 1, -1, -1, -1], rtol=1e-5)


def test_grpo_refuses_groups_of_one():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
