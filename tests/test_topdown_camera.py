"""Meta-World push-v3 seen by the synthetic top-down camera (`robot.camera=topdown`): the frame
shows the puck and the goal where the simulator has them, the state holds only the hand, the
ACT policy acts on it, and a bad camera name exits 2 naming the key."""

import numpy as np
import pytest

from actors.robots.metaworld import MetaWorldConfig
from actors.robots.topdown import GOAL, OBJECT, TopDownCamera
from algorithms.factory import make_policy
from algorithms.policy import input_keys
from fleet.config import ConfigError, load_config
from fleet.run.pretrain import policy_config


def _centre(frame: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Mean (column, row) of the pixels of exactly `colour`."""
    rows, cols = np.nonzero(np.all(frame == colour.astype(np.uint8), axis=-1))
    assert len(rows) > 0, f"no pixel of {colour}"
    return np.array([cols.mean(), rows.mean()]) + 0.5  # pixel i spans [i, i + 1)


def test_the_camera_draws_puck_and_goal_where_the_simulator_has_them():
    config = MetaWorldConfig(task="push-v3", camera="topdown")
    assert config.obs_dim == 4
    robot = config.make("cam-0")
    cam = TopDownCamera()
    obs = robot.reset(seed=3)
    full = robot._obs  # the simulator's 39 numbers, which the policy does not get
    assert obs["state"].shape == (4,) and np.array_equal(obs["state"], full[:4])
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].shape == (96, 96, 3)
    for colour, (x, y) in ((OBJECT, full[4:6]), (GOAL, full[36:38])):
        np.testing.assert_allclose(_centre(obs["pixels"], colour), cam.pixel(x, y), atol=1.0)
    other = robot.reset(seed=4)  # another start: the puck and goal move on camera only
    assert np.array_equal(other["state"], obs["state"])
    assert not np.array_equal(other["pixels"], obs["pixels"])
    fb = None
    for _ in range(150):  # the expert reads the full state and pushes the puck home
        fb = robot.send_action(robot.expert_action())
        if fb.done:
            break
    assert fb is not None and fb.success
    robot.close()


def test_the_act_policy_acts_on_the_camera_config():
    cfg = load_config(["experiment=push_pixels"])
    assert cfg.robot.camera == "topdown" and input_keys(cfg.policy) == ("pixels",)
    policy = make_policy(policy_config(cfg))
    robot = cfg.robot.make("cam-1")
    chunk, logp = policy.act(robot.reset(seed=0))
    assert chunk.shape == (cfg.policy.horizon, 4) and np.isfinite(logp)
    robot.close()


def test_a_bad_camera_is_refused_naming_the_key(capsys):
    with pytest.raises(ConfigError, match=r"robot\.camera='sideways'"):
        load_config(["robot.camera=sideways"])
    from fleet.cli import main

    assert main(["pretrain", "experiment=push_pixels", "robot.camera=fisheye"]) == 2
    out = capsys.readouterr().out
    assert "robot.camera" in out and "topdown" in out
