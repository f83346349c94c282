"""`fleet bench ingest`: chunks into the persistent buffer, against raw appends to a file.

value = env steps/s through `ReplayBuffer.insert` (decode + validate + dedup + framed append,
fsync every 200 ms); baseline = the same encoded bytes appended to one raw file with the same
fsync cadence, in the same run and directory.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import result, state_chunk
from buffers.codec import encode_chunk
from buffers.store import BufferConfig, ReplayBuffer


def _raw(path: Path, batches: list[list[bytes]], interval_s: float) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    last = time.monotonic()
    for batch in batches:
        for r in batch:
            os.write(fd, r)
        if time.monotonic() - last >= interval_s:
            os.fsync(fd)
            last = time.monotonic()
    os.fsync(fd)
    os.close(fd)


def run(quick: bool) -> dict[str, object]:
    chunks, repeats = (1600, 3) if quick else (8000, 5)
    records = [encode_chunk(state_chunk(seed=i % 7, chunk_seq=i)) for i in range(chunks)]
    batches = [records[i:i + 16] for i in range(0, len(records), 16)]
    steps = chunks * 64
    ours, raw = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=os.environ.get("FLEET_BENCH_DIR")) as tmp:
            t0 = time.perf_counter()
            _raw(Path(tmp) / "raw.log", batches, 0.2)
            raw.append(steps / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with ReplayBuffer(Path(tmp) / "buf", BufferConfig(fsync="interval_ms")) as buf:
                for batch in batches:
                    buf.insert(batch)
            ours.append(steps / (time.perf_counter() - t0))
    ours.sort()
    raw.sort()
    return result("ingest", "steps_per_s", ours[len(ours) // 2], "env steps/s",
                  raw[len(raw) // 2], chunks=chunks, repeats=repeats,
                  mb=round(sum(map(len, records)) / 1e6, 1))
