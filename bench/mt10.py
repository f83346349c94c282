"""`fleet bench mt10`: post-train the shared multi-task base and measure success before/after.

value = mean held-out success after post-training (%), baseline = the BC base's mean success on
the same episodes, measured in the same run (%), ratio = value / baseline. The full version is
the headline run (`experiment=mt10`: MT10, 1M env steps); `--quick` post-trains four MT10
tasks with a small budget (`experiment=mt10_quick`), under about a minute of training; two of
them (reach-v3, pick-place-v3) are tasks the one-demo base fails, so the per-task lines show
whether post-training moves a task the base cannot do, not only the ones it half-knows.
`failed_by_base` lists the tasks whose base success was at most 10%.
"""

from __future__ import annotations

import sys
import tempfile

from rich.console import Console

from bench.common import result
from fleet.config import load_config
from fleet.run.train import train


def run(quick: bool) -> dict[str, object]:
    experiment = "mt10_quick" if quick else "mt10"
    with tempfile.TemporaryDirectory(prefix="fleet-mt10-") as tmp:
        cfg = load_config([f"experiment={experiment}", f"run.dir={tmp}", "logger.wandb=disabled",
                           "logger.live=false"])
        summary = train(cfg, Console(file=sys.stderr))
    return result("mt10", "mean held-out success", 100 * summary["success_after"], "%",
                  100 * summary["success_before"], experiment=experiment,
                  tasks=summary["tasks"], eval_episodes_per_task=summary["eval_episodes"],
                  env_steps=summary["env_steps"], train_s=round(summary["train_s"], 1),
                  policy_version=summary["policy_version"],
                  per_task_before=summary["per_task_before"],
                  per_task_after=summary["per_task_after"],
                  failed_by_base=[t for t, v in summary["per_task_before"].items() if v <= 0.1])
