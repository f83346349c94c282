"""Draw the results page's figures from run directories (needs the `bench` extra: matplotlib).

    python docs/plot_results.py --runs runs/mt10-ppo-s0 runs/mt10-ppo-s1 ... --out docs/results

Each run directory holds `summary.json` (held-out success before/after, per task) and
`metrics.jsonl` (one line per learner update: env steps, wall-clock, training success). Runs are
grouped by algorithm (and `+operator` when the simulated operator was on). Writes
`success_vs_steps.png`, `success_vs_time.png` and `per_task.png`; with `--scaling FILE` (the
JSON lines of `docs/results/scaling.jsonl`) also `scaling.png`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def load_run(path: Path) -> dict[str, Any]:
    summary = json.loads((path / "summary.json").read_text())
    config = json.loads((path / "config.json").read_text())
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x]
    label = config["algorithm"]["name"]
    if config.get("operator", {}).get("simulated"):
        label += "+operator"
    return {"label": label, "summary": summary, "lines": lines}


def _curve(run: dict[str, Any], x_key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(line[x_key], line["fleet/success_rate"]) for line in run["lines"]
           if x_key in line and np.isfinite(line.get("fleet/success_rate", np.nan))]
    xs, ys = (np.array(v, float) for v in zip(*pts, strict=True)) if pts else ([], [])
    return np.asarray(xs), np.asarray(ys)


def learning_curves(runs: list[dict[str, Any]], x_key: str, xlabel: str, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = dict(zip(sorted({r["label"] for r in runs}), plt.get_cmap("tab10").colors,
                      strict=False))
    for i, run in enumerate(runs):
        xs, ys = _curve(run, x_key)
        if x_key == "step":
            xs = xs / 1e6
        label = run["label"] if run["label"] not in [r["label"] for r in runs[:i]] else None
        ax.plot(xs, ys * 100, color=colors[run["label"]], alpha=0.8, label=label)
        s = run["summary"]
        end = xs[-1] if len(xs) else 0
        ax.scatter([0, end], [100 * s["success_before"], 100 * s["success_after"]],
                   color=colors[run["label"]], marker="D", zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("lines: training episodes (with exploration noise); ◆: held-out eval",
                 fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def per_task(runs: list[dict[str, Any]], out: Path) -> None:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_label[run["label"]].append(run["summary"])
    tasks = runs[0]["summary"]["tasks"]
    bars = {"base (BC)": [np.mean([s["per_task_before"][t] for r in by_label.values() for s in r])
                          for t in tasks]}
    for label, summaries in sorted(by_label.items()):
        bars[label] = [np.mean([s["per_task_after"][t] for s in summaries]) for t in tasks]
    fig, ax = plt.subplots(figsize=(9, 4.0))
    width = 0.8 / len(bars)
    for i, (label, values) in enumerate(bars.items()):
        ax.bar(np.arange(len(tasks)) + i * width, np.array(values) * 100, width, label=label)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, [t.removesuffix("-v3") for t in tasks],
                  rotation=30, ha="right")
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def scaling(path: Path, out: Path) -> None:
    rows = sorted((json.loads(x) for x in path.read_text().splitlines() if x),
                  key=lambda r: r["robots"])
    n = np.array([r["robots"] for r in rows], float)
    rate = np.array([r["steps_per_hour"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.plot(n, rate / 1e6, "o-", label="measured")
    ax.plot(n, n * rate[0] / 1e6, "--", color="gray", label="N × one robot")
    ax.set_xlabel("robots")
    ax.set_ylabel("env steps per hour (millions)")
    ax.set_xticks(n)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", nargs="*", type=Path, default=[])
    p.add_argument("--scaling", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(r) for r in args.runs]
    if runs:
        learning_curves(runs, "step", "env steps (millions)", args.out / "success_vs_steps.png")
        learning_curves(runs, "fleet/elapsed_s", "wall-clock (s)",
                        args.out / "success_vs_time.png")
        per_task(runs, args.out / "per_task.png")
    if args.scaling:
        scaling(args.scaling, args.out / "scaling.png")


if __name__ == "__main__":
    main()
