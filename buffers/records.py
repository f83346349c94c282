"""The rollout chunk: Fleet's unit of streaming and storage.

Terms (used with these meanings everywhere in Fleet):

- **step** `t`: one control period of one robot. `obs[t]` is seen before `action[t]` is executed.
- **action chunk**: the `H` actions (`H = policy.horizon`) returned by one policy call.
- **call**: one policy call. Call `k` of a rollout chunk starts at step `k * H`.
- **rollout chunk**: the steps of up to `K` consecutive calls of one robot in one episode, stored
  column-wise. With `T` steps it holds `T + 1` observations: the last one is what the robot saw
  after its final action, so a learner can bootstrap from it.
- **policy_version**: the number of weight publications before the weights that acted. It is the
  only clock between processes; staleness is `learner_version - policy_version`.
- **identity**: `(robot_id, episode_id, chunk_seq)`, unique; ingest is idempotent on it.
- **group**: episodes that started from the same start state (for GRPO), named
  `<robot_id>/<start seed>`; empty when the robot does not run groups.

Example:

    chunk = RolloutChunk(robot_id="r0", embodiment="sawyer", task="push-v3", episode_id="e1",
                         chunk_seq=0, policy_version=3, wall_time=time.time(), horizon=4,
                         obs={"state": np.zeros((9, 39), np.float32)}, ...)
    key = chunk.key   # ("r0", "e1", 0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

Outcome = Literal["success", "failure", "truncated"]
OutcomeSource = Literal["env", "human", "reward_model"]
ChunkKey = tuple[str, str, int]


@dataclasses.dataclass(frozen=True)
class EpisodeEnd:
    """How an episode ended, and who said so. Success and failure are terminal states (nothing
    follows them); a truncated episode was cut off (by a time limit, a lost robot) and its
    returns must be bootstrapped from its last observation."""

    outcome: Outcome
    source: OutcomeSource = "env"

    @property
    def terminal(self) -> bool:
        return self.outcome != "truncated"


@dataclasses.dataclass(frozen=True, eq=False)
class RolloutChunk:
    """`T` steps of one robot in one episode, produced by `ceil(T / H)` policy calls.

    Columns (T steps, K calls, A action dims, H horizon):
      obs[name]       [T + 1, ...]  state arrays float32, camera images uint8
      action          [T, A]        float32, what the robot executed
      policy_action   [K, H, A]     float32, the sampled chunks (log-prob refers to these)
      logp            [K]           float32, behaviour log-probability of each sampled chunk
      value           [K]           float32, a value estimate at each call's first obs; robots
                                    write 0.0 (they run no critic: the learner computes values)
      reward          [T]           float32, environment reward after each step
      success         [T]           bool, the environment's success flag after each step
      intervened      [T]           bool, True where an operator's action replaced the policy's
      aux[name]       [K, ...]      float32 / int32 / int64, per-call data a policy returned with
                                    its chunk (its `aux_spec`: a flow policy's denoising path,
                                    sampled token ids), which its likelihood needs besides the
                                    chunk; empty for most policies and for records written
                                    before format version 4
    """

    robot_id: str
    embodiment: str
    task: str
    episode_id: str
    chunk_seq: int
    policy_version: int
    wall_time: float
    horizon: int
    obs: Mapping[str, np.ndarray]
    action: np.ndarray
    policy_action: np.ndarray
    logp: np.ndarray
    value: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    intervened: np.ndarray
    episode_end: EpisodeEnd | None = None
    instruction: str = ""
    group: str = ""
    aux: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> ChunkKey:
        return (self.robot_id, self.episode_id, self.chunk_seq)

    @property
    def num_steps(self) -> int:
        return int(self.action.shape[0])

    @property
    def num_calls(self) -> int:
        return int(self.policy_action.shape[0])
