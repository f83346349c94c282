"""Running totals over a buffer's index, so `info()` costs the same at a million records as at
ten (the training loop asks for it every few seconds).

Example:

    counts = Counts()
    counts.update(meta, +1)      # a record stored
    counts.update(meta, -1)      # a record deleted by retention
    counts.summary()["episodes_per_task"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from buffers.index import RecordMeta
from buffers.log import FRAME


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
        """`update(m, +1)` for each of `metas`, in one pass (ingest's batches)."""
        episodes, per_task, tasks, versions = (self.episodes, self.episodes_per_task,
                                               self.tasks, self.versions)
        steps = size = ended = successes = intervened = 0
        for m in metas:
            steps += m.num_steps
            size += m.position.length
            outcome = m.outcome
            if outcome is not None:
                ended += 1
                successes += outcome == "success"
            intervened += m.intervened > 0
            episode = m.key[:2]
            if episode in episodes:
                episodes[episode] += 1
            else:
                episodes[episode] = 1
                per_task[m.task] += 1
        tasks.update([m.task for m in metas])
        versions.update([m.policy_version for m in metas])
        self.records += len(metas)
        self.steps += steps
        self.bytes += size + FRAME.size * len(metas)
        self.ended += ended
        self.successes += successes
        self.intervened += intervened

    def summary(self) -> dict[str, Any]:
        versions = [v for v, n in self.versions.items() if n > 0]
        return {"records": self.records, "steps": self.steps, "episodes": len(self.episodes),
                "episodes_ended": self.ended, "successes": self.successes,
                "tasks": dict(+self.tasks), "episodes_per_task": dict(+self.episodes_per_task),
                "intervened_records": self.intervened,
                "policy_version_min": min(versions, default=None),
                "policy_version_max": max(versions, default=None), "bytes": self.bytes}
