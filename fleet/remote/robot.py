"""One robot's actor: a simulated robot and its `RobotWorker` in a Ray actor, started from a
typed `RobotLaunch` by `start_robot` (training, benchmarks and tests all start robots this way).

Example:

    launch = RobotLaunch("robot-0", MetaWorldConfig(), pcfg, WorkerConfig(seed=1), "runs/x/spill")
    robot = start_robot(launch, policy.policy_state(), buffer, hub, num_cpus=0.25)
    ray.get(robot.start.remote()); ...; stats = ray.get(robot.stop.remote())

A launch with `bridge` set starts a `BridgedRobotActor` instead: the same loop, its robot joining
over the ZeroMQ bridge (a real robot in `fleet train`):

    fleet keys arm-0 --dir keys                                  # once
    fleet train fleet.bridge_robots=[arm-0] fleet.bridge_keys=keys fleet.bridge_endpoint=tcp://0.0.0.0:5555
    fleet robot run arm-0 --gateway tcp://HOST:5555 --server-key keys/server.key \\
        --key keys/robots/arm-0.key_secret --driver my_arm:MyArm        # on the robot's computer

Each bridged robot's actor runs its own gateway (bridged robot i binds the endpoint's port + i),
so with `fleet.robot_resources=true` the actor lands on the node wired to its robot (custom
resource `robot:<id>`) and the robot connects to that node. The actor waits for its robot to
register (its spec checked against the policy: `actors.bridge.contract`); a robot that is
lost, e-stopped, refuses or sends bad data mid-episode has that episode closed as truncated with
the steps that ran (`RobotWorker`), and the actor waits until the robot is live again (registered,
its e-stop released). The robots are trained on (their chunks stream
to the buffer like any robot's) but not evaluated: held-out evaluation runs on simulated robots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.bridge.contract import Contract
from actors.bridge.gateway import Gateway, GatewayConfig
from actors.bridge.keys import load_allowlist
from actors.control import RobotControl
from actors.evaluation import Episode, record_episodes
from actors.operator import OperatorConfig, SimulatedOperator
from actors.pacing import Paced
from actors.robots import make_robot
from actors.robots.base import RobotConfig
from actors.tasks import TaskChooser
from actors.worker import EvalEpisode, RobotWorker, WorkerConfig, WorkerStats
from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig, input_keys
from fleet.remote import actor, one_thread
from fleet.remote.buffer import BufferAdmission
from fleet.remote.outbox import LINGER_S, BufferOutbox
from fleet.remote.weights import HubWeights

log = logging.getLogger("fleet.bridged")


@dataclasses.dataclass(frozen=True)
class Bridge:
    """Where a real robot's gateway listens and the keys it accepts (`fleet keys`)."""

    endpoint: str  # tcp://HOST:PORT
    keys_dir: str


@dataclasses.dataclass(frozen=True)
class RobotLaunch:
    """Everything a robot actor starts from: configs, not live objects (STYLE rule 9)."""

    robot_id: str
    robot: RobotConfig | None  # the simulated robot's config (`actors.robots`); None: bridged
    policy: PolicyConfig
    worker: WorkerConfig
    spill_dir: str  # chunks the buffer cannot take yet wait under <spill_dir>/<robot_id>
    policy_version: int = 0  # the version of the weights it starts with
    tasks: tuple[str, ...] | None = None  # its share of the tasks (None: all)
    operator: OperatorConfig | None = None  # a simulated operator beside it
    pace_hz: float = 0.0  # > 0: step at this control rate, as hardware does
    bridge: Bridge | None = None  # a real robot joining over the bridge
    spill_fsync: str = "interval_ms"  # the buffer's fsync policy: spill logs are synced alike
    rate_limited: bool = False  # each chunk waits for the buffer's rate limiter to admit it
    choose_tasks: bool = False  # its next task drawn from the learner's task table
    outbox_linger_s: float = LINGER_S  # a chunk waits this long for others to share a call


def start_robot(launch: RobotLaunch, state: dict[str, np.ndarray], buffer: Any, hub: Any,
                server: Any = None, **options: Any) -> Any:
    """The robot's actor handle, acting with `state` (weights at `launch.policy_version`);
    `server`: a shared `InferenceServer` to act through; `options`: Ray actor options
    (`num_cpus`, `resources`, `scheduling_strategy`)."""
    if launch.bridge is not None:
        return BridgedRobotActor.options(**options).remote(launch, state, buffer, hub)
    return RobotActor.options(**options).remote(launch, state, buffer, hub, server)


class RobotActorImpl:
    """One simulated robot with its own policy copy (`inference=local`), or acting through a
    shared `InferenceServer` (`server`, `inference=server`: `fleet.remote.inference.RemotePolicy`;
    the
    local copy then only runs held-out evaluation)."""

    def __init__(self, launch: RobotLaunch, state: dict[str, np.ndarray], buffer: Any, hub: Any,
                 server: Any = None) -> None:
        import torch

        from fleet.remote.inference import RemotePolicy

        one_thread()
        worker, policy = launch.worker, launch.policy
        torch.manual_seed(worker.seed)  # exploration noise is reproducible per robot
        self.net = net = make_policy(policy)
        net.load_policy_state(state)
        robot_id, policy_version = launch.robot_id, launch.policy_version
        self.outbox = BufferOutbox(buffer, Path(launch.spill_dir) / robot_id,
                                   fsync=launch.spill_fsync, linger_s=launch.outbox_linger_s)
        remote = (RemotePolicy(server, policy_version, getattr(net, "takes_obs_dict", False),
                               getattr(net, "takes_corrections", False),
                               getattr(net, "instruction", "")) if server is not None else None)
        self.weights: HubWeights | RemotePolicy = remote or HubWeights(hub)
        if launch.robot is None:
            raise ValueError(f"{robot_id}: a simulated robot needs its config (launch.robot)")
        self.robot = make_robot(launch.robot, robot_id, launch.tasks)
        operator, pace_hz = launch.operator, launch.pace_hz
        helper = (SimulatedOperator(operator, self.robot.expert_action)
                  if operator is not None and operator.simulated else None)
        self.paced = Paced(self.robot, pace_hz) if pace_hz > 0 else None
        self.chooser = (TaskChooser(self.robot, HubWeights(hub), worker.seed)
                        if launch.choose_tasks else None)
        self.worker = RobotWorker(self.paced or self.robot, remote or net, self.outbox,
                                  self.weights, worker, helper,
                                  admission=BufferAdmission(buffer) if launch.rate_limited
                                  else None, choose_task=self.chooser)
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
            self.error = f"robot {self.robot.spec.robot_id}: {type(e).__name__}: {e}"

    def stop(self) -> dict[str, Any]:
        """Finish the current episode, wait for every ack, and report."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.outbox.flush()
        return self.stats()

    def settle(self) -> dict[str, Any]:
        """Wait for the acknowledgement of every chunk sent, leaving spilled ones spilled (for
        a robot held by a pause: what a crash now would leave to its successor); its stats."""
        self.outbox.settle()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return dict(self.worker.stats.as_dict(), robot_id=self.worker.robot.spec.robot_id,
                    task=self.worker.robot.spec.task, stored=self.outbox.stored,
                    spilled=self.outbox.spilled, duplicates=self.outbox.duplicates,
                    inherited=self.outbox.inherited, pending_spill=self.outbox.pending_spill,
                    insert_calls=self.outbox.calls,
                    refused=len(self.outbox.refusals), error=self.error,
                    adopt_latency_s=self.weights.adopt_latency_s,
                    missed_deadlines=self.paced.missed if self.paced else 0,
                    node_id=ray.get_runtime_context().get_node_id(),
                    restarted=ray.get_runtime_context().was_current_actor_reconstructed,
                    control=self.controls.state(),
                    tasks_chosen=dict(self.chooser.chosen) if self.chooser else {})

    @ray.method(concurrency_group="control")  # threads of its own: never behind stats/frames
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
        return [e.success for e in self.evaluate_episodes(state, episodes)]

    def evaluate_episodes(self, state: dict[str, np.ndarray], episodes: list[Episode],
                          record: int = 0) -> list[EvalEpisode]:
        """`evaluate` with returns, lengths and the first `record` episodes' camera frames."""
        self.net.load_policy_state(state)
        acting, self.worker.policy = self.worker.policy, self.net  # the given weights, locally
        try:
            with self.paced.unpaced() if self.paced else contextlib.nullcontext():
                return record_episodes(self.worker, self.robot, episodes, record)
        finally:
            self.worker.policy = acting


def contract_of(policy: PolicyConfig) -> Contract:
    """What a bridged robot must register to be driven by this policy."""
    extra: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key in input_keys(policy):  # every camera it reads (kind=act: params.cameras too)
        extra[key] = (("float32", (policy.action_dim,)) if key == policy.mask_key
                      else ("uint8", (policy.image_size, policy.image_size, 3)))
    return Contract(policy.obs_dim, policy.action_dim, extra)


def endpoint_for(endpoint: str, i: int) -> str:
    """The i-th bridged robot's gateway endpoint: `tcp://host:port` with port + i."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not host.startswith("tcp://"):
        raise ValueError(f"fleet.bridge_endpoint must be tcp://HOST:PORT, got {endpoint!r}")
    return f"{host}:{int(port) + i}"


class BridgedRobotActorImpl(RobotActorImpl):
    """`RobotActorImpl` with a robot behind a gateway instead of a simulator in the process."""

    def __init__(self, launch: RobotLaunch, state: dict[str, np.ndarray], buffer: Any,
                 hub: Any) -> None:
        import zmq.auth

        one_thread()
        if launch.bridge is None:
            raise ValueError(f"robot {launch.robot_id}: a bridged robot needs launch.bridge")
        robot_id, policy, worker = launch.robot_id, launch.policy, launch.worker
        spill_dir, policy_version = launch.spill_dir, launch.policy_version
        endpoint, keys = launch.bridge.endpoint, Path(launch.bridge.keys_dir)
        public, secret = zmq.auth.load_certificate(str(keys / "server.key_secret"))
        if secret is None:
            raise ValueError(f"{keys / 'server.key_secret'} holds no secret key")
        allow = {k: v for k, v in load_allowlist(keys).items() if v == robot_id}
        if not allow:
            raise ValueError(f"no key for robot {robot_id!r} in {keys}/robots (run `fleet keys "
                             f"{robot_id} --dir {keys}`)")
        self.gateway = Gateway(GatewayConfig(endpoint), (public, secret), allow,
                               contract=contract_of(policy))
        self.gateway.start()
        self.robot_id, self.config, self.policy_version = robot_id, worker, policy_version
        self.admission = BufferAdmission(buffer) if launch.rate_limited else None
        self.chooser = None  # a real robot's task is its own
        self.net = make_policy(policy)
        self.net.load_policy_state(state)
        self.outbox = BufferOutbox(buffer, Path(spill_dir) / robot_id, fsync=launch.spill_fsync,
                                   linger_s=launch.outbox_linger_s)
        self.weights = HubWeights(hub)
        self.worker = None  # type: ignore[assignment]  # made when the robot first registers
        self.controls = RobotControl(policy.action_dim)  # the console's pause, e-stop, labels
        self.paced = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self.start()  # Ray restarted this actor after a crash: wait for the robot again

    def _run(self) -> None:
        try:
            robot = self.gateway.wait_live(self.robot_id, self._stop)
            if robot is None:
                return  # stopped before the robot first registered
            if self.worker is None:
                self.worker = RobotWorker(robot, self.net, self.outbox, self.weights,
                                          self.config, control=self.controls,
                                          rejoin=self._rejoin, admission=self.admission)
                self.worker.stats.policy_version = self.policy_version
            self.worker.robot = robot
            self.worker.run(self._stop)  # a fault ends the episode, then `_rejoin` waits
        except Exception as e:  # reported through stats(); the driver decides what to do
            self.error = f"robot {self.robot_id}: {type(e).__name__}: {e}"

    def _rejoin(self, stop: threading.Event) -> None:
        """After a fault: wait until the robot is live again (registered, e-stop released)."""
        robot = self.gateway.wait_live(self.robot_id, stop)
        if robot is not None:
            self.worker.robot = robot

    def stop(self) -> dict[str, Any]:
        stats = super().stop()
        self.gateway.close()
        return stats

    def stats(self) -> dict[str, Any]:
        if self.worker is None:
            return {**WorkerStats().as_dict(), "robot_id": self.robot_id, "task": "",
                    "policy_version": self.policy_version, "stored": self.outbox.stored,
                    "spilled": self.outbox.spilled, "duplicates": self.outbox.duplicates,
                    "refused": len(self.outbox.refusals), "error": self.error,
                    "adopt_latency_s": self.weights.adopt_latency_s, "missed_deadlines": 0,
                    "bridge": "waiting", "lost": self.gateway.stats["lost"], "restarted": False,
                    "faults": 0, "last_fault": "", "control": self._control_state("waiting"),
                    "register_refused": self.gateway.refused.get(self.robot_id, "")}
        bridge = self.gateway.robots().get(self.robot_id, "waiting")
        return dict(super().stats(), bridge=bridge, lost=self.gateway.stats["lost"],
                    control=self._control_state(bridge),
                    register_refused=self.gateway.refused.get(self.robot_id, ""))

    def _control_state(self, bridge: str) -> dict[str, Any]:
        """The console's state, with the robot's own: a lost, e-stopped (at the robot) or not yet
        registered robot shows so, not "running"."""
        state = self.controls.state()
        if bridge == "waiting" and self.robot_id in self.gateway.refused:
            bridge = "registration refused"  # the reason: stats()["register_refused"]
        if bridge != "live" and state["status"] == "running":
            state["status"] = {"estop": "robot e-stop"}.get(bridge, bridge)
        return state

    def evaluate(self, state: dict[str, np.ndarray], episodes: list[Any]) -> list[bool]:
        raise RuntimeError("bridged robots are not evaluated on held-out simulator episodes")

    def evaluate_episodes(self, state: dict[str, np.ndarray], episodes: list[Any],
                          record: int = 0) -> list[EvalEpisode]:
        raise RuntimeError("bridged robots are not evaluated on held-out simulator episodes")


# A crashed robot actor comes back and restarts its loop (`was_current_actor_reconstructed`).
# The console's commands (e-stops among them) have their own threads ("control"), so the
# default group's calls (stats, frames, evaluate) cannot hold them up.
RobotActor: Any = actor(RobotActorImpl, max_concurrency=4, max_restarts=-1,
                        concurrency_groups={"control": 2})
BridgedRobotActor: Any = actor(BridgedRobotActorImpl, max_concurrency=4, max_restarts=-1,
                               concurrency_groups={"control": 2})
