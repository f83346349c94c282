"""The algorithm registry, each algorithm's declared data needs, and the one staleness rule
that the learner's feed and the buffer's sampler share."""

import numpy as np
import pytest

from algorithms import AlgorithmConfig, data_needs, known, make_algorithm
from algorithms.dpo import DPO, DPOConfig
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig
from algorithms.td import TD, TDConfig
from buffers.codec import encode_chunk
from buffers.feed import ChunkFeed, DataNeeds
from buffers.sampler import Sampler
from buffers.sampling import oldest_usable, on_policy
from buffers.store import ReplayBuffer
from tests.chunks import make_chunk


def test_unknown_algorithm_names_the_known_ones():
    assert known()[:4] == ["dpo", "grpo", "ppo", "td"]
    with pytest.raises(ValueError, match=r"'sac'.*dpo, grpo, ppo, td"):
        AlgorithmConfig(name="sac")


def test_each_algorithm_declares_what_it_needs():
    assert PPO.needs(PPOConfig()) == DataNeeds()
    assert GRPO.needs(GRPOConfig(group_size=6)) == DataNeeds(group_size=6, holds_batches=True)
    assert DPO.needs(DPOConfig(group_size=4)) == DataNeeds(group_size=4, holds_batches=True)
    assert TD.needs(TDConfig()) == DataNeeds(replay=True, demos=True)
    # the registry reads the same declarations from the config alone, as robots need them
    assert data_needs(AlgorithmConfig(name="grpo", grpo=GRPOConfig(group_size=6))).group_size == 6
    assert AlgorithmConfig(name="dpo").group_size == 4
    assert AlgorithmConfig(name="td").group_size == 1
    with pytest.raises(ValueError, match="group_size"):
        DataNeeds(group_size=0)


@pytest.mark.parametrize("name, cls", [("ppo", PPO), ("grpo", GRPO), ("td", TD), ("dpo", DPO)])
def test_make_algorithm_builds_the_named_class_with_its_own_config(name, cls):
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=2, horizon=2, hidden=16))
    config = AlgorithmConfig(name=name)
    algorithm = make_algorithm(config, policy)
    assert type(algorithm) is cls and algorithm.config == getattr(config, name)


def test_staleness_rule_golden():
    assert [oldest_usable(7, s) for s in (0, 1, 2, 7, 9)] == [7, 6, 5, 0, 0]
    assert oldest_usable(7, None) == 0 and oldest_usable(0, 2) == 0
    assert DataNeeds().max_staleness(2) == 2 and DataNeeds(replay=True).max_staleness(2) is None


@pytest.mark.parametrize("needs, versions", [(DataNeeds(), {3, 4, 5}),
                                             (DataNeeds(replay=True), {0, 1, 2, 3, 4, 5})])
def test_feed_and_sampler_agree_on_which_records_are_usable(tmp_path, needs, versions):
    rng = np.random.default_rng(0)
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(make_chunk(rng, T=16, H=4, episode_id=f"e{v}",
                                            policy_version=v)) for v in range(6)])
        feed = ChunkFeed(buf, needs, batch_calls=4 * len(versions), max_staleness=2)
        taken = feed.take(policy_version=5)
        assert taken is not None and {c.policy_version for c in taken[0]} == versions
        spec = on_policy(max_staleness=needs.max_staleness(2), max_uses=1,
                         batch_size=len(versions), horizon=4)
        batch = Sampler(buf, spec).sample(policy_version=5)
        assert batch is not None and set(batch.policy_version.tolist()) == versions


def test_feed_counts_chunks_dropped_while_it_waited(tmp_path):
    rng = np.random.default_rng(1)
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(make_chunk(rng, T=16, H=4, episode_id="old"))])
        feed = ChunkFeed(buf, DataNeeds(), batch_calls=8, max_staleness=1)
        assert feed.take(policy_version=0) is None  # 4 calls pending, 8 asked
        assert feed.take(policy_version=2) is None  # the pending chunk is now too old
        buf.insert([encode_chunk(make_chunk(rng, T=32, H=4, episode_id="new",
                                            policy_version=2))])
        taken = feed.take(policy_version=2)
        assert taken is not None and taken[1] == 1 and [c.episode_id for c in taken[0]] == ["new"]
