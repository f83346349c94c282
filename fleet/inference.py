"""Shared inference (`fleet.inference=server`), first part: one batched forward for many robots.

Example:

    chunks, logp, value = batched_act(policy, np.stack([obs_a, obs_b]))   # [B, H, A], [B], [B]

`batched_act` answers B robots' `act` requests with one forward pass of a `ChunkPolicy`; each
row equals what `policy.act(obs_row)` returns (same mean, same log-prob of the sampled chunk).
`InferenceServer` (a Ray actor) gathers robots' requests for up to `max_wait_s` or until
`max_batch`, answers them with one `batched_act`; `RemotePolicy` is the worker's `Policy` over
it. Still to come (issue 4): adopting weights from the weight hub, `fleet.inference` wiring.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def batched_act(policy: Any, obs: np.ndarray, deterministic: bool = False,
                generator: torch.Generator | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """obs [B, D] -> (chunks [B, H, A], log-probs [B], values [B]) in one forward pass."""
    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"batched_act needs obs [B, D], got shape {tuple(x.shape)}")
    mean = policy.mean_chunk(x)
    std = policy.log_std.exp()
    sample = mean if deterministic else mean + std * torch.randn(mean.shape, generator=generator)
    logp = torch.distributions.Normal(mean, std).log_prob(sample).sum(-1)
    chunks = sample.reshape(x.shape[0], policy.config.horizon, policy.config.action_dim)
    return (chunks.numpy().astype(np.float32), logp.numpy().astype(np.float32),
            policy.value(x).numpy().astype(np.float32))


class InferenceServerImpl:
    """Batches concurrent `act` calls (run as an async Ray actor: `InferenceServer`)."""

    def __init__(self, policy_config: Any, max_batch: int = 64, max_wait_s: float = 0.002) -> None:
        from algorithms.factory import make_policy

        self.policy = make_policy(policy_config)
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._pending: list[tuple[np.ndarray, bool, asyncio.Future[Any]]] = []
        self._flush: asyncio.Task[None] | None = None
        self.batches = 0
        self.requests = 0

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.policy.load_policy_state(state)

    async def act(self, obs: np.ndarray, deterministic: bool = False
                  ) -> tuple[np.ndarray, float, float]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((np.asarray(obs, np.float32), deterministic, fut))
        if len(self._pending) >= self.max_batch:
            self._run()
        elif self._flush is None:
            self._flush = asyncio.ensure_future(self._later())
        result: tuple[np.ndarray, float, float] = await fut
        return result

    async def _later(self) -> None:
        await asyncio.sleep(self.max_wait_s)
        self._flush = None
        self._run()

    def _run(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.batches += 1
        self.requests += len(batch)
        for det in (False, True):
            rows = [b for b in batch if b[1] is det]
            if not rows:
                continue
            chunks, logp, value = batched_act(self.policy, np.stack([r[0] for r in rows]), det)
            for i, (_, _, fut) in enumerate(rows):
                if not fut.done():
                    fut.set_result((chunks[i], float(logp[i]), float(value[i])))

    def stats(self) -> dict[str, float]:
        return {"batches": self.batches, "requests": self.requests,
                "mean_batch": self.requests / max(self.batches, 1)}


def inference_server(policy_config: Any, num_gpus: float = 0.0, **kw: Any) -> Any:
    """Start an `InferenceServer` actor (async: many robots' requests in flight at once)."""
    import ray

    remote: Any = ray.remote  # Ray's stubs know no actor options
    cls = remote(num_cpus=0, num_gpus=num_gpus, max_concurrency=1000)(InferenceServerImpl)
    return cls.remote(policy_config, **kw)


class RemotePolicy:
    """The worker's `Policy` protocol over an `InferenceServer`: the robot loop is unchanged."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, float, float]:
        import ray

        ref = self.server.act.remote(obs, deterministic)
        result: tuple[np.ndarray, float, float] = ray.get(ref)
        return result

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        pass  # the server adopts weights; robots only report the version they acted with
