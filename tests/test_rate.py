"""The rate limiter: the learner keeps R gradient steps per env step because robots wait for it
(Reverb's SampleToInsertRatio over env steps), checked on the plain limiter and on real Ray
actors (stub robots, the buffer actor, a TD learner actor)."""

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.feed import ChunkFeed, DataNeeds
from buffers.rate import RateLimiter, StepRatio
from buffers.store import ReplayBuffer
from tests.chunks import make_chunk

ray = pytest.importorskip("ray")

from actors.robots.stub import StubConfig  # noqa: E402
from actors.worker import WorkerConfig  # noqa: E402
from algorithms import AlgorithmConfig, data_needs  # noqa: E402
from algorithms.policy import ChunkPolicy, PolicyConfig  # noqa: E402
from algorithms.td import TDConfig  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.learner import LearnerActor  # noqa: E402
from fleet.remote.robot import RobotLaunch, start_robot  # noqa: E402
from fleet.remote.weights import WeightHub  # noqa: E402
from learner.loop import LearnerConfig  # noqa: E402
from rewards.base import RewardConfig  # noqa: E402


def test_the_limiter_holds_inserts_when_the_learner_is_behind_and_grants_only_its_share():
    limiter = RateLimiter(StepRatio(2.0), max_insert=8)
    assert limiter.error_buffer == 17  # R * max_insert + 1: the least that cannot deadlock
    assert limiter.admit(8)  # learner behind by 16 gradient steps
    assert not limiter.admit(8) and limiter.inserted == 8  # 32 > 17: the robot waits
    assert limiter.grant(100) == 16 + 17  # its share, and up to error_buffer ahead
    assert limiter.grant(1) == 0  # ahead of the data: the learner waits
    assert limiter.admit(8) and limiter.admit(8)
    for _ in range(1000):  # robots as fast as allowed, the learner taking one step at a time
        limiter.admit(8)
        limiter.grant(1)
        assert abs(2.0 * limiter.inserted - limiter.sampled) <= limiter.error_buffer


def test_a_limiter_that_could_deadlock_is_refused_when_built():
    with pytest.raises(ValueError, match=r"error_buffer >= 129"):
        RateLimiter(StepRatio(2.0, error_buffer=10), max_insert=64)
    with pytest.raises(ValueError, match="at most 8"):
        RateLimiter(StepRatio(1.0), max_insert=8).admit(9)
    with pytest.raises(ValueError, match=r"rate_limit needs td\.updates_per_step > 0"):
        TDConfig(rate_limit=True, updates_per_step=0)
    needs = data_needs(AlgorithmConfig(name="td", td=TDConfig(rate_limit=True)))
    assert needs.rate == StepRatio(0.25) and needs.replay


def test_a_continuous_learner_reads_whatever_has_arrived(tmp_path):
    rng = np.random.default_rng(0)
    with ReplayBuffer(tmp_path / "buf") as buf:
        feed = ChunkFeed(buf, DataNeeds(replay=True, rate=StepRatio(1.0)), 1024, 0)
        assert feed.take_any(0, 1024) == ([], 0)
        buf.insert([encode_chunk(make_chunk(rng, episode_id=f"e{i}")) for i in range(3)])
        got, _ = feed.take_any(5, 1024)  # no minimum, and any age (replay)
        assert [c.episode_id for c in got] == ["e0", "e1", "e2"]
        buf.insert([encode_chunk(make_chunk(rng, episode_id=f"f{i}")) for i in range(3)])
        assert [c.episode_id for c in feed.take_any(5, 5)[0]] == ["f0", "f1"]  # 4 calls each
        assert [c.episode_id for c in feed.take_any(5, 5)[0]] == ["f2"]
    with pytest.raises(ValueError, match="replay=True and no groups"):
        DataNeeds(rate=StepRatio(1.0))


def test_robots_wait_for_a_slow_learner_which_keeps_its_ratio(local_ray, tmp_path):
    """Stub robots run far faster than a TD learner, so without the limiter they would store
    many env steps per gradient step; with it, the learner's gradient steps stay within the
    error buffer of R x the robots' env steps, and the robots are seen waiting."""
    ratio, horizon, calls = 0.5, 4, 2
    pcfg = PolicyConfig(obs_dim=16, action_dim=4, horizon=horizon, hidden=32)
    policy = ChunkPolicy(pcfg)
    td = TDConfig(ensemble=2, hidden=32, minibatch=16, updates_per_step=ratio,
                  actor_warmup_steps=0, rate_limit=True)
    algorithm = AlgorithmConfig(name="td", td=td)
    max_insert = horizon * calls
    rate = (data_needs(algorithm).rate, max_insert)
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig(fsync="never"), rate)
    hub = WeightHub.remote()
    learner = LearnerActor.remote(pcfg, policy.policy_state(), algorithm, RewardConfig("env"),
                                  LearnerConfig(burst=4, critic_warmup=0, max_wait_s=120),
                                  str(tmp_path / "ckpt"), buffer, hub, 0)
    robots = [start_robot(RobotLaunch(
        f"robot-{i}", StubConfig(max_episode_steps=30), pcfg,
        WorkerConfig(horizon=horizon, calls_per_chunk=calls, seed=i + 1),
        str(tmp_path / "spill"), rate_limited=True), policy.policy_state(), buffer, hub,
        num_cpus=0.25) for i in range(2)]
    ray.get([r.start.remote() for r in robots])
    metrics = {}
    while metrics.get("gradient_steps_total", 0) < 120:
        metrics = ray.get(learner.step.remote())
        assert metrics["gradient_steps"] <= 4
    stats = ray.get([r.stop.remote() for r in robots])  # each ends its episode unadmitted
    state = ray.get(buffer.rate_state.remote())
    assert all(s["error"] is None for s in stats)
    slack = 1 + ratio * max_insert  # error_buffer
    assert metrics["rate_ratio"] == pytest.approx(ratio, rel=0.2)
    assert abs(ratio * state["rate_inserted"] - state["rate_sampled"]) <= slack
    assert state["rate_sampled"] == metrics["gradient_steps_total"]  # every grant was taken
    # the robots' own count: the admitted steps, plus at most the rest of each robot's episode
    # (30 steps) and its chunk in progress, which stopping sends without waiting
    steps = sum(s["env_steps"] for s in stats)
    assert state["rate_inserted"] <= steps <= state["rate_inserted"] + 2 * (30 + max_insert)
    assert abs(ratio * steps - metrics["gradient_steps_total"]) <= slack + ratio * 2 * (30 + 8)
    assert sum(s["rate_wait_s"] for s in stats) > 0 and state["rate_refused"] > 0
