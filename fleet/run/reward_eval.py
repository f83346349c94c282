"""`fleet reward-eval reward=NAME buffer=PATH [out=FILE] [threshold=X]`: how well a reward model
detects success and tracks progress on a buffer's labelled episodes.

Example:

    fleet reward-eval reward=sparse_success buffer=runs/x/buffer out=reward_eval.json

Episodes whose last chunk carries an `episode_end` are labelled: success if its outcome is
"success" (env or human), else not. Per episode the model scores every chunk; then
- roc_auc: success detection, the episode's score being its largest per-step reward (or the
  largest `success_probability(chunk)` [T] for a model that has one: a progress reward's steps
  are deltas, not detections);
- spearman_progress: on successful episodes, Spearman of predicted progress (cumulative reward)
  against −(steps left to success), averaged over episodes (1 = perfect progress tracking);
- false_success_rate: failed episodes whose score exceeds `threshold`;
- threshold_chosen: the threshold chosen on held-out calibration episodes (every other scored
  success and failure: the one with the largest TPR - FPR there), and false_success_rate_chosen /
  miss_rate_chosen at it on the other half, which chose nothing;
- latency_ms_per_chunk: mean wall time of one `score` call;
- return_auc: ROC-AUC of the episode's summed reward (successes vs failures), and
  return_success / return_failed, their means: what a policy trained on the reward is pushed
  toward (a reward whose failures return as much as its successes teaches nothing, or worse).

`reward=progress,world_model,classifier` evaluates several models on the same episodes (each
learned one fitted on the same share) and writes {"models": [report, ...]}. `classifier` is
the HIL-SERL-style success classifier (`rewards.classifier`) on `obs[key]` images
(`key=pixels`, the default) or on the state alone (`key=state`).

A learned reward that is not fitted yet (`world_model`, `progress`) is first fitted on a share
of the episodes (`fit=0.5`, `fit_steps=N` times `rounds=R`) and scored on the rest only.
`episodes=N` keeps the buffer's last N finished episodes (default: all). `demos=DIR` (a demo
buffer written by `fleet pretrain`, e.g. runs/cache/demos-KEY) adds those episodes to every fit,
as a `RewardTrainer` does; they are never scored. `save=FILE` writes the fitted model (one
learned model with a `save`, `progress`) for a run to start from (`reward.params.init=FILE`):

    fleet reward-eval reward=progress buffer=runs/eps demos=runs/cache/demos-KEY fit_steps=100 \
        rounds=4 save=runs/progress.npz
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from buffers.codec import decode_chunk
from buffers.demos import read_demos
from buffers.records import RolloutChunk
from rewards.base import RewardConfig, RewardModel, make_reward
from rewards.episodes import whole_episodes


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    r = _ranks(scores.astype(np.float64))
    return float((r[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a.astype(np.float64)), _ranks(b.astype(np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def episodes_of(path: Path) -> list[list[RolloutChunk]]:
    """The buffer's finished episodes, each its chunks in order."""
    from buffers.shards import ShardedBuffer, open_buffer

    buf = open_buffer(path, read_only=True)
    try:
        shards = buf.shards if isinstance(buf, ShardedBuffer) else [buf]
        groups: dict[tuple[str, str], list[RolloutChunk]] = collections.OrderedDict()
        for shard in shards:
            records, _ = shard.read(0, len(shard))
            for record in records:
                c = decode_chunk(record)
                groups.setdefault((c.robot_id, c.episode_id), []).append(c)
    finally:
        buf.close()
    out = []
    for chunks in groups.values():
        chunks.sort(key=lambda c: c.chunk_seq)
        if chunks[-1].episode_end is not None:
            out.append(chunks)
    return out


def evaluate(model: RewardModel, episodes: Sequence[list[RolloutChunk]],
             threshold: float = 0.5) -> dict[str, Any]:
    scores, labels, rhos, latencies, returns = [], [], [], [], []
    for chunks in episodes:
        per_step = []
        for c in chunks:
            t0 = time.perf_counter()
            per_step.append(np.asarray(model.score(c), np.float64))
            latencies.append(time.perf_counter() - t0)
        r = np.concatenate(per_step)
        returns.append(float(r.sum()))
        end = chunks[-1].episode_end
        success = end is not None and end.outcome == "success"
        detect = getattr(model, "success_probability", None)  # a model's own detector
        s = np.concatenate([detect(c) for c in chunks]) if detect is not None else r
        scores.append(float(s.max()) if len(s) else 0.0)
        labels.append(success)
        if success and len(r) > 2:
            env_hits = np.flatnonzero(np.concatenate([c.success for c in chunks]))
            t_success = int(env_hits[0]) if env_hits.size else len(r) - 1
            t = np.arange(t_success + 1)
            rho = spearman(np.cumsum(r)[: t_success + 1], -(t_success - t))
            if np.isfinite(rho):
                rhos.append(rho)
    s, y, ret = np.array(scores), np.array(labels, bool), np.array(returns)
    failed = s[~y]
    calibrated = calibrate(s, y)
    return {
        "reward": getattr(model, "name", "?"), "version": getattr(model, "version", "?"),
        "episodes": len(y), "successes": int(y.sum()),
        "roc_auc": roc_auc(s, y),
        "spearman_progress": float(np.mean(rhos)) if rhos else float("nan"),
        "false_success_rate": float((failed > threshold).mean()) if failed.size else float("nan"),
        **calibrated,
        "latency_ms_per_chunk": 1e3 * float(np.mean(latencies)) if latencies else float("nan"),
        "return_auc": roc_auc(ret, y),
        "return_success": float(ret[y].mean()) if y.any() else float("nan"),
        "return_failed": float(ret[~y].mean()) if (~y).any() else float("nan"),
        "faults": int(getattr(model, "n_faults", 0)),
    }


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (a midpoint between sorted scores) with the largest TPR - FPR on these
    episodes; the highest one among ties, so fewer false successes."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    u = np.unique(scores)
    cuts = np.concatenate([[u[0] - 1.0], (u[1:] + u[:-1]) / 2, [u[-1] + 1.0]])
    j = [(scores[labels] > c).mean() - (scores[~labels] > c).mean() for c in cuts]
    best = np.flatnonzero(np.isclose(j, max(j)))[-1]
    return float(cuts[best])


def calibrate(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Choose the threshold on every other success and every other failure (the 1st, 3rd, ...
    of each) and measure it on the rest."""
    cal = np.sort(np.concatenate([np.flatnonzero(labels)[::2], np.flatnonzero(~labels)[::2]]))
    test = np.setdiff1d(np.arange(len(scores)), cal)
    th = choose_threshold(scores[cal], labels[cal])
    s, y = scores[test], labels[test]
    nan, known = float("nan"), bool(np.isfinite(th))
    return {"threshold_chosen": th, "calibration_episodes": len(cal),
            "false_success_rate_chosen": float((s[~y] > th).mean()) if known and (~y).any()
            else nan,
            "miss_rate_chosen": float((s[y] <= th).mean()) if known and y.any() else nan}


class EpisodeClassifier:
    """`rewards.classifier.SuccessClassifier` as a reward-eval model: fitted on episodes,
    scoring p(success) of each step's resulting observation."""

    name = "classifier"

    def __init__(self, key: str = "pixels", steps: int = 200) -> None:
        self.key, self.steps = key, steps
        self.clf: Any = None
        self.version = "0"

    @property
    def ready(self) -> bool:
        return self.clf is not None

    def fit(self, episodes: Sequence[list[RolloutChunk]], steps: int | None = None) -> None:
        from rewards.classifier import SuccessClassifier

        chunks = [c for ep in episodes for c in ep]
        if self.clf is None:
            image = self.key != "state"
            self.clf = SuccessClassifier(chunks[0].obs["state"].shape[1], camera=image,
                                         image_key=self.key if image else "camera")
        self.clf.fit(chunks, steps or self.steps)
        self.version = self.clf.version

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        assert self.clf is not None, "score() before fit()"
        return self.clf.score(chunk)


def fit_first(model: Any, episodes: Sequence[list[RolloutChunk]], share: float,
              kv: dict[str, str], demos: Sequence[list[RolloutChunk]] = ()) -> int:
    """Fit an unfitted learned reward on the demos and the first `share` of the episodes (every
    other episode is held out); returns how many episodes it used (0 for other models)."""
    n = max(1, min(len(episodes) - 1, int(share * len(episodes))))
    if getattr(model, "ready", True) or not hasattr(model, "fit"):
        return 0
    steps = int(kv["fit_steps"]) if "fit_steps" in kv else None
    for _ in range(int(kv.get("rounds", 5))):
        model.fit([*demos, *episodes[:n]], steps)
    return n


def _reward_config(name: str, overrides: Sequence[str] = ()) -> RewardConfig:
    from fleet.config import ConfigError, load_config

    try:
        return load_config([f"reward={name}", *overrides]).reward
    except ConfigError:
        return RewardConfig(name)  # a plug-in with no config file: default params


def main(args: Sequence[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    kv = dict(a.split("=", 1) for a in args)
    if "reward" not in kv or "buffer" not in kv:
        raise SystemExit("usage: fleet reward-eval reward=NAME buffer=PATH [out=FILE] "
                         "[threshold=X] [episodes=N] [fit=0.5 fit_steps=N rounds=5] "
                         "[demos=DIR] [save=FILE] [reward.params.KEY=VALUE ...]")
    overrides = [f"{k}={v}" for k, v in kv.items() if k.startswith("reward.")]
    names = kv["reward"].split(",")
    episodes = episodes_of(Path(kv["buffer"]))[-int(kv.get("episodes", 0)):]  # 0: all
    share = float(kv.get("fit", 0.5))
    demos = whole_episodes(read_demos(Path(kv["demos"]))) if "demos" in kv else []
    if "demos" in kv and not demos:
        raise SystemExit(f"demos={kv['demos']}: no demo episodes there")
    learned = 0
    reports = []
    for name in names:
        model: Any = (EpisodeClassifier(kv.get("key", "pixels")) if name == "classifier"
                      else make_reward(_reward_config(name, overrides)))
        fitted = fit_first(model, episodes, share, kv, demos)
        learned = max(learned, fitted)
        reports.append((model, fitted))
    # every model is scored on the same episodes: those no learned model was fitted on
    held_out = episodes[learned:]
    results = []
    for model, fitted in reports:
        report = evaluate(model, held_out, float(kv.get("threshold", 0.5)))
        report["fit_episodes"] = fitted
        report["fit_demos"] = len(demos) if fitted else 0
        results.append(report)
    if "save" in kv:
        savable = [m for m, fitted in reports if fitted and hasattr(m, "save")]
        if len(savable) != 1:
            raise SystemExit(f"save={kv['save']}: needs one fitted model with a save() "
                             f"(progress), not {len(savable)}")
        savable[0].save(kv["save"])
        print(f"saved {savable[0].name} version {savable[0].version} -> {kv['save']}")
    table = Table(title=f"reward-eval on {kv['buffer']} ({len(held_out)} held-out episodes)")
    table.add_column("metric")
    for report in results:
        table.add_column(str(report["reward"]), justify="right")
    for k in results[0]:
        table.add_row(k, *(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])
                           for r in results))
    Console().print(table)
    out = Path(kv.get("out", "reward_eval.json"))
    doc: Any = results[0] if len(results) == 1 else {"models": results,
                                                     "held_out_episodes": len(held_out)}
    out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc))
    return 0
