import time

import numpy as np
import pytest

from actors.pacing import Paced
from actors.robots.gym import GymConfig, GymRobot


def test_paced_robot_holds_its_control_rate_and_counts_missed_deadlines():
    robot = Paced(GymRobot(GymConfig("Pendulum-v1")), hz=100.0)
    robot.reset(seed=0)
    t0 = time.monotonic()
    for _ in range(30):
        robot.send_action(np.zeros(1, np.float32))
    elapsed = time.monotonic() - t0
    assert 0.28 <= elapsed < 1.5, elapsed  # 30 ticks of 10 ms; the bound above allows load
    assert robot.steps == 30 and robot.missed < 30
    time.sleep(0.05)  # a stall: the next step is late
    robot.send_action(np.zeros(1, np.float32))
    assert robot.missed >= 1
    with robot.unpaced():
        t0 = time.monotonic()
        for _ in range(30):
            robot.send_action(np.zeros(1, np.float32))
        assert time.monotonic() - t0 < 0.25 and robot.steps == 31
    assert robot.spec.task == "Pendulum-v1"


def test_pacing_needs_a_positive_rate():
    with pytest.raises(ValueError, match="control rate"):
        Paced(GymRobot(GymConfig("Pendulum-v1")), hz=-1.0)
