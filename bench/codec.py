"""`fleet bench codec`: encode + decode of a 64-step state chunk, against plain msgpack.

value = validated msgpack + lz4 round trips per second; baseline = round trips of the same arrays
through `msgpack.packb/unpackb` with no validation and no compression, in the same run.
"""

from __future__ import annotations

import msgpack
import numpy as np

from bench.common import median_rate, result, state_chunk
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

    def plain() -> int:
        for _ in range(n):
            packed = msgpack.packb({k: v.tobytes() for k, v in arrays.items()})
            back = msgpack.unpackb(packed)
            _ = {k: np.frombuffer(v, arrays[k].dtype) for k, v in back.items()}
        return n

    baseline = median_rate(plain, repeats)
    value = median_rate(ours, repeats)
    size = len(encode_chunk(chunk))
    raw = sum(a.nbytes for a in arrays.values())
    return result("codec", "round_trips_per_s", value, "chunks/s", baseline,
                  encoded_bytes=size, raw_bytes=raw, steps_per_chunk=chunk.num_steps)
