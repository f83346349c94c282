"""`RewardTrainer`: the Ray actor that trains a learned reward model online from the buffer and
publishes versioned weights that the learner's copy of the model adopts.

Example (what `fleet train` wires when the reward model is trainable):

    hub = WeightHub.remote()                                   # the reward's own hub
    trainer = RewardTrainer.remote(cfg.reward, buffer, hub, demos_dir)
    trainer.start.remote()                                     # fits in a background thread
    learner = LearnerActor.remote(..., reward_hub=hub)         # adopts each new version
    ray.get(trainer.stop.remote())                             # -> stats

A *trainable* reward model has `fit(episodes) -> dict`, `weights() -> {name: array}` and
`load_weights(version, state)` (`rewards.world_model`, `rewards.progress`). The trainer reads
every new chunk from the buffer (its own cursor), assembles finished episodes
(`rewards.episodes.EpisodePool`, optionally seeded with the base's demonstrations), and once it
holds `min_episodes` fits the model (`fit_steps` each time, at most every `fit_every_s`) and
publishes `(version, weights)`: the version is the number of fits, so the learner's labels
are keyed by (reward name, version).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from buffers.codec import decode_chunk
from buffers.demos import read_demos
from fleet.remote import actor, one_thread
from fleet.remote.weights import HubWeights
from rewards.base import RewardConfig, make_reward
from rewards.episodes import EpisodePool


def trainable(model: Any) -> bool:
    return all(hasattr(model, m) for m in ("fit", "weights", "load_weights"))


def adopt(reward: Any, source: Any) -> bool:
    """Load the newest weights `source` (a `HubWeights` on the trainer's hub) has for `reward`,
    if newer than its version; True if it did. The learner calls this before each update."""
    got = source.poll(int(reward.version))
    if got is None:
        return False
    reward.load_weights(*got)
    return True


class RewardTrainerImpl:
    def __init__(self, reward: RewardConfig, buffer: Any, hub: Any,
                 demos: str | None = None) -> None:
        one_thread()
        model: Any = make_reward(reward, guard=False)
        if not trainable(model):
            raise ValueError(f"reward {reward.name!r} has no fit/weights/load_weights")
        self.model, cfg = model, model.config
        self.min_episodes, self.fit_every_s = cfg.min_episodes, cfg.fit_every_s
        self.buffer, self.sink = buffer, HubWeights(hub)
        self.pool = EpisodePool(cfg.keep_episodes)
        self.demos = 0
        if demos is not None:  # successful demos: progress from t=0
            self.demos = self.pool.add(read_demos(Path(demos)))
        self.cursor, self.fits = 0, 0
        self.last: dict[str, float] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.step():
                    self._stop.wait(0.2)
        except Exception as e:  # reported through stats(); the learner keeps the last version
            self.error = f"{type(e).__name__}: {e}"

    def step(self) -> bool:
        """Read new chunks; fit and publish when due. True if it fitted."""
        import ray

        while True:
            records, self.cursor = ray.get(self.buffer.read.remote(self.cursor, 512))
            self.pool.add(decode_chunk(r) for r in records)
            if len(records) < 512:
                break
        episodes = self.pool.finished()
        if len(episodes) - self.demos < self.min_episodes:
            return False  # the demos alone carry no failures to learn from
        t0 = time.monotonic()
        self.last = self.model.fit(episodes)
        self.fits += 1
        self.sink.publish(self.fits, self.model.weights())
        self.last.update(fit_s=time.monotonic() - t0, episodes=len(episodes))
        self._stop.wait(max(0.0, self.fit_every_s - (time.monotonic() - t0)))
        return True

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return {"version": self.fits, "episodes_seen": self.pool.added, "demos": self.demos,
                "error": self.error, **self.last}


RewardTrainer: Any = actor(RewardTrainerImpl, num_cpus=0.25, max_concurrency=2)
