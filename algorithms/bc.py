"""Behaviour cloning of action chunks: the base policy Fleet post-trains.

Example:

    obs, targets = chunk_targets(demo_obs, demo_actions, horizon=4)   # [N, D], [N, H, A]
    losses = train_bc(policy, obs, targets, BCConfig(steps=3000), offers=capabilities(kind))

L2 on the whole chunk (FACTS.md: Gaussian-NLL BC did worse than L2 here). Observation statistics
are set from the demonstrations and kept with the weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class BCConfig:
    steps: int = 3000
    lr: float = 1e-3
    batch: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or not self.lr > 0:
            raise ValueError("bc: steps and batch must be >= 1 and lr > 0")


def chunk_targets(obs: np.ndarray, actions: np.ndarray, horizon: int) -> np.ndarray:
    """For every step t of one episode, the H actions from t on ([T, H, A]); the tail repeats the
    last action. `obs` [T + 1, D] is only checked for length."""
    steps = len(actions)
    if len(obs) != steps + 1:
        raise ValueError(f"an episode of {steps} actions needs {steps + 1} observations")
    idx = np.minimum(np.arange(steps)[:, None] + np.arange(horizon)[None, :], steps - 1)
    return actions[idx]


def train_bc(policy: Any, obs: np.ndarray, targets: np.ndarray, config: BCConfig, *,
             offers: frozenset[str]) -> list[float]:
    """Fit the policy's mean chunk to `targets` [N, H, A] from `obs` [N, D] (L2), or, for a
    policy without a mean chunk (the token policy), maximise their log-probability; a policy
    with its own `bc_loss(obs, chunks, generator)` (the flow policy) minimises that. Which one
    is what its kind declares it `offers` (`algorithms.factory.capabilities(kind)`), never
    probed. Returns losses."""
    gen = torch.Generator().manual_seed(config.seed)
    policy.set_obs_stats(obs.mean(0), obs.std(0))
    x = torch.as_tensor(obs, dtype=torch.float32)
    chunks = torch.as_tensor(targets, dtype=torch.float32)
    y = chunks.reshape(len(targets), -1)
    opt = torch.optim.Adam(policy.actor.parameters(), lr=config.lr)
    losses = []
    for _ in range(config.steps):
        idx = torch.randint(0, len(x), (config.batch,), generator=gen)
        if "bc_loss" in offers:  # its own BC objective (the flow policy's flow matching)
            loss = policy.bc_loss(x[idx], chunks[idx], gen)
        elif "mean_chunk" in offers:
            loss = ((policy.mean_chunk(x[idx]) - y[idx]) ** 2).mean()
        else:
            loss = -policy.log_prob(x[idx], chunks[idx]).mean() / y.shape[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
