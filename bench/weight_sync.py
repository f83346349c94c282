"""`fleet bench weight_sync`: publish→adopted latency across model sizes and subscriber counts.

For each point (model size in MB × subscribers), measured in the same run, interleaved, repeat
by repeat:

- ours: seconds from `HubWeights.publish` on the driver to the moment each subscriber's
  `HubWeights.poll` (the robots' call; here with a 50 ms wait, so the time between a robot's
  chunks is not part of the figure) has returned every part of the new version, p50 over
  subscribers and repeats;
- baseline: `ray.put` of the same arrays (one object) plus a `ray.get` in each subscriber,
  started at once: the floor any object-store transfer pays.

Subscribers are packed several per process (`PACKS` processes, threads inside), as robots
share nodes, so 64 fit on 2 cores. Weights change every version (full fine-tuning: nothing
reusable). value, baseline and ratio (lower is better; the goal in issue 18 is <= 2 everywhere)
are those of the largest point; `curve` holds every point and `worst_ratio` the highest.
`--quick`: 10 and 100 MB. Memory: the driver's copy and at most two in the object store (the
newest publication and the one before, or the newest and the baseline's object): about 3x the
largest size (3.5 GB at 1 GB).
`default_policy_publication_bytes`: what one publication of `fleet train`'s default policy
weighs (the actor only: robots never get the critic).
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from typing import Any

import numpy as np
import ray

from fleet.remote import actor
from fleet.remote.weights import HubWeights, WeightHub

PACKS = 8  # subscriber processes
ARRAY_MB = 4  # arrays of 4 MB, like the layers of a large policy


class _Pack:
    """Up to `PACKS`-many subscribers in one process, each a thread polling as a robot does."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.adopted: list[dict[int, float]] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()

    def follow(self, n: int) -> None:
        """(Re)start with `n` subscribers, each with a `HubWeights` of its own."""
        self._stop.set()
        self._stop = stop = threading.Event()
        self.adopted = [{} for _ in range(n)]
        for seen in self.adopted:
            threading.Thread(target=self._follow, args=(seen, stop), daemon=True).start()

    def _follow(self, seen: dict[int, float], stop: threading.Event) -> None:
        weights, have = HubWeights(self.hub), -1
        while not stop.is_set():
            got = weights.poll(have, timeout_s=0.05)
            if got is not None:
                have = got[0]
                assert sum(a.nbytes for a in got[1].values()) > 0
                with self._changed:
                    seen[have] = time.time()
                    self._changed.notify_all()
            got = None  # let go of the arrays: the object store frees the old version

    def adopted_at(self, version: int, timeout_s: float = 120.0) -> list[float]:
        """When each subscriber had `version`, once all had it (asked before it is published,
        so the driver need not poll)."""
        with self._changed:
            if not self._changed.wait_for(
                    lambda: all(version in seen for seen in self.adopted), timeout_s):
                raise TimeoutError(f"version {version} not adopted within {timeout_s} s")
            return [seen[version] for seen in self.adopted]

    def fetch(self, refs: list[ray.ObjectRef]) -> list[float]:
        """The baseline: each subscriber `ray.get`s the object at once; when each had it."""
        times = [0.0] * len(self.adopted)

        def get(i: int) -> None:
            state = ray.get(refs[0])
            assert sum(a.nbytes for a in state.values()) > 0
            times[i] = time.time()

        threads = [threading.Thread(target=get, args=(i,)) for i in range(len(times))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return times


def _state(mb: int) -> dict[str, np.ndarray]:
    n = max(1, mb // ARRAY_MB)
    per = mb * 1_000_000 // n // 4
    return {f"layer{i}.weight": np.ones(per, np.float32) for i in range(n)}


def default_publication_bytes() -> int:
    """Bytes one publication of `fleet train`'s default policy sends to every robot."""
    from algorithms.factory import make_policy
    from fleet.config import load_config
    from fleet.run.pretrain import policy_config

    state = make_policy(policy_config(load_config([]))).policy_state()
    return int(sum(a.nbytes for a in state.values()))


def point(hub: Any, packs: list[Any], mb: int, subscribers: int, repeats: int,
          version: int) -> tuple[dict[str, Any], int]:
    """One point of the curve; the next free version."""
    per = subscribers // len(packs)
    ray.get([p.follow.remote(per) for p in packs])
    sink = HubWeights(hub)
    state = _state(mb)
    sink.publish(version, state)  # every subscriber has asked and holds the current version
    ray.get([p.adopted_at.remote(version) for p in packs])
    ours: list[float] = []
    base: list[float] = []
    for r in range(-1, repeats):  # the first round warms up and is not counted
        version += 1
        for a in state.values():
            a += 1.0  # every weight changes, as in full fine-tuning
        for which in ("ours", "base") if r % 2 == 0 else ("base", "ours"):
            got = (_publish(sink, packs, version, state) if which == "ours"
                   else _put_get(packs, state))
            (ours if which == "ours" else base).extend(got if r >= 0 else [])
    del state
    value, baseline = statistics.median(ours), statistics.median(base)
    return {"mb": mb, "subscribers": subscribers, "value": round(value, 4),
            "baseline": round(baseline, 4), "ratio": round(value / baseline, 3),
            "p90_s": round(float(np.percentile(ours, 90)), 4),
            "baseline_p90_s": round(float(np.percentile(base, 90)), 4)}, version + 1


def run(quick: bool) -> dict[str, object]:
    sizes, subscribers, repeats = (((10, 100), (8, 64), 3) if quick
                                   else ((10, 30, 100, 300, 1000), (8, 64), 3))
    store = 3 * max(sizes) * 1_000_000 + 512 * 1024**2  # at most 2 live copies + slack
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=store,
             logging_level=logging.ERROR)
    try:
        _touch(max(sizes))
        hub = WeightHub.remote()
        packs = [actor(_Pack, num_cpus=0, max_concurrency=max(subscribers) // PACKS + 4
                       ).remote(hub) for _ in range(PACKS)]
        curve, version, t_start = [], 1, time.monotonic()
        for mb in sizes:
            for n in subscribers:
                got, version = point(hub, packs, mb, n, repeats, version)
                curve.append(got)
        last = curve[-1]
        return {"bench": "weight_sync", "metric": "publish_to_adopted_p50_s",
                "value": last["value"], "unit": "s", "baseline": last["baseline"],
                "ratio": last["ratio"], "mb": last["mb"], "subscribers": last["subscribers"],
                "worst_ratio": max(p["ratio"] for p in curve), "repeats": repeats,
                "packs": PACKS, "curve": curve, "run_s": round(time.monotonic() - t_start, 1),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "default_policy_publication_bytes": default_publication_bytes()}
    finally:
        ray.shutdown()


def _touch(mb: int) -> None:
    """Fault in the object store's pages once (fresh pages are slow to first touch on this
    kind of VM), so neither side pays for it in its first rounds."""
    refs = [ray.put(np.ones(mb * 1_000_000 // 4, np.float32)) for _ in range(3)]
    del refs


def _publish(sink: HubWeights, packs: list[Any], version: int, state: dict[str, np.ndarray]
             ) -> list[float]:
    waiting = [p.adopted_at.remote(version) for p in packs]
    time.sleep(0.05)  # the waits are in place in every pack
    t0 = time.time()
    sink.publish(version, state)
    return [t - t0 for ts in ray.get(waiting) for t in ts]


def _put_get(packs: list[Any], state: dict[str, np.ndarray]) -> list[float]:
    t0 = time.time()
    ref = ray.put(state)
    times = [t - t0 for ts in ray.get([p.fetch.remote([ref]) for p in packs]) for t in ts]
    del ref
    return times
