"""Operator interventions feed TD's demo replay (HIL-SERL): steps the simulated operator or a
person at the console chose reach the learner through the buffer, and every row whose steps
were all the operator's joins the demonstrations' side of symmetric sampling."""

import numpy as np
import torch

from actors.control import RobotControl
from actors.operator import OperatorConfig, SimulatedOperator
from actors.robots.stub import StubConfig, StubRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.td import TD, TDConfig
from buffers.codec import decode_chunk
from buffers.store import ReplayBuffer
from learner.loop import Learner, LearnerConfig
from tests.fakes import ConstantReward, ListOutbox, ListWeights, ScriptedPolicy

H, A = 4, 4


def expert_rows(intervened: np.ndarray) -> np.ndarray:
    """Starts t of an episode whose H-step sequence (cut at the episode's end) was all chosen
    by the operator: a plain loop, beside TD's vectorised one."""
    return np.array([t for t in range(len(intervened)) if intervened[t:t + H].all()], int)


def learn_from(records: list[bytes], tmp_path) -> TD:
    """The records through a real buffer into a TD learner: one step reads them all."""
    chunks = [decode_chunk(r) for r in records]
    with ReplayBuffer(tmp_path / "buf") as buf:
        assert buf.insert(records).stored == len(records)
        torch.manual_seed(0)
        policy = ChunkPolicy(PolicyConfig(obs_dim=16, action_dim=A, horizon=H, hidden=16))
        td = TD(policy, TDConfig(ensemble=2, hidden=16, minibatch=16, updates_per_step=0.01))
        learner = Learner(policy, td, ConstantReward(), buf, ListWeights(),
                          LearnerConfig(batch_calls=sum(c.num_calls for c in chunks),
                                        critic_warmup=0, max_wait_s=5), tmp_path / "ckpt")
        learner.step()
    return td


def episodes(records: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(intervened [T], action [T, A]) of each episode, in order."""
    out: dict[str, list] = {}
    for c in map(decode_chunk, records):
        out.setdefault(c.episode_id, []).append(c)
    return [(np.concatenate([c.intervened for c in cs]), np.concatenate([c.action for c in cs]))
            for cs in out.values()]


def test_the_simulated_operators_steps_become_td_demo_rows(tmp_path):
    robot = StubRobot(StubConfig(max_episode_steps=100))
    op = SimulatedOperator(OperatorConfig(simulated=True, budget=1.0, stall_steps=5,
                                          min_gain=0.05), robot.expert_action)
    outbox = ListOutbox()
    worker = RobotWorker(robot, ScriptedPolicy(H, A), outbox, ListWeights(),
                         WorkerConfig(horizon=H, calls_per_chunk=4), op)
    for seed in range(3):
        worker.run_episode(seed)
    eps = episodes(outbox.records)
    assert op.takeovers == 3 and all(0 < f.sum() < len(f) for f, _ in eps)  # mixed episodes
    td = learn_from(outbox.records, tmp_path)
    expected = np.concatenate([a[expert_rows(f)] for f, a in eps])
    assert len(td.demos) == len(expected) > 0  # those rows, and no row the policy chose
    assert td.demos.data is not None
    np.testing.assert_allclose(td.demos.data.chunk[:, :A].numpy(), expected)  # their actions
    assert bool(td.demos.data.expert.all())
    assert len(td.online) == sum(len(f) for f, _ in eps)  # every row stays in the online replay
    assert float(td._minibatch().expert.float().mean()) >= td.config.demo_ratio


def test_a_console_take_over_becomes_td_demo_rows(tmp_path):
    robot = StubRobot(StubConfig(max_episode_steps=24))
    control = RobotControl(A, teleop_timeout_s=3600.0)  # fresh however slow this machine is
    control.command({"cmd": "takeover", "on": True})
    control.command({"cmd": "teleop", "action": [0.5, 0.0, -0.5, 0.0]})
    outbox = ListOutbox()
    worker = RobotWorker(robot, ScriptedPolicy(H, A), outbox, ListWeights(),
                         WorkerConfig(horizon=H, calls_per_chunk=2), control=control)
    worker.run_episode(seed=1)
    control.command({"cmd": "takeover", "on": False})
    worker.run_episode(seed=2)  # the policy's own episode: no demo rows
    (taken, _), (own, _) = episodes(outbox.records)
    assert taken.all() and not own.any()
    td = learn_from(outbox.records, tmp_path)
    assert len(td.demos) == len(taken) == 24 and len(td.online) == len(taken) + len(own)
    assert td.demos.data is not None
    np.testing.assert_allclose(td.demos.data.chunk.reshape(-1, H, A)[:, 0],
                               np.tile([0.5, 0.0, -0.5, 0.0], (24, 1)))
