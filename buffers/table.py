"""The sampler's copy of the buffer's index: numpy columns that grow in place.

Example:

    table = Table()
    table.sync(buffer)                     # append the records stored since the last sync
    fresh = table.col("version") >= 7      # [N] masks over records, vectorised

Strings (task, group, episode) become small integers so selection is pure numpy; an episode's
outcome (0 unfinished, 1 success, 2 failure or truncated) is known once its last record arrives.
"""

from __future__ import annotations

import numpy as np

from buffers.store import ReplayBuffer

_DTYPES = {"cursor": np.int64, "version": np.int64, "task": np.int32, "group": np.int32,
           "episode": np.int64, "intervened": np.bool_, "uses": np.int32,
           "priority": np.float64, "alive": np.bool_}


class Table:
    def __init__(self) -> None:
        self.n = 0
        self._cols: dict[str, np.ndarray] = {k: np.zeros(1024, dt) for k, dt in _DTYPES.items()}
        self._ids: dict[str, dict[object, int]] = {"task": {}, "group": {}, "episode": {}}
        self._outcome = np.zeros(1024, np.int8)
        self.max_priority = 1.0
        self._seen = 0  # buffer cursor synced up to

    def col(self, name: str) -> np.ndarray:
        return self._cols[name][:self.n]

    def _id(self, kind: str, value: object) -> int:
        ids = self._ids[kind]
        return ids.setdefault(value, len(ids))

    def sync(self, buffer: ReplayBuffer) -> None:
        new = buffer.since(self._seen)
        self._seen = buffer.end
        if not new:
            return
        self._grow(self.n + len(new))
        rows = slice(self.n, self.n + len(new))
        c = self._cols
        c["cursor"][rows] = [cur for cur, _ in new]
        c["version"][rows] = [m.policy_version for _, m in new]
        c["task"][rows] = [self._id("task", m.task) for _, m in new]
        c["group"][rows] = [self._id("group", (m.task, m.group)) if m.group else -1
                            for _, m in new]
        c["episode"][rows] = [self._id("episode", m.episode) for _, m in new]
        c["intervened"][rows] = [m.intervened > 0 for _, m in new]
        c["uses"][rows] = 0
        c["priority"][rows] = self.max_priority  # new records first get the top priority
        c["alive"][rows] = True
        self.n += len(new)
        self._grow_outcomes(len(self._ids["episode"]))
        for _, m in new:
            if m.outcome is not None:
                won = m.outcome == "success"
                self._outcome[self._ids["episode"][m.episode]] = 1 if won else 2

    def _grow(self, need: int) -> None:
        size = len(self._cols["cursor"])
        if need > size:
            size = max(need, 2 * size)
            for k, a in self._cols.items():
                self._cols[k] = np.resize(a, size)

    def _grow_outcomes(self, need: int) -> None:
        if need > len(self._outcome):
            grown = np.zeros(max(need, 2 * len(self._outcome)), np.int8)
            grown[:len(self._outcome)] = self._outcome
            self._outcome = grown

    @property
    def outcomes(self) -> np.ndarray:
        """Outcome per episode id: index it with `col("episode")`."""
        return self._outcome

    def set_priorities(self, cursors: np.ndarray, priorities: np.ndarray) -> None:
        if not np.isfinite(priorities).all() or (priorities < 0).any():
            raise ValueError("priorities must be finite and >= 0")
        rows = np.searchsorted(self.col("cursor"), cursors)
        found = (rows < self.n) & (self.col("cursor")[np.minimum(rows, self.n - 1)] == cursors)
        self._cols["priority"][rows[found]] = priorities[found]
        self.max_priority = max(self.max_priority, float(priorities.max(initial=0)))
