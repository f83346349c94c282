"""Re-measure docs/results.md's chunk-execution table and write its raw file.

    PYTHONPATH=. python docs/measure_execution.py [push|mt10 ...]

For each base (push-v3: 20 demos σ 0.3, 50 held-out episodes; MT10: 1 demo per task σ 0.5, 20
per task) it builds or loads the cached BC base once (`fleet pretrain`'s cache, `runs/cache/`)
and runs the same held-out episodes with each way of executing chunks (`eval.execution`),
exactly as `fleet pretrain experiment=E eval.execution=MODE` does, then writes every success
flag to `docs/results/execution-BASE.json` with the load and commit it ran at.

`sweep` re-measures the MT10 base-settings sweep (demos per task x demo noise σ, open loop, 20
held-out episodes per task) into `docs/results/mt10-base-sweep.json`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from actors.evaluation import by_task
from bench.record import commit, loadavg
from fleet.config import load_config
from fleet.run.evaluate import base_on_held_out

MODES = {"open_loop": [], "receding_2": ["eval.execution=receding", "eval.replan_every=2"],
         "ensemble_0.01": ["eval.execution=ensemble", "eval.ensemble_decay=0.01"],
         "ensemble_0.5": ["eval.execution=ensemble", "eval.ensemble_decay=0.5"]}
BASES = {"push": (["experiment=push", "eval.episodes=50"], list(MODES)),
         "mt10": (["experiment=mt10", "eval.episodes=20"], ["open_loop", "receding_2",
                                                              "ensemble_0.01"])}


def _quiet(*args: object) -> None:
    pass


SWEEP = [(1, 0.3), (2, 0.3), (3, 0.3), (2, 0.5), (3, 0.5), (1, 0.5)]


def sweep() -> dict[str, object]:
    at, t0 = commit(), time.monotonic()
    out: dict[str, object] = {"base": "mt10 sweep", "commit": at, "loadavg_before": loadavg(),
                              "settings": []}
    for demos, noise in SWEEP:
        overrides = ["experiment=mt10", "eval.episodes=20", f"pretrain.demos={demos}",
                     f"pretrain.noise={noise}"]
        episodes, results, _ = base_on_held_out(load_config(overrides), log=_quiet)
        out["settings"].append({  # type: ignore[attr-defined]
            "demos": demos, "noise": noise, "command": "fleet pretrain " + " ".join(overrides),
            "success": float(np.mean(results)), "episodes": len(results),
            "per_task": by_task(episodes, results), "per_episode": results})
        print("sweep", demos, noise, f"{np.mean(results):.1%}", file=sys.stderr)
        path = Path(__file__).resolve().parent / "results" / "mt10-base-sweep.json"
        path.write_text(json.dumps({**out, "loadavg_after": loadavg(),
                                    "run_s": round(time.monotonic() - t0, 1)}, indent=1) + "\n")
    return out


def measure(base: str) -> dict[str, object]:
    overrides, modes = BASES[base]
    at, t0 = commit(), time.monotonic()
    out: dict[str, object] = {"base": base, "overrides": overrides, "commit": at,
                              "loadavg_before": loadavg(), "modes": {}}
    for mode in modes:
        episodes, results, info = base_on_held_out(load_config([*overrides, *MODES[mode]]),
                                                   log=_quiet)
        out["modes"][mode] = {  # type: ignore[index]
            "command": "fleet pretrain " + " ".join([*overrides, *MODES[mode]]),
            "success": float(np.mean(results)), "episodes": len(results),
            "per_task": by_task(episodes, results), "per_episode": results,
            "base_demos": info["demos"]}
        print(base, mode, f"{np.mean(results):.1%}", file=sys.stderr)
    out["loadavg_after"], out["run_s"] = loadavg(), round(time.monotonic() - t0, 1)
    out["date"] = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["sweep"]:
        sweep()
        sys.exit(0)
    for name in sys.argv[1:] or list(BASES):
        path = Path(__file__).resolve().parent / "results" / f"execution-{name}.json"
        path.write_text(json.dumps(measure(name), indent=1) + "\n")
        print(path)
