"""Turns a robot's steps into rollout chunks (see `buffers.records` for the terms).

Example:

    builder = ChunkBuilder(spec, horizon=4, calls_per_chunk=16)
    builder.begin_episode("ep-1", obs)
    builder.add_call(chunk, logp, aux)                # before executing the chunk (aux: the
                                                      # policy's per-call data, often {})
    builder.add_step(action, fb, obs, intervened=False)
    if builder.full: sink(builder.flush(policy_version))
"""

from __future__ import annotations

import time

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec
from buffers.records import EpisodeEnd, RolloutChunk


class ChunkBuilder:
    """Accumulates up to `calls_per_chunk` policy calls of one episode, then emits a chunk."""

    def __init__(self, spec: RobotSpec, horizon: int, calls_per_chunk: int) -> None:
        if horizon < 1 or calls_per_chunk < 1:
            raise ValueError("horizon and calls_per_chunk must be >= 1")
        self.spec = spec
        self.horizon = horizon
        self.calls_per_chunk = calls_per_chunk
        self.episode_id = ""
        self.group = ""
        self._seq = 0
        self._reset_columns()

    def _reset_columns(self) -> None:
        self._obs: list[Observation] = []
        self._calls: list[tuple[np.ndarray, float, dict[str, np.ndarray]]] = []
        self._steps: list[tuple[np.ndarray, float, bool, bool]] = []

    def begin_episode(self, episode_id: str, obs: Observation, group: str = "") -> None:
        self.episode_id = episode_id
        self.group = group
        self._seq = 0
        self._reset_columns()
        self._obs = [obs]

    def add_call(self, chunk: np.ndarray, logp: float,
                 aux: dict[str, np.ndarray] | None = None) -> None:
        """Record a sampled action chunk [H, A], its log-probability and the policy's per-call
        data (`aux`: the same names and shapes at every call) before it runs. Calls start every
        H steps."""
        if len(self._steps) != len(self._calls) * self.horizon:
            raise RuntimeError("a new call may only start after the previous chunk ran H steps")
        aux = {} if aux is None else {k: np.asarray(v) for k, v in aux.items()}
        if self._calls and aux.keys() != self._calls[0][2].keys():
            raise ValueError(f"a policy's aux names changed between calls: {sorted(aux)} after "
                             f"{sorted(self._calls[0][2])}")
        self._calls.append((np.asarray(chunk, np.float32), logp, aux))

    def add_step(
        self, action: np.ndarray, fb: Feedback, next_obs: Observation, intervened: bool = False
    ) -> None:
        self._steps.append((np.asarray(action, np.float32), fb.reward, fb.success, intervened))
        self._obs.append(next_obs)

    @property
    def full(self) -> bool:
        return len(self._calls) == self.calls_per_chunk and self.call_done

    @property
    def call_done(self) -> bool:
        """The current call's chunk has run all its H steps."""
        return len(self._steps) == len(self._calls) * self.horizon

    @property
    def num_steps(self) -> int:
        return len(self._steps)

    def flush(self, policy_version: int, episode_end: EpisodeEnd | None = None) -> RolloutChunk:
        """Emit what was gathered as one chunk; the last observation starts the next one."""
        if not self._steps:
            raise RuntimeError("flush() needs at least one step")
        # A call whose first step never ran (the robot failed there) is not part of the chunk:
        # a chunk of T steps holds exactly ceil(T / H) calls.
        calls = self._calls[:-(-len(self._steps) // self.horizon)]
        names = self._obs[0].keys()
        chunk = RolloutChunk(
            robot_id=self.spec.robot_id,
            embodiment=self.spec.embodiment,
            task=self.spec.task,
            episode_id=self.episode_id,
            chunk_seq=self._seq,
            policy_version=policy_version,
            wall_time=time.time(),
            horizon=self.horizon,
            obs={n: np.stack([o[n] for o in self._obs]) for n in names},
            action=np.stack([s[0] for s in self._steps]),
            policy_action=np.stack([c[0] for c in calls]),
            logp=np.array([c[1] for c in calls], np.float32),
            # Robots run no critic (it is the algorithm's, STYLE rule 5): the record keeps its
            # value column, as 0.0; PPO computes values on the learner (`PPO.prepare`).
            value=np.zeros(len(calls), np.float32),
            reward=np.array([s[1] for s in self._steps], np.float32),
            success=np.array([s[2] for s in self._steps], bool),
            intervened=np.array([s[3] for s in self._steps], bool),
            episode_end=episode_end,
            group=self.group,
            aux={k: np.stack([c[2][k] for c in calls]) for k in calls[0][2]},
        )
        self._seq += 1
        last = self._obs[-1]
        self._reset_columns()
        self._obs = [last]
        return chunk
