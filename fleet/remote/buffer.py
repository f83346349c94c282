"""The persistent replay buffer as an actor (robots insert, the learner reads and samples), and
the learner's `ChunkSource` over it.

Example:

    buffer = BufferServer.remote("runs/x/buffer", BufferConfig())
    source = BufferSource(buffer)
    records, cursor = source.read(0, 256)
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ray

from buffers.rate import RateLimiter, StepRatio
from buffers.sampler import Batch, Sampler
from buffers.sampling import spec_from_dict
from buffers.shards import open_buffer
from buffers.store import BufferConfig, InsertResult, ReplayBuffer
from fleet.remote import actor


class BufferServerImpl:
    """The persistent replay buffer as an actor: robots insert, the learner reads.

    `rate`: (the algorithm's `StepRatio`, env steps per rollout chunk at most): the buffer then
    holds the run's `buffers.rate.RateLimiter` (robots `admit` before each chunk, the learner
    asks for gradient steps with `grant`). Its counts start afresh if Ray restarts this actor.
    """

    def __init__(self, root: str, config: BufferConfig,
                 rate: tuple[StepRatio, int] | None = None) -> None:
        # Ray may restart this actor while its killed predecessor still holds the writer lock
        config = dataclasses.replace(config, lock_wait_s=max(config.lock_wait_s, 60.0))
        self.buffer = open_buffer(Path(root), config)  # several shards if config.shards > 1
        self.samplers: dict[str, tuple[dict[str, Any], Sampler]] = {}
        self.limiter = RateLimiter(*rate) if rate is not None else None

    def admit(self, steps: int) -> bool:
        """A robot may send a chunk of `steps` env steps (True), or must wait and ask again
        (the learner is behind); always True without a rate limit."""
        return self.limiter is None or self.limiter.admit(steps)

    def grant(self, wanted: int) -> int:
        """Gradient steps the learner may take now (`buffers.rate.RateLimiter.grant`)."""
        if self.limiter is None:
            raise RuntimeError("this buffer holds no rate limiter (no algorithm declared one)")
        return self.limiter.grant(wanted)

    def rate_state(self) -> dict[str, float]:
        return self.limiter.rate_state() if self.limiter is not None else {}

    def insert(self, records: list[bytes]) -> InsertResult:
        return self.buffer.insert(records)

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        return self.buffer.read(cursor, limit, min_policy_version)

    def sample(self, spec: dict[str, Any], policy_version: int | None = None,
               name: str = "default", seed: int = 0) -> Batch | None:
        """A batch drawn as `spec` declares (`buffers.sampling.spec_from_dict`), or None to
        wait (rate limit, min_size, too few eligible records). The sampler named `name` keeps
        its state (uses per record, rate-limit counts) between calls; a new spec for the same
        name starts it afresh. The learner's hook: `BufferSource.sample`."""
        if not isinstance(self.buffer, ReplayBuffer):
            raise NotImplementedError("sampling a sharded buffer: use read(), or shards=1")
        held = self.samplers.get(name)
        if held is None or held[0] != spec:
            held = self.samplers[name] = (spec, Sampler(self.buffer, spec_from_dict(spec), seed))
        return held[1].sample(policy_version)

    def update_priorities(self, cursors: np.ndarray, priorities: np.ndarray,
                          name: str = "default") -> None:
        self.samplers[name][1].update_priorities(cursors, priorities)

    def info(self) -> dict[str, Any]:
        return self.buffer.info() | self.rate_state()

    def close(self) -> None:
        self.buffer.close()


class BufferSource:
    """The learner's `ChunkSource` over the buffer actor, and its `buffers.rate.RateSource`."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def grant(self, wanted: int) -> int:
        return int(ray.get(self.buffer.grant.remote(wanted)))

    def rate_state(self) -> dict[str, float]:
        return dict(ray.get(self.buffer.rate_state.remote()))

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        return ray.get(self.buffer.read.remote(cursor, limit, min_policy_version))

    def sample(self, spec: dict[str, Any], policy_version: int | None = None,
               name: str = "default") -> Batch | None:
        """A `buffers.sampler.Batch` of numpy arrays (`torch.from_numpy` them), or None to wait.
        Example: `source.sample({"preset": "on_policy", "max_staleness": 1, "max_uses": 4,
        "batch_size": 256, "horizon": 8}, policy_version=v)`."""
        return ray.get(self.buffer.sample.remote(spec, policy_version, name))


class BufferAdmission:
    """A robot's side of the buffer's rate limiter (`actors.worker.Admission`): `wait` returns
    once the buffer admits the chunk's env steps, asking again after a pause that doubles up
    to 50 ms while the learner is behind (or at once when `stop` is set)."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def wait(self, steps: int, stop: threading.Event) -> None:
        pause = 0.001
        while not ray.get(self.buffer.admit.remote(steps)) and not stop.wait(pause):
            pause = min(2 * pause, 0.05)


# A crashed buffer comes back: it reopens its log (acknowledged data is on disk) and Ray retries
# the calls that were in flight.
BufferServer: Any = actor(BufferServerImpl, num_cpus=0, max_restarts=-1, max_task_retries=-1)
