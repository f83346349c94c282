"""Composition of reward models: weighted sums and potential-based shaping.

Example (config):

    name: sum
    params:
      terms:
        - {name: sparse_success, weight: 1.0}
        - {name: env, weight: 0.1, params: {scale: 0.01}}

    name: shaped
    params: {base: {name: sparse_success}, potential: state_dim, index: 0, gamma: 0.99, scale: 1.0}

Potential-based shaping (Ng et al. 1999) adds F = γ·Φ(s') − Φ(s) per step, which leaves the
optimal policy unchanged; here Φ(s) = scale · obs["state"][:, index] (a named potential) or any
callable taking obs [T + 1, ...] dicts to [T + 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from buffers.records import RolloutChunk

Potential = Callable[[Mapping[str, np.ndarray]], np.ndarray]


class WeightedSum:
    def __init__(self, models: Sequence[Any], weights: Sequence[float]) -> None:
        if len(models) != len(weights) or not models:
            raise ValueError("WeightedSum needs one weight per model, at least one model")
        self.models, self.weights = list(models), [float(w) for w in weights]
        parts = (f"{w:g}*{m.name}" for m, w in zip(models, self.weights, strict=True))
        self.name = "sum(" + ",".join(parts) + ")"
        self.version = ",".join(str(m.version) for m in models)

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        out = np.zeros(len(chunk.action), np.float32)
        for m, w in zip(self.models, self.weights, strict=True):
            out += w * np.asarray(m.score(chunk), np.float32)
        return out


def state_potential(index: int = 0, scale: float = 1.0, key: str = "state") -> Potential:
    return lambda obs: scale * np.asarray(obs[key], np.float32)[:, index]


class Shaped:
    def __init__(self, base: Any, potential: Potential, gamma: float = 0.99) -> None:
        self.base, self.potential, self.gamma = base, potential, float(gamma)
        self.name = f"shaped({base.name})"
        self.version = f"{base.version};g={gamma:g}"

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        phi = np.asarray(self.potential(chunk.obs), np.float32)  # [T + 1]
        T = len(chunk.action)
        next_phi = phi[1:T + 1].copy()
        if chunk.episode_end is not None and chunk.episode_end.terminal:
            next_phi[-1] = 0.0  # Φ(terminal) = 0 keeps shaping policy-invariant
        return np.asarray(self.base.score(chunk), np.float32) + self.gamma * next_phi - phi[:T]
