"""GRPO: group z-scores, complete groups from a chunk stream, and a known-answer bandit."""

import dataclasses

import numpy as np
import pytest
import torch

from algorithms.grpo import GRPO, GRPOConfig, group_advantages, grpo_policy_loss, k3_kl
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPOBatch
from buffers.codec import encode_chunk
from buffers.groups import complete_groups
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from learner.loop import Learner, LearnerConfig
from rewards.env import EnvReward
from tests.chunks import bandit_chunk, counting_chunk, make_chunk
from tests.fakes import ListWeights


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
    grpo = GRPO(policy, GRPOConfig(group_size=2, min_groups=1))
    won = counting_chunk(5, 2, EpisodeEnd("success"), np.array([0, 0, 0, 0, 1]), "a", "g/1")
    lost = counting_chunk(5, 2, EpisodeEnd("failure"), None, "b", "g/1")
    batch = grpo.prepare([won, lost], [won.reward, lost.reward])
    np.testing.assert_array_equal(batch.obs[:, 0].numpy(), [0, 2, 4, 0, 2, 4])
    np.testing.assert_allclose(batch.advantage.numpy(), [1, 1, 1, -1, -1, -1], rtol=1e-5)


def test_grpo_refuses_groups_of_one():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)


def test_clip_is_asymmetric_dapo_bounds():
    """Ratios 1.5 and 0.5 against advantages ±1 (no importance weight): the gain from raising a
    good chunk stops at 1 + 0.28, the gain from lowering a bad one at 1 - 0.2."""
    logp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))
    zero = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    rows = [float(grpo_policy_loss(logp[i:i + 1], zero[:1], zero[:1], adv[i:i + 1], 0.2, 0.28,
                                   2.0)) for i in range(4)]
    # +adv: min(1.5, 1.28) = 1.28; -adv at 0.5: min(-0.5, -0.8) = -0.8; unclipped otherwise
    np.testing.assert_allclose(rows, [-1.28, 0.8, 1.5, -0.5], rtol=1e-6)
    assert GRPOConfig().clip_low == 0.2 and GRPOConfig().clip_high == 0.28


def test_every_episode_weighs_the_same_whatever_its_length():
    """A group of a 1-call success (z +1) and a 3-call failure (z -1): at ratio 1 the per-row
    mean would be -(1 - 3) / 4 = 0.5 (the long failure dominates); per episode it is 0."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    grpo = GRPO(policy, GRPOConfig(group_size=2, min_groups=1))
    won = counting_chunk(2, 2, EpisodeEnd("success"), np.array([0, 1]), "a", "g/1")
    lost = counting_chunk(6, 2, EpisodeEnd("failure"), None, "b", "g/1")
    batch = grpo.prepare([won, lost], [won.reward, lost.reward])
    np.testing.assert_allclose(batch.weight.numpy(), [1, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    p = batch.prox_logp
    loss = grpo_policy_loss(p, p, p, batch.advantage, 0.2, 0.28, 2.0, batch.weight)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(grpo_policy_loss(p, p, p, batch.advantage, 0.2, 0.28, 2.0)) == pytest.approx(0.5)


def test_uninformative_groups_are_not_trained_on_and_informative_ones_are_held():
    """min_groups 2: one mixed and one all-failure group give no batch; the next mixed group
    completes it, with the informative share 2 of 3 groups seen."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    grpo = GRPO(policy, GRPOConfig(group_size=2, min_groups=2))

    def group(name, outcomes):
        return [counting_chunk(4, 2, EpisodeEnd(o), np.array([0, 0, 0, o == "success"]),
                               f"{name}{i}", name) for i, o in enumerate(outcomes)]

    first = group("g1", ["success", "failure"]) + group("g2", ["failure", "failure"])
    batch = grpo.prepare(first, [c.reward for c in first])
    assert len(batch) == 0 and grpo.holding() == {"groups_held": 1.0, "groups_seen": 2.0}
    assert grpo.update(batch)["policy_loss"] == 0.0
    second = group("g3", ["failure", "success"])
    batch = grpo.prepare(second, [c.reward for c in second])
    assert len(batch) == 8  # 2 groups x 2 episodes x 2 calls
    m = grpo.update(batch)
    assert m["groups_used"] == 2.0 and m["informative_share"] == pytest.approx(2 / 3)
    assert grpo.holding() == {"groups_held": 0.0, "groups_seen": 0.0}


def test_learner_holds_batches_of_uninformative_groups_without_publishing(tmp_path):
    """Through the real learner and buffer: all-failure groups make no update and no new
    version; once a mixed group arrives, one update trains on the held data."""
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=8))
    weights = ListWeights()
    with ReplayBuffer(tmp_path / "buf") as buf:
        learner = Learner(policy, GRPO(policy, GRPOConfig(group_size=2, min_groups=1)),
                          EnvReward(), buf, weights,
                          LearnerConfig(batch_calls=1, max_wait_s=0.5), tmp_path / "ckpt")
        lost = [bandit_chunk(policy, 1.0, f"f{i}", 0.0, 0.0, group="f") for i in range(2)]
        lost = [dataclasses.replace(c, success=np.zeros(2, bool)) for c in lost]
        buf.insert([encode_chunk(c) for c in lost])
        m = learner.step()
        assert m["batch_held"] == 1.0 and m["groups_seen"] == 1.0 and learner.updates == 0
        assert weights.published == [] and learner.policy_version == 0
        mixed = [bandit_chunk(policy, 1.0, f"m{i}", 1.0, 0.0, group="m") for i in range(2)]
        mixed = [dataclasses.replace(c, success=np.array([False, s]))
                 for c, s in zip(mixed, [True, False], strict=True)]
        buf.insert([encode_chunk(c) for c in mixed])
        m = learner.step()
        assert m["batch_held"] == 0.0 and m["batch_calls"] == 2 and learner.updates == 1
        assert m["informative_share"] == 0.5 and learner.policy_version == 1  # 1 of 2 seen


def test_kl_is_off_by_default_and_k3_estimates_the_gaussian_kl():
    """k3 over samples of π = N(0.3, 1) against π_ref = N(0, 1) estimates KL = 0.3² / 2."""
    assert GRPOConfig().kl_coef == 0.0
    torch.manual_seed(0)
    pi, ref = torch.distributions.Normal(0.3, 1.0), torch.distributions.Normal(0.0, 1.0)
    x = pi.sample((200_000,))
    assert float(k3_kl(pi.log_prob(x), ref.log_prob(x))) == pytest.approx(0.045, rel=0.05)
    assert float(k3_kl(ref.log_prob(x), ref.log_prob(x))) == 0.0
