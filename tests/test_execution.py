"""Chunk execution modes with known answers: open loop, receding horizon, temporal ensembling."""

import numpy as np
import pytest

from actors.execution import ChunkExecution


def planner():
    """Chunk n is [[n*10 + 0], [n*10 + 1], ...]: each action names its chunk and row."""
    calls = []

    def plan():
        n = len(calls)
        calls.append(n)
        return np.arange(4, dtype=np.float32)[:, None] + 10 * n

    return plan, calls


def run(execution, steps):
    plan, calls = planner()
    return [float(execution.next(plan)[0]) for _ in range(steps)], calls


def test_open_loop_runs_each_chunk_whole():
    actions, calls = run(ChunkExecution("open_loop", horizon=4), 8)
    assert actions == [0, 1, 2, 3, 10, 11, 12, 13] and len(calls) == 2


def test_receding_horizon_replans_before_the_chunk_runs_out():
    actions, calls = run(ChunkExecution("receding", horizon=4, replan_every=2), 6)
    assert actions == [0, 1, 10, 11, 20, 21] and len(calls) == 3


def test_temporal_ensemble_averages_every_chunk_covering_the_step():
    actions, calls = run(ChunkExecution("ensemble", horizon=4, decay=0.0), 6)
    assert len(calls) == 6
    # step 1: chunk 0 row 1 (1) and chunk 1 row 0 (10); step 5: chunks 2..5, rows 3..0
    assert actions[1] == pytest.approx((1 + 10) / 2)
    assert actions[5] == pytest.approx((23 + 32 + 41 + 50) / 4)
    decayed, _ = run(ChunkExecution("ensemble", horizon=4, decay=1.0), 2)
    w = np.exp(-np.arange(2.0))
    assert decayed[1] == pytest.approx((w[0] * 1 + w[1] * 10) / w.sum())  # oldest weighs most


def test_a_new_episode_starts_fresh():
    ex = ChunkExecution("ensemble", horizon=4, decay=0.0)
    plan, _ = planner()
    ex.next(plan)
    ex.reset()
    assert float(ex.next(plan)[0]) == 10  # only the new chunk covers step 0


@pytest.mark.parametrize("kwargs", [{"mode": "closed"}, {"mode": "receding", "replan_every": 4},
                                    {"mode": "receding"}, {"mode": "ensemble", "decay": -1}])
def test_impossible_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ChunkExecution(horizon=4, **kwargs)


def test_held_out_episodes_run_ensembled_on_a_real_robot():
    from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot
    from actors.worker import RobotWorker, WorkerConfig
    from algorithms.policy import ChunkPolicy, PolicyConfig

    class Counting:
        def __init__(self):
            self.net, self.calls = ChunkPolicy(PolicyConfig(obs_dim=39, action_dim=4)), 0

        def act(self, obs, deterministic=False):
            self.calls += 1
            return self.net.act(obs, deterministic)

    policy = Counting()
    robot = MetaWorldRobot(MetaWorldConfig(max_episode_steps=30))
    worker = RobotWorker(robot, policy, None, None,  # type: ignore[arg-type]  # eval streams nothing
                         WorkerConfig(4, execution="ensemble"))
    assert worker.evaluate([900_000]) in ([True], [False])
    assert policy.calls == 30  # a call every step
    with pytest.raises(ValueError, match="replan_every"):
        WorkerConfig(4, execution="receding", replan_every=9)
