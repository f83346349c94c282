"""The robot registry and the contract of every kind: `Robot` for all, `SimRobot` (task pinning
and a scripted expert) for the simulated kinds with an expert, and `robot=<kind>` from the
config."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from actors.robots import KINDS, assign_tasks, config_class, make_robot, robot_config
from actors.robots.base import Robot, SimRobot
from actors.robots.gym import GymConfig
from actors.robots.metaworld import MetaWorldConfig
from actors.robots.mixed import MixedConfig
from actors.robots.pusht import PushTConfig
from actors.robots.stub import StubConfig
from actors.worker import RobotWorker, WorkerConfig
from buffers.codec import decode_chunk
from fleet.config import ConfigError, from_mapping, load_config, saved_config, to_dict
from tests.fakes import ListOutbox, ListWeights, ScriptedPolicy

LINE = "tests.gym_envs:fleet-tests/Line-v0"
ROBOT_FILES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs" /
                                      "robot").glob("*.yaml"))


def test_unknown_kind_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown robot kind 'arm'; known: gym, metaworld, "
                                         "mixed, pusht, stub"):
        config_class("arm")
    with pytest.raises(ConfigError, match="known: gym, metaworld"):
        load_config(["+robot.kind=arm"])


def test_every_kind_is_selectable_from_a_config_file():
    assert {load_config([f"robot={name}"]).robot.kind for name in ROBOT_FILES} == set(KINDS)


@pytest.mark.parametrize("name", ROBOT_FILES)
def test_every_robot_config_keeps_the_robot_contract(name):
    """`Robot` for every kind, `SimRobot` (task pinning, a scripted expert) for those with an
    expert; a new configs/robot/<name>.yaml is checked here without further code."""
    config = load_config([f"robot={name}"]).robot
    robot = make_robot(config, "c0", assign_tasks(config.tasks, 2, 0))
    assert isinstance(robot, Robot) and robot.spec.robot_id == "c0"
    assert robot.spec.action_dim == config.action_dim
    last = config.tasks[-1]
    robot.pin_task(last)  # held-out evaluation runs any task of the config
    obs = robot.reset(seed=4)
    assert obs["state"].shape == (config.obs_dim,) and robot.spec.task == last
    if config.has_expert:
        assert isinstance(robot, SimRobot)
        action = robot.expert_action()
        assert action.shape == (config.action_dim,) and np.all(np.isfinite(action))
    else:
        with pytest.raises(NotImplementedError, match="no scripted expert"):
            robot.expert_action()
        action = np.zeros(config.action_dim, np.float32)
    fb = robot.send_action(action)
    assert np.isfinite(fb.reward) and robot.get_observation()["state"].shape == (config.obs_dim,)
    with pytest.raises(ValueError, match="unknown task"):
        robot.pin_task("fly-v3")
    robot.pin_task(None)
    robot.close()
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    assert robot_config(saved) == config  # saved and loaded as plain data


def test_gym_kind_is_a_robot_without_an_expert():
    config = GymConfig("InvertedPendulum-v5")
    robot = make_robot(config, "g0")
    assert isinstance(robot, Robot) and not config.has_expert
    assert (config.obs_dim, config.action_dim, config.tasks) == (4, 1, ("InvertedPendulum-v5",))
    assert robot.reset(seed=0)["state"].shape == (4,)
    robot.pin_task("InvertedPendulum-v5")  # its one task: held-out evaluation pins it
    with pytest.raises(NotImplementedError, match="no scripted expert"):
        robot.expert_action()
    with pytest.raises(ValueError, match="runs only"):
        make_robot(config, "g1", ("Pendulum-v1",))
    robot.close()


def test_a_gym_episode_ending_in_is_success_is_recorded_as_success():
    config = GymConfig(LINE, kwargs={"start": 0.5})  # kwargs go to gymnasium.make
    robot = make_robot(config, "line-0")
    outbox = ListOutbox()
    worker = RobotWorker(robot, ScriptedPolicy(action_dim=1), outbox, ListWeights(),
                         WorkerConfig(4, 2, seed=0))
    assert worker.run_episode(seed=0)  # +0.1 a step from 0.5: success after 5 steps
    chunks = [decode_chunk(r) for r in outbox.records]
    end = chunks[-1].episode_end
    assert end is not None and end.outcome == "success" and chunks[-1].success[-1]
    assert sum(c.num_steps for c in chunks) == 5
    robot.reset(seed=1)
    fb = robot.send_action(np.array([-1.0], np.float32))
    fb = robot.send_action(np.array([-1.0], np.float32))
    assert fb.failed and fb.outcome == "failure"  # a terminal state without is_success
    robot.close()


def test_robot_gym_is_selectable_with_any_gymnasium_id():
    cfg = load_config(["robot=gym", "robot.task=Pendulum-v1", "robot.max_episode_steps=50",
                       "robot.kwargs.g=9.0"])
    assert isinstance(cfg.robot, GymConfig) and cfg.robot.kind == "gym"
    assert (cfg.robot.task, cfg.robot.max_episode_steps, cfg.robot.kwargs, cfg.robot.obs_dim) == (
        "Pendulum-v1", 50, {"g": 9.0}, 3)
    assert isinstance(load_config(["robot=gym", "experiment=smoke"]).robot, GymConfig)
    with pytest.raises(ConfigError, match="not a gymnasium env id"):
        load_config(["robot=gym", "robot.task=NoSuchEnv-v9"])
    with pytest.raises(ConfigError, match="scripted expert"):
        load_config(["robot=gym", "operator.simulated=true"])


@pytest.mark.parametrize("overrides, cls, fields", [
    ([], MetaWorldConfig, {"task": "push-v3", "max_episode_steps": 200}),
    (["robot=mt10"], MetaWorldConfig, {"task": "mt10"}),
    (["robot=pusht", "robot.success_coverage=0.5"], PushTConfig,
     {"task": "pusht", "success_coverage": 0.5, "max_episode_steps": 300}),
    (["robot=mixed"], MixedConfig, {"task": "push-v3,pusht-state"}),
    (["experiment=pusht"], PushTConfig, {"success_coverage": 0.8}),
    (["experiment=mixed_smoke"], MixedConfig, {"max_episode_steps": 100}),
    (["experiment=smoke", "robot.task=reach-v3"], MetaWorldConfig, {"task": "reach-v3"}),
    (["robot=stub"], StubConfig, {"obs_dim": 16}),
])
def test_robot_overrides_build_the_config_of_their_kind(overrides, cls, fields):
    robot = load_config(overrides).robot
    assert type(robot) is cls and all(getattr(robot, k) == v for k, v in fields.items())


def test_a_key_the_kind_does_not_take_is_refused_naming_the_kind():
    with pytest.raises(ConfigError, match=r"'success_coverage'; robot\.kind=metaworld takes: "
                                          r"camera, kind, max_episode_steps, task"):
        from_mapping(type(load_config([])), {"robot": {"success_coverage": 0.5}})
    with pytest.raises(ConfigError, match=r"robot\.kind=metaworld takes: camera, kind, max_"):
        load_config(["robot.success_coverage=0.5"])  # PushT's key, not Meta-World's
    with pytest.raises(ConfigError, match=r"robot\.kind=gym"):
        load_config(["robot=gym", "robot.success_coverage=0.5"])
    with pytest.raises(ValueError, match=r"is robot\.kind=metaworld"):
        MetaWorldConfig(kind="pusht")


def test_run_configs_saved_before_the_split_still_load():
    old = to_dict(load_config(["experiment=smoke"]))
    old["robot"] = {"task": "push-v3", "max_episode_steps": 60, "kind": "metaworld",
                    "success_coverage": 0.95}  # what every robot carried before
    assert saved_config(old).robot == MetaWorldConfig("push-v3", 60)
    old["robot"] = {"task": "pusht", "max_episode_steps": 60, "kind": "pusht",
                    "success_coverage": 0.3}
    assert saved_config(old).robot == PushTConfig("pusht", 60, 0.3)
    assert saved_config(json.loads(json.dumps(to_dict(load_config(["robot=gym"]))))).robot == (
        GymConfig())


@pytest.mark.slow
def test_fleet_train_runs_a_gym_robot_from_a_fresh_policy(tmp_path):
    from tests.test_e2e import ROOT, fleet

    done = fleet("train", "robot=gym", "robot.task=InvertedPendulum-v5", "experiment=smoke",
                 "run.name=gym", f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/c",
                 "train.env_steps=1500", cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "gym" / "summary.json").read_text())
    assert summary["pretrain"]["demos"] == 0 and summary["tasks"] == ["InvertedPendulum-v5"]
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0
