"""PushT from pixels: the robot, camera frames through the codec and buffer, the image policy in
the worker and in PPO, and `fleet train experiment=pusht_smoke` end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.robots import make_robot
from actors.robots.pusht import PushTConfig, PushTRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig, policy_input
from algorithms.ppo import PPO, PPOConfig
from buffers.codec import decode_chunk
from buffers.store import ReplayBuffer
from tests.fakes import ListOutbox, ListWeights
from tests.test_e2e import ROOT, fleet

IMAGE = PolicyConfig(obs_dim=2, action_dim=2, horizon=4, hidden=32, image_key="pixels")


def test_pusht_robot_steps_and_sees_uint8_pixels():
    robot = PushTRobot(PushTConfig("pusht", max_episode_steps=5))
    assert (robot.spec.embodiment, robot.spec.action_dim, robot.spec.control_hz) == (
        "pusht", 2, 10.0)
    obs = robot.reset(seed=3)
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].shape == (96, 96, 3)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (2,)
    assert np.all(np.abs(obs["state"]) <= 1.0)
    again = robot.reset(seed=3)  # a seed fixes the start
    assert np.array_equal(again["pixels"], obs["pixels"])
    fb = None
    for _ in range(5):
        fb = robot.send_action(np.array([0.9, -0.9], np.float32))
    assert fb is not None and fb.truncated and 0.0 <= fb.reward <= 1.0
    moved = robot.get_observation()
    assert not np.array_equal(moved["pixels"], obs["pixels"])  # the disc moved on camera
    assert moved["state"][0] > obs["state"][0] and moved["state"][1] < obs["state"][1]
    robot.close()


def test_pusht_config_builds_the_robot_and_rejects_unknown_tasks():
    cfg = PushTConfig(task="pusht-state", max_episode_steps=300)
    assert (cfg.obs_dim, cfg.action_dim, cfg.tasks) == (6, 2, ("pusht-state",))
    robot = make_robot(cfg, "r0")
    assert isinstance(robot, PushTRobot) and robot.reset(seed=0)["state"].shape == (6,)
    with pytest.raises(ValueError, match="pusht"):
        PushTConfig(task="push-v3")


def test_scripted_expert_pushes_the_t_home():
    robot = PushTRobot(PushTConfig("pusht-state", max_episode_steps=300))
    robot.reset(seed=0)
    start, fb = robot.coverage(), None
    while fb is None or not fb.done:
        fb = robot.send_action(robot.expert_action())
    assert fb.success and robot.coverage() >= 0.95 > start


def test_near_variant_starts_below_the_bar_and_the_expert_mostly_succeeds():
    """robot.start_offset (the `pusht_near` experiment): every start is below the bar, near the
    goal, seeded; the scripted expert succeeds in most episodes (80% over 20 seeds)."""
    cfg = PushTConfig("pusht-state", max_episode_steps=150, success_coverage=0.8,
                      start_offset=60.0)
    robot = PushTRobot(cfg)
    first = robot.reset(seed=5)["state"]
    assert np.array_equal(robot.reset(seed=5)["state"], first)  # seeded
    wins = []
    for seed in range(6):
        robot.reset(seed=seed)
        turn = (robot._env.block.angle - np.pi / 4 + np.pi) % (2 * np.pi) - np.pi
        assert robot.coverage() < 0.8 and abs(turn) <= 0.6 + 1e-6
        fb = None
        while fb is None or not fb.done:
            fb = robot.send_action(robot.expert_action())
        wins.append(fb.success)
    assert sum(wins) >= 4, wins
    with pytest.raises(ValueError, match="start_offset"):
        PushTConfig(start_offset=-1.0)


def test_pixel_chunks_through_codec_and_buffer(tmp_path):
    robot = PushTRobot(PushTConfig("pusht", max_episode_steps=12))
    policy = ChunkPolicy(IMAGE)
    outbox = ListOutbox()
    worker = RobotWorker(robot, policy, outbox, ListWeights(), WorkerConfig(4, 2, seed=1))
    worker.run_episode(seed=5)  # the image policy gets the whole observation
    assert len(outbox.records) == 2
    raw = decode_chunk(outbox.records[0])
    assert raw.obs["pixels"].dtype == np.uint8 and raw.obs["pixels"].shape == (9, 96, 96, 3)
    assert len(outbox.records[0]) < raw.obs["pixels"].nbytes / 4  # lz4 squeezes camera frames
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert(outbox.records)
    with ReplayBuffer(tmp_path / "buf") as buf:
        records, _ = buf.read(0, 10)
    chunks = [decode_chunk(r) for r in records]
    assert np.array_equal(chunks[0].obs["pixels"], raw.obs["pixels"])
    assert chunks[-1].episode_end is not None and chunks[-1].obs["pixels"].shape[0] == 5
    # evaluation runs the image policy too
    assert worker.evaluate([7]) in ([True], [False])


def test_image_policy_shapes_and_ppo_trains_its_cnn():
    torch.manual_seed(0)
    policy = ChunkPolicy(IMAGE)
    assert policy.takes_obs_dict
    rng = np.random.default_rng(0)
    obs: dict[str, np.ndarray] = {"state": rng.uniform(-1, 1, (7, 2)).astype(np.float32),
           "pixels": rng.integers(0, 256, (7, 96, 96, 3), dtype=np.uint8)}
    chunk, logp = policy.act({k: v[0] for k, v in obs.items()})
    assert chunk.shape == (4, 2) and np.isfinite(logp)
    rows = policy_input(obs, ["pixels"])
    assert rows.shape == (7, 2 + 96 * 96 * 3)
    assert policy.log_prob(rows, torch.zeros(7, 4, 2)).shape == (7,)
    critic = policy.make_critic()  # PPO's: its own CNN on the same rows
    assert critic(policy.critic_input(rows)).shape == (7, 1)
    # the image matters: other pixels, other mean chunk
    other = dict(obs, pixels=255 - obs["pixels"])
    assert not torch.allclose(policy.mean_chunk(rows), policy.mean_chunk(
        policy_input(other, ["pixels"])))
    # PPO's batch carries the camera and its update moves the actor's CNN
    robot = PushTRobot(PushTConfig("pusht", max_episode_steps=16))
    outbox = ListOutbox()
    RobotWorker(robot, policy, outbox, ListWeights(), WorkerConfig(4, 4, seed=2)).run_episode(1)
    chunks = [decode_chunk(r) for r in outbox.records]
    ppo = PPO(policy, PPOConfig(epochs=2, minibatch=4, actor_lr=1e-3))
    batch = ppo.prepare(chunks, [c.reward for c in chunks])
    assert batch.obs.shape == (4, 2 + 96 * 96 * 3)
    encoder = policy.actor.get_submodule("encoder")
    before = [p.detach().clone() for p in encoder.parameters()]
    ppo.update(batch)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True))


@pytest.mark.slow
@pytest.mark.timeout(900)  # its BC pretraining alone took 173 s at load ~30 on 2 cores
def test_pusht_smoke_run_end_to_end(tmp_path):
    done = fleet("train", "experiment=pusht_smoke", "run.name=pusht", f"run.dir={tmp_path}/runs",
                 f"pretrain.cache_dir={tmp_path}/cache", cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = Path(tmp_path) / "runs" / "pusht"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0
    assert "post-trained" in done.stdout
    with ReplayBuffer(run / "buffer") as buf:
        records, _ = buf.read(0, 1)
    assert decode_chunk(records[0]).obs["pixels"].dtype == np.uint8

