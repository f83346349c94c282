"""Robot-side safety between the network and the motors. On by default; imports only numpy.

Example (what the client does every control period):

    safety = Safety(SafetyConfig(control_hz=50.0), action_dim=4)    # starts e-stopped
    safety.arm()                                 # an operator's act; drops anything queued
    safety.push(chunk, now=time.monotonic())     # [H, A]; returns a reason if refused
    action = safety.next_action(now=time.monotonic())   # None: hold still this period

Rules, each a lesson from robots that moved when they should not have (FACTS.md):

- **E-stop latches** and starts engaged. Nothing runs until `arm()`; arming discards every queued
  action, so a trajectory queued before (or during) the stop never plays afterwards.
- **Watchdog.** Action `i` of a chunk received at `t` behind `q` queued actions must start by
  `t + (q + i + N) / control_hz` (`N = watchdog_periods`). A late action discards the rest of
  the queue: the robot holds still rather than replay a stale plan. With an empty queue the
  robot holds still too.
- **Limits.** Actions are clipped to `[action_low, action_high]` and then moved at most
  `max_delta` from the previous command (the hold action after holding).
- **NaN refused.** A chunk with any NaN or inf, or the wrong shape, is refused whole.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    control_hz: float = 50.0
    action_low: float = -1.0
    action_high: float = 1.0
    max_delta: float = 1.0  # per step; the full range is 2.0 in [-1, 1]; inf turns it off
    watchdog_periods: int = 5  # N: how late an action may start, in control periods
    max_queued_actions: int = 4096

    def __post_init__(self) -> None:
        if not self.control_hz > 0:
            raise ValueError(f"safety.control_hz must be > 0, got {self.control_hz}")
        if not self.action_low < self.action_high:
            raise ValueError("safety.action_low must be below safety.action_high")
        if not self.max_delta > 0:
            raise ValueError("safety.max_delta must be > 0 (use inf to turn the limit off)")
        if self.watchdog_periods < 1 or self.max_queued_actions < 1:
            raise ValueError("safety.watchdog_periods and max_queued_actions must be >= 1")


@dataclasses.dataclass
class SafetyStats:
    executed: int = 0
    watchdog_trips: int = 0  # stale actions that emptied the queue
    refused_chunks: int = 0
    discarded_on_arm: int = 0
    clipped: int = 0  # actions changed by the range or the rate limit


class Safety:
    """The gate every action passes on the robot. Not thread-safe: the control loop owns it."""

    def __init__(self, config: SafetyConfig, action_dim: int,
                 hold_action: np.ndarray | None = None) -> None:
        self.config = config
        self.action_dim = action_dim
        self.hold_action = (np.zeros(action_dim, np.float32) if hold_action is None
                            else np.asarray(hold_action, np.float32).copy())
        self.engaged = True
        self.reason = "starts engaged until armed"
        self.holding = True
        self.stats = SafetyStats()
        self._queue: collections.deque[tuple[np.ndarray, float, tuple[int, int]]] = (
            collections.deque())
        self._last = self.hold_action.copy()
        self.current: tuple[int, int] = (0, 0)  # (tag, index) of the action last returned
        self.tripped: int | None = None  # the tag of the chunk the watchdog last dropped

    @property
    def queued(self) -> int:
        return len(self._queue)

    def engage(self, reason: str) -> None:
        """Latch the e-stop: nothing runs until `arm()`."""
        self.engaged, self.reason = True, reason

    def arm(self) -> int:
        """Release the e-stop. Discards every queued action; returns how many."""
        dropped = len(self._queue)
        self._queue.clear()
        self.stats.discarded_on_arm += dropped
        self.engaged, self.reason = False, ""
        self._last = self.hold_action.copy()
        return dropped

    def clear(self) -> list[int]:
        """Drop the queue (an episode ended, a reset came, the e-stop latched); returns the tags
        of the chunks that had actions in it, oldest first."""
        tags = list(dict.fromkeys(tag for _, _, (tag, _) in self._queue))
        self._queue.clear()
        return tags

    def push(self, chunk: np.ndarray, now: float, tag: int = 0,
             grace_s: float | None = None) -> str | None:
        """Queue a chunk [H, A] received at `now` (seconds, monotonic). Returns why it was refused,
        or None. Chunks are queued while e-stopped, and dropped by `arm()`. `tag` comes back in
        `current`; `grace_s` can only shorten the watchdog's N periods (a message's deadline)."""
        chunk = np.asarray(chunk)
        reason = self._check(chunk)
        if reason is not None:
            self.stats.refused_chunks += 1
            return reason
        period = 1.0 / self.config.control_hz
        grace = self.config.watchdog_periods * period
        grace = grace if grace_s is None else min(grace, grace_s)
        ahead = len(self._queue)  # a chunk queued behind others starts after them, not now
        for i, action in enumerate(chunk.astype(np.float32)):
            self._queue.append((action, now + (ahead + i) * period + grace, (tag, i)))
        return None

    def _check(self, chunk: np.ndarray) -> str | None:
        if chunk.ndim != 2 or chunk.shape[1] != self.action_dim or chunk.shape[0] < 1:
            return f"chunk must be [H, {self.action_dim}], got {chunk.shape}"
        if chunk.dtype.kind != "f" or not np.isfinite(chunk).all():
            return "chunk holds NaN or inf (or is not floating point)"
        if len(self._queue) + len(chunk) > self.config.max_queued_actions:
            return f"queue full ({len(self._queue)} actions)"
        return None

    def next_action(self, now: float) -> np.ndarray | None:
        """The action to command this period, or None to hold still."""
        action = self._pop(now)
        self.holding = action is None
        if action is None:
            self._last = self.hold_action.copy()
            return None
        cfg = self.config
        clipped = np.clip(action, cfg.action_low, cfg.action_high)
        limited = self._last + np.clip(clipped - self._last, -cfg.max_delta, cfg.max_delta)
        limited = limited.astype(np.float32)
        self.stats.clipped += int(not np.array_equal(limited, action))
        self.stats.executed += 1
        self._last = limited
        return limited

    def _pop(self, now: float) -> np.ndarray | None:
        if self.engaged or not self._queue:
            return None
        action, start_by, self.current = self._queue.popleft()
        if now > start_by:
            self.stats.watchdog_trips += 1
            self.tripped = self.current[0]
            self._queue.clear()
            return None
        return action
