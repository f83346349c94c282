"""`fleet bench e2e_peers [--quick]`: `fleet train` PPO against RLlib's and SB3's on push-v3.

One run, one machine, one side after the other, each in its own process and given the same
wall-clock budget for training (its own sampling and updates; start-up is reported apart):

- **Fleet**: `fleet train` itself (`fleet.run.train.train`): 4 robot actors, the buffer and
  the learner on an embedded Ray, PPO's defaults (the console and wandb off).
- **SB3**: Stable-Baselines3 PPO, 4 envs in its own process (`DummyVecEnv`: on a shared 2-core
  machine, envs in subprocesses step in lock-step and got 0.07-0.31 of a core), one torch
  thread.
- **RLlib**: PPO on RLlib's new API stack, 2 env runners × 2 envs, the learner in the driver.

All three start from the same cached BC base and learn the same thing (`bench.peers.ChunkEnv`:
Fleet's own robot and reward, one action = one 4-step chunk) with Fleet's PPO settings where the
peer has them (`bench.peers.PPO`; what differs is listed in the line's `differs`). Each side
keeps its actor every `every` env steps (finer than any side's update: a snapshot after each
update); afterwards Fleet's evaluator runs every side's actor on the same held-out episodes
(seeds 900000+, mean actions) at equal env steps and at the end of each side's budget. Equal
env steps (`equal_steps`) is the fewest any side collected in its budget; each side is judged
on its newest snapshot at or before it (`snapshot_steps`), the weights it acted with then, so
no side is judged with more env steps than the slowest collected.

value = Fleet's env steps/s, baseline = the faster peer's, ratio = value / baseline; each side's
steps/s, success at `equal_steps` and at its end, the budget, load averages and versions ride
along. `--quick`: 60 s each, 20 episodes; else 300 s each, 50 episodes.

One side alone, as this bench runs it: `python -m bench.e2e_peers sb3 --budget 60 --out DIR`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers import tree_cpu

SIDES = ("fleet", "sb3", "rllib")
# What this bench changes from `fleet train`'s defaults: no console, no wandb, one held-out
# episode per robot before and after (the bench evaluates every side itself)
FLEET_OVERRIDES = ("logger.wandb=disabled", "logger.live=false", "console.enabled=false",
                   "eval.episodes=1", "train.env_steps=1000000000")
DIFFERS = {
    "sb3": "one Adam per side as Fleet (SB3's single rate schedule replaced); one global "
           "grad-norm clip over actor and critic (Fleet clips each); synchronous: collect, then "
           "update; target_kl checked per minibatch at 1.5x (Fleet per epoch)",
    "rllib": "no critic-only warm-up (Fleet and SB3: 5 updates); synchronous; RLlib's "
             "own advantage/value-target pipeline (GAE over chunks as well)",
    "fleet": "asynchronous: robots act with weights up to learner.max_staleness=2 versions old "
             "(decoupled PPO corrects it); the peers are on-policy",
}


def loadavg() -> str:
    """1, 5 and 15 minute load averages (bench.record's format; importing it would close a
    circle through fleet.cli)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def side_command(side: str, budget_s: float, every: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.e2e_peers", side, "--budget", str(budget_s),
            "--every", str(every), "--out", str(out)]


def run_fleet(out: Path, budget_s: float, every: int) -> None:
    """`fleet train` for `budget_s` of training, keeping the newest weights every `every` env
    steps (`Snapshots`, in place of held-out evaluations while the clock runs)."""
    from rich.console import Console

    from fleet.config import load_config
    from fleet.run.evaluate import DuringTraining
    from fleet.run.train import train

    t_start = time.monotonic()
    cfg = load_config([*FLEET_OVERRIDES, f"train.max_wall_s={budget_s}",
                       f"run.dir={out}", "run.name=fleet"])

    class Snapshots(DuringTraining):
        def __init__(self) -> None:
            super().__init__(cfg, [])
            self.every = self.next_at = every
            self.taken: list[int] = []
            self.newest: Any = None
            self.cpu: list[dict[str, float]] = [{}, {}]  # CPU seconds by process name, first
            # and last turn of the training loop

        def maybe_start(self, env_steps: int, newest: Any) -> bool:
            if self.newest is None:
                self.cpu[0] = tree_cpu()
            self.newest = newest
            if env_steps < self.next_at:
                return False
            self.next_at = (env_steps // every + 1) * every
            np.savez(out / f"fleet-{env_steps}.npz", **newest()[1])
            self.taken.append(env_steps)
            return True

        def close(self) -> None:  # the loop has ended: the weights the budget produced
            self.cpu[1] = tree_cpu()
            if self.newest is not None:
                np.savez(out / "fleet-final.npz", **self.newest()[1])

    snaps = Snapshots()
    summary = train(cfg, Console(file=io.StringIO()), during=snaps)
    final = int(summary["env_steps_this_session"])
    os.replace(out / "fleet-final.npz", out / f"fleet-{final}.npz")
    (out / "fleet.json").write_text(json.dumps({
        "env_steps": final, "train_s": summary["train_s"], "snapshots": [*snaps.taken, final],
        "cpu_s": sum(snaps.cpu[1].values()) - sum(snaps.cpu[0].values()),
        "cpu_by_process": {k: round(v - snaps.cpu[0].get(k, 0.0), 1)
                           for k, v in sorted(snaps.cpu[1].items())},
        "learner": learner_seconds(out / "fleet"),
        "updates": int(summary["learner_last"].get("updates", 0)),
        "policy_version": summary["policy_version"], "envs": cfg.fleet.num_robots,
        "startup_s": round(time.monotonic() - t_start - summary["train_s"], 1)}))


def learner_seconds(run_dir: Path) -> dict[str, float]:
    """Where the learner's time went over the run (its metrics.jsonl): waiting for a batch of
    fresh data (`wait_s`: collection is the limit) against reading it and updating (`update_s`)."""
    total = {"wait_s": 0.0, "update_s": 0.0, "dropped_stale": 0.0}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for k in total:
            total[k] += float(row.get(f"learner/{k}", 0.0))
    return {k: round(v, 1) for k, v in total.items()}


def snapshot_at(taken: list[int], mark: int) -> int:
    """The newest snapshot at or before `mark` env steps (the weights a side acted with when
    it had collected that many); the first one when none is."""
    return max((s for s in taken if s <= mark), default=min(taken))


def equal_mark(sides: dict[str, dict[str, Any]]) -> int:
    """Equal env steps: the fewest any side collected (each side's last snapshot is at its
    end, so the slowest side is judged at its final weights)."""
    return min(int(s["env_steps"]) for s in sides.values())


def summarize(sides: dict[str, dict[str, Any]], success: dict[str, dict[str, float]],
              base_success: float, mark: int, **extra: Any) -> dict[str, Any]:
    """The bench's line: value = Fleet's env steps/s, baseline = the faster peer's."""
    rate = {k: s["env_steps"] / s["train_s"] for k, s in sides.items()}
    per_cpu = {k: s["env_steps"] / s["cpu_s"] for k, s in sides.items() if s.get("cpu_s")}
    peer = max((k for k in rate if k != "fleet"), key=lambda k: rate[k])
    line: dict[str, Any] = {
        "bench": "e2e_peers", "metric": "env_steps_per_s", "value": round(rate["fleet"], 1),
        "unit": "env steps/s", "baseline": round(rate[peer], 1),
        "ratio": round(rate["fleet"] / rate[peer], 3) if rate[peer] else None,
        "baseline_is": peer, "equal_steps": mark, "base_success": base_success}
    if len(per_cpu) == len(sides):  # env steps per CPU second: what the other load changes less
        best = max(v for k, v in per_cpu.items() if k != "fleet")
        line["cpu_ratio"] = round(per_cpu["fleet"] / best, 3)
    for k, s in sides.items():
        line[k] = {"steps_per_s": round(rate[k], 1), "env_steps": int(s["env_steps"]),
                   "train_s": round(s["train_s"], 1),
                   "success_at_equal_steps": success[k]["equal"],
                   "snapshot_steps": success[k]["at"],
                   "success_at_end": success[k]["end"],
                   "steps_per_cpu_s": round(per_cpu[k], 1) if k in per_cpu else None,
                   **{f: s[f] for f in ("cpu_s", "envs", "updates", "startup_s", "learner",
                                        "vec_env", "cpu_by_process") if f in s}}
    line["success_not_worse"] = all(success["fleet"]["equal"] >= success[k]["equal"]
                                    for k in sides if k != "fleet")
    return {**line, **extra}


def evaluate(out: Path, sides: dict[str, dict[str, Any]], mark: int, episodes: int,
             base: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], float]:
    """Every side's actor at `mark` and at its end, and the base, on the same held-out
    episodes with Fleet's evaluator (mean actions, open-loop chunks)."""
    from actors.evaluation import held_out
    from fleet.config import load_config
    from fleet.run.evaluate import held_out_evaluator

    cfg = load_config(list(FLEET_OVERRIDES))
    evaluator = held_out_evaluator(cfg, held_out(cfg.robot, episodes, cfg.eval.seed))

    def rate(state: dict[str, np.ndarray]) -> float:
        return round(100 * float(np.mean(evaluator.evaluate(state))), 1)

    results = {}
    for name, side in sides.items():
        at = snapshot_at(side["snapshots"], mark)
        final = int(side["env_steps"])
        equal = rate(dict(np.load(out / f"{name}-{at}.npz")))
        end = equal if at == final else rate(dict(np.load(out / f"{name}-{final}.npz")))
        results[name] = {"equal": equal, "at": at, "end": end}
    base_rate = rate(base)
    evaluator.close()
    return results, base_rate


def versions() -> dict[str, str]:
    out = {}
    for dist in ("ray", "stable-baselines3", "torch", "metaworld", "gymnasium"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def run(quick: bool) -> dict[str, Any]:
    try:
        import ray.rllib  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError as e:
        raise SystemExit(f'e2e_peers needs RLlib and SB3 ({e}): pip install -e ".[bench]"') from e
    import torch

    from fleet.config import load_config
    from fleet.run.pretrain import pretrained_base

    budget_s, every, episodes = (60.0, 1_000, 20) if quick else (300.0, 2_000, 50)
    torch.set_num_threads(1)
    base_policy, _ = pretrained_base(load_config(list(FLEET_OVERRIDES)), log=lambda *a: None)
    base = base_policy.policy_state()
    load = {"before": loadavg()}
    with tempfile.TemporaryDirectory(prefix="e2e_peers-") as tmp:
        out = Path(tmp)
        np.savez(out / "base.npz", **base)  # type: ignore[arg-type]
        sides = {}
        order = SIDES[os.getpid() % 3:] + SIDES[:os.getpid() % 3]  # no side always first
        for side in order:
            t0 = time.monotonic()
            subprocess.run(side_command(side, budget_s, every, out), check=True,
                           stdout=subprocess.DEVNULL)
            sides[side] = json.loads((out / f"{side}.json").read_text())
            sides[side]["process_s"] = round(time.monotonic() - t0, 1)
            load[f"after_{side}"] = loadavg()
        mark = equal_mark(sides)
        success, base_success = evaluate(out, sides, mark, episodes, base)
        sides = {k: sides[k] for k in SIDES}
    load["after_eval"] = loadavg()
    return summarize(sides, success, base_success, mark, budget_s=budget_s,
                     eval_episodes=episodes, eval_seeds=[900_000, 900_000 + episodes - 1],
                     snapshot_every=every, loadavg=load, versions=versions(),
                     cpus=os.cpu_count(), differs=DIFFERS, order=list(order),
                     note="success in % of held-out episodes (mean actions); steps/s = env "
                          "steps / training seconds of each side's own loop; success at equal "
                          "steps: each side's newest snapshot at or before equal_steps (its "
                          "snapshot_steps), the fewest env steps any side collected")


def main() -> None:
    p = argparse.ArgumentParser(description="one side of fleet bench e2e_peers")
    p.add_argument("side", choices=SIDES)
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--every", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.side == "fleet":
        run_fleet(args.out, args.budget, args.every)
    elif args.side == "sb3":
        from bench.peers import run_sb3

        run_sb3(args.out / "base.npz", args.out, args.budget, args.every, subprocesses=False)
    else:
        from bench.rllib_peer import run_rllib

        run_rllib(args.out / "base.npz", args.out, args.budget, args.every)


if __name__ == "__main__":
    main()
