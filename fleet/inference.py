"""Shared inference (`fleet.inference=server`), first part: one batched forward for many robots.

Example:

    chunks, logp, value = batched_act(policy, np.stack([obs_a, obs_b]))   # [B, H, A], [B], [B]

`batched_act` answers B robots' `act` requests with one forward pass of a `ChunkPolicy`; each
row equals what `policy.act(obs_row)` returns (same mean, same log-prob of the sampled chunk).
Still to come (issue 4): the `InferenceServer` Ray actor that gathers requests for a few ms,
adopts weights from the weight hub, and the `RemotePolicy` adapter robots call.
"""

from __future__ import annotations

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
