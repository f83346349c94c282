"""`fleet bench codec`: encode + decode of a 64-step state chunk, against plain msgpack.

value = validated msgpack + lz4 round trips per second; baseline = round trips of the same arrays
through `msgpack.packb/unpackb` with no validation and no compression, in the same run, the two
alternating repeat by repeat (medians). `cpu_ratio`: the same ratio in CPU seconds of this
process, which a loaded machine skews less than wall clock.
"""

from __future__ import annotations

import statistics
import time

import msgpack
import numpy as np

from bench.common import result, state_chunk
from buffers.codec import decode_chunk, encode_chunk


def run(quick: bool) -> dict[str, object]:
    chunk = state_chunk()
    n, repeats = (500, 5) if quick else (3000, 9)
    arrays = {"obs": chunk.obs["state"], "action": chunk.action, "policy_action":
              chunk.policy_action, "logp": chunk.logp, "value": chunk.value,
              "reward": chunk.reward, "success": chunk.success, "intervened": chunk.intervened}

    def ours() -> int:
        for _ in range(n):
            decode_chunk(encode_chunk(chunk))
        return n

    def plain() -> int:  # 10x the round trips: a run as long as ours, which load skews less
        for _ in range(10 * n):
            packed = msgpack.packb({k: v.tobytes() for k, v in arrays.items()})
            back = msgpack.unpackb(packed)
            _ = {k: np.frombuffer(v, arrays[k].dtype) for k, v in back.items()}
        return 10 * n

    wall: dict[str, list[float]] = {"ours": [], "plain": []}  # seconds per round trip
    cpu: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(repeats):  # alternating, so both see the same load
        for name, fn in (("plain", plain), ("ours", ours)):
            t0, c0 = time.perf_counter(), time.process_time()
            done = fn()
            wall[name].append((time.perf_counter() - t0) / done)
            cpu[name].append((time.process_time() - c0) / done)
    value, baseline = (1 / statistics.median(wall[k]) for k in ("ours", "plain"))
    cpu_ratio = statistics.median(cpu["plain"]) / max(statistics.median(cpu["ours"]), 1e-12)
    size = len(encode_chunk(chunk))
    raw = sum(a.nbytes for a in arrays.values())
    return result("codec", "round_trips_per_s", value, "chunks/s", baseline,
                  cpu_ratio=round(cpu_ratio, 3), encoded_bytes=size, raw_bytes=raw,
                  steps_per_chunk=chunk.num_steps)
