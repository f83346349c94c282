"""The YAML under configs/ against the dataclasses it fills: every key is a field, and no value
merely repeats what the key would hold without it, so the two cannot drift apart.

"Without it" is the dataclass default for `config.yaml` and for a group option (`algorithm/td`);
for an experiment it is what the rest composes to (`experiment/pusht` picks `robot=pusht`, whose
max_episode_steps it need not repeat). Each file is composed through `load_config`, so the check
follows whatever class a node becomes (a robot kind's own config, say).
"""

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from fleet.config import Config
from fleet.config import load_config as compose

CONFIGS = Path(str(resources.files("configs")))
FILES = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
MISSING = object()


@functools.cache
def _composed(overrides: tuple[str, ...]) -> Config:
    return compose(overrides)


def load_config(overrides: list[str]) -> Config:
    """`fleet.config.load_config`, once per selection: both tests compose every file."""
    return _composed(tuple(overrides))


@dataclasses.dataclass(frozen=True)
class YamlFile:
    rel: str  # relative to configs/: "config.yaml", "algorithm/td.yaml"
    values: dict[str, Any]  # the file's keys, interpolations unresolved, defaults list dropped
    where: tuple[str, ...]  # the config node they land in: () for config.yaml and experiments
    select: list[str]  # the overrides that compose this file
    parents: list[str] | None  # the overrides that compose its defaults list; None: none

    @classmethod
    def read(cls, rel: str) -> "YamlFile":
        text = (CONFIGS / rel).read_text()
        raw = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}
        assert isinstance(raw, dict), f"{rel} must be a mapping"
        defaults = raw.pop("defaults", None)
        group, _, option = rel.removesuffix(".yaml").rpartition("/")
        if not group:
            return cls(rel, raw, (), [], None)
        where = () if "@package _global_" in text else tuple(group.split("/"))
        parents = None if defaults is None and where else list(_chosen(group, defaults or []))
        return cls(rel, raw, where, [f"{group}={option}"], parents)


def _chosen(group: str, defaults: list[Any]) -> Iterator[str]:
    """`[ppo, _self_]` in algorithm/ -> algorithm=ppo; `{override /robot: pusht}` -> robot=pusht."""
    for entry in defaults:
        if isinstance(entry, str) and entry != "_self_":
            yield f"{group}={entry}"
        elif isinstance(entry, dict):
            yield from (f"{k.removeprefix('override ').strip('/')}={v}" for k, v in entry.items())


def leaves(values: Mapping[str, Any], built: Any, path: tuple[str, ...]) -> Iterator[
        tuple[tuple[str, ...], Any]]:
    """(path, value) for each YAML value, descending where the built node is a dataclass."""
    for key, value in values.items():
        dotted = ".".join((*path, key))
        assert dataclasses.is_dataclass(built), f"{dotted}: {'.'.join(path)} is not a dataclass"
        assert key in {f.name for f in dataclasses.fields(built)}, (
            f"{dotted} is no field of {type(built).__name__}")
        node = getattr(built, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(node):
            yield from leaves(value, node, (*path, key))
        else:
            yield (*path, key), value


def at(cfg: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        cfg = getattr(cfg, key, MISSING)
    return cfg


def default_of(built: Config, path: tuple[str, ...]) -> Any:
    """The dataclass default of the field at `path`, read off the class the node was built as."""
    field = {f.name: f for f in dataclasses.fields(at(built, path[:-1]))}[path[-1]]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def same(a: Any, b: Any) -> bool:
    """Equal as YAML would write them: a tuple is a list, 0 is 0.0, but False is not 0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return plain(a) == plain(b)


def plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v


@pytest.mark.parametrize("rel", FILES)
def test_every_yaml_key_is_a_dataclass_field(rel):
    spec = YamlFile.read(rel)
    built = load_config(spec.select)  # from_mapping refuses unknown keys and bad values
    paths = [path for path, _ in leaves(spec.values, at(built, spec.where), spec.where)]
    assert len(paths) >= len(spec.values)  # and each leaf sits on a field of the built class


def repeats(spec: YamlFile) -> list[str]:
    """The file's values equal to what their keys hold without it."""
    built = load_config(spec.select)
    baseline = None if spec.parents is None else load_config(spec.parents)
    found = []
    for path, value in leaves(spec.values, at(built, spec.where), spec.where):
        if isinstance(value, str) and "${" in value:
            continue  # an interpolation (run.name=push-${now:...}) is not a default
        if path == ("robot", "kind"):
            continue  # it picks the robot's config class, whose own default it then equals
        before = default_of(built, path) if baseline is None else at(baseline, path)
        if same(value, before):
            found.append(f"{'.'.join(path)}: {value!r}")
    return found


@pytest.mark.parametrize("rel", FILES)
def test_no_yaml_value_repeats_its_default(rel):
    repeated = repeats(YamlFile.read(rel))
    assert not repeated, f"configs/{rel} repeats what these keys hold without it: {repeated}"


def test_the_repeat_check_can_fail():
    as_config_yaml = YamlFile("config.yaml", {"learner": {"batch_calls": 1024, "max_staleness": 3},
                                              "fleet": {"bridge_robots": []}}, (), [], None)
    assert repeats(as_config_yaml) == ["learner.batch_calls: 1024", "fleet.bridge_robots: []"]
    as_experiment = YamlFile("experiment/x.yaml", {"robot": {"max_episode_steps": 300}}, (),
                             ["robot=pusht"], ["robot=pusht"])
    assert repeats(as_experiment) == ["robot.max_episode_steps: 300"]
    assert same(0, 0.0) and not same(False, 0) and not same(True, 1) and same((), [])


@pytest.mark.parametrize("override", [
    "logger.wandb=disabled", "fleet.num_robots=3", "buffer.fsync=always", "resume=some-run",
    "learner.batch_calls=64", "algorithm.td.ensemble=3", "pretrain.bc.steps=10",
    "policy.mask_key=m"])
def test_a_key_the_yaml_leaves_out_can_still_be_set(override):
    key, value = override.split("=")
    assert str(at(load_config([override]), tuple(key.split(".")))) == value
