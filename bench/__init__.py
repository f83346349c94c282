"""Benchmarks: `fleet bench NAME [--quick]`, each printing one JSON line last.

Every benchmark returns `{"bench", "metric", "value", "unit", "baseline", "ratio"}` where the
baseline is measured in the same run (raw env, raw disk, a plain codec).
"""

from __future__ import annotations

import importlib
from typing import Any

BENCHES = {"codec": "bench.codec", "collect": "bench.collect",
           "buffer_ingest": "bench.buffer_ingest", "buffer_sample": "bench.buffer_sample",
           "bridge_latency": "bench.bridge",
           "estop_latency": "fleet.bench_estop",  # console e-stop → every robot holding
           "weight_sync": "fleet.bench_weight_sync",  # benches needing Ray or both the robot
           "ppo_vs_sb3": "fleet.bench_ppo_vs_sb3",  # loop and the learner live in fleet/
           "chaos": "fleet.bench_chaos", "mt10": "fleet.bench_mt10",
           "scaling": "fleet.bench_scaling", "actor_overhead": "fleet.bench_actor_overhead",
           "fleet_capacity": "fleet.bench_capacity"}


def run_bench(name: str, quick: bool) -> dict[str, Any]:
    if name not in BENCHES:
        raise SystemExit(f"unknown bench {name!r}; known: {', '.join(sorted(BENCHES))}")
    result: dict[str, Any] = importlib.import_module(BENCHES[name]).run(quick)
    return result
