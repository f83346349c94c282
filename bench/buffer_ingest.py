"""`fleet bench buffer_ingest`: MB/s of realistic chunks into the replay buffer, against raw
sequential writes of the same bytes to the same disk under the same fsync policy.

value = encoded megabytes per second through `ReplayBuffer.insert` (check + validate + dedup +
framed, CRC'd append + index, fsync every 200 ms), for 64-step state-only chunks;
`camera_*` the same for 16-step chunks with two 224×224 RGB cameras (smooth gradients plus
sensor noise, since real images compress and pure noise would not; the frames stay compressed
through ingest). baseline = the strongest plain write of the same record bytes to one file in
the same directory with the same fsync cadence, batch for batch: the faster of a buffered file
(`write` per record, `flush` per batch) and one `os.writev` per batch, alternating with the
buffer runs. Medians over the repeats. `cpu_ratio` (and `camera_cpu_ratio`): the baseline's
CPU seconds over the buffer's (process time, every thread), which a loaded machine skews less
than wall clock.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import result, state_chunk
from buffers.codec import encode_chunk
from buffers.records import RolloutChunk
from buffers.store import BufferConfig, ReplayBuffer

INTERVAL_S = 0.2


def camera_frames(rng: np.random.Generator, frames: int, size: int = 224) -> np.ndarray:
    """[frames, size, size, 3] uint8: a wall, a table and two shaded moving objects, with
    sensor noise on a quarter of the pixels (lz4 makes ~2-3× of it; rendered frames give 6.5×,
    pure noise 1×)."""
    y, x = np.mgrid[0:size, 0:size]
    out = np.empty((frames, size, size, 3), np.uint8)
    for f in range(frames):
        img = out[f]
        img[: size // 3], img[size // 3:] = (182, 178, 170), (120, 92, 60)
        for cx, cy, r, colour in ((60 + f, 150, 22, (200, 40, 40)),
                                  (150, 120 + f // 2, 30, (40, 60, 190))):
            inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r
            shade = 1 - 0.4 * (y[inside] - (cy - r)) / (2 * r)
            img[inside] = (np.array(colour) * shade[:, None]).astype(np.uint8)
        noisy = rng.random((size, size)) < 0.25
        jitter = rng.integers(-6, 7, (int(noisy.sum()), 3))
        img[noisy] = np.clip(img[noisy].astype(np.int16) + jitter, 0, 255)
    return out


def camera_chunks(n: int, steps: int = 16) -> list[RolloutChunk]:
    """`n` chunks of `steps` steps with cameras `wrist` and `front`, cut from one pool of
    frames (generating frames is slower than ingesting them)."""
    rng = np.random.default_rng(0)
    pool = camera_frames(rng, 4 * (steps + 1))
    out = []
    for i in range(n):
        chunk = state_chunk(i % 7, steps=steps, chunk_seq=i, episode_id="cam")
        a, b = (i % 3) * (steps + 1), ((i + 1) % 3) * (steps + 1)
        obs = {**chunk.obs, "wrist": pool[a:a + steps + 1], "front": pool[b:b + steps + 1]}
        out.append(dataclasses.replace(chunk, obs=obs))
    return out


def _raw(path: Path, batches: list[list[bytes]]) -> None:
    """Buffered sequential writes: each batch reaches the OS when it ends, as an insert's does."""
    with open(path, "ab", buffering=1 << 20) as f:
        last = time.monotonic()
        for batch in batches:
            for r in batch:
                f.write(r)
            f.flush()
            if time.monotonic() - last >= INTERVAL_S:
                os.fsync(f.fileno())
                last = time.monotonic()
        os.fsync(f.fileno())


def _raw_writev(path: Path, batches: list[list[bytes]]) -> None:
    """One gathered write per batch (what the log itself does, without frames or checks)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    last = time.monotonic()
    for batch in batches:
        os.writev(fd, batch)
        if time.monotonic() - last >= INTERVAL_S:
            os.fsync(fd)
            last = time.monotonic()
    os.fsync(fd)
    os.close(fd)


def _ours(root: Path, batches: list[list[bytes]]) -> None:
    config = BufferConfig(fsync="interval_ms", fsync_interval_ms=int(INTERVAL_S * 1000))
    with ReplayBuffer(root, config) as buf:
        for batch in batches:
            buf.insert(batch)


def _timed(fn: Callable[[Path, list[list[bytes]]], None], path: Path,
           batches: list[list[bytes]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: user + system, every thread)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(path, batches)
    return time.perf_counter() - t0, time.process_time() - c0


def measure(records: list[bytes], batch: int, repeats: int) -> tuple[float, float, float]:
    """Median MB/s of (buffer, strongest raw write), alternating so both see the same disk
    weather, and the ratio of their median CPU seconds (raw / buffer: what load cannot skew)."""
    batches = [records[i:i + batch] for i in range(0, len(records), batch)]
    mb = sum(map(len, records)) / 1e6
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": [], "writev": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=os.environ.get("FLEET_BENCH_DIR")) as tmp:
            runs["raw"].append(_timed(_raw, Path(tmp) / "raw.log", batches))
            runs["writev"].append(_timed(_raw_writev, Path(tmp) / "raw-writev.log", batches))
            runs["ours"].append(_timed(_ours, Path(tmp) / "buf", batches))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    best = min(("raw", "writev"), key=wall.__getitem__)
    return mb / wall["ours"], mb / wall[best], cpu[best] / max(cpu["ours"], 1e-9)


def run(quick: bool) -> dict[str, object]:
    n_state, n_cam, repeats = (2000, 24, 3) if quick else (10000, 96, 5)
    state = [encode_chunk(state_chunk(seed=i % 7, chunk_seq=i)) for i in range(n_state)]
    cams = camera_chunks(n_cam)
    cam = [encode_chunk(c) for c in cams]
    value, baseline, cpu_ratio = measure(state, 16, repeats)
    cam_value, cam_baseline, cam_cpu_ratio = measure(cam, 2, repeats)
    raw_cam = sum(a.nbytes for a in cams[0].obs.values())
    return result("buffer_ingest", "state_mb_per_s", value, "MB/s", baseline,
                  camera_value=round(cam_value, 1), camera_baseline=round(cam_baseline, 1),
                  camera_ratio=round(cam_value / cam_baseline, 3),
                  cpu_ratio=round(cpu_ratio, 3), camera_cpu_ratio=round(cam_cpu_ratio, 3),
                  state_mb=round(sum(map(len, state)) / 1e6, 1),
                  camera_mb=round(sum(map(len, cam)) / 1e6, 1),
                  camera_compression=round(raw_cam / len(cam[0]), 2), repeats=repeats)
