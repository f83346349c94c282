"""Per-call data (`aux`) in the rollout record, and the flow policy that needs it (issue 16):
the record carries it and ingest checks it; the robot stores what `act` returned; the learner
hands it back, so the log-probability of an executed chunk equals the one at act time."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.worker import RobotWorker, WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.bc import BCConfig, train_bc
from algorithms.call_data import aux_rows, aux_spec, log_prob
from algorithms.factory import make_policy
from algorithms.flow_policy import FlowPolicy
from algorithms.policy import PolicyConfig, policy_input
from algorithms.ppo import PPOConfig
from buffers.check import check_record
from buffers.codec import RecordError, decode_chunk, encode_chunk
from buffers.records import EpisodeEnd
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig
from tests.chunks import make_chunk
from tests.fakes import FakeRobot
from tests.test_decoder_fuzz import assert_same_verdict, keys, trees


def aux_chunk(seed: int = 0, T: int = 7, H: int = 2, A: int = 3):
    rng = np.random.default_rng(seed)
    c = make_chunk(rng, T=T, H=H, A=A, D=5, end=EpisodeEnd("success"))
    return dataclasses.replace(c, aux={
        "path": rng.standard_normal((c.num_calls, 4, H, A)).astype(np.float32),
        "ids": rng.integers(0, 256, (c.num_calls, H * A)).astype(np.int64)})


def test_aux_round_trips_and_records_without_it_stay_version_3():
    chunk = aux_chunk()
    data = encode_chunk(chunk)
    assert msgpack.unpackb(data)["v"] == 4
    back = decode_chunk(data)
    assert back.aux.keys() == {"path", "ids"}
    for k, v in chunk.aux.items():
        assert back.aux[k].dtype == v.dtype
        np.testing.assert_array_equal(back.aux[k], v)
    assert check_record(data).num_steps == 7
    plain = dataclasses.replace(chunk, aux={})
    body = msgpack.unpackb(encode_chunk(plain))
    assert body["v"] == 3 and "aux" not in body  # byte for byte what version 3 wrote
    assert decode_chunk(encode_chunk(plain)).aux == {}


def _record(**change):
    body = msgpack.unpackb(encode_chunk(aux_chunk()))
    body.update(change)
    return msgpack.packb(body, use_bin_type=True)


def _spec(a: np.ndarray) -> dict:
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


@pytest.mark.parametrize("change,words", [
    ({"aux": {"path": _spec(np.zeros((3, 4), np.float32))}}, "4 rows"),  # 3 calls, not 4
    ({"aux": {"path": _spec(np.zeros((4, 2), np.uint8))}}, "not allowed"),
    ({"aux": {"path": _spec(np.full((4, 2), np.nan, np.float32))}}, "finite"),
    ({"aux": {}}, "aux must be a map"),
    ({"aux": {"": _spec(np.zeros((4, 2), np.float32))}}, "aux names"),
    ({"v": 3}, "unknown"),  # a version 3 record has no aux
])
def test_bad_aux_is_refused_by_ingest_and_decode_alike(change, words):
    record = _record(**change)
    for check in (decode_chunk, check_record):
        with pytest.raises(RecordError, match=words):
            check(record)
    with pytest.raises(RecordError, match="fields differ"):
        decode_chunk(msgpack.packb({k: v for k, v in msgpack.unpackb(_record()).items()
                                    if k != "aux"}))
    with pytest.raises(RecordError, match="rows"):
        encode_chunk(dataclasses.replace(aux_chunk(), aux={"x": np.zeros((9,), np.float32)}))


RECORD = msgpack.unpackb(encode_chunk(aux_chunk(3)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["aux", "logp", "v"]), st.booleans(), keys, trees),
                min_size=1, max_size=3))
def test_odd_aux_gets_the_same_verdict_from_ingest_and_decode(changes):
    body = dict(RECORD)
    for field, inner, key, value in changes:
        if inner and isinstance(body[field], dict):
            body[field] = {**body[field], key: value}
        else:
            body[field] = value
    assert_same_verdict(msgpack.packb(body, use_bin_type=True))


def small_flow(**params) -> FlowPolicy:
    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(kind="flow", obs_dim=3, action_dim=2, horizon=2,
                                      hidden=32, params=params))
    assert isinstance(policy, FlowPolicy)
    return policy


class _Records:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def put(self, record: bytes) -> None:
        self.records.append(record)


class _NoWeights:
    def poll(self, have_version: int):
        return None


def test_log_prob_of_stored_chunks_with_their_aux_equals_the_act_time_logp():
    """The robot loop stores each call's path; the learner's log_prob on the decoded record
    gives back the behaviour log-probability, which it could not without the path."""
    policy = small_flow(steps=3)
    out = _Records()
    worker = RobotWorker(FakeRobot(max_steps=9), policy, out, _NoWeights(),
                         WorkerConfig(horizon=2, calls_per_chunk=2))
    for seed in range(3):
        worker.run_episode(seed)
    for r in out.records:
        check_record(r)
    chunks = [decode_chunk(r) for r in out.records]
    assert aux_spec(policy) == {"path": ((3, 2, 2), "float32")}
    assert all(c.aux["path"].shape == (c.num_calls, 3, 2, 2) for c in chunks)
    aux = aux_rows(chunks, aux_spec(policy))
    obs = torch.cat([policy_input(c.obs)[: c.num_steps: c.horizon] for c in chunks])
    acts = torch.as_tensor(np.concatenate([c.policy_action for c in chunks]))
    behaviour = np.concatenate([c.logp for c in chunks])
    with torch.no_grad():
        again = log_prob(policy, obs, acts, aux).numpy()
        moved = log_prob(policy, obs, acts, {"path": aux["path"] + 0.05}).numpy()
    np.testing.assert_allclose(again, behaviour, rtol=1e-4, atol=1e-3)
    assert np.abs(moved - behaviour).max() > 0.1  # the path matters: it is not the chunk alone
    with pytest.raises(ValueError, match="denoising path"):
        policy.log_prob(obs, acts)
    with pytest.raises(ValueError, match="aux"):
        aux_rows([dataclasses.replace(chunks[0], aux={})], aux_spec(policy))


def test_flow_matching_bc_fits_a_chunk_per_observation():
    policy = small_flow(steps=4)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((256, 3)).astype(np.float32)
    targets = np.tanh(obs[:, :2, None] * np.array([1.0, -1.0], np.float32)).transpose(0, 2, 1)
    losses = train_bc(policy, obs, np.ascontiguousarray(targets), BCConfig(steps=100, lr=1e-2,
                                                                          batch=64))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    got = np.stack([policy.act(o, deterministic=True)[0] for o in obs[:32]])
    assert np.abs(got - targets[:32]).mean() < 0.15


def test_ppo_post_trains_the_flow_policy_end_to_end(tmp_path):
    """The serial loop (robot, buffer on disk, learner) with policy.kind=flow and PPO: updates
    happen, weights move, and on fresh data the importance weight is 1, i.e. the learner's
    log-probabilities, from the stored paths, match the robot's."""
    policy = PolicyConfig(kind="flow", obs_dim=3, action_dim=2, horizon=2, hidden=32,
                          params={"steps": 3})
    parts = LearnerParts(policy, None,
                         AlgorithmConfig(ppo=PPOConfig(minibatch=32, actor_lr=1e-3, epochs=2)),
                         RewardConfig("env"),
                         LearnerConfig(batch_calls=32, critic_warmup=0, max_wait_s=1,
                                       device="cpu"), tmp_path / "checkpoints")
    run = SerialRun(FakeRobot(max_steps=8), parts, WorkerConfig(horizon=2, calls_per_chunk=4),
                    tmp_path)
    before = {k: v.copy() for k, v in run.learner.policy.policy_state().items()}
    run.train(env_steps=256)
    assert run.learner.policy_version >= 2
    after = run.learner.policy.policy_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    first = run.metrics[0]
    assert first["is_weight"] == pytest.approx(1.0, abs=1e-3) and first["kl"] > 0
    assert all(np.isfinite(m["policy_loss"]) for m in run.metrics)
    run.close()


def test_config_refuses_flow_where_aux_is_not_handed_back():
    from fleet.config import ConfigError, load_config

    assert load_config(["policy=flow"]).policy.kind == "flow"
    for override in ("algorithm=grpo", "fleet.inference=server"):
        with pytest.raises(ConfigError, match=r"policy\.kind=flow"):
            load_config(["policy=flow", override])
