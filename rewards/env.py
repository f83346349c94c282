"""The environment's own reward, rescaled, with a bonus on success.

Example:

    EnvReward(scale=0.01, success_bonus=10.0).score(chunk)   # [T]

Dense Meta-World reward / 100 plus +10 on the success step is what lifted a BC base with PPO in
FACTS.md; the episode also ends there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class EnvReward:
    scale: float = 0.01
    success_bonus: float = 10.0
    name: str = "env"
    version: str = "1"

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        return (chunk.reward * self.scale + chunk.success * self.success_bonus).astype(np.float32)
