"""Random valid rollout chunks for tests."""

from __future__ import annotations

import numpy as np

from buffers.records import EpisodeEnd, RolloutChunk


def make_chunk(rng: np.random.Generator, T: int = 16, H: int = 4, A: int = 4, D: int = 39,
               robot_id: str = "r0", episode_id: str = "e0", chunk_seq: int = 0,
               policy_version: int = 0, camera: bool = False,
               end: EpisodeEnd | None = None, task: str = "push-v3", group: str = "",
               intervened: bool | None = None) -> RolloutChunk:
    """`intervened`: every step (a demonstration), none, or None for ~10% at random."""
    K = -(-T // H)
    obs = {"state": rng.standard_normal((T + 1, D)).astype(np.float32)}
    if camera:
        obs["camera"] = rng.integers(0, 255, (T + 1, 8, 8, 3), dtype=np.uint8)
    return RolloutChunk(
        robot_id=robot_id, embodiment="sawyer", task=task, group=group, episode_id=episode_id,
        chunk_seq=chunk_seq, policy_version=policy_version, wall_time=1.7e9, horizon=H, obs=obs,
        action=rng.uniform(-1, 1, (T, A)).astype(np.float32),
        policy_action=rng.standard_normal((K, H, A)).astype(np.float32),
        logp=rng.standard_normal(K).astype(np.float32),
        value=rng.standard_normal(K).astype(np.float32),
        reward=rng.standard_normal(T).astype(np.float32),
        success=rng.random(T) < 0.1, episode_end=end,
        intervened=rng.random(T) < 0.1 if intervened is None else np.full(T, intervened),
    )


def bandit_chunk(policy, ctx: float, episode_id: str, win: float, lose: float,
                 group: str = "") -> RolloutChunk:
    """A one-call episode of a contextual bandit with chunk actions (H = 2, A = 1): the context
    ±1 is obs[0]; the reward is `win` when every action has the context's sign, else `lose`."""
    obs = np.array([ctx, 0, 0, 0], np.float32)
    act, logp = policy.act(obs)
    won = bool(np.all(np.sign(act) == ctx))
    return RolloutChunk(
        robot_id="b", embodiment="bandit", task="bandit", episode_id=episode_id, chunk_seq=0,
        policy_version=0, wall_time=0.0, horizon=2, obs={"state": np.tile(obs, (3, 1))},
        action=act, policy_action=act[None], logp=np.array([logp], np.float32),
        value=np.zeros(1, np.float32),  # robots run no critic
        reward=np.array([0.0, win if won else lose], np.float32),
        success=np.array([False, won]), intervened=np.zeros(2, bool),
        episode_end=EpisodeEnd("success" if won else "failure"), group=group)
