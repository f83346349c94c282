"""The robot loop and the learner in one process (`fleet.run.serial`), on a gymnasium robot."""

import numpy as np

from actors.robots.gym import GymConfig, GymRobot
from actors.worker import WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.policy import PolicyConfig
from algorithms.ppo import PPOConfig
from algorithms.td import TD, TDConfig
from buffers.codec import decode_chunk
from buffers.demos import write_demos
from buffers.records import EpisodeEnd
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig
from tests.chunks import make_chunk
from tests.fakes import FakeRobot


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


def small(obs_dim=3, action_dim=2):
    return PolicyConfig(obs_dim=obs_dim, action_dim=action_dim, horizon=2, hidden=16)


def test_serial_run_gives_td_its_demos_and_offline_phase(tmp_path):
    rng = np.random.default_rng(0)
    write_demos(tmp_path / "demos", [  # what `fleet pretrain` leaves behind
        make_chunk(rng, T=8, H=2, A=2, D=3, robot_id="expert", episode_id=f"d{i}",
                   end=EpisodeEnd("success"), intervened=True) for i in range(3)])
    td = TDConfig(hidden=16, minibatch=8, updates_per_step=0.5, offline_updates=3)
    parts = LearnerParts(small(), None, AlgorithmConfig(name="td", td=td), RewardConfig("env"),
                         LearnerConfig(batch_calls=8, critic_warmup=0, device="cpu"),
                         tmp_path / "checkpoints", demos=tmp_path / "demos")
    run = SerialRun(FakeRobot(max_steps=8), parts, WorkerConfig(horizon=2, calls_per_chunk=4),
                    tmp_path / "run")
    run.train(env_steps=48)
    algorithm = run.learner.algorithm
    assert isinstance(algorithm, TD) and len(algorithm.demos) == 3 * 8  # every demo step
    assert "offline_critic_loss" in run.metrics[0]
    assert not any("offline_critic_loss" in m for m in run.metrics[1:])
    assert len(algorithm.online) == 48  # every step the robot made, replayed
    run.close()


def test_serial_run_holds_td_to_its_rate_limit(tmp_path, one_torch_thread):
    """One process, the same limiter as on Ray: the robot's chunks wait while the learner
    takes the gradient steps it is owed, so gradient steps track R x env steps throughout."""
    td = TDConfig(ensemble=2, hidden=16, minibatch=8, updates_per_step=0.5, rate_limit=True,
                  actor_warmup_steps=0)
    parts = LearnerParts(small(), None, AlgorithmConfig(name="td", td=td), RewardConfig("env"),
                         LearnerConfig(batch_calls=8, critic_warmup=0, burst=4, device="cpu"),
                         tmp_path / "checkpoints")
    run = SerialRun(FakeRobot(max_steps=8), parts, WorkerConfig(horizon=2, calls_per_chunk=4),
                    tmp_path / "run")
    run.train(env_steps=64)
    algorithm = run.learner.algorithm
    assert isinstance(algorithm, TD) and run.limiter is not None
    assert run.limiter.error_buffer == 0.5 * 8 + 1
    assert len(run.metrics) >= 4
    for m in run.metrics:  # held at every step, not only on average
        assert abs(0.5 * m["rate_inserted"] - m["rate_sampled"]) <= run.limiter.error_buffer
    assert algorithm.gradient_steps == run.limiter.sampled
    assert abs(0.5 * 64 - algorithm.gradient_steps) <= run.limiter.error_buffer + 0.5 * 8
    run.close()


def test_serial_run_trains_a_learned_reward_and_the_learner_adopts_it(tmp_path):
    reward = RewardConfig("world_model", {"hidden": 32, "latent": 8, "batch": 64,
                                          "fit_steps": 5, "min_episodes": 2})
    parts = LearnerParts(small(), None, AlgorithmConfig(ppo=PPOConfig(minibatch=8)), reward,
                         LearnerConfig(batch_calls=2, critic_warmup=0, device="cpu"),
                         tmp_path / "checkpoints")
    run = SerialRun(FakeRobot(max_steps=8, succeed_after=6), parts,
                    WorkerConfig(horizon=2, calls_per_chunk=4), tmp_path)
    run.train(env_steps=64)  # 11 episodes of 6 steps: fits from the 2nd on, each adopted
    assert run.reward_trainer is not None and run.reward_trainer.fits >= 6
    assert run.metrics[0]["reward_waiting"] == 1.0  # nothing fitted yet: the batch waits
    adopted = [m["reward_version"] for m in run.metrics if "reward_version" in m]
    assert adopted and adopted == sorted(adopted) and adopted[-1] >= 5
    assert run.learner.reward.version == str(run.reward_trainer.fits)
    run.close()
