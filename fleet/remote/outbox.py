"""Robots' `Outbox` to the buffer actor: never blocks the control loop, never loses a chunk.

Example (inside a robot actor):

    outbox = BufferOutbox(buffer, spill_dir=run_dir / "spill" / robot_id)
    outbox.put(encode_chunk(chunk))     # returns at once
    outbox.flush(timeout_s=30)          # at the end: everything acknowledged, or an error

Records go out in batches, one `insert` call for several chunks (a Ray call costs a robot a few
hundred microseconds of CPU whatever it carries): a record put `linger_s` or more after the last
call goes at once (a slow or paced robot's chunks are never held); records put sooner wait, at
most until `linger_s` after that call, and go together (a small thread sends them should no
further `put` come), or as soon as they fill `batch_bytes` (kept under Ray's inline limit, so a
batch of state chunks is not copied through the object store). Calls are sent without waiting
for their acknowledgement. When `max_in_flight` records are unacknowledged (the buffer is slow, or
dead and being restarted by Ray), new records go to a local spill log on disk instead, and are
resent in order, again in batches, once acknowledgements flow again: while a spill log is
pending every `put` ships at once (its record goes behind the spilled ones anyway), so the log
drains as fast as acknowledgements come, not `max_in_flight` records per `linger_s` (which, at 32
chunks/s and more, never drained it even from a buffer that acknowledged at once). Resending
is safe because the buffer's ingest is idempotent on `(robot_id, episode_id, chunk_seq)`; Ray
itself retries calls that were in flight when the buffer died.

What a crash of the robot can lose: only records not yet acknowledged and not spilled (those
in flight, and those held for at most `linger_s`), as it loses the chunk it is building; `settle`
and `flush` (the robot actor's `settle` and `stop`) send what is held first. Spilled records are
resent only by a `put` (or `flush`), never by the sending thread: a robot held still keeps its
spill log as it is, which is what a crash then leaves to its successor.

The spill log is synced as the buffer's own log is (`fsync`: the buffer's `fsync` policy), so a
spilled chunk is as durable on the robot's disk as a stored one is on the buffer's. A robot
restarted after a crash resends what its predecessor spilled (`inherited` counts them: the whole
spill log, so the ones its predecessor had resent already come back as duplicates).
"""

from __future__ import annotations

import collections
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import ray

from buffers.log import CorruptLogError, SegmentLog
from buffers.store import InsertResult

LINGER_S = 0.25  # a record waits at most this long for others to share its call (0: one record
# per call, no sending thread); `fleet.outbox_linger_s` in a run
MAX_IN_FLIGHT = 8  # records sent and not yet acknowledged; more are spilled
BATCH_BYTES = 96_000  # under Ray's inline limit for a call's argument (100 KiB)
IDLE_EXIT_S = 10.0  # the sending thread ends after this long with nothing to send


class BufferOutbox:
    def __init__(self, buffer: Any, spill_dir: Path, max_in_flight: int = MAX_IN_FLIGHT,
                 fsync: str = "interval_ms", linger_s: float = LINGER_S,
                 batch_bytes: int = BATCH_BYTES) -> None:
        self.buffer = buffer
        self.spill_dir = spill_dir
        self.max_in_flight = max_in_flight  # records sent and not yet acknowledged
        self.fsync = fsync
        if not linger_s >= 0:
            raise ValueError(f"linger_s must be >= 0 seconds (0: one record per call), got "
                             f"{linger_s}")
        self.linger_s = linger_s
        self.batch_bytes = batch_bytes
        self.in_flight: collections.deque[ray.ObjectRef] = collections.deque()  # insert calls
        self._in_flight_counts: collections.deque[int] = collections.deque()  # records in each
        self.in_flight_records = 0
        self._held: list[bytes] = []  # put, not yet sent or spilled
        self._held_bytes = 0
        self._last_call = -float("inf")  # time.monotonic() of the last insert call
        self._lock = threading.Condition()  # the loop's put, the sending thread, settle/flush
        self._sender: threading.Thread | None = None
        self._failure: BaseException | None = None  # raised by the sending thread
        self._spill: SegmentLog | None = None
        self._spill_next = 0  # index of the next spilled record to resend
        self.inherited = 0  # chunks a crashed predecessor had spilled, resent by this one
        if any(spill_dir.glob("segment-*.log")):  # left by a crashed predecessor: resend it all
            self._spill = self._open_spill()
            self.inherited = len(self._spill.positions)
        self.sent = self.stored = self.duplicates = self.spilled = 0
        self.calls = 0  # insert calls made (sent records / calls: the batching)
        self.refusals: list[str] = []

    def put(self, record: bytes) -> None:
        with self._lock:
            self._raise_failure()
            if self._held and self._held_bytes + len(record) > self.batch_bytes:
                self._ship()  # a full batch goes now; this record starts the next
            self._held.append(record)
            self._held_bytes += len(record)
            if self._spill is not None or time.monotonic() - self._last_call >= self.linger_s:
                self._ship()  # behind a spill log a record is not held: the log drains at once
            elif len(self._held) == 1:  # the sending thread times this batch
                if self._sender is None:
                    self._sender = threading.Thread(target=self._send_late, daemon=True,
                                                    name="outbox")
                    self._sender.start()
                else:
                    self._lock.notify()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"the outbox's sending thread failed: {self._failure!r}"
                               ) from self._failure

    def _send_late(self) -> None:
        """The sending thread: records held `linger_s` after the last call go then."""
        with self._lock:
            while True:
                if not self._held:
                    if not self._lock.wait(IDLE_EXIT_S) and not self._held:
                        self._sender = None  # idle: the next held record starts another
                        return
                    continue
                left = self._last_call + self.linger_s - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                try:
                    self._ship_held()  # spilled records wait for the loop's next put
                except BaseException as e:  # raised to the loop at its next put
                    self._failure, self._sender = e, None
                    return

    def _ship(self) -> None:
        """`_ship_held`, then spilled records resent while there is room. Holds the lock."""
        self._ship_held()
        self._resend()

    def _ship_held(self) -> None:
        """Count the acks that have arrived; send what is held as one call, or spill it (no
        room in flight, or older records spilled). Holds the lock. Held records are let go only
        once sent or spilled: should either raise, they stay held (and the error is raised)."""
        if self.in_flight_records >= max(1, self.max_in_flight // 2):
            self._reap()  # acks counted a few calls at a time, well before a spill
        if not self._held:
            return
        if self._spill is not None or self.in_flight_records >= self.max_in_flight:
            self._to_spill(self._held)
        else:
            self._send(self._held)
        self._held, self._held_bytes = [], 0

    def _send(self, records: list[bytes]) -> None:
        self.in_flight.append(self.buffer.insert.remote(records))
        self._in_flight_counts.append(len(records))
        self.in_flight_records += len(records)
        self.sent += len(records)
        self.calls += 1
        self._last_call = time.monotonic()

    def _to_spill(self, records: list[bytes]) -> None:
        if self._spill is None:
            self._spill = self._open_spill()
        self._spill.append(records)
        self.spilled += len(records)

    def _open_spill(self) -> SegmentLog:
        # a crashed predecessor's process may still be exiting, its lock with it
        return SegmentLog(self.spill_dir, fsync=self.fsync, lock_wait_s=60.0)

    def _resend(self) -> None:
        """Move spilled records back to the wire, oldest first, in batches, while there is
        room."""
        spill = self._spill
        while spill is not None and self.in_flight_records < self.max_in_flight:
            if self._spill_next == len(spill.positions):
                spill.close()
                shutil.rmtree(self.spill_dir, ignore_errors=True)
                self._spill, self._spill_next = None, 0
                return
            batch: list[bytes] = []
            size = 0
            while self._spill_next < len(spill.positions):
                pos = spill.positions[self._spill_next]
                if batch and (size + pos.length > self.batch_bytes
                              or self.in_flight_records + len(batch) >= self.max_in_flight):
                    break
                try:
                    record = spill.read(pos)
                except CorruptLogError as e:  # damaged on this robot's disk: report, go on
                    self.refusals.append(f"spilled chunk lost to local disk damage: {e}")
                else:
                    batch.append(record)
                    size += len(record)
                self._spill_next += 1
            if batch:
                self._send(batch)

    def _reap(self) -> None:
        """Count acknowledgements that have arrived, without waiting for any (one `ray.wait`
        for all in flight: on a busy core each call costs a few hundred microseconds)."""
        if not self.in_flight:
            return
        ready = set(ray.wait(list(self.in_flight), num_returns=len(self.in_flight),
                             timeout=0)[0])
        acked = []
        while self.in_flight and self.in_flight[0] in ready:
            acked.append(self._pop_oldest())
        for result in ray.get(acked):  # one call for all of them
            self._count(result)

    def _pop_oldest(self) -> ray.ObjectRef:
        self.in_flight_records -= self._in_flight_counts.popleft()
        return self.in_flight.popleft()

    def _count(self, result: InsertResult) -> None:
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.refusals += [reason for _, reason in result.refused]

    def _ack_oldest(self, timeout_s: float) -> None:
        ready, _ = ray.wait([self.in_flight[0]], timeout=timeout_s)
        if ready:
            self._count(ray.get(self._pop_oldest()))

    def settle(self, timeout_s: float = 60.0) -> None:
        """Send what is held, then wait until every record sent is acknowledged, leaving spilled
        ones spilled (a robot held still can be inspected, or killed, with its spill log
        intact)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._raise_failure()
            self._ship_held()  # spilled records not resent
            while self.in_flight and time.monotonic() < deadline:
                self._ack_oldest(0.5)
            if self.in_flight:
                raise TimeoutError(f"{len(self.in_flight)} calls unacknowledged after "
                                   f"{timeout_s} s")

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every record, held and spilled ones included, is acknowledged."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._raise_failure()
            self._ship()
            while self.in_flight or self._spill is not None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self.in_flight)} calls unacknowledged and "
                                       f"{self.pending_spill} spilled after {timeout_s} s")
                if self.in_flight:
                    self._ack_oldest(0.5)
                self._resend()

    @property
    def pending_spill(self) -> int:
        return 0 if self._spill is None else len(self._spill.positions) - self._spill_next
