"""`fleet bench buffer_sample`: batches/s from a buffer larger than its decoded-record cache,
and peak memory while ingesting five times the cache budget.

value = batches/s of `Sampler(buffer, replay(batch_size=256, horizon=8)).sample()` over 64-step
state chunks whose decoded size is ~2× the cache (so most draws decode from disk: page cache,
CRC check, lz4, validation). baseline = batches/s gathering the same [256, 9, 39] windows with
numpy fancy indexing from arrays already in memory (the cost of the copy alone), same run.
peak_rss_mb: a fresh process ingests camera chunks (two 224×224 RGB cameras) worth 5× a
`cache_bytes` budget, reading each back through the cache and sampling as it goes; the issue asks
that it stay under budget + 300 MB (`rss_limit_mb`). Medians over the repeats.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import result, state_chunk
from buffers.codec import encode_chunk
from buffers.sampler import Sampler
from buffers.sampling import replay
from buffers.store import BufferConfig, ReplayBuffer

B, H = 256, 8


def _rates(fn: Callable[[], object], batches: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            fn()
        rates.append(batches / (time.perf_counter() - t0))
    return statistics.median(rates)


def _gather(states: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> None:
    rows = rng.integers(0, len(states), B)
    starts = rng.integers(0, actions.shape[1] - H + 1, B)
    steps = starts[:, None] + np.arange(H + 1)
    _ = states[rows[:, None], steps], actions[rows[:, None], steps[:, :H]]


def sample_rate(chunks: int, cache_bytes: int, batches: int, repeats: int) -> dict[str, float]:
    made = [state_chunk(seed=i % 13, chunk_seq=i) for i in range(chunks)]
    states = np.stack([c.obs["state"] for c in made])
    actions = np.stack([c.action for c in made])
    rng = np.random.default_rng(0)
    baseline = _rates(lambda: _gather(states, actions, rng), batches, repeats)
    with tempfile.TemporaryDirectory(dir=os.environ.get("FLEET_BENCH_DIR")) as tmp:
        config = BufferConfig(fsync="never", cache_bytes=cache_bytes)
        with ReplayBuffer(Path(tmp), config) as buf:
            buf.insert([encode_chunk(c) for c in made])
            sampler = Sampler(buf, replay(batch_size=B, horizon=H))
            value = _rates(sampler.sample, batches, repeats)
            hit = buf.cache.hits / max(buf.cache.hits + buf.cache.misses, 1)
    decoded = states.nbytes + actions.nbytes + chunks * 3000  # ~3 KB of small columns each
    return {"value": value, "baseline": baseline, "cache_hit_rate": round(hit, 3),
            "decoded_over_cache": round(decoded / cache_bytes, 2)}


def _vm(field: str) -> float:
    """MB from /proc/self/status. VmHWM is this program's peak RSS; `ru_maxrss` would carry
    the parent's peak over from before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(cache_bytes: int, factor: int) -> None:
    """Run in a fresh interpreter: ingest `factor` × cache_bytes of decoded camera data."""
    from bench.buffer_ingest import camera_chunks

    chunks = camera_chunks(8)  # a pool: record identity comes from chunk_seq below
    start = _vm("VmRSS")
    per = sum(a.nbytes for a in chunks[0].obs.values())
    tmp = tempfile.TemporaryDirectory(dir=os.environ.get("FLEET_BENCH_DIR"))
    with tmp, ReplayBuffer(Path(tmp.name), BufferConfig(cache_bytes=cache_bytes)) as buf:
        sampler = Sampler(buf, replay(batch_size=16, horizon=H))
        for i in range(factor * cache_bytes // per + 1):
            c = dataclasses.replace(chunks[i % len(chunks)], chunk_seq=i)
            buf.insert([encode_chunk(c)])
            buf.get(buf.records()[-1])  # through the cache, as a learner reading it would
            if i % 4 == 0:
                sampler.sample()
        cached = buf.cache.bytes
    peak = _vm("VmHWM")
    print(json.dumps({"peak_rss_mb": round(peak, 1), "start_rss_mb": round(start, 1),
                      "cache_mb_at_end": round(cached / 2**20, 1),
                      "ingested_mb": round((i + 1) * per / 2**20, 1)}))


def peak_rss(cache_bytes: int, factor: int = 5) -> dict[str, float]:
    code = f"from bench.buffer_sample import rss_child; rss_child({cache_bytes}, {factor})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)
    out: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return out


def run(quick: bool) -> dict[str, object]:
    chunks, cache, batches, repeats = (3000, 16 << 20, 10, 3) if quick else (
        12000, 64 << 20, 40, 5)
    rates = sample_rate(chunks, cache, batches, repeats)
    rss_cache = (64 if quick else 256) << 20
    rss = peak_rss(rss_cache)
    return result("buffer_sample", "batches_per_s", rates.pop("value"), "batches/s (B=256, H=8)",
                  rates.pop("baseline"), **rates, cache_mb=cache >> 20,
                  rss_cache_mb=rss_cache >> 20, rss_limit_mb=(rss_cache >> 20) + 300, **rss,
                  repeats=repeats)
