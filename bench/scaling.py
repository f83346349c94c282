"""`fleet bench scaling`: env steps collected per hour by 1, 2, 4 and 8 robots paced at a fixed
control rate (as hardware is), each fleet post-training push-v3 for the same wall-clock time.

value = env steps/hour of the largest fleet; baseline = that many times the steps/hour of one
robot, measured in the same run; ratio = scaling efficiency (1.0 is linear, as SOP reports
near 1→4 robots). Each fleet's own line (steps/hour, efficiency, missed control deadlines,
held-out success before and after) is in `fleets`, and its run directory (with
`metrics.jsonl`, for success against wall-clock) under `runs/bench-scaling-<time>/`.
`--quick`: 1 and 4 robots, 15 s each.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.common import result
from fleet.config import load_config
from fleet.run.train import train

PACE_HZ = 80.0  # Meta-World's own control rate (frame_skip 5 at 2.5 ms)


def fleet_line(robots: int, summary: dict[str, Any]) -> dict[str, Any]:
    steps = summary["env_steps_this_session"]
    paced = sum(r["env_steps"] for r in summary["per_robot"])
    missed = sum(r.get("missed_deadlines", 0) for r in summary["per_robot"])
    return {"robots": robots, "env_steps": steps, "train_s": round(summary["train_s"], 1),
            "steps_per_hour": round(3600 * steps / summary["train_s"]),
            "missed_deadline_frac": round(missed / max(1, paced), 4),
            "success_before": summary["success_before"],
            "success_after": summary["success_after"], "run": summary["run"]}


def run(quick: bool, sizes: tuple[int, ...] | None = None, wall_s: float | None = None,
        ) -> dict[str, object]:
    sizes = sizes or ((1, 4) if quick else (1, 2, 4, 8))
    wall_s = wall_s or (15.0 if quick else 120.0)
    root = Path("runs") / f"bench-scaling-{time.strftime('%Y%m%d-%H%M%S')}"
    lines = []
    for n in sizes:
        cfg = load_config([f"run.dir={root}", f"run.name=robots-{n}", f"fleet.num_robots={n}",
                           f"fleet.pace_hz={PACE_HZ}", "fleet.robot_cpus=0.1",
                           f"train.max_wall_s={wall_s}", "train.env_steps=1000000000",
                           f"eval.episodes={5 if quick else 20}", "logger.wandb=disabled",
                           "logger.live=false"])
        lines.append(fleet_line(n, train(cfg, Console(file=sys.stderr))))
        one = lines[0]["steps_per_hour"]
        lines[-1]["efficiency"] = round(lines[-1]["steps_per_hour"] / (n * one), 3)
        print(json.dumps(lines[-1]), file=sys.stderr)
    (root / "scaling.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    biggest = lines[-1]
    return result("scaling", "env steps/hour", biggest["steps_per_hour"], "steps/h",
                  sizes[-1] * lines[0]["steps_per_hour"], pace_hz=PACE_HZ, wall_s=wall_s,
                  fleets=lines, runs=str(root))
