"""`policy.kind=lerobot_act` (the `fleet[lerobot]` extra): LeRobot's own ACT, random weights built
offline, as a Fleet chunk policy: the policy contract, PPO post-training it, its checkpoint
starting the next run, and a `fleet train` smoke run on Ray with a gymnasium robot.

lerobot is an optional package that installs only on Python >= 3.12 (lerobot 0.5-0.6;
docs/python312.md): every test but the first skips where it cannot be imported
(`pytest.importorskip("lerobot")`, the only skip here). The first two run everywhere."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms.lerobot_act import LeRobotACT
from algorithms.policy import PolicyConfig

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_without_lerobot_the_kind_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "lerobot" or m.startswith("lerobot.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as where it is not installed
    monkeypatch.setitem(sys.modules, "lerobot", None)
    with pytest.raises(ValueError, match=r"policy.kind=lerobot_act needs lerobot: "
                                         r"pip install 'fleet\[lerobot\]' \(Python >= 3.12"):
        LeRobotACT(PolicyConfig(obs_dim=4, action_dim=1))


def test_fleet_pretrain_without_lerobot_exits_2_naming_the_extra(monkeypatch, tmp_path, capsys):
    from fleet.cli import main

    for name in [m for m in sys.modules if m == "lerobot" or m.startswith("lerobot.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "lerobot", None)
    # the entry point as Fleet's pyproject.toml declares it (installed metadata may be older)
    meta = tmp_path / "site" / "fleet_lerobot_point-0.1.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: fleet-lerobot-point\n"
                                   "Version: 0.1.0\n")
    import tomllib

    points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    (meta / "entry_points.txt").write_text(
        "[fleet.policies]\n" + "".join(f"{k} = {v}\n" for k, v in
                                        points["fleet.policies"].items()))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert main(["pretrain", "robot=stub", "policy.kind=lerobot_act",
                 f"pretrain.cache_dir={tmp_path}/cache"]) == 2
    out = "".join(capsys.readouterr().out.split())
    assert "needslerobot:pipinstall'fleet[lerobot]'(Python>=3.12" in out, out
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.fixture
def lerobot():
    return pytest.importorskip("lerobot")  # optional: installs on Python >= 3.12 only


def _config(**kw):
    return PolicyConfig(**{"kind": "lerobot_act", "obs_dim": 3, "action_dim": 2, "horizon": 2,
                           "d_model": 32, "heads": 2, "layers": 1, **kw})


def test_lerobot_act_keeps_the_policy_contract(lerobot):
    from lerobot.policies.act.modeling_act import ACTPolicy as LeRobotACTPolicy

    from algorithms.factory import make_policy
    from algorithms.policy import policy_kinds

    assert "lerobot_act" in policy_kinds()  # Fleet's own fleet.policies entry point
    policy = make_policy(_config(params={"n_decoder_layers": 2}))
    assert isinstance(policy.actor.policy, LeRobotACTPolicy)
    act_cfg = policy.actor.policy.config
    assert (act_cfg.chunk_size, act_cfg.dim_model, act_cfg.n_decoder_layers) == (2, 32, 2)
    assert act_cfg.pretrained_backbone_weights is None and not act_cfg.use_vae
    obs = np.array([0.5, -1.0, 2.0], np.float32)
    chunk, logp = policy.act(obs)
    assert chunk.shape == (2, 2) and chunk.dtype == np.float32
    for mode in (policy.eval, policy.train):  # the learner trains; robots act in eval
        mode()
        again = policy.log_prob(torch.as_tensor(obs)[None], torch.as_tensor(chunk)[None])
        assert abs(float(again[0]) - logp) < 1e-4  # PPO's behaviour log-probability
    state = policy.policy_state()
    assert "actor.policy.model.action_head.weight" in state
    twin = make_policy(_config(params={"n_decoder_layers": 2}))
    twin.load_policy_state(state)
    np.testing.assert_allclose(twin.act(obs, deterministic=True)[0],
                               policy.act(obs, deterministic=True)[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"\['nope'\] are not fields of LeRobot's ACTConfig"):
        make_policy(_config(params={"nope": 1}))
    with pytest.raises(ValueError, match="use_vae=false and dropout=0"):
        make_policy(_config(params={"dropout": 0.1}))


def test_lerobot_act_sees_a_camera_through_its_resnet(lerobot):
    from algorithms.factory import make_policy
    from algorithms.policy import input_keys, policy_input

    policy = make_policy(_config(image_key="pixels", image_size=32))
    assert policy.takes_obs_dict and "observation.images.pixels" in \
        policy.actor.policy.config.image_features
    rng = np.random.default_rng(0)
    obs = {"state": rng.standard_normal(3).astype(np.float32),
           "pixels": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)}
    chunk, logp = policy.act(obs, deterministic=True)
    rows = policy_input({k: v[None] for k, v in obs.items()}, input_keys(policy.config))
    assert abs(float(policy.log_prob(rows, torch.as_tensor(chunk)[None])[0]) - logp) < 1e-4
    dark = dict(obs, pixels=np.zeros_like(obs["pixels"]))
    assert not np.allclose(policy.act(dark, deterministic=True)[0], chunk)  # pixels matter


def test_ppo_post_trains_lerobot_act_and_its_checkpoint_starts_the_next_run(lerobot, tmp_path):
    from actors.worker import WorkerConfig
    from algorithms import AlgorithmConfig
    from algorithms.ppo import PPOConfig
    from fleet.config import load_config
    from fleet.run.pretrain import pretrained_base
    from fleet.run.serial import SerialRun
    from learner.build import LearnerParts
    from learner.loop import LearnerConfig
    from rewards.base import RewardConfig
    from tests.fakes import FakeRobot

    parts = LearnerParts(_config(), None, AlgorithmConfig(ppo=PPOConfig(minibatch=16, epochs=2)),
                         RewardConfig("env"), LearnerConfig(batch_calls=16, critic_warmup=0,
                                                            device="cpu"),
                         tmp_path / "checkpoints")
    run = SerialRun(FakeRobot(max_steps=8), parts, WorkerConfig(horizon=2, calls_per_chunk=4),
                    tmp_path / "run")
    key = "actor.policy.model.action_head.weight"
    before = run.learner.policy.policy_state()[key].copy()
    run.train(env_steps=96)
    assert run.learner.policy_version >= 2 and run.worker.stats.policy_version >= 1
    after = run.learner.policy.policy_state()
    assert not np.allclose(before, after[key])
    saved = run.learner.save_checkpoint()
    run.close()

    cfg = load_config(["robot=stub", "robot.obs_dim=3", "robot.action_dim=2",
                       "policy.kind=lerobot_act", "policy.horizon=2", "policy.d_model=32",
                       "policy.heads=2", "policy.layers=1", f"policy.checkpoint={saved}",
                       f"pretrain.cache_dir={tmp_path}/cache"])
    base, info = pretrained_base(cfg)
    assert info["checkpoint"] == str(saved)
    for k, v in after.items():
        np.testing.assert_array_equal(base.policy_state()[k], v)
    other = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, d_model=16))
    from fleet.config import ConfigError

    key = r"'actor\.policy\.model\.encoder\.layers\.0\.self_attn\.in_proj_weight'"
    with pytest.raises(ConfigError, match=key + r" is \[96, 32\] there, .*needs \[48, 16\]"):
        pretrained_base(other)


@pytest.mark.slow
def test_fleet_train_post_trains_lerobot_act_on_a_gym_robot(lerobot, tmp_path):
    """The smoke run on Ray: two gymnasium robots (InvertedPendulum-v5) act with LeRobot's ACT,
    the learner updates it by PPO, robots adopt the new versions."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "train", "experiment=smoke", "robot=gym",
         "policy.kind=lerobot_act", "policy.horizon=4", "run.name=lr", f"run.dir={tmp_path}",
         f"pretrain.cache_dir={tmp_path}/c", "train.env_steps=500", "eval.episodes=2",
         "logger.wandb=disabled", "console.enabled=false"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "lr" / "summary.json").read_text())
    assert summary["policy_kind"] == "lerobot_act" and summary["policy_version"] >= 1
    assert summary["env_steps"] >= 500
    from safetensors.numpy import load_file

    ckpt = load_file(tmp_path / "lr" / "checkpoints" / "latest.safetensors")
    assert any(".policy.model.decoder." in k for k in ckpt), sorted(ckpt)[:5]
