"""`fleet pretrain`: the base policy, behaviour-cloned from noisy scripted-expert demos (or, for a
robot without an expert such as `robot=gym`, freshly initialised), or behaviour-cloned from the
demonstrations at `pretrain.data` (a buffer, a folder of .npz episodes or a LeRobot dataset; not
cached), or the policy saved at `policy.checkpoint` (no BC then).

Example:

    policy, info = pretrained_base(cfg)      # cached under pretrain.cache_dir after first use

Demonstrations are stored in Fleet's own buffer format (`demos-<key>/`, written and read whole by
`buffers.demos`), the base weights as `base-<key>.safetensors` (`learner.checkpoint`); the key
hashes every setting that changes them, so a changed setting never reuses a stale cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.demos import collect_demos, random_states
from actors.robots import make_robot
from algorithms.bc import chunk_targets, train_bc
from algorithms.factory import capabilities, make_policy
from algorithms.policy import (
    BUILTIN_KINDS,
    ChunkPolicy,
    PolicyConfig,
    config_key_fields,
    input_keys,
    policy_input,
)
from buffers.codec import decode_chunk
from buffers.demos import read_demos, write_demos
from buffers.episodes import import_npz
from buffers.records import RolloutChunk
from buffers.shards import open_buffer
from fleet.config import Config, ConfigError
from learner.checkpoint import CheckpointError, is_fleet_state, read_state, write_state


def policy_config(cfg: Config) -> PolicyConfig:
    """The policy's shape: sizes from the robot, the rest from `policy.*`."""
    return dataclasses.replace(cfg.policy, obs_dim=cfg.robot.obs_dim,
                               action_dim=cfg.robot.action_dim)


def cache_key(cfg: Config) -> str:
    # "format" 2: demo buffers written before it gave every task's demos the same episode ids,
    # so a multi-task cache kept one task's share (3 of 9 on reach, push and drawer-close; one
    # demo of ten on MT10), labelled them with the previous task, and had no `demos.json`. A
    # new key leaves those caches unread rather than guessing which of them are whole.
    robot = dataclasses.asdict(cfg.robot)
    if robot.get("camera") == "none":  # Meta-World without a camera: the keys from before it
        del robot["camera"]
    parts = {"robot": robot, "policy": config_key_fields(cfg.policy),
             "pretrain": {k: v for k, v in dataclasses.asdict(cfg.pretrain).items()
                          if k != "cache_dir"}, "format": 2}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def load_or_collect_demos(cfg: Config, root: Path) -> list[RolloutChunk]:
    """`pretrain.demos` successful noisy expert episodes per task, read back from the demo
    buffer at `root` (collected and written there first if it is not there yet); none for a
    robot without a scripted expert."""
    if not cfg.robot.has_expert:
        return []
    if not root.is_dir():
        write_demos(root, collect_task_demos(cfg))
    demos = read_demos(root)  # what TD's offline phase reads too, checked whole
    expected = cfg.pretrain.demos * len(cfg.robot.tasks)
    if len(demos) != expected:
        raise RuntimeError(f"the demo buffer {root} holds {len(demos)} demos, not "
                           f"pretrain.demos x tasks = {expected}; delete it to collect again")
    return demos


def collect_task_demos(cfg: Config) -> list[RolloutChunk]:
    """`pretrain.demos` demos of each of the robot's tasks, in task order, from one expert."""
    robot = make_robot(cfg.robot, "expert-0")
    try:
        demos = []
        for task in cfg.robot.tasks:
            robot.pin_task(task)
            demos += collect_demos(robot, cfg.pretrain.demos, cfg.pretrain.noise,
                                   cfg.policy.horizon, cfg.pretrain.bc.seed)
        return demos
    finally:
        robot.close()


def new_policy(cfg: Config) -> Any:
    """A fresh policy of `policy.kind` for the robot; a plug-in that refuses its
    `policy.params` is a `ConfigError` naming them."""
    try:
        return make_policy(policy_config(cfg))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy.kind={cfg.policy.kind} with policy.params="
                          f"{dict(cfg.policy.params)}: {e}") from e


def pretrained_base(cfg: Config, log: Any = print) -> tuple[ChunkPolicy, dict[str, Any]]:
    """The BC base for `cfg` (for a robot without a scripted expert, the fresh policy), trained
    once and then loaded from the cache; the policy at `policy.checkpoint` when one is given."""
    if cfg.policy.kind not in BUILTIN_KINDS or cfg.policy.kind == "hf":
        new_policy(cfg)  # a plug-in's params, an hf checkpoint: checked before any demos
    if cfg.policy.checkpoint:
        return checkpoint_base(cfg, Path(cfg.policy.checkpoint)), {
            "checkpoint": cfg.policy.checkpoint, "demos": 0, "demo_steps": 0, "bc_loss": None,
            "cached": False, "path": cfg.policy.checkpoint}
    if cfg.pretrain.data:
        t0 = time.monotonic()
        demos = data_demos(cfg, Path(cfg.pretrain.data))
        policy, steps, loss = behaviour_clone(cfg, demos)
        episodes = len({(d.robot_id, d.episode_id) for d in demos})
        log(f"behaviour-cloned the base on {episodes} episodes ({steps} steps) of "
            f"{cfg.pretrain.data}")
        return policy, {"data": cfg.pretrain.data, "demos": episodes, "demo_steps": steps,
                        "bc_loss": loss, "pretrain_s": time.monotonic() - t0, "cached": False,
                        "path": cfg.pretrain.data}
    key = cache_key(cfg)
    cache = Path(cfg.pretrain.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"base-{key}.safetensors"
    cached = cached_base(path)
    if cached is not None:
        policy = new_policy(cfg)
        policy.load_state_dict(cached["policy"])
        return policy, dict(cached["info"], cached=True, path=str(path))
    t0 = time.monotonic()
    demos = load_or_collect_demos(cfg, cache / f"demos-{key}")
    policy, steps, loss = behaviour_clone(cfg, demos) if demos else fresh_policy(cfg)
    info = {"demos": len(demos), "demo_steps": steps, "bc_loss": loss,
            "pretrain_s": time.monotonic() - t0, "key": key}
    write_state(path, {"policy": policy.state_dict(), "info": info})
    log(f"pretrained base on {len(demos)} demos ({steps} steps) in {info['pretrain_s']:.0f} s")
    return policy, dict(info, cached=False, path=str(path))


def cached_base(path: Path) -> dict[str, Any] | None:
    """The cached base at `path` ({"policy": state dict, "info": ...}), or None. A cache an
    older Fleet wrote beside it as `base-<key>.pt` is read with `weights_only=True` and kept
    as safetensors; one that needs unpickling is trained again."""
    if path.exists():
        return read_state(path)
    legacy = path.with_suffix(".pt")
    if not legacy.exists():
        return None
    try:
        saved = read_state(legacy)
    except CheckpointError:
        return None
    write_state(path, saved)
    return saved


def behaviour_clone(cfg: Config,
                    demos: list[RolloutChunk]) -> tuple[ChunkPolicy, int, float | None]:
    """(policy, demo steps, final loss): the policy fitted to the demos' action chunks."""
    obs = np.concatenate([policy_input(d.obs, input_keys(cfg.policy))[:-1].numpy()
                          for d in demos])  # the state (and, for an image policy, the pixels)
    targets = np.concatenate([chunk_targets(d.obs["state"], d.action, cfg.policy.horizon)
                              for d in demos])
    torch.manual_seed(cfg.pretrain.bc.seed)
    policy = new_policy(cfg)
    losses = train_bc(policy, obs, targets, cfg.pretrain.bc, offers=capabilities(cfg.policy.kind))
    return policy, len(obs), float(losses[-1])


def fresh_policy(cfg: Config, steps: int = 1000) -> tuple[ChunkPolicy, int, float | None]:
    """(policy, 0, no loss) for a robot without a scripted expert (robot.kind=gym): the freshly
    initialised policy, its inputs scaled by what `steps` random actions see. Gymnasium states
    are unscaled (velocities in the tens) and the scale is fixed for the whole run, so leaving
    it at identity would feed such numbers raw to every update."""
    robot = make_robot(cfg.robot, "random-0")
    try:
        states = random_states(robot, steps, cfg.pretrain.bc.seed)
    finally:
        robot.close()
    torch.manual_seed(cfg.pretrain.bc.seed)
    policy = new_policy(cfg)
    policy.set_obs_stats(states.mean(0), states.std(0))
    return policy, 0, None


def checkpoint_base(cfg: Config, path: Path) -> Any:
    """The policy of `cfg`'s kind and shape with the weights saved at `path`: a Fleet checkpoint
    (a learner's such as `runs/<name>/checkpoints/latest.safetensors`, a cached base; an older
    Fleet's `.pt` or a bare state dict loaded with `weights_only=True`), an `.npz` or a
    `.safetensors` of
    `policy_state()`. A file that is missing, unreadable or for another shape is a
    `ConfigError` naming the file and the first key that does not fit."""
    where = f"policy.checkpoint={path}"
    state = read_policy_file(path, where)
    policy = new_policy(cfg)
    want = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    have = {k: tuple(np.shape(v)) for k, v in state.items() if not k.startswith("critic.")}
    shape = f"obs_dim={cfg.robot.obs_dim}, action_dim={cfg.robot.action_dim}, " \
            f"horizon={cfg.policy.horizon}, policy.kind={cfg.policy.kind}"
    for key in want:
        if key not in have:
            raise ConfigError(f"{where}: has no {key!r}, which this policy ({shape}) needs")
        if have[key] != want[key]:
            raise ConfigError(f"{where}: {key!r} is {list(have[key])} there, this policy "
                              f"({shape}) needs {list(want[key])}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise ConfigError(f"{where}: holds {extra[0]!r}, which this policy ({shape}) has not")
    policy.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()
                            if k in want})  # old states' `critic.*` keys stay behind
    return policy


def read_policy_file(path: Path, where: str) -> dict[str, Any]:
    """Weights by name from `path` (see `checkpoint_base`); nothing in it is unpickled."""
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if path.suffix == ".safetensors" and not is_fleet_state(path):
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        saved = read_state(path)  # a Fleet checkpoint (`.safetensors` or an old `.pt`)
    except CheckpointError as e:
        raise ConfigError(f"{where}: {str(e).removeprefix(f'{path}: ')}") from e
    except Exception as e:  # a torn, foreign or pickled-object file: say which and why
        raise ConfigError(f"{where}: cannot read it ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if isinstance(saved, dict) and isinstance(saved.get("policy"), dict):
        saved = saved["policy"]  # a learner checkpoint or a cached base
    if not isinstance(saved, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in saved.items()):
        raise ConfigError(f"{where}: holds no policy weights (a state dict of tensors, or a "
                          f"Fleet checkpoint with a 'policy' entry)")
    return saved


def data_demos(cfg: Config, path: Path) -> list[RolloutChunk]:
    """Every episode at `path` as chunks: a LeRobot dataset (`meta/info.json`), a folder of
    `.npz` episodes, or a buffer directory (`fleet buffer import` writes one). A `ConfigError`
    names the path when there is nothing to read or the demos do not fit the robot."""
    where = f"pretrain.data={path}"
    try:
        if (path / "meta" / "info.json").is_file():
            from buffers.lerobot import import_lerobot

            demos, _ = import_lerobot(path, cfg.policy.horizon)
        elif list(path.glob("*.npz")):
            demos = import_npz(path, cfg.policy.horizon)
        elif path.is_dir():  # a buffer (one shard or many), opened read-only
            buf = open_buffer(path, read_only=True)
            try:
                demos = [decode_chunk(r) for r in buf.read(0, 2**62)[0]]
            finally:
                buf.close()
        else:
            raise ValueError("no such folder (a buffer, .npz episodes or a LeRobot dataset)")
    except (ImportError, OSError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e
    if not demos:
        raise ConfigError(f"{where}: holds no episodes")
    want = {"state": cfg.robot.obs_dim, "action": cfg.robot.action_dim}
    for d in demos:
        have = {"state": d.obs["state"].shape[1], "action": d.action.shape[1]}
        for key, n in want.items():
            if have[key] != n:
                raise ConfigError(f"{where}: episode {d.episode_id} has {key} of size "
                                  f"{have[key]}, robot.kind={cfg.robot.kind} {cfg.robot.task} "
                                  f"has {n}")
        missing = [k for k in input_keys(cfg.policy) if k not in d.obs]
        if missing:
            raise ConfigError(f"{where}: episode {d.episode_id} has no {missing[0]!r} "
                              f"observation, which the policy reads")
    return demos
