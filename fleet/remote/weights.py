"""Weights from the learner to the robots: the hub actor holds the newest publication,
`HubWeights` is both the learner's `WeightSink` and the robots' `WeightSource`.

Example:

    hub = WeightHub.remote()
    HubWeights(hub).publish(3, policy.policy_state())      # learner side
    got = HubWeights(hub).poll(have_version=2)            # robot side: (3, state) or None
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray

from fleet.remote import actor


class WeightHubImpl:
    """Holds the newest published weights (an object-store reference), their version and when
    they were published (wall clock, for publish→adopted latency)."""

    def __init__(self) -> None:
        self.version = -1
        self.ref: list[ray.ObjectRef] = []
        self.published_at = 0.0
        self.tasks: tuple[int, dict[str, float]] | None = None  # the learner's task table

    def publish_tasks(self, policy_version: int, weights: dict[str, float]) -> None:
        if self.tasks is None or policy_version >= self.tasks[0]:
            self.tasks = (policy_version, dict(weights))

    def task_weights(self) -> dict[str, float] | None:
        return None if self.tasks is None else self.tasks[1]

    def publish(self, policy_version: int, ref: list[ray.ObjectRef], published_at: float) -> None:
        if policy_version > self.version:
            self.version, self.ref, self.published_at = policy_version, ref, published_at

    def poll(self, have_version: int) -> tuple[int, list[ray.ObjectRef], float] | None:
        if self.version <= have_version:
            return None
        return self.version, self.ref, self.published_at


class HubWeights:
    """The one object that is the learner's `WeightSink` and the robots' `WeightSource`, and
    likewise for the task table (`learner.loop.TaskSink`, `actors.tasks.TaskWeights`): the
    learner publishes it with each weight set, robots read the newest between episodes.

    Weights go to the object store once per publication, as flat numpy arrays (optionally cast
    to float16 to halve the bytes; robots cast back on load). `poll` never blocks: it asks the
    hub in the background and answers from the last reply. `adopt_latency_s` is the time from
    the last publication this source picked up to the moment it returned it.
    """

    def __init__(self, hub: Any, dtype: str = "float32") -> None:
        self.hub = hub
        self.dtype = np.dtype(dtype)
        self._asking: ray.ObjectRef | None = None
        self.adopt_latency_s = float("nan")
        self._asking_tasks: ray.ObjectRef | None = None
        self._tasks: dict[str, float] | None = None

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None:
        if self.dtype != np.float32:
            state = {k: v.astype(self.dtype) if v.dtype == np.float32 else v
                     for k, v in state.items()}
        ray.get(self.hub.publish.remote(policy_version, [ray.put(state)], time.time()))

    def publish_tasks(self, policy_version: int, weights: dict[str, float]) -> None:
        ray.get(self.hub.publish_tasks.remote(policy_version, weights))

    def task_weights(self) -> dict[str, float] | None:
        """The newest task table this source has heard of (None before the first); never
        blocks: it asks the hub in the background, as `poll` does."""
        if self._asking_tasks is None:
            self._asking_tasks = self.hub.task_weights.remote()
        ready, _ = ray.wait([self._asking_tasks], timeout=0)
        if ready:
            self._tasks = ray.get(self._asking_tasks) or self._tasks
            self._asking_tasks = None
        return self._tasks

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        if self._asking is None:
            self._asking = self.hub.poll.remote(have_version)
        ready, _ = ray.wait([self._asking], timeout=0)
        if not ready:
            return None
        reply, self._asking = ray.get(self._asking), None
        if reply is None or reply[0] <= have_version:
            return None
        version, (ref,), published_at = reply
        state = ray.get(ref)
        self.adopt_latency_s = time.time() - published_at
        return version, state


WeightHub: Any = actor(WeightHubImpl, num_cpus=0)
