import numpy as np
import pytest

from actors.demos import collect_demos
from actors.robots import assign_tasks
from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot


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


def test_multi_task_robot_takes_turns_and_marks_the_task():
    cfg = MetaWorldConfig(task="mt10")
    robot = MetaWorldRobot(cfg, "mt", tasks=assign_tasks(cfg.tasks, 4, 1))
    assert robot.tasks == ("push-v3", "drawer-close-v3", "window-close-v3")
    seen = []
    for seed in range(6):
        obs = robot.reset(seed)
        assert obs["state"].shape == (39 + 10,) and robot.spec.obs_dim == 49
        hot = obs["state"][39:]
        assert hot.sum() == 1.0 and cfg.tasks[int(hot.argmax())] == robot.spec.task
        seen.append(robot.spec.task)
    assert seen == list(robot.tasks) * 2
    robot.pin_task("reach-v3")
    assert robot.reset(5)["state"][39] == 1.0 and robot.spec.task == "reach-v3"
    robot.close()


def test_task_assignment_covers_every_task_once():
    tasks = MetaWorldConfig(task="mt10").tasks
    for robots in (1, 3, 4, 10):
        dealt = [t for i in range(robots) for t in assign_tasks(tasks, robots, i)]
        assert sorted(dealt) == sorted(tasks)
    assert assign_tasks(tasks, 20, 13) == (tasks[3],)


def test_a_multi_task_expert_solves_each_task_it_is_pinned_to():
    robot = MetaWorldRobot(MetaWorldConfig(task="mt10"), "expert")
    for task in ("reach-v3", "drawer-close-v3"):
        robot.pin_task(task)
        robot.reset(3)
        for _ in range(200):
            fb = robot.send_action(robot.expert_action())
            if fb.success:
                break
        assert fb.success, task
    robot.close()


def test_a_metaworld_without_the_private_attributes_fleet_sets_is_refused():
    from actors.robots.metaworld import seeded_goal_observable

    class Renamed:  # a later Meta-World that renamed them: setting them would do nothing
        _partially_observable = True

    with pytest.raises(RuntimeError, match=r"has no _freeze_rand_vec, _set_task_called"):
        seeded_goal_observable(Renamed())
