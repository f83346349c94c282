"""DPO's pairs from a reward model (issue 15: preferences from the world model alone): the world
model learns without the fleet's success labels, the pairs follow the model's ranking with a
margin, and flipping every success flag, outcome and env reward changes no pair."""

import dataclasses

import numpy as np
import pytest
import torch

from algorithms.dpo import DPO, DPOConfig, ranked_pairs
from algorithms.policy import ChunkPolicy, PolicyConfig
from buffers.codec import encode_chunk
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from rewards.trainer import RewardTrainer
from rewards.world_model import WorldModelConfig, WorldModelReward
from tests.chunks import counting_chunk
from tests.toy_reach import reach_episodes

SMALL = {"hidden": 64, "latent": 16, "batch": 256, "labels": "self"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flipped(episode, rng):
    """The same episode with every success flag, outcome and env reward changed."""
    out = []
    for c in episode:
        end = c.episode_end
        if end is not None:
            end = EpisodeEnd("truncated" if end.outcome == "success" else "success")
        out.append(dataclasses.replace(c, success=~np.asarray(c.success), episode_end=end,
                                       reward=rng.normal(0, 5, len(c.action)).astype(np.float32)))
    return out


def demos(n):
    return [ep for ep in reach_episodes(7, 2 * n)[0::2]]  # the successful ones


def total(model, episode):
    return float(sum(model.score(c).sum() for c in episode))


class Published:
    def __init__(self):
        self.got = []

    def publish(self, version, state):
        self.got.append((version, state))


def test_self_labelled_world_model_never_reads_the_fleets_outcomes(tmp_path):
    """Two trainers read the same fleet episodes from real buffers, one with every success flag,
    outcome and env reward flipped: they publish the same weights, and the model still ranks
    held-out successes above failures (it learned from the demos and its own success head)."""
    rng = np.random.default_rng(0)
    fleet = reach_episodes(0, 24)
    weights = []
    for name, episodes in (("true", fleet), ("flipped", [flipped(ep, rng) for ep in fleet])):
        sink = Published()
        with ReplayBuffer(tmp_path / name) as buf:
            buf.insert([encode_chunk(c) for ep in episodes for c in ep])
            model = WorldModelReward(WorldModelConfig(**SMALL, fit_steps=150, min_episodes=4))
            trainer = RewardTrainer(model, buf, sink, [c for ep in demos(8) for c in ep])
            assert trainer.step() and trainer.step()  # the second fit uses its own labels
        assert trainer.demos == 8 and 0 < trainer.last["self_success"] < 1, trainer.last
        weights.append(sink.got[-1][1])
    for k in weights[0]:
        np.testing.assert_array_equal(weights[0][k], weights[1][k], err_msg=k)
    held_out = reach_episodes(3, 16)
    wins = [total(model, ep) for ep in held_out[0::2]]
    losses = [total(model, ep) for ep in held_out[1::2]]
    assert np.mean(wins) > np.mean(losses) + 1.0, (wins, losses)


def test_the_outcome_labelled_model_does_read_them():
    """The check above can fail: with labels=outcome the same flip changes the weights."""
    rng = np.random.default_rng(0)
    fleet = reach_episodes(0, 8)
    a, b = (WorldModelReward(WorldModelConfig(**{**SMALL, "labels": "outcome"}))
            for _ in range(2))
    a.fit(fleet, steps=5)
    b.fit([flipped(ep, rng) for ep in fleet], steps=5)
    assert not np.array_equal(a.weights()["success.4.weight"], b.weights()["success.4.weight"])


def test_ranked_pairs_follow_the_scores_with_a_margin():
    assert ranked_pairs([3.0, 1.0, 2.5, 1.2], 0.4) == [(0, 2), (0, 3), (0, 1), (2, 3), (2, 1)]
    assert ranked_pairs([3.0, 1.0, 2.5, 1.2], 1.5) == [(0, 3), (0, 1)]
    assert ranked_pairs([1.0, 1.0], 0.0) == []  # a tie is never a pair


def group(rewards, outcomes, name="g"):
    """One group of counting episodes (4 steps, H 2) with the given per-step rewards."""
    return [counting_chunk(4, 2, EpisodeEnd(o), np.full(4, r), f"{name}{i}", name)
            for i, (r, o) in enumerate(zip(rewards, outcomes, strict=True))]


def test_reward_model_pairs_ignore_outcomes_and_log_agreement():
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    config = DPOConfig(group_size=4, set_pairs=1, held_out_every=0, pairs="reward_model",
                       margin=1.0)
    # summed scores 4, 1.2, 2, 1.4 (the model's), outcomes that disagree with them
    chunks = group([1.0, 0.3, 0.5, 0.35], ["truncated", "success", "success", "failure"])
    batch = DPO(policy, config).prepare(chunks, [c.reward for c in chunks])
    assert batch.pairs.tolist() == [[0, 2], [0, 3], [0, 1]]  # 2 vs 3 and 2 vs 1: under margin
    rng = np.random.default_rng(0)
    other = [flipped([c], rng)[0] for c in chunks]
    again = DPO(policy, config).prepare(other, [c.reward for c in chunks])
    assert again.pairs.tolist() == batch.pairs.tolist()
    # logged only: of the pairs between a success and a failure ((0, 2) and (0, 1), the success
    # losing both), the model agreed with none; with the outcomes flipped, with both
    m = DPO(policy, config).update(batch)
    assert m["outcome_agreement"] == 0.0 and m["rm_mixed_pairs"] == 2 and m["pairs"] == 3
    assert m["rm_pair_share"] == pytest.approx(3 / 6) and m["outcome_recall"] == 0.0
    assert DPO(policy, config).update(again)["outcome_agreement"] == 1.0
    # the outcome source on the same chunks pairs by outcome, not by these rewards
    outcome = DPO(policy, dataclasses.replace(config, pairs="outcome"))
    assert outcome.prepare(chunks, [c.reward for c in chunks]).pairs.tolist() == [
        [1, 0], [1, 3], [2, 0], [2, 3]]


def test_the_action_deviation_term_prefers_the_chunk_near_the_base():
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    config = DPOConfig(group_size=2, set_pairs=1, held_out_every=0, pairs="reward_model",
                       margin=0.1, deviation_coef=1.0)
    chunks = group([0.0, 0.0], ["truncated", "truncated"])
    with torch.no_grad():
        obs = torch.as_tensor(chunks[0].obs["state"][:4:2])
        near = policy.mean_chunk(obs).reshape(2, 2, 1).numpy()
    chunks = [dataclasses.replace(chunks[0], policy_action=near + 2.0),
              dataclasses.replace(chunks[1], policy_action=near)]
    dpo = DPO(policy, config)
    scores = dpo.scores(chunks and [[c] for c in chunks], [[c.reward] for c in chunks])
    assert scores[0] == pytest.approx(-4.0, rel=1e-5) and scores[1] == pytest.approx(0.0)
    assert dpo.prepare(chunks, [c.reward for c in chunks]).pairs.tolist() == [[1, 0]]
    assert len(DPO(policy, dataclasses.replace(config, deviation_coef=0.0)).prepare(
        chunks, [c.reward for c in chunks])) == 0  # without it: a tie, no pair


def test_config_refuses_bad_pair_sources():
    with pytest.raises(ValueError, match="pairs"):
        DPOConfig(pairs="labels")
    with pytest.raises(ValueError, match="margin"):
        DPOConfig(pairs="reward_model", margin=-1.0)
    with pytest.raises(ValueError, match="labels"):
        WorldModelConfig(labels="env")
    from fleet.config import ConfigError, load_config

    with pytest.raises((ValueError, ConfigError), match="reward_model"):
        load_config(["algorithm=dpo", "algorithm.dpo.pairs=reward_model"])  # reward=env
    cfg = load_config(["experiment=push_dpo_world_model"])
    assert cfg.algorithm.dpo.pairs == "reward_model" and cfg.reward.name == "world_model"
    assert cfg.reward.params["labels"] == "self"
