"""Task sampling for multi-task fleets: more episodes for the tasks that fail, none starved.

Example (the learner keeps the table and publishes it with each weight set; robots draw their
next task from the newest one they got):

    table = TaskTable(("reach-v3", "push-v3"), TaskSampling(enabled=True, floor=0.05))
    table.record("reach-v3", success=True)            # each episode end the learner reads
    weights = table.weights()                         # {"reach-v3": 0.05, "push-v3": 0.95}
    task = pick(weights, np.random.default_rng(0))    # a robot's next training task

Terms: a task's **recent success** is its success rate over its last `window` finished training
episodes (an episode an operator took part in counts as a failure of the policy); its **failure
rate** is one minus that (`prior` before it has any). A task's **weight** is its probability of
being a robot's next task: `floor` for every task, and the rest of the probability shared in
proportion to failure rates (evenly when nothing fails). So a task at 0% success is drawn more
often than one at 100%, and no task falls below `floor` (MT10 after PPO: six tasks at 84-100%
were given as many episodes as the four at 3-34%, issue 14).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskSampling:
    """`learner.task_sampling.*`: off by default (robots take their tasks in turn)."""

    enabled: bool = False
    window: int = 20  # recent training episodes per task
    floor: float = 0.05  # every task's least probability (times the number of tasks <= 1)
    prior: float = 1.0  # failure rate of a task with no finished episode yet

    def __post_init__(self) -> None:
        if self.window < 1 or not 0 <= self.floor <= 1 or not 0 <= self.prior <= 1:
            raise ValueError("task_sampling: window >= 1, floor and prior in [0, 1]")


class TaskTable:
    """Recent outcomes per task, and the sampling weights they give (see the module)."""

    def __init__(self, tasks: Sequence[str], config: TaskSampling) -> None:
        if not tasks:
            raise ValueError("task sampling needs at least one task")
        if config.floor * len(tasks) > 1:
            raise ValueError(f"task_sampling.floor={config.floor:g} for {len(tasks)} tasks "
                             f"asks for more than all episodes: use floor <= "
                             f"{1 / len(tasks):.4g}")
        self.tasks, self.config = tuple(tasks), config
        self.recent = {t: collections.deque[bool](maxlen=config.window) for t in self.tasks}

    def record(self, task: str, success: bool) -> None:
        """A finished training episode of `task` (a task not in the table is ignored)."""
        if task in self.recent:
            self.recent[task].append(bool(success))

    def outcomes(self) -> dict[str, list[bool]]:
        """The recent outcomes per task, oldest first (for a checkpoint)."""
        return {t: list(d) for t, d in self.recent.items()}

    def restore(self, outcomes: Mapping[str, Sequence[bool]]) -> None:
        """Outcomes saved by `outcomes()` (tasks no longer in the table are ignored)."""
        for task, seen in outcomes.items():
            for success in seen:
                self.record(task, success)

    def success(self) -> dict[str, float]:
        """Recent success per task (NaN before its first finished episode)."""
        return {t: float(np.mean(d)) if d else float("nan") for t, d in self.recent.items()}

    def weights(self) -> dict[str, float]:
        """Each task's probability of being drawn next: the floor plus its share of the rest,
        in proportion to its failure rate; they sum to 1."""
        fail = np.array([1 - np.mean(d) if d else self.config.prior
                         for d in self.recent.values()])
        share = fail / fail.sum() if fail.sum() > 0 else np.full(len(fail), 1 / len(fail))
        floor = self.config.floor
        p = floor + (1 - floor * len(fail)) * share
        return dict(zip(self.tasks, (float(x) for x in p), strict=True))


def pick(weights: Mapping[str, float], rng: np.random.Generator) -> str:
    """One task drawn with probability `weights[task]` (normalised)."""
    names = list(weights)
    p = np.array([weights[t] for t in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]
