"""Robots' `Outbox` to the buffer actor: never blocks the control loop, never loses a chunk.

Example (inside a robot actor):

    outbox = BufferOutbox(buffer, spill_dir=run_dir / "spill" / robot_id)
    outbox.put(encode_chunk(chunk))     # returns at once
    outbox.flush(timeout_s=30)          # at the end: everything acknowledged, or an error

Each record is sent without waiting for its acknowledgement. When `max_in_flight` sends are
unacknowledged (the buffer is slow, or dead and being restarted by Ray), new records go to a
local spill log on disk instead, and are resent in order once acknowledgements flow again.
Resending is safe because the buffer's ingest is idempotent on `(robot_id, episode_id,
chunk_seq)`; Ray itself retries calls that were in flight when the buffer died.

The spill log is synced as the buffer's own log is (`fsync`: the buffer's `fsync` policy), so a
spilled chunk is as durable on the robot's disk as a stored one is on the buffer's. A robot
restarted after a crash resends what its predecessor spilled (`inherited` counts them: the whole
spill log, so the ones its predecessor had resent already come back as duplicates).
"""

from __future__ import annotations

import collections
import shutil
import time
from pathlib import Path
from typing import Any

import ray

from buffers.log import CorruptLogError, SegmentLog
from buffers.store import InsertResult


class BufferOutbox:
    def __init__(self, buffer: Any, spill_dir: Path, max_in_flight: int = 8,
                 fsync: str = "interval_ms") -> None:
        self.buffer = buffer
        self.spill_dir = spill_dir
        self.max_in_flight = max_in_flight
        self.fsync = fsync
        self.in_flight: collections.deque[ray.ObjectRef] = collections.deque()
        self._spill: SegmentLog | None = None
        self._spill_next = 0  # index of the next spilled record to resend
        self.inherited = 0  # chunks a crashed predecessor had spilled, resent by this one
        if any(spill_dir.glob("segment-*.log")):  # left by a crashed predecessor: resend it all
            self._spill = self._open_spill()
            self.inherited = len(self._spill.positions)
        self.sent = self.stored = self.duplicates = self.spilled = 0
        self.refusals: list[str] = []

    def put(self, record: bytes) -> None:
        if len(self.in_flight) >= max(1, self.max_in_flight // 2):
            self._reap()  # not per chunk: acks are counted a few at a time, well before a spill
        if self._spill is not None or len(self.in_flight) >= self.max_in_flight:
            self._to_spill(record)
        else:
            self._send(record)
        self._resend()

    def _send(self, record: bytes) -> None:
        self.in_flight.append(self.buffer.insert.remote([record]))
        self.sent += 1

    def _to_spill(self, record: bytes) -> None:
        if self._spill is None:
            self._spill = self._open_spill()
        self._spill.append([record])
        self.spilled += 1

    def _open_spill(self) -> SegmentLog:
        # a crashed predecessor's process may still be exiting, its lock with it
        return SegmentLog(self.spill_dir, fsync=self.fsync, lock_wait_s=60.0)

    def _resend(self) -> None:
        """Move spilled records back to the wire, oldest first, while there is room."""
        spill = self._spill
        while spill is not None and len(self.in_flight) < self.max_in_flight:
            if self._spill_next == len(spill.positions):
                spill.close()
                shutil.rmtree(self.spill_dir, ignore_errors=True)
                self._spill, self._spill_next = None, 0
                return
            try:
                self._send(spill.read(spill.positions[self._spill_next]))
            except CorruptLogError as e:  # damaged on this robot's disk: report, go on
                self.refusals.append(f"spilled chunk lost to local disk damage: {e}")
            self._spill_next += 1

    def _reap(self) -> None:
        """Count acknowledgements that have arrived, without waiting for any (one `ray.wait`
        for all in flight: on a busy core each call costs a few hundred microseconds)."""
        if not self.in_flight:
            return
        ready = set(ray.wait(list(self.in_flight), num_returns=len(self.in_flight),
                             timeout=0)[0])
        acked = []
        while self.in_flight and self.in_flight[0] in ready:
            acked.append(self.in_flight.popleft())
        for result in ray.get(acked):  # one call for all of them
            self._count(result)

    def _count(self, result: InsertResult) -> None:
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.refusals += [reason for _, reason in result.refused]

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until every record sent is acknowledged, leaving spilled ones spilled (a robot
        held still can be inspected, or killed, with its spill log intact)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            ready, _ = ray.wait([self.in_flight[0]], timeout=0.5)
            if ready:
                self._count(ray.get(self.in_flight.popleft()))
        if self.in_flight:
            raise TimeoutError(f"{len(self.in_flight)} chunks unacknowledged after {timeout_s} s")

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every record, spilled ones included, is acknowledged."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight or self._spill is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.in_flight)} chunks unacknowledged and "
                                   f"{self.pending_spill} spilled after {timeout_s} s")
            if self.in_flight:
                ready, _ = ray.wait([self.in_flight[0]], timeout=0.5)
                if ready:
                    self._count(ray.get(self.in_flight.popleft()))
            self._resend()

    @property
    def pending_spill(self) -> int:
        return 0 if self._spill is None else len(self._spill.positions) - self._spill_next
