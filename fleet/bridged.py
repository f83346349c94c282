"""Real robots in `fleet train`: a robot actor whose robot joins over the ZeroMQ bridge.

    fleet keys arm-0 --dir keys                                  # once
    fleet train fleet.bridge_robots=[arm-0] fleet.bridge_keys=keys fleet.bridge_endpoint=tcp://0.0.0.0:5555
    fleet robot run arm-0 --gateway tcp://HOST:5555 --server-key keys/server.key \\
        --key keys/robots/arm-0.key_secret --driver my_arm:MyArm        # on the robot's computer

Each bridged robot's actor runs its own gateway (bridged robot i binds the endpoint's port + i),
so with `fleet.robot_resources=true` the actor lands on the node wired to its robot (custom
resource `robot:<id>`) and the robot connects to that node. The actor waits for its robot to
register; a robot that is lost mid-episode has that episode closed as truncated, and the actor
goes back to waiting until the robot reconnects. The robots are trained on (their chunks stream
to the buffer like any robot's) but not evaluated: held-out evaluation runs on simulated robots.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.bridge.gateway import BridgeError, Gateway, GatewayConfig
from actors.control import RobotControl
from actors.worker import RobotWorker, WorkerConfig, WorkerStats
from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig
from fleet.outbox import BufferOutbox
from fleet.remote import HubWeights, _actor, _one_thread, _RobotActor
from fleet.robot_cli import load_allowlist

log = logging.getLogger("fleet.bridged")


def endpoint_for(endpoint: str, i: int) -> str:
    """The i-th bridged robot's gateway endpoint: `tcp://host:port` with port + i."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not host.startswith("tcp://"):
        raise ValueError(f"fleet.bridge_endpoint must be tcp://HOST:PORT, got {endpoint!r}")
    return f"{host}:{int(port) + i}"


class _BridgedRobotActor(_RobotActor):
    """`_RobotActor` with a robot behind a gateway instead of a simulator in the process."""

    def __init__(self, robot_id: str, endpoint: str, keys_dir: str, policy: PolicyConfig,
                 state: dict[str, np.ndarray], worker: WorkerConfig, buffer: Any, hub: Any,
                 spill_dir: str, policy_version: int = 0) -> None:
        import zmq.auth

        _one_thread()
        keys = Path(keys_dir)
        public, secret = zmq.auth.load_certificate(str(keys / "server.key_secret"))
        if secret is None:
            raise ValueError(f"{keys / 'server.key_secret'} holds no secret key")
        allow = {k: v for k, v in load_allowlist(keys).items() if v == robot_id}
        if not allow:
            raise ValueError(f"no key for robot {robot_id!r} in {keys}/robots (run `fleet keys "
                             f"{robot_id} --dir {keys}`)")
        self.gateway = Gateway(GatewayConfig(endpoint), (public, secret), allow)
        self.gateway.start()
        self.robot_id, self.config, self.policy_version = robot_id, worker, policy_version
        self.net = make_policy(policy)
        self.net.load_policy_state(state)
        self.outbox = BufferOutbox(buffer, Path(spill_dir) / robot_id)
        self.weights = HubWeights(hub)
        self.worker = None  # type: ignore[assignment]  # made when the robot first registers
        self.controls = RobotControl(policy.action_dim)  # the console's pause, e-stop, labels
        self.paced = None
        self.lost = 0
        self.last_loss = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self.start()  # Ray restarted this actor after a crash: wait for the robot again

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    robot = self.gateway.robot(self.robot_id, timeout_s=0.5)
                except BridgeError:
                    continue  # not (re)connected yet
                if self.worker is None:
                    self.worker = RobotWorker(robot, self.net, self.outbox, self.weights,
                                              self.config)
                    self.worker.stats.policy_version = self.policy_version
                    self.worker.control = self.controls
                self.worker.robot = robot
                try:
                    self.worker.run(self._stop)
                except BridgeError as e:  # lost, or it stopped answering: wait for it again
                    self.lost += 1
                    self.last_loss = str(e)
                    log.warning("robot %s: %s; its episode ends truncated", self.robot_id, e)
                    self.worker.abort_episode()
                    self._stop.wait(0.1)  # back off before asking the gateway again
        except Exception as e:  # reported through stats(); the driver decides what to do
            self.error = f"{type(e).__name__}: {e}"

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
                    "bridge": "waiting", "lost": self.lost, "restarted": False,
                    "control": self.controls.state()}
        return dict(super().stats(), bridge=self.gateway.robots().get(self.robot_id, "waiting"),
                    lost=self.lost, last_loss=self.last_loss)

    def evaluate(self, state: dict[str, np.ndarray], episodes: list[Any]) -> list[bool]:
        raise RuntimeError("bridged robots are not evaluated on held-out simulator episodes")


BridgedRobotActor: Any = _actor(_BridgedRobotActor, max_concurrency=4, max_restarts=-1)
