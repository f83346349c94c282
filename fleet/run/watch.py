"""Watching a running fleet: the driver's loop between starting the actors and the final
evaluation (`fleet.run.train`).

Example:

    train_s, robot_stats, last = post_train(cfg, console, robots, learner, metrics,
                                            during=DuringTraining(cfg, episodes), newest=newest)

`post_train` waits on one learner update at a time; each update and at least every second it
reads every robot's stats into a fleet snapshot (`fleet_snapshot`: the live view, the console's
learning curve, `fleet/*` metrics, with per-robot and per-task curves beside), starts a held-out
evaluation of the newest weights every `eval.every_steps` env steps and logs those finished
(`log_evaluations`), and stops at the step or time budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console

from fleet.config import Config
from fleet.run.evaluate import DuringTraining
from fleet.run.metrics import MetricsLogger
from fleet.run.view import LiveView, Throughput


def post_train(cfg: Config, console: Console, robots: list[Any], learner: Any,
               metrics: MetricsLogger, steps_done: int = 0,
               watch: Callable[[dict[str, Any]], None] | None = None,
               during: DuringTraining | None = None,
               newest: Callable[[], tuple[int, dict[str, np.ndarray]]] | None = None,
               ) -> tuple[float, list[dict[str, Any]], dict[str, float]]:
    """Run robots and learner until the step budget (counting `steps_done` from earlier
    sessions) or the time budget; returns (seconds, robot stats, last learner metrics).
    `watch` sees each fleet snapshot (the console's learning curve); `during` evaluates
    `newest()` weights every `eval.every_steps` env steps, logged as `eval/*`."""
    import ray

    t0 = time.monotonic()
    ray.get([r.start.remote() for r in robots])
    rate, last, snapshot_at = Throughput(), dict[str, float](), 0.0
    pending = learner.step.remote()
    with LiveView(console, cfg.logger.live, cfg.logger.every_s) as view:
        while True:
            ready, _ = ray.wait([pending], timeout=0.5)
            if ready:
                last = ray.get(pending)
                pending = learner.step.remote()
            if ready or time.monotonic() - snapshot_at > 1.0:
                stats = ray.get([r.stats.remote() for r in robots])
                errors = [s["error"] for s in stats if s["error"]]
                if errors:
                    raise RuntimeError(f"a robot failed: {errors[0]}")
                steps = steps_done + int(sum(s["env_steps"] for s in stats))
                snap = fleet_snapshot(cfg, stats, last, steps, rate.update(steps), t0)
                view.show(snap)
                if watch is not None:
                    watch(snap)
                if ready:
                    metrics.log({**{f"learner/{k}": v for k, v in last.items()},
                                 **{f"fleet/{k}": v for k, v in snap.items()},
                                 **robot_and_task_metrics(stats)}, step=steps)
                snapshot_at = time.monotonic()
                if during is not None and newest is not None:
                    during.maybe_start(steps, newest)
                    log_evaluations(during, metrics, console, steps)
                if steps >= cfg.train.env_steps or time.monotonic() - t0 > cfg.train.max_wall_s:
                    break
    if during is not None:
        during.close()
        log_evaluations(during, metrics, console, steps)
    robot_stats = ray.get([r.stop.remote() for r in robots])
    ray.get(learner.interrupt.remote())
    last = ray.get(pending) or last
    return time.monotonic() - t0, robot_stats, last


def log_evaluations(during: DuringTraining, metrics: MetricsLogger, console: Console,
                    steps: int) -> None:
    """Evaluations finished since the last call: to metrics.jsonl / wandb (at the current
    step, as wandb wants steps in order; `eval/env_steps` says when the weights were taken)
    and one console line each."""
    for result in during.finished():
        metrics.log_episodes("eval", result.pop("eval/episodes", []), step=steps)
        metrics.log(result, step=steps)
        console.print(f"held-out success {result['eval/success']:.0%} at "
                      f"{int(result['eval/env_steps']):,} env steps "
                      f"(policy_version {int(result['eval/policy_version'])})")


def fleet_snapshot(cfg: Config, stats: list[dict[str, Any]], last: dict[str, float], steps: int,
                   steps_per_s: float, t0: float) -> dict[str, Any]:
    rates = [s["success_rate"] for s in stats if not math.isnan(s["success_rate"])]
    returns = [s.get("episode_return", math.nan) for s in stats]
    returns = [r for r in returns if not math.isnan(r)]
    lengths = [s.get("episode_length", math.nan) for s in stats]
    lengths = [n for n in lengths if not math.isnan(n)]
    latency = [s["adopt_latency_s"] for s in stats if not math.isnan(s["adopt_latency_s"])]
    return {"run": cfg.run.name, "elapsed_s": time.monotonic() - t0, "env_steps": steps,
            "adopt_latency_s": float(np.median(latency)) if latency else float("nan"),
            "steps_per_s": steps_per_s,
            "success_rate": float(np.mean(rates)) if rates else float("nan"),
            "episode_return": float(np.mean(returns)) if returns else float("nan"),
            "episode_length": float(np.mean(lengths)) if lengths else float("nan"),
            "intervention_rate": (sum(s["intervened_steps"] for s in stats)
                                  / max(1, sum(s["env_steps"] for s in stats))),
            "policy_version": int(last.get("policy_version", 0)),
            "staleness_mean": float(last.get("staleness_mean", float("nan"))),
            "updates": int(last.get("updates", 0)), "robots": stats}


def robot_and_task_metrics(stats: list[dict[str, Any]]) -> dict[str, float]:
    """Per-robot and per-task curves for wandb: recent success, steps, interventions, staleness
    in policy versions behind the newest robot, missed control deadlines, robot faults."""
    out: dict[str, float] = {}
    newest = max((s["policy_version"] for s in stats), default=0)
    by_task: dict[str, list[float]] = {}
    for s in stats:
        r = f"robot/{s['robot_id']}"
        out.update({f"{r}/success_rate": s["success_rate"], f"{r}/env_steps": s["env_steps"],
                    f"{r}/episode_return": s.get("episode_return", math.nan),
                    f"{r}/intervened_steps": s["intervened_steps"],
                    f"{r}/versions_behind": newest - s["policy_version"],
                    f"{r}/missed_deadlines": s.get("missed_deadlines", 0),
                    f"{r}/faults": s.get("faults", 0)})
        for task, rate in s.get("success_by_task", {}).items():
            by_task.setdefault(task, []).append(rate)
    out.update({f"task/{t}/success_rate": float(np.mean(v)) for t, v in by_task.items()})
    return out
