"""`fleet train -m`: a Hydra sweep expanded into one run per point, checked before any runs."""

from __future__ import annotations

import json

import pytest

from fleet.config import ConfigError
from fleet.run.sweep import run_sweep, sweep_configs, sweep_points
from tests.test_e2e import ROOT, fleet


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


def test_a_sweep_without_dash_m_says_to_add_it():
    done = fleet("train", "run.seed=0,1", cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "run.seed=0,1 is a sweep" in done.stdout and "fleet train -m" in done.stdout


@pytest.mark.slow
def test_fleet_train_dash_m_runs_one_run_per_seed(tmp_path):
    done = fleet("train", "-m", "robot=gym", "robot.task=InvertedPendulum-v5", "experiment=smoke",
                 "run.name=sw", "run.seed=0,1", f"run.dir={tmp_path}/runs",
                 f"pretrain.cache_dir={tmp_path}/c", "train.env_steps=400", "eval.episodes=2",
                 "logger.wandb=disabled", "console.enabled=false", cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for i in (0, 1):
        summary = json.loads((tmp_path / "runs" / f"sw-{i}" / "summary.json").read_text())
        assert summary["seed"] == i and summary["policy_version"] >= 1
    assert "sweep point 2 of 2" in done.stdout
