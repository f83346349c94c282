"""`RewardTrainer`: the Ray actor around `rewards.trainer.RewardTrainer`, which trains a learned
reward model online from the buffer and publishes versioned weights that the learner's copy of
the model adopts (`rewards.trainer.adopt`, called by `learner.loop.Learner`).

Example (what `fleet train` wires when the reward model is trainable):

    hub = WeightHub.remote()                                   # the reward's own hub
    trainer = RewardTrainer.remote(cfg.reward, buffer, hub, demos_dir)
    trainer.start.remote()                                     # fits in a background thread
    learner = LearnerActor.remote(..., reward_hub=hub)         # adopts each new version
    ray.get(trainer.stop.remote())                             # -> stats

The actor adds only what a process needs: a background thread, and a pause of at least
`fit_every_s` between fits so it shares its cores with the robots.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from buffers.demos import read_demos
from fleet.remote import actor, one_thread
from fleet.remote.buffer import BufferSource
from fleet.remote.weights import HubWeights
from rewards.base import RewardConfig, make_reward
from rewards.trainer import RewardTrainer as PlainTrainer


class RewardTrainerImpl:
    def __init__(self, reward: RewardConfig, buffer: Any, hub: Any,
                 demos: str | None = None) -> None:
        one_thread()
        model: Any = make_reward(reward, guard=False)  # PlainTrainer refuses one not LearnsOnline
        shown = read_demos(Path(demos)) if demos is not None else []
        self.trainer = PlainTrainer(model, BufferSource(buffer), HubWeights(hub), shown)
        self.fit_every_s = model.config.fit_every_s
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
                t0 = time.monotonic()
                if self.trainer.step():
                    self._stop.wait(max(0.0, self.fit_every_s - (time.monotonic() - t0)))
                else:
                    self._stop.wait(0.2)
        except Exception as e:  # reported through stats(); the learner keeps the last version
            self.error = f"{type(e).__name__}: {e}"

    def step(self) -> bool:
        """Read new chunks; fit and publish when due. True if it fitted."""
        return self.trainer.step()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return dict(self.trainer.stats(), error=self.error)


RewardTrainer: Any = actor(RewardTrainerImpl, num_cpus=0.25, max_concurrency=2)
