import dataclasses

import numpy as np
import pytest
import torch

from actors.evaluation import Collected
from actors.operator import OperatorConfig, SimulatedOperator
from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig, operator_calls
from buffers.codec import decode_chunk
from tests.chunks import make_chunk


def test_the_operator_takes_over_only_after_a_stall_and_within_budget():
    op = SimulatedOperator(OperatorConfig(simulated=True, budget=0.5, stall_steps=3),
                           lambda: np.full(4, 2.0, np.float32))
    for r in (0.1, 0.2, 0.3):  # progress: no takeover
        op.observe(r)
    assert not op.active
    for _ in range(3):
        op.observe(0.3)
    assert op.active and op.takeovers == 1
    assert np.array_equal(op.action(), np.ones(4, np.float32))  # clipped to the action box
    op.begin_episode()
    assert not op.active
    op.taken = 10**6  # budget spent: stalls no longer lead to a takeover
    for _ in range(10):
        op.observe(0.0)
    assert not op.active


@pytest.mark.parametrize("budget", [-0.1, 1.5])
def test_bad_budget_is_refused(budget):
    with pytest.raises(ValueError, match="budget"):
        OperatorConfig(budget=budget)


def test_taken_over_steps_are_flagged_and_are_the_experts_actions():
    robot = MetaWorldRobot(MetaWorldConfig(task="reach-v3", max_episode_steps=120), "r")
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(hidden=16))  # random: it stalls
    outbox = Collected()
    op = SimulatedOperator(OperatorConfig(simulated=True, budget=1.0, stall_steps=10),
                           robot.expert_action)
    worker = RobotWorker(robot, policy, outbox, outbox, WorkerConfig(calls_per_chunk=8), op)
    worker.run_episode(seed=4)
    chunks = [decode_chunk(r) for r in outbox.records]
    flags = np.concatenate([c.intervened for c in chunks])
    assert 0 < flags.sum() == worker.stats.intervened_steps == op.taken
    first = int(np.argmax(flags))
    assert flags[first:].all()  # the expert keeps the robot to the end of the episode
    assert chunks[-1].success[-1], "the scripted expert reaches the goal once it takes over"


def test_ppo_clones_operator_calls_and_leaves_them_out_of_the_policy_gradient():
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=2, horizon=2, hidden=32))
    chunk = make_chunk(np.random.default_rng(0), T=8, H=2, A=2, D=3, intervened=False)
    flags = np.zeros(8, bool)
    flags[3:] = True  # call 0 is the policy's, call 1 mixed, calls 2-3 the operator's
    chunk = dataclasses.replace(chunk, action=np.full((8, 2), 0.7, np.float32), intervened=flags)
    taken, executed = operator_calls(chunk)
    assert taken.tolist() == [[False, False], [False, True], [True, True], [True, True]]
    assert np.all(executed == 0.7)
    ppo = PPO(policy, PPOConfig(actor_lr=1e-2, bc_coef=1.0))
    batch = ppo.prepare([chunk], [np.zeros(8, np.float32)])
    assert batch.own is not None and batch.expert is not None
    assert batch.own.tolist() == [True, False, False, False]
    assert batch.expert.tolist() == [False, False, True, True]
    obs = batch.obs[batch.expert]
    before = float(((policy.mean_chunk(obs) - 0.7) ** 2).mean())
    for _ in range(20):
        ppo.update(ppo.prepare([chunk], [np.zeros(8, np.float32)]))
    after = float(((policy.mean_chunk(obs) - 0.7) ** 2).mean())
    assert after < 0.1 * before
