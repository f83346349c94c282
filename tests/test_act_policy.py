"""`policy.kind=act` (algorithms/act_policy.py): shapes with and without cameras, the policy
contract (behaviour log-probability, weights into a robot's copy), BC from a dataset, and
post-training by PPO (state and camera) and by chunked TD."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from actors.robots.gym import GymConfig
from actors.robots.stub import StubConfig
from actors.worker import WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.act_policy import ACTPolicy
from algorithms.bc import BCConfig, train_bc
from algorithms.factory import capabilities, make_policy
from algorithms.policy import PolicyConfig, input_keys, policy_input
from algorithms.ppo import PPOConfig
from algorithms.td import TDConfig
from fleet.cli import main
from fleet.config import ConfigError, load_config
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOAL = "tests.gym_envs:fleet-tests/Goal-v0"  # a Dict env: a uint8 camera [24, 24, 3], a state


def act_policy(**kw) -> ACTPolicy:
    cfg = dict(kind="act", obs_dim=4, action_dim=2, horizon=3, d_model=32, heads=4, layers=1,
               hidden=32)
    cfg.update(kw)
    policy = make_policy(PolicyConfig(**cfg))
    assert isinstance(policy, ACTPolicy)
    return policy


def frames(rng, n, size=24):
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_shapes_without_and_with_cameras():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    state = act_policy()
    assert not state.takes_obs_dict and input_keys(state.config) == ()
    chunk, logp = state.act(np.ones(4, np.float32))
    assert chunk.shape == (3, 2) and chunk.dtype == np.float32 and np.isfinite(logp)
    rows = torch.randn(5, 4)
    assert state.mean_chunk(rows).shape == (5, 6)
    assert not torch.allclose(state.mean_chunk(rows[:1]), state.mean_chunk(rows[1:2]))

    two = act_policy(image_key="front", image_size=24, params={"cameras": ["wrist"]})
    assert two.takes_obs_dict and input_keys(two.config) == ("front", "wrist")
    obs = {"state": rng.normal(size=(5, 4)).astype(np.float32), "front": frames(rng, 5),
           "wrist": frames(rng, 5)}
    x = policy_input(obs, input_keys(two.config))
    assert x.shape == (5, 4 + 2 * 24 * 24 * 3)
    assert two.actor.tokens(two._norm(x)).shape[:2] == (5, 1 + 2 * 4)  # state + 2x2 per camera
    assert two.mean_chunk(x).shape == (5, 6)
    assert two.make_critic()(two.critic_input(x)).shape == (5, 1)
    chunk, logp = two.act({k: v[0] for k, v in obs.items()})
    assert chunk.shape == (3, 2) and np.isfinite(logp)
    # each camera is seen: changing only the wrist frame changes the chunk
    other = dict(obs, wrist=255 - obs["wrist"])
    y = policy_input(other, input_keys(two.config))
    assert (two.mean_chunk(x) - two.mean_chunk(y)).abs().max() > 1e-5
    with pytest.raises(ValueError, match="backbone"):
        act_policy(backbone="transformer")


@pytest.mark.parametrize("cameras", [0, 1])
def test_log_prob_of_the_executed_chunk_is_acts_and_weights_reach_a_robot_copy(cameras):
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    kw = {"image_key": "pixels", "image_size": 24} if cameras else {}
    policy, robot_copy = act_policy(**kw), act_policy(**kw)
    policy.set_obs_stats(np.full(4, 0.5, np.float32), np.full(4, 2.0, np.float32))
    obs = {"state": rng.normal(size=4).astype(np.float32)}
    if cameras:
        obs["pixels"] = frames(rng, 1)[0]
    chunk, logp = policy.act(obs if cameras else obs["state"])
    rows = policy_input({k: v[None] for k, v in obs.items()}, input_keys(policy.config))
    again = policy.log_prob(rows, torch.as_tensor(chunk)[None])
    assert again.shape == (1,) and abs(float(again[0]) - logp) < 1e-4  # PPO's behaviour logp
    batched, batched_logp = policy.act_batch(rows, deterministic=True)
    assert abs(float(policy.log_prob(rows, batched)[0]) - float(batched_logp[0])) < 1e-4

    before = robot_copy.act(obs if cameras else obs["state"], deterministic=True)[0]
    robot_copy.load_policy_state(policy.policy_state())  # flat numpy arrays, as robots get them
    mine = policy.act(obs if cameras else obs["state"], deterministic=True)[0]
    theirs = robot_copy.act(obs if cameras else obs["state"], deterministic=True)[0]
    np.testing.assert_array_equal(mine, theirs)
    assert not np.allclose(before, theirs)
    assert not any(k.startswith("critic.") for k in policy.policy_state())


def test_bc_fits_the_demonstrated_chunks():
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(40, 4)).astype(np.float32)
    first = np.tanh(obs[:, :2] - obs[:, 2:])  # an expert chunk that the state decides
    targets = first[:, None, :] * np.array([1.0, 0.5, 0.25], np.float32)[None, :, None]
    policy = act_policy()
    losses = train_bc(policy, obs, targets, BCConfig(steps=60, lr=3e-3, batch=40),
                      offers=capabilities("act"))
    assert losses[-1] < 0.3 * losses[0]
    np.testing.assert_allclose(policy.obs_mean.numpy(), obs.mean(0), rtol=1e-5)


def _serial(robot, policy_cfg, algorithm, tmp_path, horizon):
    parts = LearnerParts(policy_cfg, None, algorithm, RewardConfig("env"),
                         LearnerConfig(batch_calls=16, critic_warmup=0, device="cpu"),
                         tmp_path / "checkpoints")
    return SerialRun(robot, parts, WorkerConfig(horizon=horizon, calls_per_chunk=8), tmp_path)


def test_ppo_post_trains_act_from_the_camera_of_a_dict_env(tmp_path):
    torch.manual_seed(3)
    robot = GymConfig(GOAL, termination="success").make("goal-0")
    pcfg = PolicyConfig(kind="act", obs_dim=2, action_dim=1, horizon=2, hidden=32, d_model=32,
                        layers=1, image_key="camera", image_size=24)
    run = _serial(robot, pcfg, AlgorithmConfig(ppo=PPOConfig(minibatch=16, epochs=1)),
                  tmp_path, horizon=2)
    before = {k: v.copy() for k, v in run.learner.policy.policy_state().items()}
    run.train(env_steps=64)
    assert run.learner.policy_version >= 1 and run.worker.stats.policy_version >= 1
    after = run.learner.policy.policy_state()
    moved = [k for k in after if k.startswith("actor.camera.")
             and not np.allclose(before[k], after[k])]
    assert moved  # the camera's CNN learned, not only the state path
    run.close()


def test_td_post_trains_act_with_its_actor_after_warm_up(tmp_path):
    torch.manual_seed(4)
    robot = StubConfig(obs_dim=4, action_dim=2, max_episode_steps=12).make("stub-0")
    pcfg = PolicyConfig(kind="act", obs_dim=4, action_dim=2, horizon=2, d_model=32, layers=1,
                        bound="tanh")
    td = TDConfig(hidden=32, ensemble=2, minibatch=16, updates_per_step=0.25,
                  actor_warmup_steps=16)
    run = _serial(robot, pcfg, AlgorithmConfig(name="td", td=td), tmp_path, horizon=2)
    before = {k: v.copy() for k, v in run.learner.policy.policy_state().items()}
    run.train(env_steps=96)
    assert run.learner.policy_version >= 1
    after = run.learner.policy.policy_state()
    assert not np.allclose(before["actor.out.weight"], after["actor.out.weight"])
    assert np.array_equal(before["log_std"], after["log_std"])  # the fixed exploration std
    run.close()


def test_td_with_a_camera_policy_is_configured_with_a_bounded_replay():
    """TD builds camera rows (tests/test_td_camera.py); only a replay too large is refused
    (the default 300,000 uint8 camera rows fit)."""
    assert load_config(["robot=pusht", "policy=act_cnn", "algorithm=td"])
    with pytest.raises(ConfigError, match=r"algorithm\.td\.capacity"):
        load_config(["robot=pusht", "policy=act_cnn", "algorithm=td",
                     "algorithm.td.capacity=400000"])
    cfg = load_config(["robot=pusht", "policy=act_cnn", "algorithm=td",
                       "algorithm.td.capacity=20000"])
    assert cfg.policy.kind == "act" and cfg.algorithm.name == "td"


def _stub_dataset(folder, episodes=6):
    """Expert episodes of the stub robot (straight at its goal) as `.npz` files."""
    folder.mkdir()
    robot = StubConfig(obs_dim=4, action_dim=2, max_episode_steps=20).make("demo-0")
    for e in range(episodes):
        states, actions = [robot.reset(seed=e)["state"]], []
        for _ in range(20):
            a = robot.expert_action()
            fb = robot.send_action(a)
            actions.append(a)
            states.append(robot.get_observation()["state"])
            if fb.success:
                break
        np.savez(folder / f"ep{e}.npz", **{"obs.state": np.stack(states),
                                           "action": np.stack(actions)})


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "td"])
def test_fleet_train_bc_from_a_dataset_then_post_trains_act(algorithm, tmp_path):
    """`fleet train policy=act pretrain.data=DIR`: BC on the dataset's episodes, then PPO or
    chunked TD on Ray robots and learner, end to end."""
    from tests.test_e2e import ROOT, fleet

    _stub_dataset(tmp_path / "data")
    done = fleet("train", "experiment=smoke", "robot=stub", "robot.obs_dim=4",
                 "robot.action_dim=2", "robot.max_episode_steps=20", "policy=act",
                 "policy.horizon=2", "policy.d_model=32", "policy.bound=tanh",
                 f"pretrain.data={tmp_path}/data", "pretrain.bc.steps=30", "pretrain.bc.batch=64",
                 f"algorithm={algorithm}",
                 "algorithm.td.actor_warmup_steps=64", "algorithm.td.ensemble=2",
                 "run.name=act", f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/c",
                 "train.env_steps=400", "eval.episodes=2", "logger.wandb=disabled",
                 "console.enabled=false", cwd=ROOT, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "act" / "summary.json").read_text())
    assert summary["policy_kind"] == "act" and summary["algorithm"] == algorithm
    assert summary["pretrain"]["data"] == f"{tmp_path}/data"
    assert summary["pretrain"]["bc_loss"] is not None and summary["policy_version"] >= 1


def test_fleet_pretrain_bc_from_a_dataset_into_act(tmp_path, capsys):
    _stub_dataset(tmp_path / "data")
    assert main(["pretrain", "robot=stub", "robot.obs_dim=4", "robot.action_dim=2",
                 "policy=act", "policy.horizon=2", "policy.d_model=32",
                 f"pretrain.data={tmp_path}/data", "pretrain.bc.steps=30",
                 f"pretrain.cache_dir={tmp_path}/c"]) == 0
    assert "behaviour-cloned the base on 6 episodes" in capsys.readouterr().out


def test_the_inference_server_answers_act_as_the_policy_does():
    """`fleet.inference=server`: state rows in one `act_batch` pass, camera observations one
    `act` per request; each row as the policy itself answers it."""
    from fleet.remote.inference import batched_act

    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    policy = act_policy()
    rows = rng.normal(size=(6, 4)).astype(np.float32)
    chunks, logp, _ = batched_act(policy, rows, deterministic=True)
    assert chunks.shape == (6, 3, 2) and logp.shape == (6,)
    for i in range(6):
        chunk, lp = policy.act(rows[i], deterministic=True)
        np.testing.assert_allclose(chunks[i], chunk, rtol=1e-5, atol=1e-6)
        assert lp == pytest.approx(float(logp[i]), abs=1e-4)
    seen = act_policy(image_key="pixels", image_size=24)
    obs = [{"state": rows[i], "pixels": frames(rng, 1)[0]} for i in range(3)]
    chunks, _, _ = batched_act(seen, obs, deterministic=True)
    for i in range(3):
        np.testing.assert_allclose(chunks[i], seen.act(obs[i], deterministic=True)[0],
                                   rtol=1e-5, atol=1e-6)


def test_a_bridged_robot_must_register_every_camera_the_act_policy_reads() -> None:
    from fleet.remote.robot import contract_of

    config = PolicyConfig(kind="act", obs_dim=5, action_dim=2, image_key="top",
                          params={"cameras": ["wrist"]})
    assert contract_of(config).extra == {"top": ("uint8", (96, 96, 3)),
                                         "wrist": ("uint8", (96, 96, 3))}
