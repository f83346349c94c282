"""The operator's control state, alone and obeyed by a real Meta-World robot's worker (no Ray)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from actors.control import CommandError, RobotControl
from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from buffers.codec import decode_chunk
from tests.fakes import ListOutbox, ListWeights
from tests.util import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("cmd", [
    {"cmd": "fly"}, {}, "pause", {"cmd": "pause", "extra": 1}, {"cmd": "takeover"},
    {"cmd": "takeover", "on": "yes"}, {"cmd": "label", "outcome": "great"},
    {"cmd": "say", "text": ""}, {"cmd": "say", "text": "x" * 501},
    {"cmd": "teleop", "action": [0, 0, 0]}, {"cmd": "teleop", "action": [0, 0, 0, "a"]},
    {"cmd": "teleop", "action": [0, 0, 0, float("nan")]},
])
def test_malformed_commands_are_refused_and_change_nothing(cmd):
    control = RobotControl(action_dim=4)
    before = control.state()
    with pytest.raises(CommandError):
        control.command(cmd)
    after = control.state()
    assert {k: after[k] for k in ("status", "holding", "correction", "labels")} == \
        {k: before[k] for k in ("status", "holding", "correction", "labels")}


def test_estop_is_latched_and_only_arm_releases_it():
    control = RobotControl(action_dim=4)
    control.command({"cmd": "estop"})
    control.command({"cmd": "resume"})
    assert control.state()["status"] == "estopped"
    control.command({"cmd": "arm"})
    assert control.state()["status"] == "running"


def test_teleop_needs_a_takeover_and_goes_stale_to_zero():
    control = RobotControl(action_dim=4, teleop_timeout_s=0.05)
    with pytest.raises(CommandError, match="take-over"):
        control.command({"cmd": "teleop", "action": [1, 0, 0, 0]})
    control.command({"cmd": "takeover", "on": True})
    assert not control.teleop_action().any()  # nothing fresh yet: hold still
    control.command({"cmd": "teleop", "action": [2.0, -0.5, 0, 0]})
    assert np.array_equal(control.teleop_action(), np.array([1.0, -0.5, 0, 0], np.float32))
    time.sleep(0.1)
    assert not control.teleop_action().any()


def test_a_held_worker_waits_in_slices_and_honours_stop():
    control = RobotControl(action_dim=4)
    control.command({"cmd": "pause"})
    stop = threading.Event()
    verdicts: list[str] = []
    t = threading.Thread(target=lambda: verdicts.append(control.before_step(stop)))
    t.start()
    assert control.wait_holding(5.0)
    stop.set()
    t.join(5.0)
    assert verdicts == ["stop"] and not control.holding


def make_worker(control: RobotControl, max_steps: int = 500) -> tuple[RobotWorker, ListOutbox]:
    torch.manual_seed(0)
    robot = MetaWorldRobot(MetaWorldConfig(task="reach-v3", max_episode_steps=max_steps), "r0")
    outbox = ListOutbox()
    worker = RobotWorker(robot, ChunkPolicy(PolicyConfig(hidden=16)), outbox, ListWeights(),
                         WorkerConfig(calls_per_chunk=4), control=control)
    return worker, outbox


def chunks(outbox: ListOutbox) -> list:
    return [decode_chunk(r) for r in list(outbox.records)]


def test_worker_pauses_estops_and_resumes_within_a_step():
    control = RobotControl(action_dim=4)
    worker, outbox = make_worker(control)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: worker.stats.env_steps > 20)
        control.command({"cmd": "pause"})
        assert control.wait_holding(30.0)
        held = worker.stats.env_steps
        time.sleep(0.3)
        assert worker.stats.env_steps == held  # not one step while paused
        control.command({"cmd": "estop"})
        control.command({"cmd": "resume"})  # the e-stop is latched: still holding
        time.sleep(0.2)
        assert worker.stats.env_steps == held and control.holding
        control.command({"cmd": "arm"})
        assert wait_for(lambda: worker.stats.env_steps > held + 10)
        control.command({"cmd": "estop"})
        assert control.wait_holding(30.0)
        at = worker.stats.env_steps
        time.sleep(0.2)
        assert worker.stats.env_steps == at
    finally:
        stop.set()  # a held worker gives up its episode (truncated) and returns
        t.join(10.0)
    assert not t.is_alive()
    last = chunks(outbox)[-1]
    assert last.episode_end is not None and last.episode_end.outcome == "truncated"


def test_takeover_steps_are_flagged_and_run_the_teleop_action():
    control = RobotControl(action_dim=4, teleop_timeout_s=60.0)
    worker, outbox = make_worker(control, max_steps=30)
    control.command({"cmd": "takeover", "on": True})
    control.command({"cmd": "teleop", "action": [0.5, 0.0, -0.25, 0.0]})
    worker.run_episode(seed=1)
    got = chunks(outbox)
    assert all(c.intervened.all() for c in got)
    assert np.allclose(np.concatenate([c.action for c in got]), [0.5, 0.0, -0.25, 0.0])
    assert worker.stats.intervened_steps == 30


def test_a_label_ends_the_episode_as_the_operator_said_and_a_correction_is_kept():
    control = RobotControl(action_dim=4)
    worker, outbox = make_worker(control)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: worker.stats.env_steps > 5)
        control.command({"cmd": "say", "text": "move left of the puck"})
        control.command({"cmd": "label", "outcome": "success"})
        assert wait_for(lambda: worker.stats.episodes >= 1)
        control.command({"cmd": "reset"})
        assert wait_for(lambda: any(c.episode_end is not None
                                    and c.episode_end.outcome == "truncated"
                                    for c in chunks(outbox)))
    finally:
        stop.set()
        t.join(10.0)
    ends = [c for c in chunks(outbox) if c.episode_end is not None]
    first = ends[0]
    assert (first.episode_end.outcome, first.episode_end.source) == ("success", "human")
    assert first.instruction == "move left of the puck"
    assert worker.stats.recent[0] is True
    assert ends[1].episode_end.outcome == "truncated" and ends[1].instruction == ""


def test_a_label_while_estopped_ends_the_episode_and_the_next_waits_for_arm():
    control = RobotControl(action_dim=4)
    worker, outbox = make_worker(control)
    resets: list[int] = []
    real_reset = worker.robot.reset
    worker.robot.reset = lambda seed=None: resets.append(seed) or real_reset(seed)  # type: ignore
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: worker.stats.env_steps > 5)
        control.command({"cmd": "estop"})
        assert control.wait_holding(30.0)
        held = worker.stats.env_steps
        control.command({"cmd": "label", "outcome": "failure"})
        assert wait_for(lambda: worker.stats.episodes == 1)
        time.sleep(0.2)
        assert resets == resets[:1]  # no new episode (a reset moves the arm) while e-stopped
        assert worker.stats.env_steps == held and control.holding
        control.command({"cmd": "arm"})
        assert wait_for(lambda: len(resets) == 2 and worker.stats.env_steps > held)
    finally:
        stop.set()
        t.join(10.0)
    end = next(c.episode_end for c in chunks(outbox) if c.episode_end is not None)
    assert (end.outcome, end.source) == ("failure", "human")
