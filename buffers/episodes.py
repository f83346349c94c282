"""Whole episodes out of rollout chunks, and to and from `.npz` files.

Example:

    with ReplayBuffer("runs/x/buffer") as buf:
        for episode in iter_episodes(buf): print(episode.episode_id, len(episode.action))
        export_npz(buf, Path("episodes/"))           # one file per episode
    demos = import_npz(Path("episodes/"), horizon=4)  # chunks ready for `insert`

An episode's chunks share `(robot_id, episode_id)`; chunk k + 1 starts with the observation
chunk k ended on, so joining them drops that repeated row.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from buffers.codec import decode_chunk
from buffers.records import EpisodeEnd, Outcome, RolloutChunk
from buffers.store import ReplayBuffer

COLUMNS = ("action", "reward", "success", "intervened")


@dataclasses.dataclass(frozen=True)
class Episode:
    """T steps of one robot: obs [T + 1, ...] per name, action [T, A], others [T]."""

    robot_id: str
    episode_id: str
    task: str
    outcome: str  # success | failure | truncated, or "" while the episode is unfinished
    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    intervened: np.ndarray


def join(chunks: list[RolloutChunk]) -> Episode:
    chunks = sorted(chunks, key=lambda c: c.chunk_seq)
    first, last = chunks[0], chunks[-1]
    obs = {k: np.concatenate([first.obs[k], *(c.obs[k][1:] for c in chunks[1:])])
           for k in first.obs}
    cols = {k: np.concatenate([getattr(c, k) for c in chunks]) for k in COLUMNS}
    outcome = last.episode_end.outcome if last.episode_end else ""
    return Episode(first.robot_id, first.episode_id, first.task, outcome, obs, **cols)


def iter_episodes(buffer: ReplayBuffer) -> Iterator[Episode]:
    """Episodes in the order they started; unfinished ones last."""
    groups: dict[tuple[str, str], list[RolloutChunk]] = collections.OrderedDict()
    records, _ = buffer.read(0, len(buffer))
    for record in records:
        chunk = decode_chunk(record)
        groups.setdefault((chunk.robot_id, chunk.episode_id), []).append(chunk)
    for chunks in groups.values():
        yield join(chunks)


def export_npz(buffer: ReplayBuffer, out: Path) -> int:
    """Write each episode as `<robot_id>-<episode_id>.npz`; returns how many."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for ep in iter_episodes(buffer):
        arrays: dict[str, Any] = {f"obs.{k}": v for k, v in ep.obs.items()}
        arrays.update({k: getattr(ep, k) for k in COLUMNS})
        meta = {"robot_id": ep.robot_id, "episode_id": ep.episode_id, "task": ep.task,
                "outcome": ep.outcome}
        arrays.update({f"meta.{k}": np.array(v) for k, v in meta.items()})
        np.savez_compressed(out / f"{ep.robot_id}-{ep.episode_id}.npz", **arrays)
        n += 1
    return n


def import_npz(folder: Path, horizon: int = 4, chunk_steps: int = 64,
               embodiment: str = "imported") -> list[RolloutChunk]:
    """Episodes from `.npz` files (as `export_npz` writes them: `obs.<name>` [T + 1, ...],
    `action` [T, A], optional `reward`, `success`, `meta.task`, `meta.robot_id`,
    `meta.outcome`) as rollout chunks of at most `chunk_steps` steps, every step flagged
    `intervened` (a demonstration: `demonstrations()` samples them, retention pins them).
    Never unpickles (`allow_pickle=False`). Long camera episodes must be cut into chunks: one
    record is at most 64 MiB."""
    if chunk_steps < 1 or horizon < 1:
        raise ValueError("horizon and chunk_steps must be >= 1")
    chunk_steps = max(horizon, chunk_steps // horizon * horizon)  # whole policy calls per chunk
    chunks: list[RolloutChunk] = []
    for path in sorted(Path(folder).glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as f:
                episode = dict(f.items())
            check_episode(episode)
        except (OSError, ValueError) as e:  # a pickled array is a ValueError too
            raise ValueError(f"{path}: {e}") from e
        chunks += episode_chunks(episode, path.stem[-64:], horizon, chunk_steps, embodiment)
    return chunks


def check_episode(f: dict[str, np.ndarray]) -> None:
    """Refuse an episode whose columns are missing or do not line up, naming the key."""
    if "action" not in f or np.ndim(f["action"]) != 2 or len(f["action"]) < 1:
        raise ValueError("needs 'action' [T, A] with T >= 1")
    steps = len(f["action"])
    obs = [k for k in f if k.startswith("obs.")]
    if "obs.state" not in obs:
        raise ValueError("needs 'obs.state' [T + 1, D]")
    for k in obs:
        if len(f[k]) != steps + 1:
            raise ValueError(f"{k!r} has {len(f[k])} rows, 'action' {steps}: observations need "
                             f"T + 1 = {steps + 1}")
    for k in ("reward", "success"):
        if k in f and np.shape(f[k]) != (steps,):
            raise ValueError(f"{k!r} has shape {list(np.shape(f[k]))}, not [{steps}]")


def episode_chunks(f: dict[str, np.ndarray], episode_id: str, horizon: int, chunk_steps: int,
                   embodiment: str) -> list[RolloutChunk]:
    """One episode's arrays (the `.npz` keys of `import_npz`, passed `check_episode`) as
    demonstration chunks of at most `chunk_steps` steps (a multiple of `horizon`)."""
    action = f["action"].astype(np.float32)
    steps = len(action)
    cols = {"reward": f["reward"].astype(np.float32) if "reward" in f
            else np.zeros(steps, np.float32),
            "success": f["success"].astype(bool) if "success" in f else np.zeros(steps, bool)}
    outcome = str(f["meta.outcome"]) if "meta.outcome" in f else ""
    end = (EpisodeEnd(cast(Outcome, outcome)) if outcome in ("success", "failure", "truncated")
           else None)
    obs = {k[4:]: v for k, v in f.items() if k.startswith("obs.")}
    out = []
    for seq, a in enumerate(range(0, steps, chunk_steps)):
        b = min(a + chunk_steps, steps)
        n, calls = b - a, -(-(b - a) // horizon)
        idx = a + np.minimum(np.arange(calls * horizon), n - 1)
        out.append(RolloutChunk(
            robot_id=str(f["meta.robot_id"]) if "meta.robot_id" in f else "import",
            embodiment=embodiment, task=str(f["meta.task"]) if "meta.task" in f else "task",
            episode_id=episode_id, chunk_seq=seq, policy_version=0, wall_time=0.0,
            horizon=horizon, obs={k: v[a:b + 1] for k, v in obs.items()},
            action=action[a:b], policy_action=action[idx].reshape(calls, horizon, -1),
            logp=np.zeros(calls, np.float32), value=np.zeros(calls, np.float32),
            reward=cols["reward"][a:b], success=cols["success"][a:b],
            intervened=np.ones(n, bool), episode_end=end if b == steps else None))
    return out
