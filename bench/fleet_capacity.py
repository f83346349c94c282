"""`fleet bench fleet_capacity`: how many 10 Hz robots this machine serves on time.

Robots: stub dynamics (`StubRobot`), state observations (16-d, 4-d actions), action chunks of
H = 8, each paced at 10 Hz (`actors.pacing.Paced`) and streaming rollout chunks (K = 2 calls,
16 steps) to a real `BufferServer` actor on disk, while a real PPO `Learner` actor trains on them
and publishes weights. A size passes when, in its one measuring window, the robots made at
least 99% of the control steps the 10 Hz grid asks for (robots x 10 Hz x window) and missed
fewer than 1% of their deadlines. Both are needed: `Paced` re-anchors its grid after a miss, so
a robot that stalls for a second counts one miss, not ten, and only the step count shows the
loss. Each size gets exactly one window (no second try, no keeping the better of two: a size
that fails under a burst of load fails; every window is in `sizes`); the search goes up by
doubling (8, 16, 32, ...) to the first size that fails, then bisects between the last pass and
that failure.

Packing: robots run several per Ray actor, in "robot host" actors (`RobotHost`, one per CPU
core), each robot a thread of its host with its own `RobotWorker`, `Paced` robot and
`BufferOutbox`. A paced robot sleeps 90% of its period, so an actor (a whole Python process,
~100 MB, a Ray worker's own threads) per robot is what would limit a small machine, not the
control loops; a real fleet of 64 10-Hz robots on 2 cores would be run this way. The robots of
a host share one policy copy (a lock around each call: a call takes ~0.1 ms) that the host
updates from the weight hub at most every 0.1 s, and each robot stamps its chunks with the
version it acted with. Robots start at random phases of their period, as independent robots do.

value = the largest passing fleet; baseline = the fleet predicted from one robot's measured CPU
cost: cores / (CPU seconds per control step x 10 Hz), where the per-step cost is measured in this
run, in this process, by stepping one unpaced robot through the same worker, policy and chunk
encoding into an in-memory outbox. That prediction ignores the learner's, the buffer's and Ray
messaging's CPU and any scheduling latency, so it is an upper bound: ratio = the fraction of
the CPU-bound ideal that the real system achieves on time. `--quick`: 1.5 s windows, up to 256,
bisecting to a quarter (else 10 s windows, up to 2048, to an eighth).
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from actors.evaluation import Collected
from actors.pacing import Paced
from actors.robots.stub import StubConfig, StubRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig
from bench.common import result
from fleet.remote import actor, get, local_ray
from fleet.remote.outbox import BufferOutbox

HZ = 10.0
HORIZON = 8
CALLS_PER_CHUNK = 2
MAX_MISSED = 0.01  # a size passes with fewer than this fraction of deadlines missed
MIN_STEPS = 0.99  # and at least this fraction of the steps the grid asks for
STUB = StubConfig(obs_dim=16, action_dim=4, control_hz=HZ, max_episode_steps=20)
POLICY = PolicyConfig(obs_dim=STUB.obs_dim, action_dim=STUB.action_dim, horizon=HORIZON)


class SharedPolicy:
    """One policy copy for all robots of a host: the `Policy` and `WeightSource` of each.

    `weights` is polled (at most every `poll_s`) inside `act`; `poll` reports the version the
    host holds, so each robot stamps its next chunk with it (as
    `fleet.remote.inference.RemotePolicy`).
    """

    def __init__(self, config: PolicyConfig, state: dict[str, np.ndarray], weights: Any = None,
                 poll_s: float = 0.1) -> None:
        self.net = make_policy(config)
        self.net.load_policy_state(state)
        self.weights, self.poll_s = weights, poll_s
        self.policy_version = 0
        self._lock = threading.Lock()
        self._polled = 0.0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, float]:
        with self._lock:
            now = time.monotonic()
            if self.weights is not None and now - self._polled > self.poll_s:
                self._polled = now
                got = self.weights.poll(self.policy_version)
                if got is not None:
                    self.net.load_policy_state(got[1])
                    self.policy_version = got[0]
            result: tuple[np.ndarray, float] = self.net.act(obs, deterministic)
            return result

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        return (self.policy_version, {}) if self.policy_version > have_version else None

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        pass  # the host adopts weights once for all its robots


class _RobotHost:
    """Many paced robots in one actor, one thread each (see the module docstring)."""

    def __init__(self, name: str, state: dict[str, np.ndarray], buffer: Any, hub: Any,
                 spill_dir: str) -> None:
        import torch

        from fleet.remote.weights import HubWeights

        torch.set_num_threads(1)
        self.name, self.buffer, self.spill_dir = name, buffer, Path(spill_dir)
        self.policy = SharedPolicy(POLICY, state, HubWeights(hub) if hub is not None else None)
        self.windows = 0

    def run_window(self, robots: int, seconds: float, warmup_s: float = 1.0) -> dict[str, Any]:
        """Run `robots` paced robots; count their steps and missed deadlines over `seconds`
        after `warmup_s`; stop them (each finishes its episode) and report."""
        self.windows += 1
        stop = threading.Event()
        paced, workers, outboxes = [], [], []
        for i in range(robots):
            rid = f"{self.name}-w{self.windows}-r{i}"
            robot = Paced(StubRobot(STUB, rid), HZ)
            outbox = BufferOutbox(self.buffer, self.spill_dir / rid)
            workers.append(RobotWorker(robot, self.policy, outbox, self.policy,
                                       WorkerConfig(HORIZON, CALLS_PER_CHUNK,
                                                    seed=hash(rid) % 100_000)))
            paced.append(robot)
            outboxes.append(outbox)
        errors: list[str] = []

        def loop(worker: RobotWorker, phase: float) -> None:
            time.sleep(phase)  # independent robots are not in phase with each other
            try:
                worker.run(stop)
            except Exception as e:  # reported, and the size fails
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=loop, args=(w, random.uniform(0, 1 / HZ)),
                                    daemon=True) for w in workers]
        for t in threads:
            t.start()
        time.sleep(warmup_s)
        s0, m0 = sum(p.steps for p in paced), sum(p.missed for p in paced)
        t0 = time.monotonic()
        time.sleep(seconds)
        s1, m1 = sum(p.steps for p in paced), sum(p.missed for p in paced)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        for o in outboxes:
            o.flush()
        return {"robots": robots, "steps": s1 - s0, "missed": m1 - m0, "seconds": elapsed,
                "chunks": sum(o.stored for o in outboxes), "errors": errors[:3],
                "policy_versions": sorted({w.stats.policy_version for w in workers})[-1:]}

    def pid(self) -> int:
        return os.getpid()


RobotHost: Any = actor(_RobotHost, num_cpus=0, max_concurrency=4)


def per_step_cpu_s(steps: int = 2000) -> float:
    """CPU seconds per control step of one unpaced robot: worker, policy call per H steps,
    chunk building and encoding (into memory), in this process."""
    import torch

    torch.set_num_threads(1)

    policy = SharedPolicy(POLICY, make_policy(POLICY).policy_state())
    worker = RobotWorker(StubRobot(STUB, "probe"), policy, Collected(), policy,
                         WorkerConfig(HORIZON, CALLS_PER_CHUNK, seed=1))
    worker.run_episode(0)
    c0, n0, seed = time.process_time(), worker.stats.env_steps, 1
    while worker.stats.env_steps - n0 < steps:
        worker.run_episode(seed)
        seed += 1
    return (time.process_time() - c0) / (worker.stats.env_steps - n0)


def search(passes: Callable[[int], bool], start: int = 8, limit: int = 1024,
           resolution: int = 8) -> int:
    """The largest n in [start, limit] with `passes(n)`, assuming passing is monotone: double
    from `start` to the first failure, then bisect to within 1/`resolution` of the last pass
    (0 if `start` fails)."""
    good, bad, n = 0, limit + 1, start
    while n <= limit:
        if not passes(n):
            bad = n
            break
        good, n = n, n * 2
    if good == 0:
        return 0
    while bad - good > max(1, good // resolution):
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return good


class _LearnerLoop:
    """Calls `learner.step` back to back in a thread, counting updates, until stopped."""

    def __init__(self, learner: Any) -> None:
        self.learner, self.updates, self.last = learner, 0, dict[str, float]()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                out = get(self.learner.step.remote())
                if out:
                    self.updates += 1
                    self.last = out
        except Exception as e:  # reported in the result: capacity without a learner is moot
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self._stop.set()
        get(self.learner.interrupt.remote())
        self._thread.join(timeout=30)


def run(quick: bool, limit: int | None = None, window_s: float | None = None
        ) -> dict[str, object]:
    from algorithms.ppo import PPOConfig
    from buffers.store import BufferConfig
    from fleet.config import AlgorithmConfig
    from fleet.remote.buffer import BufferServer
    from fleet.remote.learner import LearnerActor
    from fleet.remote.weights import WeightHub
    from learner.loop import LearnerConfig
    from rewards.base import RewardConfig

    limit = limit or (256 if quick else 2048)
    window_s = window_s or (1.5 if quick else 10.0)
    warmup_s = 0.5 if quick else 1.0
    cores = os.cpu_count() or 1
    cpu_s = per_step_cpu_s(1000 if quick else 4000)
    predicted = cores / (cpu_s * HZ)
    sizes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-capacity-", ignore_cleanup_errors=True) as t, \
            local_ray(num_cpus=cores):  # Ray shuts down first, then the folder goes
        tmp = Path(t)
        state = make_policy(POLICY).policy_state()
        buffer = BufferServer.remote(str(tmp / "buffer"), BufferConfig())
        hub = WeightHub.remote()
        learner = LearnerActor.options(num_cpus=0).remote(
            POLICY, state, AlgorithmConfig(ppo=PPOConfig()), RewardConfig(),
            LearnerConfig(batch_calls=64, critic_warmup=1, checkpoint_every_s=1e9,
                          max_wait_s=600.0, device="cpu"),
            str(tmp / "checkpoints"), buffer, hub, 0)
        hosts = [RobotHost.remote(f"host{j}", state, buffer, hub, str(tmp / "spill"))
                 for j in range(cores)]
        get([h.pid.remote() for h in hosts])
        learning = _LearnerLoop(learner)
        # one unmeasured window first: a host's first chunks open its connections to the buffer
        # and hub (hundreds of ms once), which would count as missed deadlines of the first size
        get([h.run_window.remote(4, 1.5, 0.5) for h in hosts])

        def measure(n: int) -> bool:  # one window per size
            shares = [n // len(hosts) + (j < n % len(hosts)) for j in range(len(hosts))]
            parts = get([h.run_window.remote(k, window_s, warmup_s)
                         for h, k in zip(hosts, shares, strict=True) if k > 0])
            steps, missed = sum(p["steps"] for p in parts), sum(p["missed"] for p in parts)
            errors = [e for p in parts for e in p["errors"]]
            expected = sum(k * HZ * p["seconds"] for k, p in
                           zip([k for k in shares if k > 0], parts, strict=True))
            line = {"robots": n, "steps": steps, "missed_frac": round(missed / max(1, steps), 4),
                    "steps_per_s": round(steps / max(p["seconds"] for p in parts), 1),
                    "expected_steps_per_s": n * HZ, "steps_frac": round(steps / expected, 4),
                    "chunks": sum(p["chunks"] for p in parts),
                    "learner_updates": learning.updates, "errors": errors[:1]}
            line["pass"] = (not errors and steps > 0 and missed / steps < MAX_MISSED
                            and steps >= MIN_STEPS * expected)
            sizes.append(line)
            return bool(line["pass"])

        capacity = search(measure, 8, limit, 4 if quick else 8)
        learning.stop()
        info = get(buffer.info.remote())
        get(buffer.close.remote())
    return result("fleet_capacity", "robots at 10 Hz with >= 99% of steps and < 1% missed "
                  "deadlines", capacity, "robots", predicted, hz=HZ, min_steps_frac=MIN_STEPS,
                  max_missed_frac=MAX_MISSED, windows_per_size=1, horizon=HORIZON,
                  window_s=window_s, limit=limit,
                  hosts=cores, cpu_us_per_step=round(1e6 * cpu_s, 1),
                  learner_updates=learning.updates, learner_error=learning.error,
                  learner_policy_version=int(learning.last.get("policy_version", 0)),
                  buffer_records=int(info["records"]), sizes=sizes,
                  load_avg_1m_at_end=round(os.getloadavg()[0], 1))  # others' load on the machine
