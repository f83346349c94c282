"""How a policy's action chunks become one action per control step.

    run = ChunkExecution("ensemble", horizon=4)
    run.reset()
    action = run.next(lambda: policy.act(obs)[0])       # calls the policy only when it must

- `open_loop`: one policy call every H steps, its H actions in order (what training collects:
  the whole chunk is the action PPO, GRPO and TD score).
- `receding`: a call every `replan_every` (< H) steps; only the first `replan_every` actions of
  each chunk run.
- `ensemble`: temporal ensembling as in ACT: a call every step; the action for step t averages
  every chunk that still covers t, chunk i weighted exp(-decay * i), oldest first (i = 0).

Training always runs chunks open loop (a chunk is the unit the learner scores); the other modes
are for held-out evaluation and deployment (`eval.execution`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

MODES = ("open_loop", "receding", "ensemble")


class ChunkExecution:
    def __init__(self, mode: str, horizon: int, replan_every: int = 0,
                 decay: float = 0.01) -> None:
        if mode not in MODES:
            raise ValueError(f"execution must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "receding" and not 1 <= replan_every < horizon:
            raise ValueError(f"receding execution needs 1 <= replan_every < horizon "
                             f"({horizon}), got {replan_every}")
        if decay < 0:
            raise ValueError(f"ensemble decay must be >= 0, got {decay}")
        self.mode, self.horizon, self.decay = mode, horizon, decay
        self.every = {"open_loop": horizon, "receding": replan_every, "ensemble": 1}[mode]
        self.reset()

    def reset(self) -> None:
        self._t = 0
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()

    def next(self, plan: Callable[[], np.ndarray]) -> np.ndarray:
        """The action for this step; `plan()` returns a fresh chunk [H, A] when one is due."""
        if self._t % self.every == 0:
            self._chunks.append((self._t, np.asarray(plan(), np.float32)))
        while self._chunks and self._t - self._chunks[0][0] >= self.horizon:
            self._chunks.popleft()  # chunks that no longer cover this step
        if self.mode != "ensemble":
            start, chunk = self._chunks[-1]
            action = chunk[self._t - start]
        else:
            w = np.exp(-self.decay * np.arange(len(self._chunks), dtype=np.float32))
            rows = np.stack([c[self._t - s] for s, c in self._chunks])
            action = (w[:, None] * rows).sum(0) / w.sum()
        self._t += 1
        return action
