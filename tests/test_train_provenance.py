"""`fleet train` says what produced a run, and says why it cannot start.

- summary.json records the algorithm, the reward model, the policy kind and the exact command
  line (sys.argv), read back from a real run's file;
- a learner or robot the cluster cannot place (a GPU no node has, a robot's custom resource no
  node offers) ends the run after `fleet.placement_timeout_s` with an error naming each of them
  and what is missing, instead of waiting forever.
"""

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fleet(*args: str, timeout: float = 540) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # the smoke base is built once for both tests


@pytest.mark.slow
def test_summary_records_algorithm_reward_policy_and_command(tmp_path, cache):
    args = ["train", "experiment=smoke", "algorithm=grpo", "algorithm.grpo.group_size=2",
            "reward=sparse_success", "run.name=prov", f"run.dir={tmp_path}",
            f"pretrain.cache_dir={cache}", "logger.wandb=disabled", "console.enabled=false",
            "train.env_steps=600"]
    done = fleet(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "prov" / "summary.json").read_text())
    assert summary["algorithm"] == "grpo"
    assert summary["reward"] == "sparse_success"
    assert summary["policy_kind"] == "chunk"
    assert summary["command"][1:] == args  # argv[0] is how Python was pointed at the CLI
    assert Path(summary["command"][0]).name in ("cli.py", "fleet")
    assert summary["versions"]["metaworld"] == version("metaworld")  # rewards differ by release


@pytest.mark.slow
def test_unplaceable_learner_and_robot_end_the_run_naming_what_is_missing(tmp_path, cache):
    done = fleet("train", "experiment=smoke", "run.name=nogpu", f"run.dir={tmp_path}",
                 f"pretrain.cache_dir={cache}", "logger.wandb=disabled",
                 "console.enabled=false", "learner.device=cuda", "fleet.robot_resources=true",
                 "fleet.placement_timeout_s=3")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    text = " ".join(out.split())  # rich wraps long lines
    assert "not placed within fleet.placement_timeout_s=3 s" in text, text[-3000:]
    assert "learner asks for {'GPU': 1.0}; no node offers GPU (the cluster has 0)" in text
    for robot in ("robot-0", "robot-1"):
        assert f"no node offers robot:{robot} (the cluster has 0)" in text
    assert not (tmp_path / "nogpu" / "summary.json").exists()
