"""`fleet train`: pretrain (or load) the base, then post-train it on a fleet of robot actors.

Example:

    summary = train(load_config(["experiment=smoke", "run.name=try1"]), Console())
    summary["success_before"], summary["success_after"]

The driver only wires and watches: robots, buffer and learner each run in their own actor, and
the driver's loop (`fleet.run.watch`) waits on one learner update at a time while it refreshes
the live view.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from actors.evaluation import Episode, by_task, held_out
from actors.robots import assign_tasks
from actors.worker import EvalEpisode, WorkerConfig
from algorithms import data_needs
from algorithms.policy import PolicyConfig
from buffers.rate import StepRatio
from fleet.config import Config, ConfigError, run_path, saved_config, to_dict
from fleet.console.server import TOKEN_ENV, ConsoleServer, RayRobots, TokenError, read_token

# Every module of ours the driver uses is imported here, before `ray.init`: inside `ray job
# submit`, Ray unpacks the job's working_dir again when the driver connects (the driver's cwd
# vanished across `ray.init()` in tests/test_cluster.py), and an import made in that window
# finds the package half-written (`No module named 'fleet.remote.learner'`).
from fleet.remote.buffer import BufferServer
from fleet.remote.inference import inference_server
from fleet.remote.learner import LearnerActor
from fleet.remote.reward import RewardTrainer
from fleet.remote.robot import Bridge, RobotLaunch, endpoint_for, start_robot
from fleet.remote.weights import HubWeights, WeightHub
from fleet.run.evaluate import DuringTraining, eval_execution
from fleet.run.metrics import MetricsLogger
from fleet.run.pretrain import cache_key, policy_config, pretrained_base
from fleet.run.watch import post_train
from learner.loop import LATEST
from rewards.base import make_reward
from rewards.trainer import trainable


def open_run(cfg: Config) -> tuple[Config, Path, Path | None]:
    """The run's config, its directory and, when resuming, the checkpoint to continue from.

    A new run creates `runs/<name>/` and refuses one that already holds a run, so nothing is
    overwritten. `resume=<name>` continues that run with the config it was started with, except
    `train.*` (the budget) and `logger.*`, which come from this command line.
    """
    if cfg.resume is None:
        run_dir = run_path(cfg, cfg.run.name)
        marker = run_dir / "config.json"
        if marker.exists():
            raise ConfigError(f"{run_dir} already holds a run; continue it with "
                              f"resume={cfg.run.name}, or pick another run.name=...")
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(to_dict(cfg), indent=2, default=str))
        return cfg, run_dir, None
    run_dir = run_path(cfg, cfg.resume)
    try:
        saved = saved_config(json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot resume {run_dir}: {e}") from e
    checkpoint = run_dir / "checkpoints" / LATEST
    if not checkpoint.exists():  # an older Fleet's run: its pickle is read with weights_only=True
        checkpoint = checkpoint.with_name("latest.pt")
    if not checkpoint.exists():
        raise ConfigError(f"cannot resume {run_dir}: it has no checkpoint yet")
    return dataclasses.replace(saved, train=cfg.train, logger=cfg.logger), run_dir, checkpoint


def forget_run(run_dir: Path) -> None:
    """Undo `open_run` for a new run that never started: its `config.json`, and the folder
    when nothing else is in it."""
    (run_dir / "config.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def start_ray(cfg: Config) -> None:
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if cfg.fleet.address:
        ray.init(address=cfg.fleet.address, logging_level=logging.WARNING)
    elif os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`
        ray.init(logging_level=logging.WARNING)
    else:
        from fleet.remote import RAY_SYSTEM_CONFIG

        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, 2), include_dashboard=False,
                 logging_level=logging.WARNING, object_store_memory=512 * 1024**2,
                 _system_config=RAY_SYSTEM_CONFIG)


def learner_gpus(cfg: Config) -> int:
    """The learner asks for a GPU when told to, or (`auto`) when the cluster has one; robots
    ask for CPUs only, so they stay off GPU nodes' GPUs."""
    import ray

    if cfg.learner.device == "auto":
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return 0 if cfg.learner.device == "cpu" else 1


def robot_resources(cfg: Config, robot_id: str) -> dict[str, float]:
    """`robot:<id>` when robots are placed on the nodes wired to them (custom resources)."""
    return {f"robot:{robot_id}": 1.0} if cfg.fleet.robot_resources else {}


def worker_config(cfg: Config, i: int, version: int) -> WorkerConfig:
    """Robot `i`'s loop (simulated robots first, then bridged ones): its own exploration seed,
    fresh after a resume (`version`)."""
    return WorkerConfig(cfg.policy.horizon, cfg.fleet.calls_per_chunk,
                        seed=cfg.run.seed * 1000 + i + 1 + 100 * version,
                        group_size=cfg.algorithm.group_size, **eval_execution(cfg))


def on_this_node() -> Any:
    """Pin an actor to the driver's node: the buffer's files live under the driver's run.dir."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def evaluate(robots: list[Any], state: dict[str, np.ndarray], episodes: list[Episode],
             record: int = 0) -> list[EvalEpisode]:
    """The same held-out (task, seed) episodes, shared round robin across the robots, results
    in the episodes' order; the first robot records the frames of its first `record`."""
    import ray

    n = len(robots)
    parts = ray.get([r.evaluate_episodes.remote(state, episodes[i::n], record if i == 0 else 0)
                     for i, r in enumerate(robots)])
    out: list[Any] = [None] * len(episodes)
    for i, part in enumerate(parts):
        out[i::n] = part
    return out


@dataclasses.dataclass
class Fleet:
    """The actors of one run, as the driver holds them."""

    buffer: Any
    hub: Any
    learner: Any
    robots: list[Any]  # simulated: they train and evaluate
    bridged: list[Any] = dataclasses.field(default_factory=list)  # real: they train
    server: Any = None  # the InferenceServer when fleet.inference=server
    reward_trainer: Any = None  # the RewardTrainer when the reward model learns online


def start_fleet(cfg: Config, run_dir: Path, checkpoint: Path | None, base_config: PolicyConfig,
                base: dict[str, np.ndarray], console: Console) -> Fleet:
    """Buffer, weight hub and learner, then robots acting with the learner's current weights."""
    import ray


    pcfg = base_config
    buffer = BufferServer.options(scheduling_strategy=on_this_node()).remote(
        str(run_dir / "buffer"), cfg.buffer, rate_limit(cfg))
    hub = WeightHub.remote()
    demos = str(Path(cfg.pretrain.cache_dir) / f"demos-{cache_key(cfg)}")
    reward_hub, trainer = start_reward_trainer(cfg, buffer, demos)
    learner = LearnerActor.options(num_gpus=learner_gpus(cfg)).remote(
        pcfg, base, cfg.algorithm, cfg.reward, cfg.learner, str(run_dir / "checkpoints"),
        buffer, hub, cfg.run.seed, demos=demos,  # TD's offline phase
        reward_hub=reward_hub, tasks=tuple(cfg.robot.tasks))
    version, state = 0, base
    learner_asks = {"learner": (learner, {"GPU": float(learner_gpus(cfg))})}
    if checkpoint is not None:
        await_placement(learner_asks, cfg.fleet.placement_timeout_s)  # restore waits on it
        try:
            ray.get(learner.restore.remote(str(checkpoint)))
        except ray.exceptions.RayTaskError as e:  # e.g. a checkpoint this Fleet cannot resume
            raise ConfigError(f"cannot resume {run_dir}: {e.cause}") from e
        version, state = ray.get(learner.policy_state.remote())
        HubWeights(hub).publish(version, state)
        console.print(f"resuming {run_dir} at policy_version {version}")
    server = None
    if cfg.fleet.inference == "server":  # one batching server answers every robot's calls
        server = inference_server(pcfg, num_gpus=cfg.fleet.inference_gpus,
                                  max_batch=cfg.fleet.inference_max_batch,
                                  max_wait_s=cfg.fleet.inference_max_wait_s, hub=hub,
                                  state=state, policy_version=version)
    launches = robot_launches(cfg, run_dir, pcfg, version)
    handles = [start_robot(launch, state, buffer, hub, server if launch.bridge is None else None,
                           num_cpus=cfg.fleet.robot_cpus,
                           resources=robot_resources(cfg, launch.robot_id))
               for launch in launches]
    await_placement({**learner_asks, **{
        launch.robot_id: (h, {"CPU": cfg.fleet.robot_cpus,
                              **robot_resources(cfg, launch.robot_id)})
        for launch, h in zip(launches, handles, strict=True)}}, cfg.fleet.placement_timeout_s)
    n = cfg.fleet.num_robots
    return Fleet(buffer, hub, learner, handles[:n], handles[n:], server, trainer)


def rate_limit(cfg: Config) -> tuple[StepRatio, int] | None:
    """The buffer's rate limiter, for an algorithm that declares one (`DataNeeds.rate`), with
    the most env steps one rollout chunk carries; ConfigError if it could deadlock."""
    rate = data_needs(cfg.algorithm).rate
    if rate is None:
        return None
    max_insert = cfg.policy.horizon * cfg.fleet.calls_per_chunk
    try:
        rate.slack(max_insert)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return rate, max_insert


class PlacementError(ConfigError):
    """Actors the cluster could not place: a resource no node offers (a robot's node, a GPU)."""


def await_placement(actors: dict[str, tuple[Any, dict[str, float]]], timeout_s: float) -> None:
    """Wait until every actor (name -> (handle, the resources it asked for)) is placed and
    constructed, at most `timeout_s`; else raise `PlacementError` naming each one still
    pending, what it asked for and which of that no node of the cluster offers.

    Ray keeps an actor it cannot place pending forever (an autoscaler may yet add a node), so
    without this a missing robot node or GPU made `fleet train` wait with no word."""
    import ray

    pending = {h.__ray_ready__.remote(): name for name, (h, _) in actors.items()}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        ready, _ = ray.wait(list(pending), num_returns=len(pending),
                            timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        for ref in ready:
            name = pending.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as e:  # it started and died: say so now
                raise PlacementError(f"{name} failed to start: {e}") from e
    if not pending:
        return
    total = ray.cluster_resources()
    lines = []
    for name in sorted(pending.values()):
        asks = {k: v for k, v in actors[name][1].items() if v > 0}
        missing = [f"{k} (the cluster has {total.get(k, 0):g})" for k, v in asks.items()
                   if total.get(k, 0) < v]
        lines.append(f"{name} asks for {asks}" + (
            f"; no node offers {', '.join(missing)}" if missing else
            "; the cluster has these but they are taken or the actor is still starting"))
    raise PlacementError(
        f"not placed within fleet.placement_timeout_s={timeout_s:g} s: " + "; ".join(lines)
        + ". Start the node that offers it (a robot's node: ray start --resources "
        "'{\"robot:<id>\": 1}'; a GPU node for the learner), or set learner.device=cpu / "
        "fleet.robot_resources=false.")


def robot_launches(cfg: Config, run_dir: Path, pcfg: PolicyConfig,
                   version: int) -> list[RobotLaunch]:
    """What each robot starts from: the simulated robots `robot-<i>` (each with its share of
    the tasks), then one per real robot of `fleet.bridge_robots`, each serving its robot's
    gateway (bridged robot j binds the endpoint's port + j)."""
    n, spill = cfg.fleet.num_robots, str(run_dir / "spill")
    limited = data_needs(cfg.algorithm).rate is not None  # chunks wait for the rate limiter
    choose = cfg.learner.task_sampling.enabled and len(cfg.robot.tasks) > 1  # by failure rate
    sims = [RobotLaunch(f"robot-{i}", cfg.robot, pcfg, worker_config(cfg, i, version), spill,
                        version, assign_tasks(cfg.robot.tasks, n, i), cfg.operator,
                        cfg.fleet.pace_hz, spill_fsync=cfg.buffer.fsync, rate_limited=limited,
                        choose_tasks=choose, outbox_linger_s=cfg.fleet.outbox_linger_s)
            for i in range(n)]
    return sims + [RobotLaunch(
        rid, cfg.robot, pcfg, worker_config(cfg, n + j, version), spill, version,
        bridge=Bridge(endpoint_for(cfg.fleet.bridge_endpoint, j), cfg.fleet.bridge_keys),
        spill_fsync=cfg.buffer.fsync, rate_limited=limited,
        outbox_linger_s=cfg.fleet.outbox_linger_s)
        for j, rid in enumerate(cfg.fleet.bridge_robots)]


def start_reward_trainer(cfg: Config, buffer: Any, demos: str) -> tuple[Any, Any]:
    """(hub, RewardTrainer) for a reward model that learns online from the buffer
    (`fleet.remote.reward`), else (None, None)."""
    if not learns_online(cfg):
        return None, None
    hub = WeightHub.remote()
    trainer = RewardTrainer.remote(cfg.reward, buffer, hub, demos)
    trainer.start.remote()
    return hub, trainer


def learns_online(cfg: Config) -> bool:
    """Whether the reward model is trained online (`rewards.trainer`); building it once also
    imports its module before `ray.init` (see the imports above)."""
    return trainable(make_reward(cfg.reward, guard=False))


def train(cfg: Config, console: Console,
          during: DuringTraining | None = None) -> dict[str, Any]:
    """`during`: what sees the newest weights as training passes `eval.every_steps` (default:
    held-out evaluations; `fleet bench e2e_peers` keeps snapshots instead)."""
    import ray

    t_start = time.monotonic()
    try:  # read once, then out of the environment Ray's workers and wandb inherit
        token = read_token(cfg.console) if cfg.console.enabled else ""
    except TokenError as e:
        raise ConfigError(str(e)) from e
    os.environ.pop(TOKEN_ENV, None)
    cfg, run_dir, checkpoint = open_run(cfg)
    try:
        base, pre_info = pretrained_base(cfg, log=console.print)
        learns_online(cfg)
    except BaseException:  # no run started: a new run's folder goes, so the name stays free
        if checkpoint is None:
            forget_run(run_dir)
        raise
    start_ray(cfg)
    operators: ConsoleServer | None = None
    try:
        fleet = start_fleet(cfg, run_dir, checkpoint, policy_config(cfg), base.policy_state(),
                            console)
        operators = start_console(cfg, fleet, run_dir, console, token)
        episodes = held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed)
        before, before_episodes = base_success(run_dir, fleet.robots, base.policy_state(),
                                               episodes, cfg.logger.videos)
        console.print(f"base policy: {np.mean(before):.0%} success on {cfg.eval.episodes} "
                      f"held-out episodes per task of {cfg.robot.task}")
        steps_done = int(ray.get(fleet.buffer.info.remote())["steps"])
        during = during or DuringTraining(cfg, episodes)
        with MetricsLogger(cfg, run_dir, say=console.print) as metrics:
            metrics.summary({"success_before": float(np.mean(before))})
            metrics.log({"eval/success": float(np.mean(before)), "eval/env_steps": steps_done,
                         "eval/policy_version": 0}, step=steps_done)
            metrics.log_episodes("eval", before_episodes, step=steps_done)
            train_s, robot_stats, last = post_train(
                cfg, console, fleet.robots + fleet.bridged, fleet.learner, metrics, steps_done,
                watch=operators.record if operators else None, during=during,
                newest=lambda: HubWeights(fleet.hub).newest() or (0, base.policy_state()))
            reward_stats = (ray.get(fleet.reward_trainer.stop.remote())
                            if fleet.reward_trainer is not None else None)
            wandb_id = run_dir / "wandb_id"
            saved = ray.get(fleet.learner.checkpoint.remote(
                {"wandb_id": wandb_id.read_text() if wandb_id.exists() else None}))
            version, state = ray.get(fleet.learner.policy_state.remote())
            metrics.log_checkpoint(Path(saved), int(version))
            after_episodes = evaluate(fleet.robots, state, episodes, cfg.logger.videos)
            after = [e.success for e in after_episodes]
            summary = {
                "run": run_dir.name, "task": cfg.robot.task, "robots": cfg.fleet.num_robots,
                "success_before": float(np.mean(before)), "success_after": float(np.mean(after)),
                "eval_episodes": cfg.eval.episodes, "tasks": list(cfg.robot.tasks),
                "eval_seeds": [cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes - 1],
                "per_task_before": by_task(episodes, before),
                "per_task_after": by_task(episodes, after),
                "policy_version": int(version), "train_s": train_s, "resumed": bool(checkpoint),
                "wall_s": time.monotonic() - t_start, "seed": cfg.run.seed,
                "pretrain": pre_info, "learner_last": last, **provenance(cfg),
                "reward_trainer": reward_stats,
                **stream_counts(ray.get(fleet.buffer.info.remote()), robot_stats),
                "per_episode_before": before, "per_episode_after": after,
                "eval_during": during.curve,  # [env steps, policy_version, success]
                "eval_during_by_task": during.by_task,  # task -> [[env steps, success]]
            }
            metrics.log_episodes("eval", after_episodes,  # wandb's steps only go forward
                                 step=max(summary["env_steps"], metrics.last_step))
            metrics.summary({k: v for k, v in summary.items() if isinstance(v, int | float)})
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        ray.get(fleet.buffer.close.remote())
    finally:
        if operators is not None:
            operators.stop()
        ray.shutdown()
    console.print(result_table(summary))
    console.print(f"summary: {run_dir / 'summary.json'}")
    return summary


def provenance(cfg: Config) -> dict[str, Any]:
    """What produced a run, for its summary.json: the algorithm, the reward model, the policy
    kind, the exact command line (`sys.argv`, as the shell passed it) and the versions of the
    packages results depend on (Meta-World's rewards differ between releases)."""
    return {"algorithm": cfg.algorithm.name, "reward": cfg.reward.name,
            "reward_params": dict(cfg.reward.params), "policy_kind": cfg.policy.kind,
            "policy_backbone": cfg.policy.backbone, "command": list(sys.argv),
            "versions": package_versions(("torch", "metaworld", "gymnasium", "gym-pusht"))}


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each distribution (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def start_console(cfg: Config, fleet: Fleet, run_dir: Path, console: Console,
                  token: str = "") -> ConsoleServer | None:
    """The operator console (`fleet.console`) over every robot, or None when disabled or its
    port is taken (the run goes on without it)."""
    if not cfg.console.enabled:
        return None
    ids = [f"robot-{i}" for i in range(len(fleet.robots))] + list(cfg.fleet.bridge_robots)
    handles = dict(zip(ids, fleet.robots + fleet.bridged, strict=True))
    try:
        server = ConsoleServer(cfg.console, RayRobots(handles), run_dir, token=token).start()
    except OSError as e:
        console.print(f"[yellow]no operator console: {cfg.console.host}:{cfg.console.port}: "
                      f"{e.strerror or e}[/]")
        return None
    console.print(f"operator console: {server.url}")
    return server


def stream_counts(stored: dict[str, Any], robot_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """What the robots streamed and what the buffer holds (over every session of the run)."""
    return {"env_steps": int(stored["steps"]),
            "env_steps_this_session": int(sum(s["env_steps"] for s in robot_stats)),
            "chunks_stored": int(sum(s["stored"] for s in robot_stats)),
            "intervened_steps_this_session": int(sum(s["intervened_steps"] for s in robot_stats)),
            "buffer": stored, "per_robot": robot_stats}


def base_success(run_dir: Path, robots: list[Any], state: dict[str, np.ndarray],
                 episodes: list[Episode], record: int = 0
                 ) -> tuple[list[bool], list[EvalEpisode]]:
    """The base policy's held-out results: measured once per run, kept for resumes (the
    episodes themselves, with returns and frames, only when measured)."""
    path = run_dir / "base_eval.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("episodes") == [list(e) for e in episodes]:
            return [bool(x) for x in saved["success"]], []
    recorded = evaluate(robots, state, episodes, record)
    results = [e.success for e in recorded]
    path.write_text(json.dumps({"episodes": episodes, "success": results}))
    return results, recorded


def result_table(summary: dict[str, Any]) -> Table:
    t = Table(title=f"{summary['task']}: success on {summary['eval_episodes']} held-out episodes "
                    f"per task (seeds {summary['eval_seeds'][0]}–{summary['eval_seeds'][1]})")
    for col in ("policy", "success", "env steps", "policy version"):
        t.add_column(col)
    base = "base (checkpoint)" if (summary.get("pretrain") or {}).get("checkpoint") else "base (BC)"
    t.add_row(base, f"{summary['success_before']:.0%}", "0", "0")
    t.add_row("post-trained", f"{summary['success_after']:.0%}", f"{summary['env_steps']:,}",
              str(summary["policy_version"]))
    if len(summary["tasks"]) > 1:
        for task in summary["tasks"]:
            t.add_row(f"  {task}", f"{summary['per_task_before'][task]:.0%} → "
                                   f"{summary['per_task_after'][task]:.0%}", "", "")
    return t
