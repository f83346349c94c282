"""The learner's rate limiter: gradient steps per env step, held by making robots wait.

Example (the buffer holds one; robots ask before each rollout chunk, the learner before each
burst of gradient steps):

    limiter = RateLimiter(StepRatio(samples_per_insert=0.25), max_insert=64)
    if limiter.admit(steps=64): ...          # False: the learner is behind, the robot waits
    granted = limiter.grant(32)              # gradient steps the learner may take now (0..32)

The buffer actor (`fleet.remote.buffer`) holds the limiter of a run whose algorithm declares
one (`buffers.feed.DataNeeds.rate`: TD with `td.rate_limit=true`); its robots wait between
rollout chunks until admitted (`actors.worker.Admission`), and the learner trains continuously,
as many gradient steps as it is granted (`learner.loop.Learner`).

Terms (Reverb's `SampleToInsertRatio`, counted in env steps and gradient steps, not items):

- **inserted**: env steps admitted into the buffer (a robot asks before it sends a chunk);
  **sampled**: gradient steps granted to the learner.
- **ratio** R = `samples_per_insert`: the learner's gradient steps per env step (RLPD's
  `utd_ratio`). The limiter keeps `sampled` within `error_buffer` of R · (`inserted` −
  `min_size`): a learner that is ahead waits for data (`grant` returns 0), and robots wait when
  the learner is behind (`admit` returns False) instead of the learner falling behind.

A limiter that could deadlock is refused when built: an insert of `max_insert` steps (a whole
rollout chunk) must fit between "the learner may not sample" and "robots may not insert", so
`error_buffer` must be at least `R · max_insert + 1` gradient steps (its default).

This is not `buffers.sampling.SampleRate`, which paces the window sampler in records and never
holds an insert back.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class StepRatio:
    """R gradient steps per env step, after `min_size` env steps, within `error_buffer`
    gradient steps either way (None: the smallest that cannot deadlock, R · max_insert + 1)."""

    samples_per_insert: float
    min_size: int = 0
    error_buffer: float | None = None

    def __post_init__(self) -> None:
        if not self.samples_per_insert > 0:
            raise ValueError(f"samples_per_insert={self.samples_per_insert}: must be > 0 "
                             "(gradient steps per env step)")
        if self.min_size < 0 or (self.error_buffer is not None and self.error_buffer < 0):
            raise ValueError("min_size and error_buffer must be >= 0")

    def slack(self, max_insert: int) -> float:
        """The error buffer in gradient steps for inserts of up to `max_insert` env steps;
        ValueError if it is too small to be free of deadlock."""
        least = self.samples_per_insert * max_insert + 1
        if self.error_buffer is None:
            return least
        if self.error_buffer < least:
            raise ValueError(
                f"rate limit error_buffer={self.error_buffer:g} gradient steps cannot hold a "
                f"rollout chunk of {max_insert} env steps at {self.samples_per_insert:g} "
                f"gradient steps per env step (robots and learner would wait on each other): "
                f"use error_buffer >= {least:g}, or fewer steps per chunk")
        return self.error_buffer


class RateLimiter:
    """Counts env steps admitted and gradient steps granted; see the module docstring."""

    def __init__(self, spec: StepRatio, max_insert: int) -> None:
        if max_insert < 1:
            raise ValueError(f"max_insert={max_insert}: must be >= 1")
        self.spec, self.max_insert = spec, max_insert
        self.error_buffer = spec.slack(max_insert)
        self.inserted = 0  # env steps admitted
        self.sampled = 0  # gradient steps granted
        self.refused = 0  # admissions refused (a robot waited and asked again)

    def _diff(self) -> float:
        """How far the learner is behind its share, in gradient steps (< 0: ahead)."""
        r = self.spec.samples_per_insert
        return r * (self.inserted - self.spec.min_size) - self.sampled

    def admit(self, steps: int) -> bool:
        """Count `steps` env steps as inserted if the learner is not too far behind for them;
        False (nothing counted) means wait and ask again."""
        if not 0 <= steps <= self.max_insert:
            raise ValueError(f"an insert of {steps} env steps: this limiter was built for at "
                             f"most {self.max_insert} (max_insert)")
        if self._diff() + self.spec.samples_per_insert * steps > self.error_buffer:
            self.refused += 1
            return False
        self.inserted += steps
        return True

    def grant(self, wanted: int) -> int:
        """Up to `wanted` gradient steps the learner may take now (counted as taken)."""
        if self.inserted < self.spec.min_size:
            return 0
        allowed = int(self._diff() + self.error_buffer)  # keeps diff >= -error_buffer
        n = max(0, min(wanted, allowed))
        self.sampled += n
        return n

    def rate_state(self) -> dict[str, float]:
        """The counts, for logs: inserted, sampled, their ratio, refusals, how far behind."""
        return {"rate_inserted": float(self.inserted), "rate_sampled": float(self.sampled),
                "rate_ratio": self.sampled / max(1, self.inserted - self.spec.min_size),
                "rate_refused": float(self.refused), "rate_behind": self._diff()}


class RateSource(Protocol):
    """The learner's side of a rate limiter (the buffer that holds it, or a `RateLimiter`):

        granted = source.grant(32)     # 0: wait for robots' data
        metrics |= source.rate_state()
    """

    def grant(self, wanted: int) -> int: ...

    def rate_state(self) -> dict[str, float]: ...
