"""`fleet pretrain`: build (or load) the base and measure it on the held-out episodes;
`DuringTraining`, `fleet train`'s held-out evaluations while it trains (`eval.every_steps`);
`held_out_evaluator`, the one way both (and the benches) set a held-out evaluation up; and
`base_on_held_out`, the base on the held-out episodes (`fleet pretrain`, docs/measure_execution.py).

Example:

    success = pretrain_and_measure(load_config([]), Console())
    evaluator = held_out_evaluator(cfg, held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed))
    success = evaluator.evaluate(policy.policy_state())   # [bool], in the episodes' order
    evaluator.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rich.console import Console

from actors.evaluation import Episode, Evaluator, by_task, held_out, run_episodes
from actors.robots import make_robot
from actors.worker import WorkerConfig
from algorithms.factory import make_policy
from fleet.config import Config
from fleet.run.pretrain import policy_config, pretrained_base


def eval_execution(cfg: Config) -> dict[str, Any]:
    """`WorkerConfig` fields for how held-out episodes run their chunks (`eval.execution`)."""
    return {"execution": cfg.eval.execution, "replan_every": cfg.eval.replan_every,
            "ensemble_decay": cfg.eval.ensemble_decay}


def held_out_evaluator(cfg: Config, episodes: Sequence[Episode], name: str = "eval-0",
                       policy: Any = None) -> Evaluator:
    """`episodes` on a simulated robot of `cfg.robot` of its own (`name`), chunks run as
    `eval.execution` says, by `policy` (default: a new one of `policy_config(cfg)`), which
    each `evaluate(state)` loads the weights `state` into."""
    return Evaluator(make_robot(cfg.robot, name),
                     make_policy(policy_config(cfg)) if policy is None else policy, episodes,
                     WorkerConfig(cfg.policy.horizon, **eval_execution(cfg)))


def base_on_held_out(cfg: Config, log: Callable[..., Any],
                     ) -> tuple[list[Episode], list[bool], dict[str, Any]]:
    """The pretrained base (`fleet pretrain`'s, built or loaded from its cache) on the held-out
    episodes, chunks run as `eval.execution` says: (episodes, success flags, the base's info)."""
    policy, info = pretrained_base(cfg, log=log)
    episodes = held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed)
    evaluator = held_out_evaluator(cfg, episodes, policy=policy)
    return episodes, run_episodes(evaluator.worker, evaluator.robot, episodes), info


def pretrain_and_measure(cfg: Config, console: Console) -> float:
    episodes, results, info = base_on_held_out(cfg, console.print)
    per_task = by_task(episodes, results)
    if len(per_task) > 1:
        for task, rate in per_task.items():
            console.print(f"  {task:28s} {rate:.0%}")
    success = float(np.mean(results))
    console.print(f"base policy {info['path']} ({'cached' if info['cached'] else 'new'}, "
                  f"{info['demos']} demos): {success:.0%} success on {cfg.eval.episodes} held-out "
                  f"episodes per task of {cfg.robot.task}")
    return success


class DuringTraining:
    """`eval.every_steps`: the newest weights on the held-out episodes every N env steps, in a
    thread of the driver with a simulated robot of its own, so robots and learner go on.

        during = DuringTraining(cfg, episodes)
        during.maybe_start(env_steps, lambda: weights.newest() or (0, base))  # cheap when not due
        for result in during.finished():                  # numbers, and the episodes
            metrics.log_episodes("eval", result.pop("eval/episodes"), step=env_steps)
            metrics.log(result, step=env_steps)
    """

    def __init__(self, cfg: Config, episodes: list[Episode]) -> None:
        self.cfg, self.episodes = cfg, episodes
        self.every, self.next_at = cfg.eval.every_steps, cfg.eval.every_steps
        self._evaluator: Evaluator | None = None
        self._thread: threading.Thread | None = None
        self._done: list[dict[str, Any]] = []
        self.curve: list[list[float]] = []  # [env steps, policy_version, success]
        self.by_task: dict[str, list[list[float]]] = {}  # task -> [[env steps, success]]
        self._lock = threading.Lock()

    def maybe_start(self, env_steps: int,
                    newest: Callable[[], tuple[int, dict[str, np.ndarray]]]) -> bool:
        """Start an evaluation of `newest()` if one is due and none is running."""
        if not self.every or env_steps < self.next_at or self.busy:
            return False
        self.next_at = (env_steps // self.every + 1) * self.every
        version, state = newest()
        self._thread = threading.Thread(target=self._run, args=(env_steps, version, state),
                                        name="eval-during-training", daemon=True)
        self._thread.start()
        return True

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, env_steps: int, version: int, state: dict[str, np.ndarray]) -> None:
        if self._evaluator is None:
            self._evaluator = held_out_evaluator(self.cfg, self.episodes, "eval-during-training")
        episodes = self._evaluator.evaluate_episodes(state, record=self.cfg.logger.videos)
        success = [e.success for e in episodes]
        result: dict[str, Any] = {
            "eval/success": float(np.mean(success)), "eval/env_steps": float(env_steps),
            "eval/policy_version": float(version),
            **{f"eval/task/{t}": r for t, r in by_task(self.episodes, success).items()},
            "eval/episodes": episodes}  # returns, lengths, frames (`log_episodes`)
        with self._lock:
            self._done.append(result)
            self.curve.append([env_steps, version, result["eval/success"]])
            for task, rate in by_task(self.episodes, success).items():
                self.by_task.setdefault(task, []).append([env_steps, rate])

    def finished(self) -> list[dict[str, Any]]:
        """Evaluations completed since the last call: numbers, and the `EvalEpisode`s under
        `eval/episodes`."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Wait for a running evaluation, then free the robot."""
        if self._thread is not None:
            self._thread.join()
        if self._evaluator is not None:
            self._evaluator.close()
