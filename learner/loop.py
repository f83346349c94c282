"""The learner loop: take usable chunks → label rewards → update → publish → checkpoint.

Example (one process, no Ray; `fleet/` runs the same class inside a Ray actor, and both build
it with `learner.build.build_learner`):

    learner = Learner(policy, PPO(policy, PPOConfig()), reward, source, sink, LearnerConfig(), dir)
    while learner.env_steps < budget:
        metrics = learner.step()          # one PPO update on one batch

`policy_version` is the only clock: data older than `max_staleness` versions is dropped
(`buffers.sampling.oldest_usable`), unless the algorithm declares it replays everything, and
how stale the used data was is in every step's metrics. What the algorithm is fed is what it
declares (`algorithm.needs(config)`, a `buffers.feed.DataNeeds`), served by a
`buffers.feed.ChunkFeed`.

An algorithm that declares a rate (`DataNeeds.rate`: TD with `td.rate_limit`) trains
continuously instead: each `step()` adds every chunk that has arrived, then takes as many
gradient steps (at most `burst`) as the buffer's rate limiter grants, so the learner keeps
`updates_per_step` gradient steps per env step and robots wait when it falls behind:

    limiter = RateLimiter(TD.needs(td.config).rate, max_insert=64)  # on Ray: the buffer's
    learner = Learner(policy, td, reward, buffer, sink, LearnerConfig(), dir, rate=limiter)
    metrics = learner.step()   # metrics["gradient_steps"] <= burst; rate_* from the limiter
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from algorithms import Algorithm, Continuous, Holding, Offline
from algorithms.policy import ChunkPolicy
from buffers.feed import ChunkFeed, ChunkSource
from buffers.rate import RateSource
from buffers.records import RolloutChunk
from buffers.tasks import TaskSampling, TaskTable
from learner.checkpoint import read_state, write_state
from rewards.base import RewardModel
from rewards.trainer import WeightSource, adopt

__all__ = ["LATEST", "ChunkSource", "Interrupted", "Learner", "LearnerConfig", "WeightSink"]

LATEST = "latest.safetensors"  # in the checkpoint dir: a link to the newest checkpoint


class TaskSink(Protocol):
    """Where the learner publishes its task-sampling table (`buffers.tasks`), beside each
    weight set; robots draw their next task from it.

        sink.publish_tasks(policy_version, {"reach-v3": 0.05, "push-v3": 0.95})
    """

    def publish_tasks(self, policy_version: int, weights: dict[str, float]) -> None: ...


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
    burst: int = 32  # rate-limited algorithms: most gradient steps per update (per publication)
    task_sampling: TaskSampling = TaskSampling()  # multi-task fleets: tasks by failure rate

    def __post_init__(self) -> None:
        if self.batch_calls < 1 or self.publish_every < 1 or self.burst < 1:
            raise ValueError("learner.batch_calls, publish_every and burst must be >= 1")
        if self.max_staleness < 0 or self.critic_warmup < 0:
            raise ValueError("learner.max_staleness and learner.critic_warmup must be >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"learner.device={self.device!r}: auto, cpu, cuda or cuda:N")
        if self.publish_dtype not in ("float32", "float16"):
            raise ValueError(f"learner.publish_dtype={self.publish_dtype!r}: float32 or float16")


class Interrupted(Exception):
    """`Learner.interrupt()` was called while a step waited for data."""


class Learner:
    def __init__(self, policy: ChunkPolicy, algorithm: Algorithm, reward: RewardModel,
                 source: ChunkSource, sink: WeightSink, config: LearnerConfig,
                 checkpoint_dir: Path, demos: Sequence[RolloutChunk] = (),
                 reward_weights: WeightSource | None = None,
                 rate: RateSource | None = None, tasks: Sequence[str] = (),
                 task_sink: TaskSink | None = None) -> None:
        """`demos`: demonstrations for the offline phase of an algorithm that declares it
        needs them (ignored by the others). `reward_weights`: where a learned reward's trainer
        publishes; the reward model adopts each new version before the next update. `rate`:
        the rate limiter that grants gradient steps, for an algorithm that declares a rate.
        `tasks`, `task_sink`: with `config.task_sampling.enabled` and more than one task, the
        learner keeps a `buffers.tasks.TaskTable` of the robots' recent outcomes and publishes
        its weights to `task_sink` with every weight set."""
        self.policy, self.algorithm, self.reward = policy, algorithm, reward
        self.needs = algorithm.needs(algorithm.config)
        self._demos = list(demos) if self.needs.demos else []
        self.sink, self.config = sink, config
        self.reward_weights = reward_weights
        if self.needs.rate is not None and rate is None:
            raise ValueError("this algorithm declares a rate limit (gradient steps per env "
                             "step): give the learner the buffer's rate limiter (rate=...)")
        self.rate = rate if self.needs.rate is not None else None
        sampling = config.task_sampling.enabled and len(tasks) > 1
        if sampling and task_sink is None:
            raise ValueError("learner.task_sampling needs a task_sink to publish to")
        self.tasks = TaskTable(tasks, config.task_sampling) if sampling else None
        self.task_sink = task_sink
        self.feed = ChunkFeed(source, self.needs, config.batch_calls, config.max_staleness)
        self.checkpoint_dir = checkpoint_dir
        self.policy_version = 0
        self.updates = 0
        self.env_steps = 0  # steps of the data consumed
        self._last_checkpoint = time.monotonic()
        self._interrupt = threading.Event()
        self._fed = bool(self._demos)  # the algorithm has data to train on (demos, chunks)

    def interrupt(self) -> None:
        """Make a step that is waiting for data give up (from another thread)."""
        self._interrupt.set()

    def _gather(self) -> tuple[list[RolloutChunk], int]:
        """The feed's next batch and how many stale chunks it dropped, waiting for robots to
        store enough usable data (at most `max_wait_s`)."""
        deadline = time.monotonic() + self.config.max_wait_s
        while (taken := self.feed.take(self.policy_version)) is None:
            if self._interrupt.is_set():
                raise Interrupted
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fresh rollout chunks for {self.config.max_wait_s} s: "
                                   "are the robots running?")
            time.sleep(0.02)
        return taken

    def step(self) -> dict[str, float]:
        """One update, waiting for data. Publishes every `publish_every` updates and
        checkpoints on a timer."""
        if self.rate is not None:
            return cast(dict[str, float], self._continuous_step(self.rate))
        offline = self._before_update()
        t0 = time.monotonic()
        chunks, dropped = self._gather()
        return self._update(chunks, dropped, offline, t0)

    def try_step(self) -> dict[str, float] | None:
        """One update if a batch is ready now, else None at once (a one-process loop's step,
        where waiting would stall the robot that must make the data)."""
        if self.rate is not None:
            return self._continuous_step(self.rate, wait=False)
        taken = self.feed.take(self.policy_version)
        if taken is None:
            return None
        offline = self._before_update()
        return self._update(*taken, offline, time.monotonic())

    def _before_update(self) -> dict[str, float]:
        """Adopt the learned reward's newest weights; the offline phase before the first
        update."""
        if self.reward_weights is not None:
            adopt(self.reward, self.reward_weights)
        return self._offline() if self.updates == 0 else {}

    def _update(self, chunks: list[RolloutChunk], dropped: int, offline: dict[str, float],
                t0: float) -> dict[str, float]:
        t_data = time.monotonic() - t0
        rewards = [self.reward.score(c) for c in chunks]
        faults = self._reward_faults(chunks)
        waiting = self._reward_waiting()
        if faults or waiting:  # skip the batch (its data is used up) and go on
            self.env_steps += sum(c.num_steps for c in chunks)
            return {"policy_version": self.policy_version, "updates": self.updates,
                    "learner_env_steps": self.env_steps, "reward_faults": faults,
                    "reward_waiting": float(waiting), "batch_skipped": 1.0, "wait_s": t_data}
        self._record_tasks(chunks)
        batch = self.algorithm.prepare(chunks, rewards)
        if self.needs.holds_batches and len(batch) == 0:  # the algorithm holds the data for
            # a later batch (GRPO's dynamic sampling, DPO's preference set): no update and no
            # new version, so what it holds stays on-policy
            self.env_steps += sum(c.num_steps for c in chunks)
            return {"policy_version": self.policy_version, "updates": self.updates,
                    "learner_env_steps": self.env_steps, "reward_faults": 0,
                    "reward_waiting": 0.0, "batch_skipped": 0.0, "batch_held": 1.0,
                    "wait_s": t_data} | cast(Holding, self.algorithm).holding()
        warm = self.updates >= self.config.critic_warmup
        metrics = self.algorithm.update(batch, train_actor=warm)
        self.updates += 1
        self.env_steps += sum(c.num_steps for c in chunks)
        staleness = [self.policy_version - c.policy_version for c in chunks]
        self._publish()
        if time.monotonic() - self._last_checkpoint > self.config.checkpoint_every_s:
            self.save_checkpoint()
        ends = [c.episode_end for c in chunks if c.episode_end is not None]
        metrics.update(offline)
        metrics.update(self._task_metrics())
        metrics.update({
            "policy_version": self.policy_version, "updates": self.updates,
            "learner_env_steps": self.env_steps, "batch_calls": len(batch),
            "staleness_mean": float(np.mean(staleness)), "staleness_max": float(max(staleness)),
            "dropped_stale": dropped, "wait_s": t_data, "update_s": time.monotonic() - t0 - t_data,
            "train_success": float(np.mean([e.outcome == "success" for e in ends])) if ends
            else float("nan"),
            "reward_mean": float(np.mean([r.mean() for r in rewards])),
            "reward_faults": 0, "reward_waiting": 0.0, "batch_skipped": 0.0, "batch_held": 0.0,
        })
        if str(self.reward.version).isdigit():  # a learned reward's weights version
            metrics["reward_version"] = float(self.reward.version)
        return metrics

    def _continuous_step(self, rate: RateSource, wait: bool = True) -> dict[str, float] | None:
        """Add what has arrived; then the gradient steps `rate` grants (at most `burst`),
        waiting (at most `max_wait_s`) and adding what arrives while it grants none; without
        `wait`, None at once when it grants none."""
        offline = self._before_update()
        algorithm = cast(Continuous, self.algorithm)
        t0, seen = time.monotonic(), dict[str, float]()
        while True:
            seen = self._add_arrived(algorithm) or seen
            fed = self.updates > 0 or self._fed  # no gradient step on an empty replay
            granted = rate.grant(self.config.burst) if fed else 0
            if granted:
                break
            if not wait:
                return None
            if self._interrupt.is_set():
                raise Interrupted
            if time.monotonic() - t0 > self.config.max_wait_s:
                raise TimeoutError(f"no gradient step granted for {self.config.max_wait_s} s: "
                                   "are the robots running?")
            time.sleep(0.01)
        t_data = time.monotonic() - t0
        metrics = algorithm.train(granted, train_actor=self.updates >= self.config.critic_warmup)
        self.updates += 1
        self._publish()
        if time.monotonic() - self._last_checkpoint > self.config.checkpoint_every_s:
            self.save_checkpoint()
        return metrics | offline | seen | rate.rate_state() | self._task_metrics() | {
            "policy_version": self.policy_version, "updates": self.updates,
            "learner_env_steps": self.env_steps, "wait_s": t_data,
            "update_s": time.monotonic() - t0 - t_data}

    def _add_arrived(self, algorithm: Continuous) -> dict[str, float]:
        """Every usable chunk that has arrived (at most `batch_calls` calls' worth) into the
        algorithm; what it saw, or {} when nothing arrived. A batch the reward model failed on
        (or cannot score yet) is skipped, as in `step`."""
        chunks, _ = self.feed.take_any(self.policy_version, self.config.batch_calls)
        if not chunks:
            return {}
        self.env_steps += sum(c.num_steps for c in chunks)
        rewards = [self.reward.score(c) for c in chunks]
        if self._reward_faults(chunks) or self._reward_waiting():
            return {"batch_skipped": 1.0}
        self._record_tasks(chunks)
        algorithm.add(self.algorithm.prepare(chunks, rewards))
        self._fed = True
        ends = [c.episode_end for c in chunks if c.episode_end is not None]
        staleness = [self.policy_version - c.policy_version for c in chunks]
        return {"batch_skipped": 0.0, "batch_calls": sum(c.num_calls for c in chunks),
                "staleness_mean": float(np.mean(staleness)),
                "staleness_max": float(max(staleness)),
                "reward_mean": float(np.mean([r.mean() for r in rewards])),
                "train_success": float(np.mean([e.outcome == "success" for e in ends]))
                if ends else float("nan")}

    def _publish(self) -> None:
        """Every `publish_every` updates: a new version, and the task table with it."""
        if self.updates % self.config.publish_every:
            return
        self.policy_version += 1
        self.sink.publish(self.policy_version, self.policy.policy_state())
        if self.tasks is not None and self.task_sink is not None:
            self.task_sink.publish_tasks(self.policy_version, self.tasks.weights())

    def _record_tasks(self, chunks: Sequence[RolloutChunk]) -> None:
        """Episode ends into the task table: a success counts only if no operator acted in
        the episode's last chunk (the simulated operator keeps a take-over to the end)."""
        if self.tasks is None:
            return
        for c in chunks:
            if c.episode_end is not None:
                self.tasks.record(c.task, c.episode_end.outcome == "success"
                                  and not bool(np.any(c.intervened)))

    def _task_metrics(self) -> dict[str, float]:
        """The task table as metrics: `task_weight/<task>`, `task_success/<task>`."""
        if self.tasks is None:
            return {}
        return ({f"task_weight/{t}": w for t, w in self.tasks.weights().items()}
                | {f"task_success/{t}": r for t, r in self.tasks.success().items()})

    def _reward_waiting(self) -> bool:
        """A learned reward model not yet fitted (`ready` False): its batches are skipped.
        Models without `ready` are always ready."""
        return not getattr(self.reward, "ready", True)

    def _reward_faults(self, chunks: Sequence[RolloutChunk]) -> int:
        """Chunks the reward model failed on (raised, NaN, wrong shape), as `rewards.guard`
        records them; 0 for an unguarded model."""
        failed = getattr(self.reward, "failed", None)
        return sum(bool(failed(c)) for c in chunks) if failed is not None else 0

    def _offline(self) -> dict[str, float]:
        """The algorithm's offline phase on the demos (scored by the reward model), if it
        declares one (`DataNeeds.demos`); runs once, before the first update (not again after a
        resume)."""
        if not self._demos:
            return {}
        t0 = time.monotonic()
        algorithm = cast(Offline, self.algorithm)
        stats = algorithm.offline(self._demos, [self.reward.score(c) for c in self._demos])
        self._demos = []
        return {f"offline_{k}": v for k, v in stats.items()} | {
            "offline_s": time.monotonic() - t0}

    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> Path:
        """Atomically write `ckpt-<version>.safetensors` (`learner.checkpoint`: tensors, and the
        rest as JSON in its header; nothing pickled) and point `latest.safetensors` at it."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "policy": self.policy.state_dict(), "algorithm": self.algorithm.state_dict(),
            "policy_version": self.policy_version, "updates": self.updates,
            "env_steps": self.env_steps, "cursor": self.feed.cursor,
            "torch_rng": torch.get_rng_state(), "extra": extra or {},
            "task_outcomes": self.tasks.outcomes() if self.tasks is not None else {},
        }
        path = write_state(self.checkpoint_dir / f"ckpt-{self.policy_version:06d}.safetensors",
                           state)
        latest = self.checkpoint_dir / LATEST
        tmp_link = self.checkpoint_dir / "latest.tmp"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(path.name)
        os.replace(tmp_link, latest)
        self._last_checkpoint = time.monotonic()
        return path

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Continue from `path` (a `.safetensors` this learner wrote; an older Fleet's `.pt` is
        read with `weights_only=True` or refused, `learner.checkpoint.CheckpointError`)."""
        state = read_state(path, device=self.policy.obs_mean.device)
        self.policy.load_state_dict(state["policy"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.policy_version, self.updates = state["policy_version"], state["updates"]
        self.env_steps, self.feed.cursor = state["env_steps"], state["cursor"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.tasks is not None:  # the table as it was (absent from older checkpoints)
            self.tasks.restore(state.get("task_outcomes", {}))
        return dict(state["extra"])
