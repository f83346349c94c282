"""Sampling declared as data: which records a batch is drawn from, how, and how often.

Example:

    spec = mixture([(on_policy(max_staleness=2, max_uses=4), 0.5), (demonstrations(), 0.5)],
                   batch_size=256, horizon=8, rate=SampleRate(min_size=1000, samples_per_insert=4))
    sampler = Sampler(buffer, spec)                       # buffers.sampler
    batch = sampler.sample(policy_version=learner_version)  # None: not allowed yet, try later

Terms:

- **sample**: a window of `horizon` consecutive steps of one record (rollout chunk), with the
  `horizon + 1` observations around them. A batch holds `batch_size` samples.
- **staleness** of a record: `policy_version - record.policy_version`, the learner's version
  minus the one that acted. `max_staleness` keeps only records at most that many versions old.
- **uses**: how many times a record has been drawn; `max_uses` caps it (on-policy data is used a
  bounded number of times, then left for replay).
- **samples per insert**: records drawn for each record stored, the rate `SampleRate` holds
  sampling to (Reverb's `SampleToInsertRatio`); inserts are never held back, so a robot never
  waits for the learner.

A spec that cannot work (groups that don't divide the batch, a rate that asks for more uses
than `max_uses` allows, a mixture weight too small to give one sample) raises `ValueError` here,
saying what to change, instead of starving a learner later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, TypedDict, Unpack


def oldest_usable(policy_version: int, max_staleness: int | None) -> int:
    """The oldest `policy_version` a record may have to be trained on by a learner at
    `policy_version`: the one staleness rule, used by the learner's chunk feed
    (`buffers.feed`) and by `buffers.sampler` alike. `max_staleness=None` keeps every record.

        oldest_usable(7, 2) == 5       # records of versions 5, 6, 7 are usable
        oldest_usable(1, 2) == 0       # never below the first version
        oldest_usable(7, None) == 0    # replay: any age
    """
    if max_staleness is None:
        return 0
    return max(policy_version - max_staleness, 0)


Kind = Literal["uniform", "prioritized", "task_balanced", "groups", "pairs", "demonstrations",
               "mixture"]


@dataclasses.dataclass(frozen=True)
class SampleRate:
    """Sampling waits until the buffer holds `min_size` records, then may draw at most
    `samples_per_insert` records per record stored, plus `error_buffer` records of slack.
    `samples_per_insert=None` draws as fast as asked. It never holds an insert back, unlike
    `buffers.rate.RateLimiter`, which makes robots wait for the learner."""

    min_size: int = 1
    samples_per_insert: float | None = None
    error_buffer: float = 0.0

    def __post_init__(self) -> None:
        if self.min_size < 1:
            raise ValueError(f"min_size={self.min_size}: must be at least 1")
        if self.samples_per_insert is not None and self.samples_per_insert <= 0:
            raise ValueError("samples_per_insert must be > 0, or None for no limit")
        if self.error_buffer < 0:
            raise ValueError("error_buffer must be >= 0")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """One sampling rule; build it with the presets below rather than by hand."""

    kind: Kind = "uniform"
    batch_size: int = 256  # B samples per batch
    horizon: int = 8  # H steps per sample
    max_staleness: int | None = None  # in policy versions; None: any age
    max_uses: int | None = None  # draws per record; None: unlimited
    alpha: float = 0.6  # prioritized: P(i) ∝ priority_i ** alpha
    beta: float = 0.4  # prioritized: importance weights (N P(i)) ** -beta
    group_size: int = 0  # groups: G episodes of one task and start state
    reward: tuple[str, str] | None = None  # (reward name, version) side column, else env reward
    rate: SampleRate = SampleRate()
    parts: tuple[tuple[Sampling, float], ...] = ()  # mixture: (spec, weight)

    def __post_init__(self) -> None:
        _check_sizes(self)
        _check_kind(self)
        _check_rate(self)
        if self.kind == "mixture":
            _check_mixture(self)
        elif self.parts:
            raise ValueError(f"parts are only for kind='mixture', not {self.kind!r}")


def _check_sizes(s: Sampling) -> None:
    if s.batch_size < 1 or s.horizon < 1:
        raise ValueError(f"batch_size={s.batch_size}, horizon={s.horizon}: both must be >= 1")
    if s.max_staleness is not None and s.max_staleness < 0:
        raise ValueError(f"max_staleness={s.max_staleness}: must be >= 0 (0 = current only)")
    if s.max_uses is not None and s.max_uses < 1:
        raise ValueError(f"max_uses={s.max_uses}: must be >= 1, or None for unlimited")


def _check_kind(s: Sampling) -> None:
    if s.kind == "groups":
        if s.group_size < 2:
            raise ValueError(f"groups(G={s.group_size}): G must be >= 2 to compare episodes")
        if s.batch_size % s.group_size:
            fit = s.batch_size // s.group_size * s.group_size or s.group_size
            raise ValueError(f"batch_size={s.batch_size} is not a multiple of G="
                             f"{s.group_size}: use batch_size={fit}")
    elif s.group_size:
        raise ValueError(f"group_size is only for kind='groups', not {s.kind!r}")
    if s.kind == "pairs" and s.batch_size % 2:
        raise ValueError(f"pairs need an even batch_size, got {s.batch_size}")
    if s.kind == "prioritized" and not (s.alpha >= 0 and 0 <= s.beta <= 1):
        raise ValueError(f"prioritized needs alpha >= 0 and 0 <= beta <= 1, got {s.alpha}, "
                         f"{s.beta}")


def _check_rate(s: Sampling) -> None:
    spi = s.rate.samples_per_insert
    if spi is not None and s.max_uses is not None and spi > s.max_uses:
        raise ValueError(f"samples_per_insert={spi} > max_uses={s.max_uses}: each record may be "
                         "drawn only max_uses times, so the sampler would run dry; lower "
                         "samples_per_insert or raise max_uses")


def _check_mixture(s: Sampling) -> None:
    if not s.parts:
        raise ValueError("a mixture needs at least one (spec, weight) part")
    for part, weight in s.parts:
        if part.kind == "mixture":
            raise ValueError("a mixture's parts cannot be mixtures: list their parts instead")
        if not weight > 0:
            raise ValueError(f"mixture weight {weight} for {part.kind}: must be > 0")
        if part.horizon != s.horizon:
            raise ValueError(f"every part needs the mixture's horizon {s.horizon}, "
                             f"{part.kind} has {part.horizon}")
        if part.rate != SampleRate():
            raise ValueError("rate limits go on the mixture, not on its parts")
    for (part, _), n in zip(s.parts, split(s), strict=True):
        if n < 1 or (part.kind == "groups" and n % part.group_size) or (
                part.kind == "pairs" and n % 2):
            raise ValueError(f"batch_size={s.batch_size} gives the {part.kind} part {n} "
                             "samples, which it cannot use: change the weights or batch_size")


def split(s: Sampling) -> list[int]:
    """Samples per mixture part: proportional to weight, rounded to the part's unit (G for
    groups, 2 for pairs), the remainder to the first plain part."""
    total = sum(w for _, w in s.parts)
    units = [p.group_size if p.kind == "groups" else 2 if p.kind == "pairs" else 1
             for p, _ in s.parts]
    counts = [round(s.batch_size * w / total / u) * u for (_, w), u in zip(s.parts, units,
                                                                            strict=True)]
    plain = next((i for i, u in enumerate(units) if u == 1), 0)
    counts[plain] += s.batch_size - sum(counts)
    return counts


class Common(TypedDict, total=False):
    """What every preset also takes: batch_size, horizon, rate, reward (see `Sampling`)."""

    batch_size: int
    horizon: int
    rate: SampleRate
    reward: tuple[str, str] | None


def on_policy(max_staleness: int = 1, max_uses: int = 4, **kw: Unpack[Common]) -> Sampling:
    """The newest data: records at most `max_staleness` versions old, each drawn at most
    `max_uses` times (PPO's epochs over a fresh batch, asynchronously)."""
    return Sampling("uniform", max_staleness=max_staleness, max_uses=max_uses, **kw)


def replay(**kw: Unpack[Common]) -> Sampling:
    """Uniform over everything stored (off-policy replay)."""
    return Sampling("uniform", **kw)


def prioritized(alpha: float = 0.6, beta: float = 0.4, **kw: Unpack[Common]) -> Sampling:
    """Proportional prioritized replay (Schaul et al. 2016, arXiv:1511.05952); new records get
    the highest priority seen so far; `Sampler.update_priorities` sets them."""
    return Sampling("prioritized", alpha=alpha, beta=beta, **kw)


def task_balanced(**kw: Unpack[Common]) -> Sampling:
    """Each task equally likely, whatever its share of the data; uniform within a task."""
    return Sampling("task_balanced", **kw)


def groups(group_size: int, **kw: Unpack[Common]) -> Sampling:
    """Batches of G episodes from one start state (same `group`, so same task), one sample each,
    side by side (GRPO); only finished episodes count."""
    return Sampling("groups", group_size=group_size, **kw)


def pairs(**kw: Unpack[Common]) -> Sampling:
    """Rows 2i and 2i + 1 come from two finished episodes of one start state, the first a
    success and the second not (a preference pair for DPO)."""
    return Sampling("pairs", **kw)


def demonstrations(**kw: Unpack[Common]) -> Sampling:
    """Only records where an operator acted: imported demonstrations and interventions."""
    return Sampling("demonstrations", **kw)


def mixture(parts: Sequence[tuple[Sampling, float]], **kw: Unpack[Common]) -> Sampling:
    """Each batch split between `parts` by weight, e.g. 50/50 online and demonstrations as in
    RLPD (arXiv:2302.02948) and HIL-SERL."""
    return Sampling("mixture", parts=tuple(parts), **kw)


PRESETS = {"on_policy": on_policy, "replay": replay, "prioritized": prioritized,
           "task_balanced": task_balanced, "groups": groups, "pairs": pairs,
           "demonstrations": demonstrations}


def spec_from_dict(d: dict[str, Any]) -> Sampling:
    """A spec from plain data (a config file, or a call across processes), checked as any spec.

    Example: `spec_from_dict({"preset": "on_policy", "max_staleness": 2, "max_uses": 4,
    "batch_size": 256, "horizon": 8, "rate": {"min_size": 512}})`; a mixture is
    `{"preset": "mixture", "parts": [[{"preset": "on_policy"}, 0.5], [{"preset":
    "demonstrations"}, 0.5]], "batch_size": 256}`. Without "preset", the keys are `Sampling`'s
    fields."""
    kw = dict(d)
    if "rate" in kw:
        kw["rate"] = SampleRate(**kw["rate"]) if isinstance(kw["rate"], dict) else kw["rate"]
    if "reward" in kw and kw["reward"] is not None:
        kw["reward"] = tuple(kw["reward"])
    if "parts" in kw:
        kw["parts"] = tuple((spec_from_dict(p) if isinstance(p, dict) else p, float(w))
                            for p, w in kw["parts"])
    preset = kw.pop("preset", None)
    if preset is None:
        return Sampling(**kw)
    if preset == "mixture":
        parts = kw.pop("parts")
        return mixture(parts, **kw)
    if preset not in PRESETS:
        raise ValueError(f"sampling preset {preset!r}: use one of "
                         f"{', '.join([*PRESETS, 'mixture'])}")
    maker: Any = PRESETS[preset]
    return maker(**kw)
