"""Running totals over a buffer's index, so `info()` costs the same at a million records as at
ten (the training loop asks for it every few seconds).

Example:

    counts = Counts()
    counts.update(meta, +1)      # a record stored
    counts.update(meta, -1)      # a record deleted by retention
    counts.summary()["episodes_per_task"]
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence
from typing import Any

from buffers.index import RecordMeta
from buffers.log import FRAME

_KEY, _TASK, _VERSION, _STEPS, _INTERVENED, _OUTCOME, _POSITION = (
    operator.attrgetter(name) for name in ("key", "task", "policy_version", "num_steps",
                                           "intervened", "outcome", "position"))
_EPISODE, _LENGTH = operator.itemgetter(slice(0, 2)), operator.attrgetter("length")


class Counts:
    def __init__(self) -> None:
        self.records = self.steps = self.bytes = self.ended = self.successes = 0
        self.intervened = 0
        self.tasks: Counter[str] = Counter()
        self.versions: Counter[int] = Counter()
        self.episodes: Counter[tuple[str, str]] = Counter()  # records per live episode
        self.episodes_per_task: Counter[str] = Counter()

    def update(self, m: RecordMeta, sign: int) -> None:
        self.records += sign
        self.steps += sign * m.num_steps
        self.bytes += sign * (FRAME.size + m.position.length)
        self.ended += sign * (m.outcome is not None)
        self.successes += sign * (m.outcome == "success")
        self.intervened += sign * (m.intervened > 0)
        self.tasks[m.task] += sign
        self.versions[m.policy_version] += sign
        before = self.episodes[m.episode]
        self.episodes[m.episode] += sign
        if before == 0 and sign > 0:
            self.episodes_per_task[m.task] += 1
        elif self.episodes[m.episode] == 0:
            del self.episodes[m.episode]
            self.episodes_per_task[m.task] -= 1

    def add(self, metas: Sequence[RecordMeta]) -> None:
        """`update(m, +1)` for each of `metas`, a step per batch (ingest's batches)."""
        episodes = list(map(_EPISODE, map(_KEY, metas)))
        tasks = list(map(_TASK, metas))
        firsts = dict(zip(reversed(episodes), reversed(tasks), strict=True))  # first task of each
        self.episodes_per_task.update([task for episode, task in firsts.items()
                                       if episode not in self.episodes])
        self.episodes.update(episodes)
        self.tasks.update(tasks)
        self.versions.update(map(_VERSION, metas))
        outcomes = list(map(_OUTCOME, metas))
        self.records += len(metas)
        self.steps += sum(map(_STEPS, metas))
        self.bytes += sum(map(_LENGTH, map(_POSITION, metas))) + FRAME.size * len(metas)
        self.ended += len(outcomes) - outcomes.count(None)
        self.successes += outcomes.count("success")
        self.intervened += len(metas) - list(map(_INTERVENED, metas)).count(0)

    def summary(self) -> dict[str, Any]:
        versions = [v for v, n in self.versions.items() if n > 0]
        return {"records": self.records, "steps": self.steps, "episodes": len(self.episodes),
                "episodes_ended": self.ended, "successes": self.successes,
                "tasks": dict(+self.tasks), "episodes_per_task": dict(+self.episodes_per_task),
                "intervened_records": self.intervened,
                "policy_version_min": min(versions, default=None),
                "policy_version_max": max(versions, default=None), "bytes": self.bytes}
