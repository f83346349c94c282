"""The robot loop and the learner in one process (`fleet.serial`), on a gymnasium robot."""

import numpy as np

from actors.robot import GymConfig, GymRobot
from actors.worker import WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.policy import PolicyConfig
from algorithms.ppo import PPOConfig
from buffers.codec import decode_chunk
from fleet.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig


def test_gym_robot_scales_actions_and_marks_failures_terminal():
    robot = GymRobot(GymConfig("InvertedPendulum-v5"))
    assert (robot.spec.obs_dim, robot.spec.action_dim) == (4, 1)
    robot.reset(0)
    fb = robot.send_action(np.ones(1, np.float32))
    for _ in range(1000):
        if fb.done:
            break
        fb = robot.send_action(np.ones(1, np.float32))  # full push: the pole falls
    assert fb.failed and fb.outcome == "failure" and not fb.truncated


def test_serial_run_trains_and_stores_every_step(tmp_path):
    robot = GymRobot(GymConfig("InvertedPendulum-v5"))
    policy = PolicyConfig(obs_dim=4, action_dim=1, horizon=1, hidden=32, init="orthogonal",
                          learn_std=True, init_std=0.3)
    parts = LearnerParts(policy, None,
                         AlgorithmConfig(ppo=PPOConfig(minibatch=64, actor_lr=1e-3)),
                         RewardConfig("env", {"scale": 1.0, "success_bonus": 0.0}),
                         LearnerConfig(batch_calls=256, critic_warmup=0, max_wait_s=1,
                                       device="cpu"), tmp_path / "checkpoints")
    run = SerialRun(robot, parts, WorkerConfig(horizon=1, calls_per_chunk=32), tmp_path)
    run.train(env_steps=3000)
    assert run.learner.policy_version >= 8 and run.worker.stats.policy_version >= 7
    records, _ = run.buffer.read(0, 10**6)
    chunks = [decode_chunk(r) for r in records]
    assert sum(c.num_steps for c in chunks) == run.worker.stats.env_steps
    assert {c.episode_end.outcome for c in chunks if c.episode_end} <= {"failure", "truncated"}
    assert run.metrics[-1]["learner_env_steps"] > 2000
    run.close()
