"""Shared return maths over action chunks, defined once and golden-tested.

A chunk-level step `k` covers the env steps of one policy call. Its reward is the discounted sum
of the env rewards inside the call, and the discount to the next call is `gamma ** n_k`, where
`n_k` is the number of env steps the call actually ran (the last call of an episode may be short).

Example:

    r, disc = chunk_rewards(rewards, horizon=4, gamma=0.99)     # per call
    adv, ret = gae(r, values, next_value, disc, terminal, lam=0.95)
"""

from __future__ import annotations

import numpy as np


def chunk_rewards(rewards: np.ndarray, horizon: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """rewards [T] -> (per-call discounted reward [K], per-call discount to the next call [K])."""
    steps = len(rewards)
    calls = -(-steps // horizon)
    out = np.zeros(calls, np.float64)
    disc = np.zeros(calls, np.float64)
    for k in range(calls):
        seg = rewards[k * horizon : (k + 1) * horizon].astype(np.float64)
        powers = gamma ** np.arange(len(seg))
        out[k] = float((powers * seg).sum())
        disc[k] = gamma ** len(seg)
    return out, disc


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_value: float,
    discounts: np.ndarray,
    terminal: bool,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over K calls of one rollout chunk.

    rewards, values, discounts [K]; `next_value` is V(obs after the last call), ignored when the
    episode ended in a terminal state. Returns (advantages [K], value targets [K]).
    See Schulman et al. 2016, https://arxiv.org/abs/1506.02438.
    """
    calls = len(rewards)
    adv = np.zeros(calls, np.float64)
    last = 0.0
    for k in reversed(range(calls)):
        nv = (0.0 if terminal else next_value) if k == calls - 1 else float(values[k + 1])
        delta = rewards[k] + discounts[k] * nv - values[k]
        # The λ-trace runs over calls; within a chunk the discount is already inside `discounts`.
        last = delta + discounts[k] * lam * (0.0 if k == calls - 1 else last)
        adv[k] = last
    return adv, adv + values
