"""Ray actors around Fleet's plain classes: one thin wrapper per hop of the loop.

    robot.py      RobotActor: a simulated robot and its `actors.worker.RobotWorker`;
                  BridgedRobotActor: the same loop, a real robot joining over the ZeroMQ bridge;
                  both started from a typed `RobotLaunch` by `start_robot`
    outbox.py     BufferOutbox: a robot's chunks → the buffer actor, several per call (spill
                  to disk, resend)
    buffer.py     BufferServer: the persistent `buffers.store.ReplayBuffer`; BufferSource
    learner.py    LearnerActor: the `learner.loop.Learner` built by `learner.build`
    weights.py    WeightHub + HubWeights: learner → robots, versioned, through the object store
    reward.py     RewardTrainer: a learned reward model fitted online from the buffer
    inference.py  InferenceServer: one batching policy for many robots (`fleet.inference=server`)

Only `fleet/` imports ray (STYLE rule 2): every class wrapped here runs unchanged in one plain
process (`fleet.run.serial`); benchmarks start and call these actors through `local_ray`, `actor`
and `get` below. Across process boundaries pass configs, not live objects; weights
cross as `(policy_version, flat numpy arrays)`.

Example:

    hub = WeightHub.remote()
    robot = start_robot(RobotLaunch("robot-0", cfg.robot, pcfg, worker, spill), state, buffer, hub)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

# Ray starts its worker processes at niceness 15: on a machine shared with anything else, the
# robots, buffer and learner then lose the CPU to every normal-priority process, and pay for the
# extra preemptions in cache misses (measured: the same env + policy loop took 19% more CPU per
# step at niceness 15 than at 0 in a loaded 2-core run). A Ray that Fleet starts runs them at
# the driver's priority.
RAY_SYSTEM_CONFIG: dict[str, Any] = {"worker_niceness": 0}


def actor(cls: type, **options: Any) -> Any:
    """`ray.remote(**options)(cls)`, typed loosely: Ray's stubs know no actor options."""
    import ray

    remote: Any = ray.remote
    return remote(**options)(cls)


def get(refs: Any, timeout_s: float | None = None) -> Any:
    """`ray.get`: the results of actor calls, for code outside `fleet/` (benchmarks), which does
    not import ray (STYLE rule 2)."""
    import ray

    return ray.get(refs, timeout=timeout_s)


@contextlib.contextmanager
def local_ray(num_cpus: int, object_store_bytes: int = 256 * 2**20,
              system_config: dict[str, Any] | None = None) -> Iterator[None]:
    """A Ray on this machine for the `with` block (no dashboard, errors-only logs), shut down
    after it; a Ray already running (a test's, a caller's) is used as it is and left running.

        with local_ray(num_cpus=2):
            buffer = BufferServer.remote(path, BufferConfig())
            info = get(buffer.info.remote())
    """
    import ray

    owns = not ray.is_initialized()
    if owns:
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=object_store_bytes, logging_level=logging.ERROR,
                 _system_config=system_config)
    try:
        yield
    finally:
        if owns:
            ray.shutdown()


def one_thread() -> None:
    """Many actors share few cores: torch's intra-op threads would only fight."""
    import torch

    torch.set_num_threads(1)
