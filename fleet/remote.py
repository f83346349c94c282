"""Ray actors around Fleet's plain classes, and the adapters that join them.

Only `fleet/` imports ray (STYLE rule 2): `RobotWorker`, `ReplayBuffer` and `Learner` run here
unchanged, each in its own actor. Across the process boundary pass configs, not live objects;
weights cross as `(policy_version, flat numpy arrays)` through the object store, once per
publication.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.control import RobotControl
from actors.operator import OperatorConfig, SimulatedOperator
from actors.pacing import Paced
from actors.robot import MetaWorldConfig, make_robot
from actors.worker import RobotWorker, WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig
from buffers.sampler import Batch, Sampler
from buffers.sampling import spec_from_dict
from buffers.shards import open_buffer
from buffers.store import BufferConfig, InsertResult, ReplayBuffer
from fleet.evaluate import Episode, run_episodes
from fleet.outbox import BufferOutbox
from learner.build import LearnerParts, build_learner
from learner.loop import Interrupted, LearnerConfig
from rewards.base import RewardConfig


def _actor(cls: type, **options: Any) -> Any:
    """`ray.remote(**options)(cls)`, typed loosely: Ray's stubs know no actor options."""
    remote: Any = ray.remote
    return remote(**options)(cls)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # many actors share few cores; intra-op threads only fight


class _BufferServer:
    """The persistent replay buffer as an actor: robots insert, the learner reads."""

    def __init__(self, root: str, config: BufferConfig) -> None:
        self.buffer = open_buffer(Path(root), config)  # several shards if config.shards > 1
        self.samplers: dict[str, tuple[dict[str, Any], Sampler]] = {}

    def insert(self, records: list[bytes]) -> InsertResult:
        return self.buffer.insert(records)

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        return self.buffer.read(cursor, limit, min_policy_version)

    def sample(self, spec: dict[str, Any], policy_version: int | None = None,
               name: str = "default", seed: int = 0) -> Batch | None:
        """A batch drawn as `spec` declares (`buffers.sampling.spec_from_dict`), or None to
        wait (rate limit, min_size, too few eligible records). The sampler named `name` keeps
        its state (uses per record, rate-limit counts) between calls; a new spec for the same
        name starts it afresh. The learner's hook: `BufferSource.sample`."""
        if not isinstance(self.buffer, ReplayBuffer):
            raise NotImplementedError("sampling a sharded buffer: use read(), or shards=1")
        held = self.samplers.get(name)
        if held is None or held[0] != spec:
            held = self.samplers[name] = (spec, Sampler(self.buffer, spec_from_dict(spec), seed))
        return held[1].sample(policy_version)

    def update_priorities(self, cursors: np.ndarray, priorities: np.ndarray,
                          name: str = "default") -> None:
        self.samplers[name][1].update_priorities(cursors, priorities)

    def info(self) -> dict[str, Any]:
        return self.buffer.info()

    def close(self) -> None:
        self.buffer.close()


class _WeightHub:
    """Holds the newest published weights (an object-store reference), their version and when
    they were published (wall clock, for publish→adopted latency)."""

    def __init__(self) -> None:
        self.version = -1
        self.ref: list[ray.ObjectRef] = []
        self.published_at = 0.0

    def publish(self, policy_version: int, ref: list[ray.ObjectRef], published_at: float) -> None:
        if policy_version > self.version:
            self.version, self.ref, self.published_at = policy_version, ref, published_at

    def poll(self, have_version: int) -> tuple[int, list[ray.ObjectRef], float] | None:
        if self.version <= have_version:
            return None
        return self.version, self.ref, self.published_at


class HubWeights:
    """The one object that is the learner's `WeightSink` and the robots' `WeightSource`.

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

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None:
        if self.dtype != np.float32:
            state = {k: v.astype(self.dtype) if v.dtype == np.float32 else v
                     for k, v in state.items()}
        ray.get(self.hub.publish.remote(policy_version, [ray.put(state)], time.time()))

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


class BufferSource:
    """The learner's `ChunkSource` over the buffer actor."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        return ray.get(self.buffer.read.remote(cursor, limit, min_policy_version))

    def sample(self, spec: dict[str, Any], policy_version: int | None = None,
               name: str = "default") -> Batch | None:
        """A `buffers.sampler.Batch` of numpy arrays (`torch.from_numpy` them), or None to wait.
        Example: `source.sample({"preset": "on_policy", "max_staleness": 1, "max_uses": 4,
        "batch_size": 256, "horizon": 8}, policy_version=v)`."""
        return ray.get(self.buffer.sample.remote(spec, policy_version, name))


class _RobotActor:
    """One simulated robot with its own policy copy (`inference=local`), or acting through a
    shared `InferenceServer` (`server`, `inference=server`: `fleet.inference.RemotePolicy`; the
    local copy then only runs held-out evaluation)."""

    def __init__(self, robot_id: str, robot: MetaWorldConfig, policy: PolicyConfig,
                 state: dict[str, np.ndarray], worker: WorkerConfig, buffer: Any, hub: Any,
                 spill_dir: str, policy_version: int = 0,
                 tasks: tuple[str, ...] | None = None,
                 operator: OperatorConfig | None = None, pace_hz: float = 0.0,
                 server: Any = None) -> None:
        import torch

        from fleet.inference import RemotePolicy

        _one_thread()
        torch.manual_seed(worker.seed)  # exploration noise is reproducible per robot
        self.net = net = make_policy(policy)
        net.load_policy_state(state)
        self.outbox = BufferOutbox(buffer, Path(spill_dir) / robot_id)
        remote = RemotePolicy(server, policy_version) if server is not None else None
        self.weights: HubWeights | RemotePolicy = remote or HubWeights(hub)
        self.robot = make_robot(robot, robot_id, tasks)
        helper = (SimulatedOperator(operator, self.robot.expert_action)
                  if operator is not None and operator.simulated else None)
        self.paced = Paced(self.robot, pace_hz) if pace_hz > 0 else None
        self.worker = RobotWorker(self.paced or self.robot, remote or net, self.outbox,
                                  self.weights, worker, helper)
        self.worker.stats.policy_version = policy_version
        self.worker.control = self.controls = RobotControl(self.robot.spec.action_dim, pace_hz)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self.start()  # Ray restarted this robot after a crash: go back to work

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self._stop)
        except Exception as e:  # reported through stats(); the driver decides what to do
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> dict[str, Any]:
        """Finish the current episode, wait for every ack, and report."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.outbox.flush()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return dict(self.worker.stats.as_dict(), robot_id=self.worker.robot.spec.robot_id,
                    task=self.worker.robot.spec.task, stored=self.outbox.stored,
                    spilled=self.outbox.spilled, duplicates=self.outbox.duplicates,
                    refused=len(self.outbox.refusals), error=self.error,
                    adopt_latency_s=self.weights.adopt_latency_s,
                    missed_deadlines=self.paced.missed if self.paced else 0,
                    node_id=ray.get_runtime_context().get_node_id(),
                    restarted=ray.get_runtime_context().was_current_actor_reconstructed,
                    control=self.controls.state())

    def control(self, command: dict[str, Any]) -> dict[str, Any]:
        """An operator's command (`actors.control.COMMANDS`), e.g. `{"cmd": "estop"}`; its
        state after. A pause or e-stop answers once the robot holds (`holding`), or after 1 s
        when its loop is not running. Raises `actors.control.CommandError` (a ValueError) for an
        unknown or malformed command, changing nothing."""
        state = self.controls.command(command)
        running = self._thread is not None and self._thread.is_alive()
        if command["cmd"] in ("estop", "pause") and running:
            self.controls.wait_holding(1.0)
            state = self.controls.state()
        return dict(state, robot_id=self.worker.robot.spec.robot_id,
                    env_steps=self.worker.stats.env_steps)

    def frame(self) -> np.ndarray | None:
        """The newest camera image (uint8 [H, W, C]), or None for a robot without a camera."""
        return self.controls.frame()

    def evaluate(self, state: dict[str, np.ndarray], episodes: list[Episode]) -> list[bool]:
        """Held-out (task, seed) episodes with the given weights (call while the loop is
        stopped)."""
        self.net.load_policy_state(state)
        acting, self.worker.policy = self.worker.policy, self.net  # the given weights, locally
        try:
            with self.paced.unpaced() if self.paced else contextlib.nullcontext():
                return run_episodes(self.worker, self.robot, episodes)
        finally:
            self.worker.policy = acting


class _LearnerActor:
    """The learner in its own process (on a GPU node, when a cluster has one)."""

    def __init__(self, policy: PolicyConfig, state: dict[str, np.ndarray],
                 algorithm: AlgorithmConfig, reward: RewardConfig, config: LearnerConfig,
                 checkpoint_dir: str, buffer: Any, hub: Any, seed: int, demos: str | None = None,
                 reward_hub: Any = None) -> None:
        """Built as in one process (`learner.build`). `demos`: a buffer directory of
        demonstrations (the base's, from `fleet.pretrain`), for an algorithm that declares it
        needs them (TD). `reward_hub`: where a `fleet.reward_actor.RewardTrainer` publishes the
        reward model's weights; the learner adopts each new version before its next update."""
        _one_thread()
        parts = LearnerParts(policy, state, algorithm, reward, config, Path(checkpoint_dir),
                             seed, Path(demos) if demos is not None else None)
        self.learner = build_learner(
            parts, BufferSource(buffer), HubWeights(hub, config.publish_dtype),
            HubWeights(reward_hub) if reward_hub is not None else None)

    def step(self) -> dict[str, float]:
        """One update; {} if `interrupt` stopped it while it waited for data."""
        try:
            return self.learner.step()
        except Interrupted:
            return {}

    def interrupt(self) -> None:
        self.learner.interrupt()

    def restore(self, path: str) -> int:
        """Continue from a checkpoint; returns its policy_version."""
        self.learner.load_checkpoint(Path(path))
        return self.learner.policy_version

    def checkpoint(self, extra: dict[str, Any]) -> str:
        return str(self.learner.save_checkpoint(extra))

    def policy_state(self) -> tuple[int, dict[str, np.ndarray]]:
        return self.learner.policy_version, self.learner.policy.policy_state()


# Crashed actors come back: the buffer reopens its log (acknowledged data is on disk) and Ray
# retries the calls that were in flight; robots restart their loop (see `_RobotActor`).
BufferServer: Any = _actor(_BufferServer, num_cpus=0, max_restarts=-1, max_task_retries=-1)

WeightHub: Any = _actor(_WeightHub, num_cpus=0)

RobotActor: Any = _actor(_RobotActor, max_concurrency=4, max_restarts=-1)

LearnerActor: Any = _actor(_LearnerActor, num_cpus=0.5, max_concurrency=2)
