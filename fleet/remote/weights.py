"""Weights from the learner to the robots: the hub actor holds the newest publication,
`HubWeights` is both the learner's `WeightSink` and the robots' `WeightSource`.

Example:

    hub = WeightHub.remote()
    HubWeights(hub).publish(3, policy.policy_state())      # learner side
    got = HubWeights(hub).poll(have_version=2)            # robot side: (3, state) or None
    version, state = HubWeights(hub).newest()             # evaluator: blocks for the reply

What crosses is what robots act with: `policy_state()`, the actor alone (critics, targets and
optimizers stay with the algorithm, STYLE rule 5). A publication is split into parts of at most
`part_bytes` (whole arrays; one part for a small policy), each its own object-store object, so a
robot on another node pulls a large model in the background, part by part, while its loop runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from typing import Any

import numpy as np
import ray

from fleet.remote import actor

PART_BYTES = 256 * 1024 * 1024  # a 7 GB VLA in ~28 parts: each part costs every robot a few calls
LONG_POLL_S = 30.0  # a robot's request for newer weights is answered by then at the latest

Reply = tuple[int, list[ray.ObjectRef], float]  # (policy_version, parts, published_at)


class WeightHubImpl:
    """Holds the newest published weights (object-store references to their parts), their
    version and when they were published (wall clock, for publish→adopted latency). Async: a
    request for something newer than a version waits here, so robots do not poll in a loop and
    every waiting robot is answered the moment a publication arrives."""

    def __init__(self) -> None:
        self.version = -1
        self.parts: list[ray.ObjectRef] = []
        self.published_at = 0.0
        self.tasks: tuple[int, dict[str, float]] | None = None  # the learner's task table
        self._published: asyncio.Condition | None = None  # made inside the actor's loop
        self.requests = 0  # requests that could wait here (robots', not the evaluator's)

    def requests_so_far(self) -> int:
        return self.requests

    def publish_tasks(self, policy_version: int, weights: dict[str, float]) -> None:
        if self.tasks is None or policy_version >= self.tasks[0]:
            self.tasks = (policy_version, dict(weights))

    def task_weights(self) -> dict[str, float] | None:
        return None if self.tasks is None else self.tasks[1]

    def _condition(self) -> asyncio.Condition:
        if self._published is None:
            self._published = asyncio.Condition()
        return self._published

    async def publish(self, policy_version: int, parts: list[ray.ObjectRef],
                      published_at: float) -> None:
        if policy_version > self.version:
            self.version, self.parts, self.published_at = policy_version, parts, published_at
            async with self._condition():
                self._condition().notify_all()

    async def poll(self, have_version: int) -> Reply | None:
        """The newest publication if newer than `have_version`, else None, at once."""
        return await self.wait_newer(have_version, 0.0)

    async def wait_newer(self, have_version: int, timeout_s: float) -> Reply | None:
        """The newest publication once one is newer than `have_version`; None after
        `timeout_s` without one."""
        self.requests += timeout_s > 0
        if self.version <= have_version and timeout_s > 0:
            cond = self._condition()
            async with cond:
                with contextlib.suppress(TimeoutError):  # answered None below
                    await asyncio.wait_for(
                        cond.wait_for(lambda: self.version > have_version), timeout_s)
        if self.version <= have_version:
            return None
        return self.version, self.parts, self.published_at


def split(state: dict[str, np.ndarray], part_bytes: int = PART_BYTES
          ) -> list[dict[str, np.ndarray]]:
    """`state` as parts of whole arrays, in order, each at most `part_bytes` unless one array
    is larger (it goes alone)."""
    parts: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, a in state.items():
        if parts[-1] and size + a.nbytes > part_bytes:
            parts.append({})
            size = 0
        parts[-1][name] = a
        size += a.nbytes
    return parts


class HubWeights:
    """The one object that is the learner's `WeightSink` and the robots' `WeightSource`, and
    likewise for the task table (`learner.loop.TaskSink`, `actors.tasks.TaskWeights`): the
    learner publishes it with each weight set, robots read the newest between episodes.

    Weights go to the object store once per publication, as flat numpy arrays in parts of at
    most `part_bytes` (optionally cast to float16 to halve the bytes; robots cast back on load).
    `poll` never blocks: one request for newer weights waits at the hub for each process (every
    `HubWeights` polling that hub in it shares it: robots packed in a process cost the hub one
    reply per publication), and `poll` checks whether it was answered and whether every part
    has arrived (parts are pulled to this node in the background). `newest` blocks.
    `adopt_latency_s` is the time from the last publication this source picked up to the moment
    it returned it.
    """

    def __init__(self, hub: Any, dtype: str = "float32", part_bytes: int = PART_BYTES) -> None:
        self.hub = hub
        self.dtype = np.dtype(dtype)
        self.part_bytes = part_bytes
        self._arriving: Reply | None = None  # an answer whose parts are still on their way
        self.adopt_latency_s = float("nan")
        self._asking_tasks: ray.ObjectRef | None = None
        self._tasks: dict[str, float] | None = None

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None:
        if self.dtype != np.float32:
            state = {k: v.astype(self.dtype) if v.dtype == np.float32 else v
                     for k, v in state.items()}
        parts = [ray.put(p) for p in split(state, self.part_bytes)]
        ray.get(self.hub.publish.remote(policy_version, parts, time.time()))

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

    def poll(self, have_version: int, timeout_s: float = 0.0
             ) -> tuple[int, dict[str, np.ndarray]] | None:
        """(version, state) of a publication newer than `have_version` once all of it is
        here, else None. Waits up to `timeout_s` (robots: 0, never)."""
        deadline = time.monotonic() + timeout_s
        if self._arriving is None:
            reply = _subscription(self.hub).newer(have_version, timeout_s)
            if reply is None:
                return None
            self._arriving = reply
        version, parts, published_at = self._arriving
        if version <= have_version:  # adopted meanwhile from elsewhere (a restore)
            self._arriving = None
            return None
        left = max(0.0, deadline - time.monotonic())
        here, _ = ray.wait(parts, num_returns=len(parts), timeout=left, fetch_local=True)
        if len(here) < len(parts):
            return None
        self._arriving = None
        state = _subscription(self.hub).load(version, parts)
        self.adopt_latency_s = time.time() - published_at
        return version, state

    def newest(self, have_version: int = -1, timeout_s: float = 0.0
               ) -> tuple[int, dict[str, np.ndarray]] | None:
        """(version, float32 state) of the hub's newest publication if newer than
        `have_version`, waiting up to `timeout_s` for one; None if there is none. Blocks until
        the hub answers and every part is here.

            got = weights.newest()           # the evaluator: the newest, or None before any
        """
        reply = ray.get(self.hub.wait_newer.remote(have_version, timeout_s))
        if reply is None:
            return None
        version, parts, _ = reply
        state = load(parts)
        return version, {k: v.astype(np.float32) if v.dtype == np.float16 else v
                         for k, v in state.items()}


class _Subscription:
    """One request for newer weights waiting at a hub per process, shared by every
    `HubWeights` polling that hub there (robots packed several to a process): the hub answers
    each process once per publication, not each robot, and the newest reply is kept for the
    robots that have not seen it yet."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.lock = threading.Lock()
        self.asking: ray.ObjectRef | None = None  # the request waiting at the hub
        self.answered: concurrent.futures.Future[Any] = concurrent.futures.Future()  # its reply
        self.newest: Reply | None = None  # the newest reply this process has had
        self.loading = threading.Lock()
        self.loaded: tuple[int, dict[str, np.ndarray]] | None = None  # the newest version's state

    def load(self, version: int, parts: list[ray.ObjectRef]) -> dict[str, np.ndarray]:
        """Version `version`'s state from its parts, read once per process: every robot here
        gets the same read-only arrays (each copies them into its own policy)."""
        with self.loading:
            if self.loaded is None or self.loaded[0] != version:
                self.loaded = None  # the old version's arrays let go before the new arrive
                self.loaded = (version, load(parts))
            return self.loaded[1]

    def newer(self, have_version: int, timeout_s: float) -> Reply | None:
        """The newest publication's reply if newer than `have_version`, else None after
        waiting up to `timeout_s` (0: no Ray call unless the hub has answered)."""
        with self.lock:
            if self.newest is not None and self.newest[0] > have_version:
                return self.newest
            if self.asking is None:
                known = max(have_version, -1 if self.newest is None else self.newest[0])
                self.asking = self.hub.wait_newer.remote(known, LONG_POLL_S)
                self.answered = self.asking.future()  # done() costs no Ray call
            asking, answered = self.asking, self.answered
        if timeout_s <= 0 and not answered.done():
            return None  # a robot's check between chunks
        ready, _ = ray.wait([asking], timeout=timeout_s)
        if not ready:
            return None
        reply = ray.get(asking)
        with self.lock:
            if self.asking is asking:
                self.asking = None
            if reply is not None and (self.newest is None or reply[0] > self.newest[0]):
                self.newest = reply
            return self.newest if self.newest is not None and self.newest[0] > have_version \
                else None


_subscriptions: dict[Any, _Subscription] = {}
_subscriptions_lock = threading.Lock()


def _subscription(hub: Any) -> _Subscription:
    """This process's subscription to `hub` (by its actor id: every handle to it alike)."""
    key = hub._actor_id
    with _subscriptions_lock:
        if key not in _subscriptions:
            _subscriptions[key] = _Subscription(hub)
        return _subscriptions[key]


def load(parts: list[ray.ObjectRef]) -> dict[str, np.ndarray]:
    """One publication's parts as one state dict (zero-copy, read-only arrays on this node)."""
    state: dict[str, np.ndarray] = {}
    for part in ray.get(parts):
        state.update(part)
    return state


WeightHub: Any = actor(WeightHubImpl, num_cpus=0, max_concurrency=10_000)
