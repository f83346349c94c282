"""What an operator can do to one robot while it trains: the control state its worker obeys.

Example (the console's side, from any thread, and the worker's side, at every step):

    control = RobotControl(action_dim=4)
    control.command({"cmd": "estop"})          # latched: the robot holds until armed
    control.command({"cmd": "arm"})
    control.command({"cmd": "takeover", "on": True})
    control.command({"cmd": "teleop", "action": [0.5, 0, 0, 0]})

    verdict = control.before_step(stop)        # worker: waits (in slices) while held
    action = control.teleop_action() if control.taken_over else policy_action

Terms: a robot is **held** while it is paused or e-stopped: its worker sends no actions and takes
no steps (a simulated arm stays where it is; a real robot's own controller holds position). The
e-stop is **latched**: only `arm` releases it, never `resume`. During a **take-over** every step
runs the operator's newest teleop action if it is fresher than `teleop_timeout_s`, else zero (hold
still), and the step is flagged `intervened`. A **label** ends the current episode with that
outcome (source "human"); a **correction** is a sentence stored with the rest of the episode.
Nothing here knows about Ray or HTTP: `fleet.remote` and `fleet.console` carry commands in.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

COMMANDS = ("pause", "resume", "estop", "arm", "takeover", "teleop", "label", "say", "reset")
MAX_CORRECTION = 500  # characters of one language correction

Verdict = Literal["step", "stop", "success", "failure", "reset"]


class CommandError(ValueError):
    """A command that is unknown or malformed; nothing was changed."""


@dataclasses.dataclass
class _Pending:
    label: str | None = None  # "success" | "failure": end the episode with this outcome
    reset: bool = False


class RobotControl:
    """Thread-safe: the console calls `command`, the robot's loop calls `before_step`."""

    def __init__(self, action_dim: int, control_hz: float = 0.0, teleop_timeout_s: float = 0.25,
                 wait_slice_s: float = 0.005) -> None:
        self.action_dim = action_dim
        self.control_hz = control_hz  # the rate the robot steps at; 0: as fast as it can (sim)
        self.teleop_timeout_s = teleop_timeout_s
        self.wait_slice_s = wait_slice_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.paused = False
        self.estopped = False
        self.taken_over = False
        self.holding = False  # the worker is waiting, sending nothing (acknowledges a hold)
        self.correction = ""  # the newest correction of the current episode
        self._teleop = np.zeros(action_dim, np.float32)
        self._teleop_at = 0.0
        self._pending = _Pending()
        self.counts = {"labels": 0, "corrections": 0, "resets": 0, "teleop": 0, "estops": 0}
        self._step_times: collections.deque[float] = collections.deque()
        self.episode_step = 0  # steps taken in the current episode
        self._frame: np.ndarray | None = None  # the newest camera image, for robots with one

    # -- the operator's side -------------------------------------------------------------------

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Apply one command (`{"cmd": NAME, ...}`); returns the state after it. Raises
        `CommandError` for anything unknown or malformed, changing nothing."""
        name, args = _validate(cmd, self.action_dim)
        with self._changed:
            if name == "pause":
                self.paused = True
            elif name == "resume":
                self.paused = False
            elif name == "estop":
                self.estopped = True
                self.counts["estops"] += 1
            elif name == "arm":
                self.estopped = False
            elif name == "takeover":
                self.taken_over = bool(args["on"])
                self._teleop_at = 0.0  # a new take-over starts still, not with an old action
            elif name == "teleop":
                if not self.taken_over:
                    raise CommandError("teleop needs a take-over first: {'cmd': 'takeover', "
                                       "'on': true}")
                self._teleop = np.asarray(args["action"], np.float32)
                self._teleop_at = time.monotonic()
                self.counts["teleop"] += 1
            elif name == "label":
                self._pending.label = args["outcome"]
                self.counts["labels"] += 1
            elif name == "say":
                self.correction = args["text"]
                self.counts["corrections"] += 1
            elif name == "reset":
                self._pending.reset = True
                self.counts["resets"] += 1
            self._changed.notify_all()
            return self._state()

    def wait_holding(self, timeout_s: float) -> bool:
        """Block until the worker acknowledges a hold (or `timeout_s` passes)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self.holding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def state(self) -> dict[str, Any]:
        with self._lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        status = ("estopped" if self.estopped else "paused" if self.paused
                  else "teleop" if self.taken_over else "running")
        times = self._step_times
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and \
            times[-1] > times[0] else 0.0
        age = time.monotonic() - times[-1] if times else float("inf")
        rate = rate if age < 2.0 and not self.holding else 0.0  # held: zero, not the last rate
        return {"status": status, "holding": self.holding, "taken_over": self.taken_over,
                "correction": self.correction, "episode_step": self.episode_step,
                "action_dim": self.action_dim, "control_hz": self.control_hz,
                "camera": self._frame is not None,
                "steps_per_s": rate,
                "last_step_age_s": age, **self.counts}

    # -- the robot's side ----------------------------------------------------------------------

    def before_step(self, stop: threading.Event) -> Verdict:
        """Called by the worker before each step: says what to do, waiting (in slices, so
        `stop` is honoured) while held. A label or reset ends the episode even while held; `stop`
        set while held ends it too ("stop")."""
        if not (self.paused or self.estopped or self.holding or self._pending.reset
                or self._pending.label is not None):
            return "step"  # the common case, without the lock: a command now is seen next step
        with self._changed:
            while True:
                if self._pending.label is not None:
                    label, self._pending.label = self._pending.label, None
                    return "success" if label == "success" else "failure"
                if self._pending.reset:
                    self._pending.reset = False
                    return "reset"
                held = self.paused or self.estopped
                if not self._hold_slice(stop):
                    return "stop" if held else "step"

    def wait_free(self, stop: threading.Event) -> bool:
        """Called before an episode starts (a reset moves the robot): waits while held; False
        if `stop` was set meanwhile."""
        with self._changed:
            while self._hold_slice(stop):
                pass
            return not (self.paused or self.estopped)

    def _hold_slice(self, stop: threading.Event) -> bool:
        """Hold for one slice if held and not stopping; whether it did (lock held)."""
        if not (self.paused or self.estopped) or stop.is_set():
            self._set_holding(False)
            return False
        self._set_holding(True)
        self._changed.wait(self.wait_slice_s)
        return True

    def _set_holding(self, holding: bool) -> None:
        if holding != self.holding:
            self.holding = holding
            self._changed.notify_all()

    def teleop_action(self) -> np.ndarray:
        """The operator's newest action if fresh, else zero (hold still)."""
        with self._lock:
            fresh = time.monotonic() - self._teleop_at <= self.teleop_timeout_s
            return self._teleop.copy() if fresh else np.zeros(self.action_dim, np.float32)

    def stepped(self, obs: Mapping[str, np.ndarray] | None = None) -> None:
        """The worker took a step and saw `obs` (for the control-rate health and the camera
        frame shown in the console; the image is kept by reference, not copied)."""
        now = time.monotonic()
        image = next((v for v in (obs or {}).values()
                      if v.dtype == np.uint8 and v.ndim in (2, 3)), None)
        with self._lock:
            if image is not None:
                self._frame = image
            self._step_times.append(now)
            self.episode_step += 1
            while len(self._step_times) > 2 and now - self._step_times[0] > 2.0:
                self._step_times.popleft()  # O(1): this runs on every control step

    def frame(self) -> np.ndarray | None:
        """The newest camera image [H, W, C] or [H, W] uint8, or None for a robot without one."""
        with self._lock:
            return self._frame

    def begin_episode(self) -> None:
        """A new episode: corrections and labels belong to the one that ended."""
        with self._lock:
            self.correction = ""
            self._pending.label = None
            self.episode_step = 0


def _validate(cmd: Any, action_dim: int) -> tuple[str, dict[str, Any]]:
    """(name, arguments) of a well-formed command, or `CommandError` saying what is wrong."""
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        raise CommandError('a command is a JSON object with a "cmd" string')
    name = cmd["cmd"]
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    args = {k: v for k, v in cmd.items() if k not in ("cmd", "operator")}
    allowed = {"takeover": {"on"}, "teleop": {"action"}, "label": {"outcome"},
               "say": {"text"}}.get(name, set())
    if set(args) != allowed:
        want = ", ".join(sorted(allowed)) or "no arguments"
        raise CommandError(f"{name} takes {want}; got {', '.join(sorted(args)) or 'none'}")
    if name == "takeover" and not isinstance(args["on"], bool):
        raise CommandError("takeover: 'on' must be true or false")
    if name == "teleop":
        a = args["action"]
        if (not isinstance(a, list) or len(a) != action_dim
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in a)
                or not all(np.isfinite(a))):
            raise CommandError(f"teleop: 'action' must be a list of {action_dim} finite numbers")
        args["action"] = [float(np.clip(x, -1.0, 1.0)) for x in a]
    if name == "label" and args["outcome"] not in ("success", "failure"):
        raise CommandError("label: 'outcome' must be 'success' or 'failure'")
    if name == "say":
        text = args["text"]
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_CORRECTION:
            raise CommandError(f"say: 'text' must be a non-empty string of at most "
                               f"{MAX_CORRECTION} characters")
        args["text"] = text.strip()
    return name, args
