"""Benchmarks: `fleet bench NAME [--quick]`, each printing one JSON line last.

Every benchmark returns `{"bench", "metric", "value", "unit", "baseline", "ratio"}` where the
baseline is measured in the same run (raw env, raw disk, a plain codec).
"""

from __future__ import annotations

import importlib
from typing import Any

BENCHES = {  # name -> module; each module has run(quick) -> the JSON line's fields
    "codec": "bench.codec", "collect": "bench.collect",
    "buffer_ingest": "bench.buffer_ingest", "buffer_sample": "bench.buffer_sample",
    "bridge_latency": "bench.bridge",
    "bridge_chunks": "bench.bridge_chunks",  # a bridged robot's steps/s, chunk vs step execution
    "gateway_flood": "bench.gateway_flood",  # a healthy robot's calls/s while another floods
    "fuzz": "bench.fuzz",  # every decoder of outside bytes: its own error type, nothing else
    "estop_latency": "bench.estop",  # console e-stop → every robot holding
    "weight_sync": "bench.weight_sync", "ppo_vs_sb3": "bench.ppo_vs_sb3",
    "chaos": "bench.chaos", "mt10": "bench.mt10", "scaling": "bench.scaling",
    "actor_overhead": "bench.actor_overhead", "fleet_capacity": "bench.fleet_capacity",
    "td_push": "bench.td_push",  # chunked TD from the push-v3 base, evaluated as it trains
    "e2e_peers": "bench.e2e_peers",  # fleet train PPO vs RLlib and SB3 PPO, same budget
    "vla_decode": "bench.vla_decode",  # the hf adapter's 112-token decode, KV cache vs none
}


def run_bench(name: str, quick: bool, **options: Any) -> dict[str, Any]:
    """Run one bench; `options` (e.g. estop_latency's `half_open=200`) go to its `run`."""
    if name not in BENCHES:
        raise SystemExit(f"unknown bench {name!r}; known: {', '.join(sorted(BENCHES))}")
    result: dict[str, Any] = importlib.import_module(BENCHES[name]).run(quick, **options)
    return result
