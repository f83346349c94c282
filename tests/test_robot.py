import numpy as np
import pytest

from actors.demos import collect_demos
from actors.robot import MetaWorldConfig, MetaWorldRobot


def test_same_seed_same_start_on_separate_robots():
    a, b = MetaWorldRobot(MetaWorldConfig(), "a"), MetaWorldRobot(MetaWorldConfig(), "b")
    np.testing.assert_array_equal(a.reset(11)["state"], b.reset(11)["state"])
    assert not np.array_equal(a.reset(12)["state"], b.reset(11)["state"])
    assert a.get_observation()["state"][36:].any()  # the goal is observed


def test_expert_solves_push_and_episodes_truncate():
    robot = MetaWorldRobot(MetaWorldConfig(max_episode_steps=150))
    robot.reset(3)
    for _ in range(150):
        fb = robot.send_action(robot.expert_action())
        if fb.success or fb.truncated:
            break
    assert fb.success
    robot.reset(3)
    for _ in range(150):
        fb = robot.send_action(np.zeros(4, np.float32))
    assert fb.truncated and not fb.success


def test_noisy_demos_are_successful_expert_episodes():
    robot = MetaWorldRobot(MetaWorldConfig(max_episode_steps=150))
    demos = collect_demos(robot, episodes=2, noise=0.3, horizon=4, seed=0)
    assert len(demos) == 2
    for d in demos:
        assert d.episode_end.outcome == "success" and d.intervened.all()
        np.testing.assert_array_equal(d.policy_action.reshape(-1, 4)[: d.num_steps], d.action)


def test_unknown_task_is_refused_with_the_names():
    with pytest.raises(ValueError, match="not a Meta-World v3 task"):
        MetaWorldConfig(task="fly-v3")
