"""GRPO: group z-scores, complete groups from a chunk stream, and a known-answer bandit."""

import dataclasses

import numpy as np
import pytest
import torch

from algorithms.grpo import GRPO, GRPOConfig, group_advantages
from algorithms.policy import ChunkPolicy, PolicyConfig
from buffers.groups import complete_groups
from buffers.records import EpisodeEnd
from tests.chunks import bandit_chunk, make_chunk


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


def test_grpo_refuses_groups_of_one():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
