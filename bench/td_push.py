"""`fleet bench td_push [--quick]`: chunked TD from the push-v3 base, evaluated while it trains.

value = the lowest held-out success (%) at any evaluation after training starts, within the
first 100k env steps (`--quick`: the whole 50k-step run); baseline = the base's success on the
same 50 held-out episodes (seeds 900000+), measured in the same run; `dip` = value − baseline
(the issue's goal: never below −10); `final` and `best` close the curve, `steps_to_90` is the
first evaluation at 90% or more. The full run is 200k env steps with an evaluation every 10k.
`summary.json` is rewritten after every evaluation (`finished` false until the end), so a run
stopped early keeps the figures it measured; `env_steps` is that of the last evaluation.

One robot, the real buffer and learner in one process (`fleet.run.serial`), one torch thread.
Settings (`OVERRIDES`): `algorithm=td` with its defaults except a 2×128 critic (the 2×256 of RLPD
costs ~80 ms a gradient step on a loaded core here, 2×128 ~18 ms), and a tanh-bounded policy
(`policy.bound=tanh`, so the BC base is fitted with the bound too: its own cache entry).

A longer or different run, its metrics.jsonl and summary.json kept under OUT:

    python -m bench.td_push --steps 200000 --every 10000 --seed 1 --out runs/td-s1 \
        algorithm.td.bc=base
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.evaluation import held_out
from actors.operator import SimulatedOperator
from actors.robots import make_robot
from actors.worker import WorkerConfig
from fleet.config import load_config
from fleet.run.evaluate import held_out_evaluator
from fleet.run.pretrain import cache_key, policy_config, pretrained_base
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig

OVERRIDES = ("algorithm=td", "policy.bound=tanh", "algorithm.td.hidden=128",
             "logger.wandb=disabled")
NO_DIP_WITHIN = 100_000  # env steps: the window for "no dip"


def td_push(steps: int, every: int, seed: int, out: Path,
            overrides: Sequence[str] = (), log: Any = print) -> dict[str, Any]:
    """Train TD from the push-v3 base for `steps` env steps, evaluating every `every`; writes
    `out/metrics.jsonl` (one line per evaluation) and `out/summary.json`; returns the summary."""
    torch.set_num_threads(1)
    cfg = load_config([*OVERRIDES, f"run.seed={seed}", *overrides])
    base, info = pretrained_base(cfg, log=log)
    pcfg = policy_config(cfg)
    learner = LearnerConfig(batch_calls=50, critic_warmup=0, device="cpu",
                            checkpoint_every_s=1e9)  # about one update per 200-step episode
    parts = LearnerParts(pcfg, base.policy_state(), cfg.algorithm, cfg.reward, learner,
                         out / "checkpoints", seed=seed,
                         demos=Path(cfg.pretrain.cache_dir) / f"demos-{cache_key(cfg)}")
    robot = make_robot(cfg.robot, "robot-0")
    operator = (SimulatedOperator(cfg.operator, robot.expert_action)  # operator.simulated=true:
                if cfg.operator.simulated else None)  # its take-overs feed TD's demo replay
    run = SerialRun(robot, parts, WorkerConfig(cfg.policy.horizon, cfg.fleet.calls_per_chunk,
                                               seed=seed * 1000 + 1), out, operator=operator)
    episodes = held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed)
    evaluator = held_out_evaluator(cfg, episodes)
    curve: list[tuple[int, float]] = []
    t0 = time.monotonic()
    lines = (out / "metrics.jsonl").open("a")

    def evaluate(at: int) -> None:
        success = float(np.mean(evaluator.evaluate(run.learner.policy.policy_state())))
        curve.append((at, success))
        last = {f"learner/{k}": v for k, v in (run.metrics[-1] if run.metrics else {}).items()
                if isinstance(v, int | float)}
        lines.write(json.dumps({"step": at, "time": time.time(), "eval/success": success,
                                "wall_s": time.monotonic() - t0, **last}) + "\n")
        lines.flush()
        log(f"td_push seed {seed}: {at:>7,} env steps  held-out success {success:.0%}  "
            f"({time.monotonic() - t0:.0f} s)")
        write_summary(finished=False)  # a run stopped early keeps what it measured

    def write_summary(finished: bool) -> dict[str, Any]:
        summary = summarise(curve, steps)
        summary.update(
            command=" ".join(["python -m bench.td_push", f"--steps {steps}", f"--every {every}",
                              f"--seed {seed}", *overrides]),
            finished=finished, task=cfg.robot.task, seed=seed,
            overrides=[*OVERRIDES, *overrides], eval_episodes=cfg.eval.episodes,
            eval_seeds=[cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes - 1],
            env_steps=curve[-1][0], wall_s=round(time.monotonic() - t0, 1),
            gradient_steps=run.learner.algorithm.gradient_steps,  # type: ignore[attr-defined]
            td=dataclasses.asdict(cfg.algorithm.td), pretrain=info,
            learner_last=run.metrics[-1] if run.metrics else {},
            metric="success", reward=cfg.reward.name, policy_kind=cfg.policy.kind,
            operator=dataclasses.asdict(cfg.operator) if operator else None,
            operator_steps=operator.taken if operator else 0,
            operator_takeovers=operator.takeovers if operator else 0)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    try:
        evaluate(0)  # the base
        run.train(steps, every, evaluate)
        if curve[-1][0] < run.worker.stats.env_steps:
            evaluate(run.worker.stats.env_steps)
        return write_summary(finished=True)
    finally:
        lines.close()
        evaluator.close()
        run.close()


def summarise(curve: list[tuple[int, float]], steps: int) -> dict[str, Any]:
    """The curve's figures: base, lowest after training starts within the no-dip window,
    dip, final, best, and the first evaluation at 90% or more."""
    base = curve[0][1]
    window = [s for at, s in curve[1:] if at <= min(steps, NO_DIP_WITHIN)] or [base]
    reached = [at for at, s in curve[1:] if s >= 0.9]
    return {"base_success": base, "lowest": min(window), "dip": min(window) - base,
            "final": curve[-1][1], "best": max(s for _, s in curve),
            "steps_to_90": reached[0] if reached else None,
            "curve": [[at, s] for at, s in curve]}


def run(quick: bool) -> dict[str, object]:
    """The bench; its metrics.jsonl and summary.json stay in runs/bench-td_push-<time>/."""
    steps, every = (50_000, 10_000) if quick else (200_000, 10_000)
    out = Path("runs") / f"bench-td_push-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    s = td_push(steps, every, 0, out, log=lambda m: print(m, file=sys.stderr))
    return {"bench": "td_push", "metric": "lowest held-out success while training",
            "value": round(100 * s["lowest"], 1), "unit": "%",
            "baseline": round(100 * s["base_success"], 1),
            "ratio": round(s["lowest"] / s["base_success"], 3) if s["base_success"] else None,
            "dip": round(100 * s["dip"], 1), "final": round(100 * s["final"], 1),
            "best": round(100 * s["best"], 1), "steps_to_90": s["steps_to_90"],
            "env_steps": s["env_steps"], "gradient_steps": s["gradient_steps"],
            "wall_s": s["wall_s"], "curve": [[at, round(100 * v)] for at, v in s["curve"]],
            "eval_episodes": s["eval_episodes"], "run_dir": str(out),
            "command": "fleet bench td_push" + (" --quick" if quick else "")}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. algorithm.td.bc=base")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = td_push(args.steps, args.every, args.seed, args.out, args.overrides)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("td", "learner_last",
                                                                     "pretrain")}))


if __name__ == "__main__":
    main()
