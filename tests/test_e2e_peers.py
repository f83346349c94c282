"""`fleet bench e2e_peers`'s pure parts: which snapshot counts as "equal env steps" and how the
line's value, baseline and ratio are put together (the training runs themselves are the bench)."""

import numpy as np

from bench.e2e_peers import equal_mark, snapshot_at, summarize
from bench.peers import fleet_state


def sides() -> dict:
    return {"fleet": {"env_steps": 36_000, "train_s": 60.0, "cpu_s": 90.0,
                      "snapshots": [5_100, 10_400, 36_000]},
            "sb3": {"env_steps": 12_000, "train_s": 60.0, "cpu_s": 40.0,
                    "snapshots": [5_002, 10_010, 12_000]},
            "rllib": {"env_steps": 9_000, "train_s": 30.0, "cpu_s": 60.0,
                      "snapshots": [8_192, 9_000]}}


def test_equal_steps_are_the_fewest_any_side_collected_and_no_side_is_judged_past_them():
    assert equal_mark(sides()) == 9_000  # rllib collected the fewest
    assert snapshot_at([5_100, 10_400, 36_000], 9_000) == 5_100  # the weights it had at 9,000
    assert snapshot_at([8_192, 9_000], 9_000) == 9_000  # the slowest side: its final weights
    assert snapshot_at([5_002, 10_010, 12_000], 9_000) == 5_002
    assert snapshot_at([10_010, 12_000], 9_000) == 10_010  # none at or before: the first one


def test_the_line_compares_fleet_with_the_faster_peer():
    success = {"fleet": {"equal": 70.0, "at": 5_100, "end": 85.0},
               "sb3": {"equal": 65.0, "at": 5_002, "end": 70.0},
               "rllib": {"equal": 75.0, "at": 8_192, "end": 75.0}}
    line = summarize(sides(), success, 55.0, 5_000, budget_s=60.0)
    assert (line["value"], line["baseline"], line["baseline_is"]) == (600.0, 300.0, "rllib")
    assert line["ratio"] == 2.0 and line["budget_s"] == 60.0
    assert line["sb3"]["steps_per_s"] == 200.0 and line["rllib"]["success_at_equal_steps"] == 75
    assert line["success_not_worse"] is False  # rllib's 75 beats fleet's 70
    assert line["cpu_ratio"] == round(400 / 300, 3)  # per CPU second sb3 is the better peer


def test_a_peers_actor_becomes_fleets_policy_state():
    base = {"obs_mean": np.ones(39, np.float32), "obs_std": np.ones(39, np.float32),
            "log_std": np.zeros(16, np.float32),
            **{f"actor.{i}.{p}": np.zeros(1) for i in (0, 2, 4) for p in ("weight", "bias")}}
    layers = [(np.full((256, 39), i), np.full(256, i)) for i in range(3)]
    state = fleet_state(layers, np.full(16, -1.6), base)
    assert set(state) == set(base)
    assert state["actor.4.weight"][0, 0] == 2 and state["actor.2.bias"][0] == 1
    assert state["log_std"].dtype == np.float32 and state["obs_mean"][0] == 1
