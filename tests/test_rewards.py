"""Reward models: the built-in one and a third-party plug-in found through its entry point."""

import shutil
import sys

import numpy as np
import pytest

from buffers.records import EpisodeEnd
from rewards.base import RewardConfig, make_reward
from tests.chunks import make_chunk


def test_env_reward_scales_and_adds_the_success_bonus():
    chunk = make_chunk(np.random.default_rng(0), T=8, end=EpisodeEnd("success"))
    r = make_reward(RewardConfig("env", {"scale": 0.5, "success_bonus": 3.0})).score(chunk)
    np.testing.assert_allclose(r, chunk.reward * 0.5 + 3.0 * chunk.success, rtol=1e-6)


def test_unknown_reward_names_the_known_ones():
    with pytest.raises(ValueError, match="env"):
        make_reward(RewardConfig("nope"))


def test_example_plugin_loads_by_entry_point(tmp_path, monkeypatch):
    """The example package, made importable with real package metadata (as `pip install`
    writes it), is found by name through the `fleet.rewards` group."""
    shutil.copytree("examples/reward_plugin/fleet_reward_example",
                    tmp_path / "fleet_reward_example")
    meta = tmp_path / "fleet_reward_example-0.1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: fleet-reward-example\n"
                                   "Version: 0.1.0\n")
    (meta / "entry_points.txt").write_text(
        "[fleet.rewards]\ngoal_distance = fleet_reward_example:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = make_reward(RewardConfig("goal_distance", {"scale": 2.0}))
    assert (reward.name, reward.version) == ("goal_distance", "1")
    chunk = make_chunk(np.random.default_rng(1), T=8)
    scores = reward.score(chunk)
    assert scores.shape == (8,) and scores.dtype == np.float32
    sys.modules.pop("fleet_reward_example", None)
