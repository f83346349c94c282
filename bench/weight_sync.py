"""`fleet bench weight_sync`: publish→adopted latency of a large policy to many robot actors.

value = p50 seconds from `HubWeights.publish` on the driver to the moment each of N actors,
polling the way robots do (non-blocking, between chunks: here every 5 ms), holds the new weights;
baseline = `ray.put` of the same arrays plus a `ray.get` in each of the N actors, started at
once, p50 over actors — the floor any object-store transfer pays. ratio = value / baseline (lower
is better; the goal in issue 5 is ≤ 2). `default_policy_publication_bytes`: what one publication
of `fleet train`'s default policy weighs (the actor only: robots never get the critic).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any

import numpy as np
import ray

from fleet.remote import actor
from fleet.remote.weights import HubWeights, WeightHub


class _Poller:
    """Polls like a robot between chunks and records when each version arrived."""

    def __init__(self, hub: Any) -> None:
        self.weights = HubWeights(hub)
        self.adopted: dict[int, float] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        have = -1
        while not self._stop.is_set():
            got = self.weights.poll(have)
            if got is not None:
                have = got[0]
                self.adopted[have] = time.time()
            time.sleep(0.005)

    def adopted_at(self, version: int) -> float | None:
        return self.adopted.get(version)

    def fetch(self, refs: list[ray.ObjectRef]) -> float:
        state = ray.get(refs[0])
        assert sum(a.nbytes for a in state.values()) > 0
        return time.time()


def _state(mb: int) -> dict[str, np.ndarray]:
    per = 1_000_000  # 4 MB float32 arrays, like the layers of a large policy
    n = max(1, mb * 1_000_000 // (per * 4))
    rng = np.random.default_rng(0)
    return {f"layer{i}.weight": rng.standard_normal(per, dtype=np.float32) for i in range(n)}


def default_publication_bytes() -> int:
    """Bytes one publication of `fleet train`'s default policy sends to every robot."""
    from algorithms.factory import make_policy
    from fleet.config import load_config
    from fleet.run.pretrain import policy_config

    state = make_policy(policy_config(load_config([]))).policy_state()
    return int(sum(a.nbytes for a in state.values()))


def run(quick: bool) -> dict[str, object]:
    mb, actors, repeats = (100, 8, 3) if quick else (100, 8, 7)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=2 * 1024**3,
             logging_level=logging.ERROR)
    try:
        hub = WeightHub.remote()
        pollers = [actor(_Poller, num_cpus=0, max_concurrency=2).remote(hub)
                   for _ in range(actors)]
        sink = HubWeights(hub)
        ours: list[float] = []
        base: list[float] = []
        sink.publish(0, {"warm": np.zeros(1, np.float32)})  # actors started and polling
        _wait_adopted(pollers, 0, time.time())
        for version in range(1, repeats + 1):
            state = _state(mb)
            t0 = time.time()
            sink.publish(version, state)
            ours += _wait_adopted(pollers, version, t0)
            t0 = time.time()
            ref = ray.put(state)
            base += [t - t0 for t in ray.get([p.fetch.remote([ref]) for p in pollers])]
            del ref
        value, baseline = statistics.median(ours), statistics.median(base)
        return {"bench": "weight_sync", "metric": "publish_to_adopted_p50_s",
                "value": round(value, 4), "unit": "s", "baseline": round(baseline, 4),
                "ratio": round(value / baseline, 3), "mb": mb, "actors": actors,
                "repeats": repeats, "p90_s": round(float(np.percentile(ours, 90)), 4),
                "default_policy_publication_bytes": default_publication_bytes()}
    finally:
        ray.shutdown()


def _wait_adopted(pollers: list[Any], version: int, t0: float) -> list[float]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        times = ray.get([p.adopted_at.remote(version) for p in pollers])
        if all(t is not None for t in times):
            return [t - t0 for t in times]
        time.sleep(0.01)
    raise TimeoutError(f"version {version} was not adopted by every actor within 120 s")
