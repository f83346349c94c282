"""Held-out evaluation during training: `fleet train eval.every_steps=N` (`DuringTraining`) and
the evaluator the `td_push` bench uses."""

import json

import numpy as np

from actors.evaluation import held_out
from algorithms.factory import make_policy
from bench.td_push import summarise
from fleet.config import load_config
from fleet.run.evaluate import DuringTraining
from fleet.run.pretrain import policy_config


def test_evaluations_start_when_due_one_at_a_time_with_the_weights_given():
    cfg = load_config(["robot=stub", "eval.every_steps=100", "eval.episodes=3",
                       "robot.max_episode_steps=20", "policy.hidden=8"])
    pcfg = policy_config(cfg)
    episodes = held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed)
    during = DuringTraining(cfg, episodes)
    still = make_policy(pcfg)  # weights that never move: no success on the stub
    for p in still.actor.parameters():
        p.data.zero_()
    asked = []

    def newest():
        asked.append(1)
        return 7, still.policy_state()

    assert not during.maybe_start(99, newest) and not asked  # not due: weights not even read
    assert during.maybe_start(130, newest)
    during.close()
    assert not during.maybe_start(199, newest)  # the next is due at 200
    assert during.maybe_start(460, newest)
    during.close()
    done = during.finished()
    assert [d["eval/env_steps"] for d in done] == [130, 460] and during.finished() == []
    assert all(d["eval/policy_version"] == 7 and d["eval/success"] == 0.0 for d in done)
    assert during.curve == [[130, 7, 0.0], [460, 7, 0.0]]
    off = DuringTraining(load_config(["robot=stub"]), episodes)
    assert not off.maybe_start(10**9, newest)  # eval.every_steps=0: never


def test_td_push_summary_finds_the_dip_in_the_window():
    curve = [(0, 0.6), (10_000, 0.55), (50_000, 0.4), (100_000, 0.7), (150_000, 0.3),
             (200_000, 0.92)]
    s = summarise(curve, 200_000)
    assert s["base_success"] == 0.6 and s["lowest"] == 0.4  # 150k is past the window
    assert np.isclose(s["dip"], -0.2) and s["final"] == 0.92 and s["steps_to_90"] == 200_000


def test_td_push_run_stopped_early_keeps_the_summary_of_what_it_measured(tmp_path):
    from bench.td_push import td_push

    class Stop(Exception):
        pass

    seen: list[str] = []

    def log(message: str) -> None:  # the second evaluation stops the run, as a kill would
        seen.append(message)
        if sum("held-out success" in m for m in seen) == 2:
            raise Stop

    out = tmp_path / "run"
    out.mkdir()
    overrides = ["robot=stub", "eval.episodes=2", "robot.max_episode_steps=20", "policy.hidden=8",
                 "algorithm.td.hidden=8", f"pretrain.cache_dir={tmp_path / 'cache'}"]
    try:
        td_push(200, 100, 0, out, overrides, log=log)
    except Stop:
        pass
    else:
        raise AssertionError("the run was not stopped")
    s = json.loads((out / "summary.json").read_text())
    assert s["finished"] is False and [at for at, _ in s["curve"]] == [0] and s["env_steps"] == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # both evaluations logged; the summary is the one before the stop
    full = td_push(200, 100, 0, tmp_path / "full", overrides, log=lambda m: None)
    assert full["finished"] is True and full["env_steps"] >= 200
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["curve"] == full["curve"]


def test_td_push_with_the_simulated_operator_lets_it_take_over(tmp_path):
    """`operator.simulated=true` puts a simulated operator beside td_push's robot (its take-overs
    reach TD's demo replay, `tests/test_td_interventions.py`); without it none takes over."""
    from bench.td_push import td_push

    overrides = ["robot=stub", "eval.episodes=2", "robot.max_episode_steps=20", "policy.hidden=8",
                 "algorithm.td.hidden=8", f"pretrain.cache_dir={tmp_path / 'cache'}"]
    helped = td_push(200, 200, 0, tmp_path / "helped", [*overrides, "operator.simulated=true",
                                                       "operator.budget=1.0",
                                                       "operator.stall_steps=1",
                                                       "operator.min_gain=1e9"],
                     log=lambda m: None)
    assert helped["operator_steps"] > 0 and helped["operator_takeovers"] > 0
    alone = td_push(200, 200, 0, tmp_path / "alone", overrides, log=lambda m: None)
    assert alone["operator_steps"] == 0 and alone["operator"] is None
