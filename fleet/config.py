"""Typed configuration, composed by Hydra from `configs/` once, at the entry point.

Example:

    cfg = load_config(["experiment=smoke", "run.name=try1"])
    cfg.learner.batch_calls            # a plain frozen dataclass below this point

Each component owns its config dataclass (`PPOConfig` in `algorithms.ppo`, `BufferConfig` in
`buffers.store`, ...); this file only gathers them. Unknown keys and bad values end in a
`ConfigError` that names the key and what to change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actors.operator import OperatorConfig
from actors.robot import MetaWorldConfig
from algorithms import AlgorithmConfig
from algorithms.bc import BCConfig
from algorithms.policy import PolicyConfig
from buffers.store import BufferConfig
from fleet.console.server import ConsoleConfig
from learner.loop import LearnerConfig
from rewards.base import RewardConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration that cannot run, with a message saying what to change."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "push"
    dir: str = "runs"  # run directories go under here: runs/<name>/
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    num_robots: int = 4
    calls_per_chunk: int = 16  # K: policy calls per streamed rollout chunk
    robot_cpus: float = 0.25  # Ray CPU reservation per robot actor
    address: str | None = None  # a Ray cluster to join; None starts an embedded local Ray
    robot_resources: bool = False  # place robot <id>'s actor on the node advertising robot:<id>
    pace_hz: float = 0.0  # > 0: simulated robots step at this control rate, as hardware does
    bridge_robots: tuple[str, ...] = ()  # real robots joining over the bridge, beside num_robots
    bridge_endpoint: str = "tcp://127.0.0.1:5555"  # bridged robot i's gateway binds port + i
    bridge_keys: str = "keys"  # the folder `fleet keys` wrote (server + allowlisted robot keys)
    inference: str = "local"  # local: a policy copy per robot; server: one batching server
    inference_max_batch: int = 64  # server: answer at most this many robots' calls at once
    inference_max_wait_s: float = 0.002  # server: wait this long for a batch to fill
    inference_gpus: float = 0.0  # server: GPUs it asks Ray for (> 0: its policy runs on CUDA)

    def __post_init__(self) -> None:
        if self.inference not in ("local", "server"):
            raise ValueError(f"fleet.inference={self.inference!r}: use local or server")
        if self.inference_max_batch < 1 or self.inference_max_wait_s < 0 or (
                self.inference_gpus < 0):
            raise ValueError("fleet.inference_max_batch must be >= 1, fleet.inference_max_wait_s"
                             " and fleet.inference_gpus >= 0")
        if self.num_robots < 1 or self.calls_per_chunk < 1:
            raise ValueError("fleet.num_robots and fleet.calls_per_chunk must be >= 1")
        if self.pace_hz < 0:
            raise ValueError(f"fleet.pace_hz must be >= 0 (0: unpaced), got {self.pace_hz}")
        object.__setattr__(self, "bridge_robots", tuple(self.bridge_robots))
        if not all(isinstance(r, str) and r for r in self.bridge_robots) or len(
                set(self.bridge_robots)) != len(self.bridge_robots):
            raise ValueError(f"fleet.bridge_robots must be distinct robot ids, got "
                             f"{list(self.bridge_robots)}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    demos: int = 20  # successful noisy expert episodes
    noise: float = 0.3  # std of Gaussian noise on the expert's executed actions
    bc: BCConfig = BCConfig()
    cache_dir: str = "runs/cache"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    env_steps: int = 600_000  # robots' total training steps
    max_wall_s: float = 480.0  # stop training after this long even if steps remain


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    episodes: int = 50  # the same held-out seeds before and after
    seed: int = 900_000  # first held-out seed; training seeds never reach it
    execution: str = "open_loop"  # how chunks run when evaluating: receding, ensemble too
    replan_every: int = 0  # receding: a policy call every this many steps (< policy.horizon)
    ensemble_decay: float = 0.01  # ensemble: ACT's exp(-decay * i) weights, oldest chunk first

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError("eval.episodes must be >= 1")


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    wandb: str = "offline"  # offline | online | disabled
    project: str = "fleet"
    live: bool = True  # rich live view when stdout is a terminal, plain lines otherwise
    every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.wandb not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.wandb={self.wandb!r}: use offline, online or disabled")


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunConfig = RunConfig()
    robot: MetaWorldConfig = MetaWorldConfig()
    fleet: FleetConfig = FleetConfig()
    policy: PolicyConfig = PolicyConfig()
    pretrain: PretrainConfig = PretrainConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    reward: RewardConfig = RewardConfig()
    buffer: BufferConfig = BufferConfig()
    learner: LearnerConfig = LearnerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    logger: LoggerConfig = LoggerConfig()
    operator: OperatorConfig = OperatorConfig()
    console: ConsoleConfig = ConsoleConfig()
    resume: str | None = None  # the name of a run under run.dir to continue


def from_mapping(cls: type[Any], data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from plain data, refusing unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; "
                          f"{where.rstrip('.') or 'top level'} takes: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {e}") from e


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(typing.cast(type, hint), value, where + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if hint is typing.Any or origin is not None:  # mappings, literals: checked by the component
        return dict(value) if isinstance(value, Mapping) else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def load_config(overrides: Sequence[str] = ()) -> Config:
    """Compose `configs/config.yaml` with Hydra overrides into a `Config`."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            raw = compose("config", overrides=list(overrides))
        data = OmegaConf.to_container(raw, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from e
    assert isinstance(data, dict)
    return typing.cast(Config, from_mapping(Config, typing.cast(dict[str, Any], data)))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
