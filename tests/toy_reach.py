"""A toy reaching task for learned-reward tests: a point moves by its actions toward a goal at
the origin; it succeeds within 0.1 of it. Successful episodes head to the goal, failing ones
wander away from it."""

from __future__ import annotations

import numpy as np

from buffers.records import EpisodeEnd, RolloutChunk


def reach_episode(rng: np.random.Generator, succeed: bool, episode_id: str, T: int = 40,
                  chunk_steps: int = 10, camera: bool = False,
                  instruction: str = "reach the goal") -> list[RolloutChunk]:
    """An episode of `T` steps (cut at success) as chunks of `chunk_steps` steps. With
    `camera`, obs["pixels"] [T + 1, 32, 32, 3] uint8 draws the point as a bright square."""
    pos = rng.uniform(-1, 1, 2) * 0.6 + np.sign(rng.uniform(-1, 1, 2)) * 0.4
    states, actions, success = [pos.copy()], [], []
    for _ in range(T):
        to_goal = -pos / max(np.linalg.norm(pos), 1e-6)
        a = (0.08 * to_goal if succeed else -0.04 * to_goal) + rng.normal(0, 0.02, 2)
        pos = pos + a
        states.append(pos.copy())
        actions.append(a)
        success.append(bool(np.linalg.norm(pos) < 0.1))
        if success[-1]:
            break
    n = len(actions)
    state = np.array(states, np.float32)
    obs_all = {"state": state}
    if camera:
        obs_all["pixels"] = render(state)
    chunks = []
    for k, start in enumerate(range(0, n, chunk_steps)):
        stop = min(start + chunk_steps, n)
        last = stop == n
        end = EpisodeEnd("success" if success[-1] else "truncated") if last else None
        m = stop - start
        chunks.append(RolloutChunk(
            robot_id="toy", embodiment="point", task="reach", episode_id=episode_id,
            chunk_seq=k, policy_version=0, wall_time=0.0, horizon=1,
            obs={key: v[start:stop + 1] for key, v in obs_all.items()},
            action=np.array(actions[start:stop], np.float32),
            policy_action=np.array(actions[start:stop], np.float32)[:, None],
            logp=np.zeros(m, np.float32), value=np.zeros(m, np.float32),
            reward=np.zeros(m, np.float32), success=np.array(success[start:stop]),
            intervened=np.zeros(m, bool), episode_end=end, instruction=instruction))
    return chunks


def render(state: np.ndarray, size: int = 32) -> np.ndarray:
    """[N, 2] positions in [-1.5, 1.5] -> [N, size, size, 3] uint8 images."""
    img = np.full((len(state), size, size, 3), 20, np.uint8)
    img[:, size // 2 - 1:size // 2 + 1, size // 2 - 1:size // 2 + 1, 1] = 120  # the goal
    px = np.clip(((state + 1.5) / 3.0 * (size - 3)).astype(int), 0, size - 3)
    for i, (x, y) in enumerate(px):
        img[i, y:y + 3, x:x + 3, 0] = 255
    return img


def reach_episodes(seed: int, n: int, camera: bool = False) -> list[list[RolloutChunk]]:
    """`n` episodes, alternately successful and failing."""
    rng = np.random.default_rng(seed)
    return [reach_episode(rng, i % 2 == 0, f"e{seed}-{i}", camera=camera) for i in range(n)]
