"""Reward side columns: labels by (reward model name, version) stored beside the segments.

Example:

    columns = RewardColumns(Path("runs/x/buffer/rewards"), fsync="interval_ms")
    columns.set(("r0", "e1", 0), "vlm_success", "3", np.array([0, 0, 1], np.float32))
    columns.get(("r0", "e1", 0), "vlm_success", "3")       # array([0., 0., 1.]) or None

Relabelling with a new reward model never rewrites observations: each (name, version) is its
own small append-only `SegmentLog` under `rewards/<name>@<version>/`, so it inherits the log's
CRCs and torn-tail recovery. A later label for the same record wins.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import numpy as np

from buffers.log import SegmentLog
from buffers.records import ChunkKey

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
Label = tuple[str, str]


def _label(name: str, version: str | int) -> Label:
    version = str(version)
    for part, what in ((name, "name"), (version, "version")):
        if not _NAME.fullmatch(part):
            raise ValueError(f"reward {what} {part!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return name, version


class RewardColumns:
    def __init__(self, root: Path, fsync: str = "interval_ms", read_only: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self.read_only = read_only  # beside a live writer: take no lock, change nothing
        self._logs: dict[Label, SegmentLog] = {}
        self._values: dict[Label, dict[ChunkKey, np.ndarray]] = {}

    def labels(self) -> list[Label]:
        """Every (name, version) with a column on disk."""
        if not self.root.is_dir():
            return []
        found = (p.name.split("@", 1) for p in self.root.iterdir() if "@" in p.name)
        return sorted((n, v) for n, v in found)

    def _open(self, label: Label) -> dict[ChunkKey, np.ndarray]:
        if label in self._values:
            return self._values[label]
        log = SegmentLog(self.root / f"{label[0]}@{label[1]}", segment_bytes=16 << 20,
                         fsync=self.fsync, read_only=self.read_only)
        values: dict[ChunkKey, np.ndarray] = {}
        for _, payload in log:
            robot, episode, seq, data = msgpack.unpackb(payload, raw=False)
            values[(robot, episode, seq)] = np.frombuffer(data, np.float32)
        self._logs[label], self._values[label] = log, values
        return values

    def set(self, key: ChunkKey, name: str, version: str | int, rewards: np.ndarray) -> None:
        rewards = np.ascontiguousarray(rewards, np.float32)
        if rewards.ndim != 1 or not np.isfinite(rewards).all():
            raise ValueError("rewards must be a finite 1-D array, one per step")
        label = _label(name, version)
        values = self._open(label)
        self._logs[label].append([msgpack.packb([*key, rewards.tobytes()], use_bin_type=True)])
        values[key] = rewards

    def get(self, key: ChunkKey, name: str, version: str | int) -> np.ndarray | None:
        label = _label(name, version)
        if label not in self._values and label not in self.labels():
            return None
        return self._open(label).get(key)

    def close(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        self._values.clear()
