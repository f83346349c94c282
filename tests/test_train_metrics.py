"""What wandb and metrics.jsonl get per robot and per task."""

import math

from actors.worker import WorkerStats
from fleet.run.watch import robot_and_task_metrics


def test_per_robot_and_per_task_curves() -> None:
    a, b = WorkerStats(policy_version=7), WorkerStats(policy_version=5)
    for task, ok in [("push-v3", True), ("reach-v3", False), ("push-v3", False)]:
        a.episode_done(task, ok)
    b.episode_done("push-v3", True)
    stats = [dict(a.as_dict(), robot_id="robot-0"), dict(b.as_dict(), robot_id="robot-1")]
    m = robot_and_task_metrics(stats)
    assert m["robot/robot-0/success_rate"] == 1 / 3 and m["robot/robot-1/success_rate"] == 1.0
    assert m["robot/robot-1/versions_behind"] == 2 and m["robot/robot-0/versions_behind"] == 0
    assert m["task/push-v3/success_rate"] == (0.5 + 1.0) / 2
    assert m["task/reach-v3/success_rate"] == 0.0
    empty = robot_and_task_metrics([dict(WorkerStats().as_dict(), robot_id="robot-2")])
    assert math.isnan(empty["robot/robot-2/success_rate"])
    assert not any(k.startswith("task/") for k in empty)
