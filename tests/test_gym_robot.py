"""The gym robot on real gymnasium envs: Dict observations (state keys flattened, images as
cameras), reaching a goal by termination recorded as success, and spaces it cannot run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actors.robots.gym import GymConfig
from actors.worker import WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.policy import PolicyConfig
from algorithms.ppo import PPOConfig
from buffers.codec import decode_chunk
from fleet.config import ConfigError, load_config
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig

GOAL = "tests.gym_envs:fleet-tests/Goal-v0"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _to_goal(robot, obs, steps=40):
    """Drive the Goal env's point toward its goal (state = [goal, position], key order)."""
    for _ in range(steps):
        goal, x = obs["state"]
        fb = robot.send_action(np.array([np.clip(4.0 * (goal - x), -1, 1)], np.float32))
        obs = robot.get_observation()
        if fb.done:
            return fb
    raise AssertionError("the goal was not reached")


def test_a_dict_observation_is_state_plus_cameras_and_termination_can_mean_success():
    config = GymConfig(GOAL, termination="success")
    assert (config.obs_dim, config.action_dim) == (2, 1)  # goal and position; not the pixels
    robot = config.make("goal-0")
    obs = robot.reset(seed=1)
    assert set(obs) == {"state", "camera"} and robot.cameras.keys() == {"camera"}
    assert obs["camera"].shape == (24, 24, 3) and obs["camera"].dtype == np.uint8
    assert obs["state"].dtype == np.float32 and obs["state"][0] == 0.5
    assert obs["camera"][:, int((obs["state"][1] + 1) / 2 * 23)].min() == 255  # drawn point
    fb = _to_goal(robot, obs)
    assert fb.success and fb.outcome == "success"
    robot.close()
    default = GymConfig(GOAL).make("goal-1")  # termination=failure: a terminal failure
    fb = _to_goal(default, default.reset(seed=1))
    assert fb.failed and fb.outcome == "failure"
    default.close()


def test_mountain_car_reaching_its_flag_is_a_success_with_termination_success():
    for termination, outcome in (("success", "success"), ("failure", "failure")):
        robot = GymConfig("MountainCarContinuous-v0", termination=termination).make("car")
        obs = robot.reset(seed=0)
        for _ in range(999):  # pump energy: push the way the car already moves
            fb = robot.send_action(np.array([1.0 if obs["state"][1] >= 0 else -1.0], np.float32))
            obs = robot.get_observation()
            if fb.done:
                break
        assert fb.outcome == outcome and fb.reward > 50  # the env's +100 for the flag
        robot.close()


def test_spaces_and_settings_it_cannot_run_are_config_errors():
    with pytest.raises(ConfigError, match="CartPole-v1: only Box action spaces"):
        load_config(["robot=gym", "robot.task=CartPole-v1"])
    with pytest.raises(ConfigError, match=r"robot.termination='maybe': failure or success"):
        load_config(["robot=gym", f"robot.task={GOAL}", "robot.termination=maybe"])
    cfg = load_config(["robot.kind=gym", f"robot.task={GOAL}", "robot.termination=success"])
    assert isinstance(cfg.robot, GymConfig) and cfg.robot.termination == "success"


def test_ppo_trains_from_the_camera_of_a_dict_env_in_the_serial_loop(tmp_path):
    robot = GymConfig(GOAL, termination="success").make("goal-0")
    policy = PolicyConfig(obs_dim=2, action_dim=1, horizon=2, hidden=32, image_key="camera",
                          image_size=24)
    parts = LearnerParts(policy, None, AlgorithmConfig(ppo=PPOConfig(minibatch=16, epochs=1)),
                         RewardConfig("env"), LearnerConfig(batch_calls=16, critic_warmup=0,
                                                            device="cpu"),
                         tmp_path / "checkpoints")
    run = SerialRun(robot, parts, WorkerConfig(horizon=2, calls_per_chunk=8), tmp_path)
    run.train(env_steps=64)
    assert run.learner.policy_version >= 1
    records, _ = run.buffer.read(0, 10**6)
    chunks = [decode_chunk(r) for r in records]
    assert all(c.obs["camera"].dtype == np.uint8 and c.obs["camera"].shape[1:] == (24, 24, 3)
               for c in chunks)
    assert sum(c.num_steps for c in chunks) == run.worker.stats.env_steps
    ends = {c.episode_end.outcome for c in chunks if c.episode_end}
    assert ends <= {"success", "truncated"} and ends  # termination=success: never a failure
    run.close()


@pytest.mark.slow
def test_fleet_train_runs_a_dict_env_from_its_camera(tmp_path):
    from tests.test_e2e import ROOT, fleet

    done = fleet("train", "robot=gym", f"robot.task={GOAL}", "robot.termination=success",
                 "policy=chunk_cnn", "policy.image_key=camera", "policy.image_size=24",
                 "policy.horizon=2", "experiment=smoke", "run.name=goal",
                 f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/c",
                 "train.env_steps=600", "logger.wandb=offline", "console.enabled=false",
                 cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "goal"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0
    assert summary["tasks"] == [GOAL]
    # wandb (offline, read back): the base's and the post-trained policy's held-out episodes,
    # each with its return, length and camera video; the checkpoint not uploaded, and said so
    from tests.test_wandb import offline_run

    rows = [r for r in offline_run(run)["rows"] if "eval/video/camera/_type" in r]
    assert len(rows) == 2 and all("eval/episode_return" in r for r in rows)
    assert len(list((run / "videos").glob("eval-*-camera-0.gif"))) == 2
    assert "not logged as artifacts" in " ".join(done.stdout.split())


def test_wrappers_from_the_config_wrap_the_env_in_order():
    cfg = load_config(["robot=gym", "robot.task=Pendulum-v1",
                       "robot.wrappers=[TimeAwareObservation,"
                       "{name:ClipReward,kwargs:{min_reward:-0.1,max_reward:0.1}}]"])
    assert cfg.robot.obs_dim == 4  # Pendulum's 3 numbers and the time
    robot = cfg.robot.make("p")
    assert robot.reset(seed=0)["state"][3] == 0.0
    fb = robot.send_action(np.ones(1, np.float32))
    assert fb.reward == pytest.approx(-0.1) and robot.get_observation()["state"][3] == 1.0
    robot.close()
    with pytest.raises(ConfigError, match="no wrapper 'NoSuch'"):
        load_config(["robot=gym", "robot.wrappers=[NoSuch]"])
    with pytest.raises(ConfigError, match=r"ClipReward: TypeError: .*'bogus'"):
        load_config(["robot=gym", "robot.wrappers=[{name:ClipReward,kwargs:{bogus:1}}]"])
