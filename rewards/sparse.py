"""Sparse success reward, with a human label overriding the environment's success flag.

Example:

    SparseSuccess(bonus=1.0).score(chunk)   # [T]: `bonus` on the success step, else 0

A human label is the chunk's `episode_end` with `source="human"` (written by an operator or a
relabelling pass through `buffers/relabel.py`): `outcome="success"` pays `bonus` on the chunk's
last step whatever the env said; `outcome="failure"` zeroes every step, overriding a spurious
env success. Without a human label the env's `success` column decides (first success step).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from buffers.records import RolloutChunk


def human_label(chunk: RolloutChunk) -> bool | None:
    """True/False where a human labelled the episode's outcome, None where no one did."""
    end = chunk.episode_end
    if end is None or end.source != "human" or end.outcome == "truncated":
        return None
    return end.outcome == "success"


@dataclasses.dataclass(frozen=True)
class SparseSuccess:
    bonus: float = 1.0
    name: str = "sparse_success"
    version: str = "1"

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        T = len(chunk.action)
        out = np.zeros(T, np.float32)
        label = human_label(chunk)
        if label is True:
            out[-1] = self.bonus
        elif label is None:
            hits = np.flatnonzero(np.asarray(chunk.success, bool))
            if hits.size:
                out[hits[0]] = self.bonus
        return out
