"""`fleet train -m run.seed=0,1,2`: a Hydra sweep, run as one `fleet train` per point, in turn.

Example:

    sweep_points(["experiment=smoke", "run.seed=0,1,2"])
    # [["experiment=smoke", "run.seed=0"], ["experiment=smoke", "run.seed=1"], ...]
    summaries = run_sweep(["experiment=smoke", "run.seed=0,1,2"], lambda cfg: train(cfg, console))

Sweep overrides are Hydra's (`a,b,c`, `range(0,3)`, `choice(...)`, `glob(...)`); the points are
their cartesian product, in the order the overrides were given (the last one varies fastest).
Every point's config is checked before the first run starts, so a bad value anywhere ends the
sweep before anything ran. Points share one `run.name` with the point's number appended
(`push-20261201-101500-0`, `-1`, ...): one run directory each, and `resume=` continues one.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from fleet.config import Config, ConfigError, load_config


def sweep_points(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of every point of the sweep (one point when nothing sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from e
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
               if o.is_sweep_override() else [line]
               for line, o in zip(overrides, parsed, strict=True)]
    return [list(point) for point in itertools.product(*choices)]


def sweep_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that sweep (`run.seed=0,1,2`), for the message that asks for `-m`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return []  # load_config says what is wrong with it
    return [line for line, o in zip(overrides, parsed, strict=True) if o.is_sweep_override()]


def sweep_configs(overrides: Sequence[str]) -> list[tuple[list[str], Config]]:
    """(point's overrides, its config) for every point, each named `<run.name>-<i>` after the
    first point's name; a `ConfigError` names the point that is wrong."""
    out = []
    for i, point in enumerate(sweep_points(overrides)):
        try:
            cfg = load_config(point)
        except ConfigError as e:
            raise ConfigError(f"sweep point {i} ({' '.join(point)}): {e}") from e
        out.append((point, cfg))
    base = out[0][1].run.name
    return [(point, dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=f"{base}-{i}")))
            for i, (point, cfg) in enumerate(out)]


def run_sweep(overrides: Sequence[str], run: Callable[[Config], dict[str, Any]],
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run `run(cfg)` (`fleet train`) for every point in turn; returns their summaries."""
    points = sweep_configs(overrides)
    summaries = []
    for i, (point, cfg) in enumerate(points):
        log(f"sweep point {i + 1} of {len(points)}: {' '.join(point)} "
            f"(run.name={cfg.run.name})")
        summaries.append(run(cfg))
    return summaries
