"""Chunked TD with a camera policy: rows are the policy's input rows (state, then pixels), as
PPO's, and the ensemble critic sees the frames through its own CNN."""

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from actors.worker import RobotWorker, WorkerConfig
from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig, input_keys, policy_input
from algorithms.td import TD, TDConfig, _Replay, chunk_transitions, replay_row_bytes
from buffers.codec import decode_chunk
from buffers.records import RolloutChunk
from tests.fakes import FakeRobot, ListOutbox, ListWeights

SIZE = 24


class CameraRobot(FakeRobot):
    """FakeRobot with a camera: a bright square whose place follows the step and the state, so
    a test can tell which step's frame a row carries."""

    def get_observation(self):
        obs = super().get_observation()
        frame = np.zeros((SIZE, SIZE, 3), np.uint8)
        r, c = (self.steps * 3) % (SIZE - 6), int(abs(self.x[0]) * 5) % (SIZE - 6)
        frame[r:r + 6, c:c + 6] = 255
        return obs | {"pixels": frame}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def camera_chunks(kind: str) -> tuple[PolicyConfig, Any, list[RolloutChunk]]:
    """A small camera policy and the chunks of four episodes it ran on `CameraRobot`."""
    torch.manual_seed(0)
    config = PolicyConfig(kind=kind, obs_dim=3, action_dim=2, horizon=2, hidden=16,
                          image_key="pixels", image_size=SIZE, d_model=16, heads=2, layers=1)
    policy = make_policy(config)
    out = ListOutbox()
    worker = RobotWorker(CameraRobot(max_steps=6), policy, out, ListWeights(),
                         WorkerConfig(horizon=2, calls_per_chunk=2))
    for seed in range(4):
        worker.run_episode(seed)
    return config, policy, [decode_chunk(r) for r in out.records]


@pytest.mark.parametrize("kind", ["chunk", "act"])
def test_td_rows_carry_the_camera_and_both_networks_learn_from_it(kind):
    config, policy, chunks = camera_chunks(kind)
    td = TD(policy, TDConfig(ensemble=2, minibatch=16, updates_per_step=0.5,
                             actor_warmup_steps=0, hidden=16))
    batch = td.prepare(chunks, [c.reward for c in chunks])
    width = 3 + SIZE * SIZE * 3
    assert batch.obs.shape[1] == batch.next_obs.shape[1] == width
    rows = policy_input(chunks[0].obs, input_keys(config)).numpy()
    np.testing.assert_array_equal(batch.obs[0].numpy(), rows[0])  # state and frame of step 0
    assert any(np.array_equal(batch.next_obs[0].numpy(), r) for r in rows[1:])
    per_call = chunk_transitions(chunks[0], chunks[0].reward, 0.9, input_keys(config))
    assert per_call["obs"].shape == (chunks[0].num_calls, width)
    q = td.q(batch.obs[:4], batch.chunk[:4])
    swapped = batch.obs[:4].clone()
    swapped[:, 3:] = batch.obs[4:8, 3:]  # other steps' frames, same states
    assert not torch.allclose(q, td.q(swapped, batch.chunk[:4]))  # the critic sees the frame
    critic_cnn = {k: v.clone() for k, v in td.critic.encoders.state_dict().items()}
    before = {k: v.copy() for k, v in policy.policy_state().items()}
    m = td.update(batch)
    assert m["actor_trained"] == 1.0 and np.isfinite(m["critic_loss"] + m["actor_loss"])
    assert any(not torch.equal(v, td.critic.encoders.state_dict()[k])
               for k, v in critic_cnn.items())
    after = policy.policy_state()
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert any("encoder" in k or "camera" in k for k in moved), moved


def test_td_with_a_camera_policy_is_configured_and_its_replay_bounded():
    from fleet.config import ConfigError, load_config

    cfg = load_config(["experiment=pusht_smoke", "algorithm=td",
                       "algorithm.td.capacity=20000"])
    assert cfg.policy.image_key == "pixels" and cfg.algorithm.name == "td"
    assert load_config(["experiment=pusht_smoke", "policy=act_cnn", "algorithm=td",
                        "algorithm.td.capacity=20000"]).policy.kind == "act"
    assert load_config(["experiment=pusht_smoke", "algorithm=td"])  # 300,000 uint8 rows fit
    with pytest.raises(ConfigError, match=r"algorithm\.td\.capacity=400000.*<= \d+"):
        load_config(["experiment=pusht_smoke", "algorithm=td", "algorithm.td.capacity=400000"])
    state_only = dataclasses.replace(cfg.policy, image_key="")
    assert replay_row_bytes(state_only) * 300_000 * 2 < 2**30  # state rows: no bound in reach


def test_the_replay_keeps_pixels_as_uint8_and_samples_the_same_floats():
    config, policy, chunks = camera_chunks("chunk")
    td = TD(policy, TDConfig(ensemble=2, capacity=16, hidden=16))
    batch = td.prepare(chunks, [c.reward for c in chunks])
    assert len(batch) > 18  # the ring wraps
    as_floats = _Replay(td.config.capacity)  # how the replay held camera rows before
    for replay in (td.online, as_floats):
        for start, stop in ((0, 10), (10, 18), (18, len(batch))):  # fill, then overwrite
            replay.add(batch.rows(torch.arange(start, stop)))
    assert td.online.columns is not None and td.online.columns["obs_pixels"].dtype == torch.uint8
    assert td.online.nbytes() == len(td.online) * replay_row_bytes(config)
    assert as_floats.nbytes() / td.online.nbytes() > 3.8  # pixels: 1 byte each, not 4
    got = td.online.sample(16, torch.Generator().manual_seed(3))
    want = as_floats.sample(16, torch.Generator().manual_seed(3))
    for f in dataclasses.fields(got):
        assert torch.equal(getattr(got, f.name), getattr(want, f.name)), f.name
    assert got.obs.dtype == torch.float32


def test_a_camera_replay_saved_as_floats_loads_into_uint8_columns():
    _, policy, chunks = camera_chunks("chunk")
    td = TD(policy, TDConfig(ensemble=2, hidden=16))
    batch = td.prepare(chunks, [c.reward for c in chunks])
    old = _Replay(100)  # a checkpoint from before: every column float32
    old.add(batch)
    td.online.load(old.state())
    assert td.online.columns is not None and "obs_pixels" in td.online.columns
    assert td.online.data is not None and torch.equal(td.online.data.obs, old.data.obs)
    again = TD(policy, TDConfig(ensemble=2, hidden=16))
    again.load_state_dict(td.state_dict())
    assert again.online.data is not None and torch.equal(again.online.data.next_obs,
                                                          old.data.next_obs)


def test_the_replay_refuses_camera_columns_that_uint8_would_change():
    _, policy, chunks = camera_chunks("chunk")
    td = TD(policy, TDConfig(ensemble=2, capacity=16, hidden=16))
    rows = td.prepare(chunks, [c.reward for c in chunks]).rows(torch.arange(0, 4))
    scaled = dataclasses.replace(rows, obs=rows.obs + 0.5)  # not whole numbers: uint8 rounds
    with pytest.raises(ValueError, match=r"whole numbers in 0\.\.255"):
        td.online.add(scaled)
