"""Shared helpers for benchmarks: repeat a measurement and report the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from buffers.records import RolloutChunk


def median_rate(fn: Callable[[], int], repeats: int) -> float:
    """Run `fn` (which returns how many units it processed) `repeats` times; median units/s."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def state_chunk(seed: int = 0, steps: int = 64, horizon: int = 4, chunk_seq: int = 0,
                episode_id: str = "bench") -> RolloutChunk:
    """A 64-step Meta-World-sized state chunk (39-d obs, 4-d actions, H = 4, K = 16)."""
    rng = np.random.default_rng(seed)
    calls = -(-steps // horizon)
    return RolloutChunk(
        robot_id="bench-0", embodiment="sawyer", task="push-v3", episode_id=episode_id,
        chunk_seq=chunk_seq, policy_version=0, wall_time=time.time(), horizon=horizon,
        obs={"state": rng.standard_normal((steps + 1, 39)).astype(np.float32)},
        action=rng.uniform(-1, 1, (steps, 4)).astype(np.float32),
        policy_action=rng.standard_normal((calls, horizon, 4)).astype(np.float32),
        logp=rng.standard_normal(calls).astype(np.float32),
        value=rng.standard_normal(calls).astype(np.float32),
        reward=rng.standard_normal(steps).astype(np.float32),
        success=np.zeros(steps, bool), intervened=np.zeros(steps, bool),
    )


def result(bench: str, metric: str, value: float, unit: str, baseline: float,
           **extra: object) -> dict[str, object]:
    return {"bench": bench, "metric": metric, "value": round(value, 1), "unit": unit,
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3) if baseline else None, **extra}
