import numpy as np
import pytest

from actors.pacing import Paced
from actors.robots.stub import StubConfig, StubRobot


def test_stub_obs_shape_and_seeded_reset():
    r = StubRobot(StubConfig(obs_dim=12, action_dim=3))
    o1 = r.reset(seed=3)["state"]
    o2 = StubRobot(StubConfig(obs_dim=12, action_dim=3)).reset(seed=3)["state"]
    assert o1.shape == (12,) and o1.dtype == np.float32
    np.testing.assert_array_equal(o1, o2)
    assert r.spec.obs_dim == 12 and r.spec.action_dim == 3 and r.spec.control_hz == 10.0


def test_expert_reaches_goal_and_zero_action_truncates():
    r = StubRobot(StubConfig(max_episode_steps=50))
    r.reset(seed=0)
    for _ in range(50):
        fb = r.send_action(r.expert_action())
        if fb.done:
            break
    assert fb.success and fb.outcome == "success"
    r.reset(seed=0)
    rewards = [r.send_action(np.zeros(4, np.float32)) for _ in range(50)]
    assert rewards[-1].truncated and not rewards[-1].success
    assert not any(f.done for f in rewards[:-1])


def test_small_obs_dim_truncates_state():
    r = StubRobot(StubConfig(obs_dim=2, action_dim=4))
    assert r.reset(seed=1)["state"].shape == (2,)


def test_bad_config_raises():
    with pytest.raises(ValueError):
        StubConfig(control_hz=0)


def test_paced_stub_holds_rate():
    import time
    r = Paced(StubRobot(StubConfig(control_hz=100.0)))
    r.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(10):
        r.send_action(np.zeros(4, np.float32))
    assert time.perf_counter() - t0 >= 0.08
