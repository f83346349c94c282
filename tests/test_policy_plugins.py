"""Policy plug-ins (`fleet.policies`) and `policy.checkpoint`: the example package found by its
entry point, post-trained by PPO in the serial loop, and a saved policy loaded instead of BC."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.worker import WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.factory import BUILTIN, BUILTIN_CLASSES, capabilities, make_policy
from algorithms.policy import BUILTIN_KINDS, PolicyConfig, policy_kinds
from algorithms.ppo import PPOConfig
from fleet.config import ConfigError, load_config
from fleet.run.pretrain import checkpoint_base, pretrained_base
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig
from tests.fakes import FakeRobot

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The example package, made importable with real package metadata (as `pip install`
    writes it: the entry point comes from its pyproject.toml)."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "examples/policy_plugin/fleet_policy_example",
                    site / "fleet_policy_example")
    meta = site / "fleet_policy_example-0.1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: fleet-policy-example\n"
                                   "Version: 0.1.0\n")
    project = tomllib.loads((ROOT / "examples/policy_plugin/pyproject.toml").read_text())
    points = project["project"]["entry-points"]["fleet.policies"]
    (meta / "entry_points.txt").write_text(
        "[fleet.policies]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    monkeypatch.syspath_prepend(str(site))
    yield "linear"
    sys.modules.pop("fleet_policy_example", None)


def test_builtin_kinds_are_the_registry_and_unknown_kinds_name_the_known():
    assert tuple(BUILTIN) == BUILTIN_KINDS
    with pytest.raises(ValueError, match=r"chunk\|token\|hf"):
        PolicyConfig(kind="nope")
    with pytest.raises(ConfigError, match=r"policy.*'nope'.*chunk\|token\|hf"):
        load_config(["policy.kind=nope"])


def test_the_example_plugin_keeps_the_policy_contract(plugin):
    assert plugin in policy_kinds()
    cfg = load_config(["robot=stub", f"policy.kind={plugin}", "policy.params.init_std=0.5",
                       "policy.horizon=3"])
    pcfg = dataclasses.replace(cfg.policy, obs_dim=5, action_dim=2)
    policy = make_policy(pcfg)
    assert type(policy).__name__ == "LinearChunkPolicy"
    assert torch.allclose(policy.log_std.exp(), torch.tensor(0.5))
    obs = np.arange(5, dtype=np.float32)
    chunk, logp = policy.act(obs)
    assert chunk.shape == (3, 2) and chunk.dtype == np.float32
    again = policy.log_prob(torch.as_tensor(obs)[None], torch.as_tensor(chunk)[None])
    assert again.shape == (1,) and abs(float(again[0]) - logp) < 1e-4  # PPO's behaviour logp
    twin = make_policy(pcfg)
    twin.load_policy_state(policy.policy_state())
    np.testing.assert_array_equal(twin.act(obs, deterministic=True)[0],
                                  policy.act(obs, deterministic=True)[0])


def test_ppo_post_trains_the_plugin_and_its_checkpoint_starts_the_next_run(plugin, tmp_path):
    pcfg = PolicyConfig(kind=plugin, obs_dim=3, action_dim=2, horizon=2,
                        params={"init_std": 0.3})
    parts = LearnerParts(pcfg, None, AlgorithmConfig(ppo=PPOConfig(minibatch=16, epochs=2)),
                         RewardConfig("env"), LearnerConfig(batch_calls=16, critic_warmup=0,
                                                            device="cpu"),
                         tmp_path / "checkpoints")
    run = SerialRun(FakeRobot(max_steps=8), parts, WorkerConfig(horizon=2, calls_per_chunk=4),
                    tmp_path / "run")
    before = {k: v.copy() for k, v in run.learner.policy.policy_state().items()}
    run.train(env_steps=96)
    assert run.learner.policy_version >= 2 and run.worker.stats.policy_version >= 1
    after = run.learner.policy.policy_state()
    assert not np.allclose(before["actor.weight"], after["actor.weight"])
    saved = run.learner.save_checkpoint()
    run.close()

    cfg = load_config(["robot=stub", "robot.obs_dim=3", "robot.action_dim=2",
                       f"policy.kind={plugin}", "policy.horizon=2", f"policy.checkpoint={saved}",
                       f"pretrain.cache_dir={tmp_path}/cache"])
    base, info = pretrained_base(cfg)
    assert info["checkpoint"] == str(saved) and info["demos"] == 0
    for k, v in after.items():
        np.testing.assert_array_equal(base.policy_state()[k], v)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_params_the_plugin_refuses_exit_2_before_any_demos(plugin, tmp_path, capsys):
    from fleet.cli import main

    assert main(["pretrain", f"policy.kind={plugin}", "policy.params.init_std=-1",
                 f"pretrain.cache_dir={tmp_path}/cache"]) == 2
    out = "".join(capsys.readouterr().out.split())
    assert "policy.kind=linearwithpolicy.params={'init_std':-1}" in out
    assert "init_stdmustbe>0" in out and not list(tmp_path.glob("cache/demos-*"))


def test_td_takes_a_plugin_only_if_its_class_declares_mean_chunk(plugin, tmp_path):
    """TD calls `mean_chunk` (its `policy_needs`): the example's class declares it; a plug-in
    whose entry point is a factory declaring nothing is refused at config load, naming both,
    though the policy it builds has the method (declared, never probed)."""
    assert load_config([f"policy.kind={plugin}", "algorithm=td"]).algorithm.name == "td"
    site = tmp_path / "site"
    (site / "bare_policy.py").write_text("from fleet_policy_example import LinearChunkPolicy\n\n"
                                         "def make(config):\n"
                                         "    return LinearChunkPolicy(config)\n")
    meta = site / "bare_policy-0.1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: bare-policy\nVersion: 0.1.0\n")
    (meta / "entry_points.txt").write_text("[fleet.policies]\nbare = bare_policy:make\n")
    try:
        assert hasattr(make_policy(PolicyConfig(kind="bare")), "mean_chunk")
        with pytest.raises(ConfigError, match=r"policy\.kind=bare has no mean_chunk .*"
                                              r"algorithm=td calls: use algorithm=ppo"):
            load_config(["policy.kind=bare", "algorithm=td"])
        assert load_config(["policy.kind=bare", "algorithm=ppo"]).policy.kind == "bare"
    finally:
        sys.modules.pop("bare_policy", None)


@pytest.mark.parametrize("kind", [k for k in BUILTIN if k != "hf"])  # hf: tests/test_vla_adapter
def test_builtin_capabilities_are_read_from_the_class_each_kind_builds(kind):
    policy = make_policy(PolicyConfig(kind=kind, obs_dim=3, action_dim=2, horizon=2))
    module, name = BUILTIN_CLASSES[kind]
    assert type(policy).__module__ == module and type(policy).__name__ == name
    assert capabilities(kind) == policy.capabilities
    if "mean_chunk" in policy.capabilities:
        assert load_config([f"policy.kind={kind}", "algorithm=td"]).policy.kind == kind
        assert policy.mean_chunk(torch.zeros(4, 3)).shape == (4, 4)
    else:
        with pytest.raises(ConfigError, match=rf"policy\.kind={kind} has no mean_chunk"):
            load_config([f"policy.kind={kind}", "algorithm=td"])


def test_a_checkpoint_of_another_shape_or_no_file_is_a_config_error(tmp_path):
    cfg = load_config(["robot=stub", "policy.hidden=16"])
    policy = make_policy(dataclasses.replace(cfg.policy, obs_dim=cfg.robot.obs_dim + 1,
                                             action_dim=cfg.robot.action_dim))
    npz = tmp_path / "other.npz"
    np.savez(npz, **policy.policy_state())
    with pytest.raises(ConfigError, match=r"other\.npz: 'obs_mean' is \[17\] there, "
                                          r"this policy \(obs_dim=16, .*\) needs \[16\]"):
        checkpoint_base(cfg, npz)
    with pytest.raises(ConfigError, match="no such file"):
        checkpoint_base(cfg, tmp_path / "missing.pt")
    torch.save({"policy": {"x": object()}}, tmp_path / "pickled.pt")  # never unpickled
    with pytest.raises(ConfigError, match=r"pickled\.pt: cannot read it"):
        checkpoint_base(cfg, tmp_path / "pickled.pt")
    right = make_policy(dataclasses.replace(cfg.policy, obs_dim=cfg.robot.obs_dim,
                                            action_dim=cfg.robot.action_dim))
    from safetensors.torch import save_file

    save_file(right.state_dict(), tmp_path / "right.safetensors")
    loaded = checkpoint_base(cfg, tmp_path / "right.safetensors")
    for k, v in right.policy_state().items():
        np.testing.assert_array_equal(loaded.policy_state()[k], v)


def test_fleet_pretrain_with_a_missing_checkpoint_exits_2_naming_it(tmp_path, capsys):
    from fleet.cli import main

    assert main(["pretrain", "robot=stub", f"policy.checkpoint={tmp_path}/nope.pt",
                 f"pretrain.cache_dir={tmp_path}/cache"]) == 2
    assert "nope.pt:nosuchfile" in "".join(capsys.readouterr().out.split())
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_fleet_train_sweep_post_trains_the_plugin_from_a_checkpoint(plugin, tmp_path):
    """`fleet train -m run.seed=0,1` (one run per seed, in turn) with the installed plug-in on
    Ray's robot and learner actors (they inherit PYTHONPATH, as they would an installed
    package), each run started from an .npz instead of a BC base."""
    import os
    import subprocess

    cfg = load_config(["robot=gym", f"policy.kind={plugin}", "policy.horizon=2"])
    start = make_policy(dataclasses.replace(cfg.policy, obs_dim=cfg.robot.obs_dim,
                                            action_dim=cfg.robot.action_dim))
    start.set_obs_stats(np.zeros(4, np.float32), np.full(4, 2.0, np.float32))
    np.savez(tmp_path / "start.npz", **start.policy_state())
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "train", "-m", "run.seed=0,1", "experiment=smoke",
         "robot=gym", f"policy.kind={plugin}", "policy.horizon=2",
         f"policy.checkpoint={tmp_path}/start.npz", "run.name=lin", f"run.dir={tmp_path}/runs",
         f"pretrain.cache_dir={tmp_path}/c", "train.env_steps=400", "eval.episodes=2",
         "logger.wandb=disabled", "console.enabled=false"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for seed in (0, 1):
        summary = json.loads((tmp_path / "runs" / f"lin-{seed}" / "summary.json").read_text())
        assert summary["pretrain"]["checkpoint"] == f"{tmp_path}/start.npz"
        assert summary["seed"] == seed and summary["policy_version"] >= 1
    assert "sweep point 2 of 2" in done.stdout and "base (checkpoint)" in done.stdout
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("base-*"))


def test_bc_fits_what_the_kind_declares_not_what_the_policy_has():
    """`train_bc` picks its objective from the declared capabilities: L2 on `mean_chunk` for
    `chunk`; the same policy under a declaration without it is fitted by log-probability."""
    import copy

    from algorithms.bc import BCConfig, train_bc

    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(obs_dim=3, action_dim=2, horizon=2))
    obs = np.array([[0.5, -1.0, 2.0]], np.float32)
    chunk = np.array([[[0.1, -0.2], [0.3, 0.0]]], np.float32)
    policy.set_obs_stats(obs.mean(0), obs.std(0))  # as train_bc does before its first loss
    x, c = torch.as_tensor(obs), torch.as_tensor(chunk)
    with torch.no_grad():
        l2 = float(((policy.mean_chunk(x) - c.reshape(1, -1)) ** 2).mean())
        nll = float(-policy.log_prob(x, c).mean() / 4)
    one = BCConfig(steps=1, batch=4)  # every row of the batch is the one demo step
    assert train_bc(copy.deepcopy(policy), obs, chunk, one,
                    offers=capabilities("chunk"))[0] == pytest.approx(l2, rel=1e-5)
    assert train_bc(copy.deepcopy(policy), obs, chunk, one,
                    offers=frozenset())[0] == pytest.approx(nll, rel=1e-5)
