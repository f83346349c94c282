"""The robot loop: observe, call the policy, run the chunk, stream rollout chunks, adopt weights.

Example (one process, no Ray; `fleet/` runs the same class inside a Ray actor):

    worker = RobotWorker(robot, policy, outbox, weights, WorkerConfig(seed=3))
    worker.run(stop=threading.Event())      # until stop is set
    successes = worker.evaluate(seeds=range(100_000, 100_020))

Weights are adopted only between rollout chunks, so every chunk has one `policy_version`; the
weight check is non-blocking, so a slow learner never stalls the control loop. A robot whose
`spec.execution` is "chunk" (a `ChunkRobot`) is sent each policy call's whole chunk with that
`policy_version` and runs it open loop; the loop then reads its steps one by one as for any robot.

A robot's fault never ends the loop: when a robot raises from `reset`, `send_action` or
`get_observation` (it died, was lost, e-stopped, refused) or sends bad data (a NaN, an observation
of another shape), the episode is closed as truncated with exactly the steps that ran, the robot
is named in the log and counted in `stats.faults`, and after a back-off (and `rejoin`, which a
bridged robot's actor uses to wait for its robot) the next episode starts.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from actors.chunker import ChunkBuilder
from actors.control import RobotControl
from actors.execution import ChunkExecution
from actors.operator import SimulatedOperator
from actors.robots.base import ChunkRobot, Feedback, Observation, Robot, RobotFault
from buffers.codec import encode_chunk
from buffers.records import EpisodeEnd, RolloutChunk

log = logging.getLogger("fleet.worker")
MAX_BACKOFF_S = 5.0  # a robot that faults again and again is retried this often at most


class Policy(Protocol):
    """What a robot needs of a policy: one call gives an action chunk [H, A]."""

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[Any, ...]:
        """obs [D] -> (chunk [H, A], behaviour log-prob), or (chunk, log-prob, aux) for a policy
        with per-call data (`algorithms.factory.Policy`). No value: critics are the learner's.
        A policy with `takes_corrections` also gets `set_instruction` (console corrections)."""
        ...

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None: ...


class WeightSource(Protocol):
    """Where robots get weights. Returns None when nothing newer than `have_version` is ready.

        got = weights.poll(policy_version)
        if got: policy_version, state = got; policy.load_policy_state(state)
    """

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None: ...


class Outbox(Protocol):
    """Where encoded rollout chunks go. `put` must not block on the network."""

    def put(self, record: bytes) -> None: ...


class Admission(Protocol):
    """The buffer's rate limiter, robot side (`buffers.rate`): before each rollout chunk goes
    out, the robot waits (holding between chunks) until the learner is not too far behind.

        admission.wait(chunk.num_steps, stop)    # returns at once when `stop` is set
    """

    def wait(self, steps: int, stop: threading.Event) -> None: ...


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    horizon: int = 4  # H, must match the policy
    calls_per_chunk: int = 16  # K: policy calls per rollout chunk
    seed: int = 0  # training episodes start from seeds seed*1e6 + n
    group_size: int = 1  # G > 1: each start state is run G times in a row, as one group (GRPO)
    # held-out evaluation (and deployment) only; training runs whole chunks open loop
    execution: str = "open_loop"  # or receding, ensemble (see actors.execution)
    replan_every: int = 0  # receding: a policy call every this many steps (< horizon)
    ensemble_decay: float = 0.01  # ensemble: chunk i of those covering a step weighs exp(-d*i)

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.calls_per_chunk < 1 or self.group_size < 1:
            raise ValueError("horizon, calls_per_chunk and group_size must be >= 1")
        ChunkExecution(self.execution, self.horizon, self.replan_every, self.ensemble_decay)


@dataclasses.dataclass
class WorkerStats:
    env_steps: int = 0
    episodes: int = 0
    policy_version: int = 0
    chunks_sent: int = 0
    intervened_steps: int = 0  # steps an operator chose
    faults: int = 0  # episodes a robot fault cut short (closed as truncated)
    last_fault: str = ""
    rate_wait_s: float = 0.0  # time held between chunks by the buffer's rate limiter
    recent: collections.deque[bool] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=20))
    by_task: dict[str, collections.deque[bool]] = dataclasses.field(default_factory=dict)
    returns: collections.deque[float] = dataclasses.field(  # recent episodes' env reward sums
        default_factory=lambda: collections.deque(maxlen=20))
    lengths: collections.deque[int] = dataclasses.field(  # and their env steps
        default_factory=lambda: collections.deque(maxlen=20))

    def episode_done(self, task: str, success: bool, episode_return: float = math.nan,
                     length: int = 0) -> None:
        self.episodes += 1
        self.recent.append(success)
        self.returns.append(episode_return)
        self.lengths.append(length)
        self.by_task.setdefault(task, collections.deque(maxlen=20)).append(success)

    def as_dict(self) -> dict[str, Any]:
        rate = float(np.mean(self.recent)) if self.recent else float("nan")
        return {"env_steps": self.env_steps, "episodes": self.episodes,
                "policy_version": self.policy_version, "chunks_sent": self.chunks_sent,
                "intervened_steps": self.intervened_steps, "success_rate": rate,
                "faults": self.faults, "last_fault": self.last_fault,
                "episode_return": float(np.mean(self.returns)) if self.returns else math.nan,
                "episode_length": float(np.mean(self.lengths)) if self.lengths else math.nan,
                "rate_wait_s": self.rate_wait_s,
                "success_by_task": {t: float(np.mean(d)) for t, d in self.by_task.items()}}


@dataclasses.dataclass
class EvalEpisode:
    """One held-out episode: whether it succeeded, its return (env rewards summed), its length
    in env steps and, when recorded, each camera's frames [T+1, H, W, C] uint8 (the first
    observation, then one per step)."""

    success: bool
    episode_return: float
    length: int
    frames: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def is_camera(value: np.ndarray) -> bool:
    """An observation that is an image: uint8 [H, W, C] with C of 1, 3 or 4."""
    return value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] in (1, 3, 4)


class RobotWorker:
    """Runs one robot with a local copy of the policy (`inference=local`). `rejoin(stop)` is
    called after a robot's fault and its back-off, before the next episode (a bridged robot's
    actor waits there for its robot to register again and sets `worker.robot`). `admission`:
    the buffer's rate limiter, which each rollout chunk waits for before it goes out.
    `choose_task`: called before each training episode (each group) to pin the robot's next
    task (`actors.tasks.TaskChooser`: by the learner's task table)."""

    def __init__(self, robot: Robot, policy: Policy, outbox: Outbox, weights: WeightSource,
                 config: WorkerConfig, operator: SimulatedOperator | None = None,
                 control: RobotControl | None = None,
                 rejoin: Callable[[threading.Event], None] | None = None,
                 admission: Admission | None = None,
                 choose_task: Callable[[], None] | None = None) -> None:
        self.robot = robot
        self.admission = admission
        self.choose_task = choose_task
        self.operator = operator
        self.control = control  # a person at the console: pause, e-stop, take over, label
        self._stop = threading.Event()  # run()'s; lets a held robot give up its episode
        self.policy = policy
        self.outbox = outbox
        self.weights = weights
        self.config = config
        self.stats = WorkerStats()
        self.rejoin = rejoin
        self._builder = ChunkBuilder(robot.spec, config.horizon, config.calls_per_chunk)
        # A full chunk is held back until the next step runs: should the robot fail at that
        # step, the held chunk is the one that closes the episode (as truncated).
        self._held: RolloutChunk | None = None
        self._episode_steps = 0
        self._episode_return = 0.0  # env rewards of the episode so far
        self._first_obs: Observation = {}  # the episode's first: later ones must match it
        self._failing = 0  # faults in a row without a step between them
        self.fault: RobotFault | None = None  # the newest
        self._instruction = str(getattr(policy, "instruction", ""))  # its own, between corrections

    def _adopt_weights(self) -> None:
        got = self.weights.poll(self.stats.policy_version)
        if got is not None:
            version, state = got
            self.policy.load_policy_state(state)
            self.stats.policy_version = version

    def _flush(self, end: EpisodeEnd | None = None) -> RolloutChunk:
        chunk = self._builder.flush(self.stats.policy_version, end)
        if self.admission is not None:  # held here, between chunks, while the learner is behind
            t0 = time.monotonic()
            self.admission.wait(chunk.num_steps, self._stop)
            self.stats.rate_wait_s += time.monotonic() - t0
        if self.control is not None and self.control.correction:  # stored with the episode
            chunk = dataclasses.replace(chunk, instruction=self.control.correction)
        return chunk

    def _follow_correction(self) -> None:
        """A policy that `takes_corrections` (a language-conditioned one that records the
        instruction of each call) acts on the console's newest correction of this episode from
        the next call on, and on its own instruction when there is none (a new episode)."""
        if not getattr(self.policy, "takes_corrections", False):
            return
        wanted = self.control.correction if self.control is not None else ""
        wanted = wanted or self._instruction
        if wanted != getattr(self.policy, "instruction", None):
            self.policy.set_instruction(wanted)  # type: ignore[attr-defined]

    def _put(self, chunk: RolloutChunk) -> None:
        self.outbox.put(encode_chunk(chunk))
        self.stats.chunks_sent += 1

    def _release(self) -> None:
        """The step after a chunk boundary ran: the held chunk goes out."""
        if self._held is not None:
            held, self._held = self._held, None
            self._put(held)

    def _send(self, end: EpisodeEnd | None = None) -> None:
        """The episode ended: what is held, then the rest, then the newest weights."""
        self._release()
        self._put(self._flush(end))
        self._adopt_weights()

    def run_episode(self, seed: int, group: str = "") -> bool:
        """One training episode, streamed chunk by chunk. Returns whether it succeeded. A robot's
        fault closes the episode as truncated and raises `RobotFault` (which `run` absorbs)."""
        try:
            return self._episode(seed, group)
        except RobotFault as e:  # every call into the robot raises only this (`_step`)
            self._fault(e)
            raise

    def _fault(self, e: RobotFault) -> None:
        steps = self._episode_steps
        self.abort_episode()
        self.fault = e
        self.stats.faults += 1
        self.stats.last_fault = str(e)
        log.warning("robot %s: %s; its episode ends truncated after %d steps",
                    self.robot.spec.robot_id, e, steps)

    def _episode(self, seed: int, group: str) -> bool:
        if self.control is not None and not self.control.wait_free(self._stop):
            return False  # stopped while held: a reset would move a held robot
        self._episode_steps, self._episode_return = 0, 0.0
        self._held = None
        obs = self._robot_call("reset", self.robot.reset, seed)
        self._first_obs = obs
        self._check_obs(obs)
        self._builder.spec = self.robot.spec  # a multi-task robot changes task between episodes
        self._builder.begin_episode(uuid.uuid4().hex[:16], obs, group)
        if self.operator is not None:
            self.operator.begin_episode()
        if self.control is not None:
            self.control.begin_episode()
        chunk = np.zeros((0, 0), np.float32)
        i = -1
        sent: np.ndarray | None = None  # this call's chunk, when it went to the robot whole
        while True:
            if self.control is not None:  # held here while paused or e-stopped
                verdict = self.control.before_step(self._stop)
                if verdict != "step":
                    return self._end_by_operator(verdict)
            if self._builder.call_done:
                if self._builder.full:
                    self._held = self._flush()  # goes out once the next step has run
                    self._adopt_weights()
                self._follow_correction()
                answer = self.policy.act(self._policy_obs(obs))
                chunk, logp = answer[0], answer[1]
                self._builder.add_call(chunk, logp, answer[2] if len(answer) > 2 else None)
                # clipped once per call, not per step; a robot running chunks gets it whole
                chunk = np.clip(chunk, -1.0, 1.0).astype(np.float32, copy=False)
                sent = self._start_chunk(chunk)
                i = -1
            i += 1  # the step within the call's chunk
            if sent is not None:  # the robot runs the chunk it was sent; a take-over waits for
                action, taken = sent[i], False  # the next policy call
            else:
                action = chunk[i]
                taken = self.operator is not None and self.operator.active
                if self.control is not None and self.control.taken_over:
                    action, taken = self.control.teleop_action(), True
                elif taken and self.operator is not None:
                    action = self.operator.action()
            fb, obs = self._step(action)
            self._builder.add_step(action, fb, obs, intervened=taken)
            self._episode_steps += 1
            self._episode_return += fb.reward
            self._release()
            if self.operator is not None:
                self.operator.observe(fb.reward)
            self.stats.env_steps += 1
            self.stats.intervened_steps += taken
            if self.control is not None:
                self.control.stepped(obs)
            if fb.done:
                self._send(EpisodeEnd(fb.outcome))
                self.stats.episode_done(self.robot.spec.task, fb.success, self._episode_return,
                                        self._episode_steps)
                return fb.success

    def _start_chunk(self, chunk: np.ndarray) -> np.ndarray | None:
        """Send the call's whole chunk [H, A] (already clipped to [-1, 1], float32) with
        its `policy_version` to a robot that runs chunks open loop, unless a person or the
        simulated operator is choosing actions now. What was sent, or None."""
        if self.robot.spec.execution != "chunk":
            return None
        if (self.control is not None and self.control.taken_over) or (
                self.operator is not None and self.operator.active):
            return None  # step by step while someone else acts
        if not isinstance(self.robot, ChunkRobot):
            raise TypeError(f"robot {self.robot.spec.robot_id} declares chunk execution but "
                            f"{type(self.robot).__name__} has no start_chunk")
        try:
            self.robot.start_chunk(chunk, self.stats.policy_version)
        except RobotFault:
            raise
        except Exception as e:
            raise RobotFault(f"start_chunk failed at step {self._episode_steps}: "
                             f"{type(e).__name__}: {e}") from e
        return chunk

    def _end_by_operator(self, verdict: str) -> bool:
        """A label ends the episode with the operator's outcome; a reset, or a stop while held,
        cuts it off (truncated)."""
        if verdict in ("success", "failure") and self._builder.num_steps:
            self._send(EpisodeEnd("success" if verdict == "success" else "failure", "human"))
            self.stats.episode_done(self.robot.spec.task, verdict == "success",
                                    self._episode_return, self._episode_steps)
            return verdict == "success"
        self.abort_episode()
        return False

    def abort_episode(self) -> None:
        """Close the episode in progress as truncated with exactly the steps that ran (its robot
        failed, or it was cut off). Nothing to close after zero steps; calling it twice closes
        nothing more."""
        held, self._held = self._held, None
        truncated = EpisodeEnd("truncated")
        if self._builder.num_steps:
            if held is not None:
                self._put(held)
            self._put(self._flush(truncated))
        elif held is not None:  # the robot failed at the first step after a chunk boundary
            self._put(dataclasses.replace(held, episode_end=truncated))
        else:
            return
        self._adopt_weights()

    def _step(self, action: np.ndarray) -> tuple[Feedback, Observation]:
        try:
            fb = self.robot.send_action(action)
            obs = self.robot.get_observation()
        except RobotFault:
            raise
        except Exception as e:
            raise RobotFault(f"send_action failed at step {self._episode_steps}: "
                             f"{type(e).__name__}: {e}") from e
        if not math.isfinite(fb.reward):
            raise RobotFault(f"bad data at step {self._episode_steps}: reward {fb.reward}")
        self._check_obs(obs)
        return fb, obs

    def _robot_call(self, what: str, call: Callable[..., Observation], *args: object
                    ) -> Observation:
        try:
            return call(*args)
        except RobotFault:
            raise
        except Exception as e:
            raise RobotFault(f"{what} failed: {type(e).__name__}: {e}") from e

    def _check_obs(self, obs: Observation) -> None:
        """Same names, shapes and dtypes as the episode's first observation; finite floats."""
        first = self._first_obs
        if obs.keys() != first.keys():
            raise RobotFault(f"bad data at step {self._episode_steps}: observation names "
                             f"{sorted(obs)}, the episode began with {sorted(first)}")
        for name, a in obs.items():
            ref = first[name]
            if a.shape != ref.shape or a.dtype != ref.dtype:
                raise RobotFault(f"bad data at step {self._episode_steps}: obs.{name} is "
                                 f"{a.dtype} {a.shape}, the episode began with {ref.dtype} "
                                 f"{ref.shape}")
            # A finite sum proves every element finite (the codec's trick, buffers/codec.py).
            if a.dtype.kind == "f" and not math.isfinite(a.sum()) and not np.isfinite(a).all():
                raise RobotFault(f"bad data at step {self._episode_steps}: obs.{name} holds "
                                 "NaN or inf")

    def run(self, stop: threading.Event) -> None:
        """Train-time loop: episodes back to back until `stop` is set (checked between them).
        A robot's fault ends only its episode; the robot is retried after a back-off that
        doubles while it keeps failing before its first step (up to `MAX_BACKOFF_S`)."""
        n, size = 0, self.config.group_size
        self._stop = stop
        while not stop.is_set():
            seed = self.config.seed * 1_000_000 + n // size
            group = f"{self.robot.spec.robot_id}/{seed}" if size > 1 else ""
            if self.choose_task is not None and n % size == 0:  # a group keeps its task
                self.choose_task()
            n += 1
            try:
                self.run_episode(seed, group)
            except RobotFault:
                self._failing = 0 if self._episode_steps else self._failing + 1
                stop.wait(min(MAX_BACKOFF_S, 0.05 * 2 ** min(self._failing, 10)))
                if self.rejoin is not None:
                    self.rejoin(stop)

    def evaluate(self, seeds: Iterable[int], deterministic: bool = True) -> list[bool]:
        """Held-out episodes with the current weights, chunks run as `config.execution` says;
        nothing is streamed."""
        return [e.success for e in self.evaluate_episodes(seeds, deterministic)]

    def evaluate_episodes(self, seeds: Iterable[int], deterministic: bool = True,
                          record: int = 0) -> list[EvalEpisode]:
        """`evaluate`, with each episode's return and length, and the camera frames of the
        first `record` episodes (for a robot with cameras: its uint8 [H, W, C] observations)."""
        c = self.config
        run = ChunkExecution(c.execution, c.horizon, c.replan_every, c.ensemble_decay)
        results = []
        for n, seed in enumerate(seeds):
            obs = self.robot.reset(seed)
            run.reset()
            if getattr(self.policy, "takes_corrections", False):  # no operator in evaluation
                self.policy.set_instruction(self._instruction)  # type: ignore[attr-defined]
            frames: dict[str, list[np.ndarray]] = {k: [v.copy()] for k, v in obs.items()
                                                   if n < record and is_camera(v)}
            done = success = False
            ret, length = 0.0, 0
            while not done:
                action = run.next(functools.partial(self._plan, obs, deterministic))
                fb = self.robot.send_action(np.clip(action, -1.0, 1.0))
                obs = self.robot.get_observation()
                success, done = fb.success, fb.done
                ret, length = ret + fb.reward, length + 1
                for k, seen in frames.items():
                    seen.append(obs[k].copy())  # a robot may reuse its image buffer
            results.append(EvalEpisode(success, ret, length,
                                       {k: np.stack(v) for k, v in frames.items()}))
        return results

    def _plan(self, obs: Observation, deterministic: bool) -> np.ndarray:
        return self.policy.act(self._policy_obs(obs), deterministic=deterministic)[0]

    def _policy_obs(self, obs: Observation) -> Any:
        """The whole observation for a policy that sees images (`takes_obs_dict`), else the
        state."""
        return obs if getattr(self.policy, "takes_obs_dict", False) else obs["state"]

