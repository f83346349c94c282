"""`fleet train -m`: a Hydra sweep expanded into one run per point, checked before any runs.
A real sweep of two `fleet train` runs is in tests/test_policy_plugins.py (with a plug-in)."""

from __future__ import annotations

import pytest

from fleet.cli import main
from fleet.config import ConfigError
from fleet.run.sweep import run_sweep, sweep_configs, sweep_points


def test_sweep_points_are_the_product_of_the_sweeping_overrides_in_order():
    assert sweep_points(["experiment=smoke", "run.seed=0,1", "policy=chunk_mlp,token"]) == [
        ["experiment=smoke", "run.seed=0", "policy=chunk_mlp"],
        ["experiment=smoke", "run.seed=0", "policy=token"],
        ["experiment=smoke", "run.seed=1", "policy=chunk_mlp"],
        ["experiment=smoke", "run.seed=1", "policy=token"]]
    assert sweep_points(["run.seed=range(0,3)"]) == [[f"run.seed={i}"] for i in range(3)]
    assert sweep_points(["robot.task='reach-v3,push-v3'"]) == [["robot.task='reach-v3,push-v3'"]]


def test_each_point_gets_its_own_run_name_and_a_bad_point_stops_the_sweep_first():
    points = sweep_configs(["run.name=s", "run.seed=3,4"])
    assert [(c.run.name, c.run.seed) for _, c in points] == [("s-0", 3), ("s-1", 4)]
    ran = []
    with pytest.raises(ConfigError, match=r"sweep point 1 \(run.seed=x\)"):
        run_sweep(["run.seed=2,x"], ran.append)
    assert ran == []  # nothing ran


def test_a_sweep_without_dash_m_says_to_add_it(capsys):
    assert main(["train", "run.seed=0,1"]) == 2
    out = "".join(capsys.readouterr().out.split())  # however rich wrapped it
    assert "run.seed=0,1isasweep" in out and "fleettrain-m" in out
