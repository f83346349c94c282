"""The learner loop: sample fresh chunks → label rewards → update → publish → checkpoint.

Example (one process, no Ray; `fleet/` runs the same class inside a Ray actor):

    learner = Learner(policy, PPO(policy, PPOConfig()), reward, source, sink, LearnerConfig(), dir)
    while learner.env_steps < budget:
        metrics = learner.step()          # one PPO update on one batch

`policy_version` is the only clock: data older than `max_staleness` versions is dropped, and how
stale the used data was is in every step's metrics.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from algorithms.policy import ChunkPolicy
from buffers.codec import decode_chunk
from buffers.groups import complete_groups
from buffers.records import RolloutChunk
from rewards.base import RewardModel


class ChunkSource(Protocol):
    """Where the learner reads rollout chunks, in arrival order.

        records, cursor = source.read(cursor, limit=256, min_policy_version=v - max_staleness)
    """

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        ...


class WeightSink(Protocol):
    """Where the learner publishes weights; robots pick them up from the matching source.

        sink.publish(policy_version, policy.policy_state())
    """

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None: ...


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_calls: int = 1024  # policy calls (not env steps) per update
    max_staleness: int = 2  # in policy versions; older data is dropped, not trained on
    publish_every: int = 1  # updates per weight publication
    critic_warmup: int = 5  # first updates train only the critic
    checkpoint_every_s: float = 60.0
    max_wait_s: float = 120.0  # no fresh data for this long is an error, not a hang
    publish_dtype: str = "float32"  # float32 | float16: what robots download per publication
    device: str = "auto"  # auto | cpu | cuda[:N]: where updates run (auto: a GPU if the node
    # has one); robots always get numpy weights

    def __post_init__(self) -> None:
        if self.batch_calls < 1 or self.publish_every < 1:
            raise ValueError("learner.batch_calls and learner.publish_every must be >= 1")
        if self.max_staleness < 0 or self.critic_warmup < 0:
            raise ValueError("learner.max_staleness and learner.critic_warmup must be >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"learner.device={self.device!r}: auto, cpu, cuda or cuda:N")
        if self.publish_dtype not in ("float32", "float16"):
            raise ValueError(f"learner.publish_dtype={self.publish_dtype!r}: float32 or float16")


class Algorithm(Protocol):
    """An update rule over rollout chunks (PPO, GRPO, TD, DPO). Optional attributes change how
    the learner feeds it: `group_size` > 1 asks for complete groups of episodes;
    `off_policy = True` keeps every chunk however stale (the algorithm replays them itself);
    an `offline(chunks, rewards)` method gets the demonstrations before the first update.

        batch = algorithm.prepare(chunks, rewards)
        metrics = algorithm.update(batch, train_actor=True)
    """

    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> Any: ...

    def update(self, batch: Any, train_actor: bool = True) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, object]: ...

    def load_state_dict(self, state: dict[str, object]) -> None: ...


class Interrupted(Exception):
    """`Learner.interrupt()` was called while a step waited for data."""


class Learner:
    def __init__(self, policy: ChunkPolicy, algorithm: Algorithm, reward: RewardModel,
                 source: ChunkSource, sink: WeightSink, config: LearnerConfig,
                 checkpoint_dir: Path, demos: Sequence[RolloutChunk] = ()) -> None:
        """`demos`: demonstrations for an algorithm's offline phase (ignored by the others)."""
        self.policy, self.algorithm, self.reward = policy, algorithm, reward
        self._demos = list(demos)
        self.source, self.sink, self.config = source, sink, config
        self.checkpoint_dir = checkpoint_dir
        self.policy_version = 0
        self.updates = 0
        self.env_steps = 0  # steps of the data consumed
        self.cursor = 0
        self.calls_consumed = 0  # policy calls trained on or dropped as stale, ever
        self._pending: list[RolloutChunk] = []
        self._last_checkpoint = time.monotonic()
        self._interrupt = threading.Event()

    def interrupt(self) -> None:
        """Make a step that is waiting for data give up (from another thread)."""
        self._interrupt.set()

    def _gather(self) -> tuple[list[RolloutChunk], int]:
        """Fresh chunks worth at least `batch_calls` calls, and how many stale ones were dropped.

        For group-based algorithms (a `group_size` above 1) only complete groups of complete
        episodes count; the rest waits for its missing chunks.
        """
        oldest_ok = self.policy_version - self.config.max_staleness
        if getattr(self.algorithm, "off_policy", False):
            oldest_ok = 0  # it replays old data itself and corrects for it in its targets
        fresh = [c for c in self._pending if c.policy_version >= oldest_ok]
        dropped = len(self._pending) - len(fresh)
        self.calls_consumed += sum(c.num_calls for c in self._pending) - sum(
            c.num_calls for c in fresh)
        self._pending = fresh
        deadline = time.monotonic() + self.config.max_wait_s
        while True:
            batch, rest = self._select(self._pending)
            if sum(c.num_calls for c in batch) >= self.config.batch_calls:
                self._pending = rest
                self.calls_consumed += sum(c.num_calls for c in batch)
                return batch, dropped
            records, self.cursor = self.source.read(self.cursor, 512, max(oldest_ok, 0))
            self._pending += [decode_chunk(r) for r in records]
            if not records:
                if self._interrupt.is_set():
                    raise Interrupted
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no fresh rollout chunks for {self.config.max_wait_s} s: "
                                       "are the robots running?")
                time.sleep(0.02)

    def _select(self, chunks: list[RolloutChunk]) -> tuple[list[RolloutChunk], list[RolloutChunk]]:
        """The chunks to train on next (oldest first, at least `batch_calls` calls if there are
        that many), and the rest."""
        group_size = getattr(self.algorithm, "group_size", 1)
        if group_size > 1:
            groups, rest = complete_groups(chunks, group_size)
            return [c for g in groups for ep in g for c in ep], rest
        calls = np.cumsum([c.num_calls for c in chunks])
        take = int(np.searchsorted(calls, self.config.batch_calls)) + 1
        return chunks[:take], chunks[take:]

    def step(self) -> dict[str, float]:
        """One update. Publishes every `publish_every` updates and checkpoints on a timer."""
        offline = self._offline() if self.updates == 0 else {}
        t0 = time.monotonic()
        chunks, dropped = self._gather()
        t_data = time.monotonic() - t0
        rewards = [self.reward.score(c) for c in chunks]
        faults = self._reward_faults(chunks)
        waiting = not getattr(self.reward, "ready", True)  # a learned reward not yet fitted
        if faults or waiting:  # skip the batch (its data is used up) and go on
            self.env_steps += sum(c.num_steps for c in chunks)
            return {"policy_version": self.policy_version, "updates": self.updates,
                    "learner_env_steps": self.env_steps, "reward_faults": faults,
                    "reward_waiting": float(waiting), "batch_skipped": 1.0, "wait_s": t_data}
        batch = self.algorithm.prepare(chunks, rewards)
        warm = self.updates >= self.config.critic_warmup
        metrics = self.algorithm.update(batch, train_actor=warm)
        self.updates += 1
        self.env_steps += sum(c.num_steps for c in chunks)
        staleness = [self.policy_version - c.policy_version for c in chunks]
        if self.updates % self.config.publish_every == 0:
            self.policy_version += 1
            self.sink.publish(self.policy_version, self.policy.policy_state())
        if time.monotonic() - self._last_checkpoint > self.config.checkpoint_every_s:
            self.save_checkpoint()
        ends = [c.episode_end for c in chunks if c.episode_end is not None]
        metrics.update(offline)
        metrics.update({
            "policy_version": self.policy_version, "updates": self.updates,
            "learner_env_steps": self.env_steps, "batch_calls": len(batch),
            "staleness_mean": float(np.mean(staleness)), "staleness_max": float(max(staleness)),
            "dropped_stale": dropped, "wait_s": t_data, "update_s": time.monotonic() - t0 - t_data,
            "train_success": float(np.mean([e.outcome == "success" for e in ends])) if ends
            else float("nan"),
            "reward_mean": float(np.mean([r.mean() for r in rewards])),
            "reward_faults": 0, "reward_waiting": 0.0, "batch_skipped": 0.0,
        })
        if str(self.reward.version).isdigit():  # a learned reward's weights version
            metrics["reward_version"] = float(self.reward.version)
        return metrics

    def _reward_faults(self, chunks: Sequence[RolloutChunk]) -> int:
        """Chunks the reward model failed on (raised, NaN, wrong shape), as `rewards.guard`
        records them; 0 for an unguarded model."""
        failed = getattr(self.reward, "failed", None)
        return sum(bool(failed(c)) for c in chunks) if failed is not None else 0

    def _offline(self) -> dict[str, float]:
        """The algorithm's offline phase on the demos (scored by the reward model), if it has
        one; runs once, before the first update (not again after a resume)."""
        offline = getattr(self.algorithm, "offline", None)
        if offline is None or not self._demos:
            return {}
        t0 = time.monotonic()
        stats = offline(self._demos, [self.reward.score(c) for c in self._demos])
        self._demos = []
        return {f"offline_{k}": v for k, v in stats.items()} | {
            "offline_s": time.monotonic() - t0}

    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> Path:
        """Atomically write `ckpt-<version>.pt` and point `latest.pt` at it."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "policy": self.policy.state_dict(), "algorithm": self.algorithm.state_dict(),
            "policy_version": self.policy_version, "updates": self.updates,
            "env_steps": self.env_steps, "cursor": self.cursor,
            "torch_rng": torch.get_rng_state(), "extra": extra or {},
        }
        path = self.checkpoint_dir / f"ckpt-{self.policy_version:06d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        latest = self.checkpoint_dir / "latest.pt"
        tmp_link = self.checkpoint_dir / "latest.tmp"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(path.name)
        os.replace(tmp_link, latest)
        self._last_checkpoint = time.monotonic()
        return path

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        state = torch.load(path, weights_only=False, map_location=self.policy.obs_mean.device)
        self.policy.load_state_dict(state["policy"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.policy_version, self.updates = state["policy_version"], state["updates"]
        self.env_steps, self.cursor = state["env_steps"], state["cursor"]
        torch.set_rng_state(state["torch_rng"].cpu())
        return dict(state["extra"])
