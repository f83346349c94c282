"""Held-out evaluation: the same (task, seed) episodes before and after post-training.

Example:

    episodes = held_out(cfg.robot, episodes=50, first_seed=900_000)   # [(task, seed), ...]
    success = run_episodes(worker, robot, episodes)                   # one bool per episode
    by_task(episodes, success)                                        # {"push-v3": 0.96}

During training (`Evaluator`): a robot of its own that only evaluates, given the newest weights
every so many env steps, so a dip shows when it happens (`fleet train eval.every_steps=N`,
`fleet bench td_push`):

    evaluator = Evaluator(make_robot(cfg.robot, "eval-0"), copy_of_policy, episodes, config)
    success = evaluator.evaluate(policy_state)                        # one bool per episode

With returns, lengths and, for a robot with cameras, the frames of the first `record` episodes
(what `fleet train` logs as `eval/episode_return`, `eval/episode_length` and `eval/video/*`):

    recorded = record_episodes(worker, robot, episodes, record=1)    # [EvalEpisode, ...]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actors.robots.base import RobotConfig, SimRobot
from actors.worker import EvalEpisode, RobotWorker, WorkerConfig

Episode = tuple[str, int]  # (task, seed)


def held_out(robot: RobotConfig, episodes: int, first_seed: int) -> list[Episode]:
    """`episodes` fresh seeds per task of the robot config `robot` (its `tasks`), task after
    task; training seeds never reach them."""
    return [(task, first_seed + i) for task in robot.tasks for i in range(episodes)]


def run_episodes(worker: RobotWorker, robot: SimRobot,
                 episodes: Sequence[Episode]) -> list[bool]:
    """Run held-out episodes on a simulated robot (it can `pin_task`) with the worker's current
    weights; nothing is streamed."""
    return [e.success for e in record_episodes(worker, robot, episodes)]


def record_episodes(worker: RobotWorker, robot: SimRobot, episodes: Sequence[Episode],
                    record: int = 0) -> list[EvalEpisode]:
    """`run_episodes` with each episode's return and length, and the camera frames of the
    first `record` episodes."""
    results: list[EvalEpisode] = []
    try:
        for task, seed in episodes:
            robot.pin_task(task)
            results += worker.evaluate_episodes([seed], record=int(len(results) < record))
    finally:
        robot.pin_task(None)
    return results


def by_task(episodes: Sequence[Episode], success: Sequence[bool]) -> dict[str, float]:
    """Success rate per task, in the order tasks first appear."""
    tasks = list(dict.fromkeys(task for task, _ in episodes))
    return {t: float(np.mean([s for (task, _), s in zip(episodes, success, strict=True)
                              if task == t])) for t in tasks}


class Nowhere:
    """Outbox and weight source for a robot that only evaluates."""

    def put(self, record: bytes) -> None:
        raise RuntimeError("an evaluating robot streams nothing")

    def poll(self, have_version: int) -> None:
        return None


class Collected(Nowhere):
    """Outbox that keeps every record in memory (and no weights to poll): a robot whose
    chunks a script or a test reads itself."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def put(self, record: bytes) -> None:
        self.records.append(record)


class Evaluator:
    """Held-out `episodes` on a robot that never trains, with whatever weights it is handed."""

    def __init__(self, robot: SimRobot, policy: object, episodes: Sequence[Episode],
                 config: WorkerConfig) -> None:
        self.robot, self.policy, self.episodes = robot, policy, list(episodes)
        self.worker = RobotWorker(robot, policy, Nowhere(), Nowhere(), config)  # type: ignore[arg-type]

    def evaluate(self, state: dict[str, np.ndarray]) -> list[bool]:
        """The episodes with the weights `state` (a `policy_state()`), in order."""
        return [e.success for e in self.evaluate_episodes(state)]

    def evaluate_episodes(self, state: dict[str, np.ndarray],
                          record: int = 0) -> list[EvalEpisode]:
        """`evaluate` with returns, lengths and the first `record` episodes' frames."""
        self.policy.load_policy_state(state)  # type: ignore[attr-defined]
        return record_episodes(self.worker, self.robot, self.episodes, record)

    def close(self) -> None:
        self.robot.close()
