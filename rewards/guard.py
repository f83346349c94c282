"""A guard around any reward model: a model that raises, returns NaN/inf or the wrong shape
does not stop training.

Example:

    reward = Guarded(model)          # `make_reward` applies this to every model it builds
    r = reward.score(chunk)          # [T] float32; zeros if the model failed on this chunk
    reward.failed(chunk)             # True: the learner skips the batch
    reward.faults                    # [(chunk key, "ValueError: ...")], newest last

A failed chunk scores zeros and the fault is counted, kept (the last `keep`) and logged. The
learner checks `reward.failed(chunk)` after scoring and skips a batch holding any failed chunk
(its metrics report `reward_faults` and `batch_skipped`); training goes on with the next batch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from buffers.records import RolloutChunk

log = logging.getLogger(__name__)


class Guarded:
    def __init__(self, model: Any, keep: int = 100) -> None:
        self.model, self.keep = model, keep
        self.faults: list[tuple[tuple[str, str, int], str]] = []
        self.n_faults = 0
        self._failed: set[tuple[str, str, int]] = set()

    @property
    def name(self) -> str:
        return str(self.model.name)

    @property
    def version(self) -> str:
        return str(self.model.version)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or "model" not in self.__dict__:
            raise AttributeError(attr)  # keeps pickling and copying working
        return getattr(self.__dict__["model"], attr)

    def failed(self, chunk: RolloutChunk) -> bool:
        return (chunk.robot_id, chunk.episode_id, chunk.chunk_seq) in self._failed

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        T = len(chunk.action)
        key = (chunk.robot_id, chunk.episode_id, chunk.chunk_seq)
        try:
            r = np.asarray(self.model.score(chunk), dtype=np.float32)
            if r.shape != (T,):
                raise ValueError(f"reward shape {r.shape}, expected ({T},)")
            if not np.all(np.isfinite(r)):
                raise ValueError("reward has NaN or inf")
        except Exception as e:  # any fault of a plug-in is contained here
            self.n_faults += 1
            self.faults = [*self.faults, (key, f"{type(e).__name__}: {e}")][-self.keep:]
            self._failed.add(key)
            log.warning("reward %s failed on %s: %s", self.name, key, e)
            return np.zeros(T, np.float32)
        self._failed.discard(key)
        return r
