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

from actors.robots.base import Feedback
from actors.worker import RobotWorker, WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.bc import BCConfig, train_bc
from algorithms.call_data import aux_rows, aux_spec, log_prob
from algorithms.dpo import DPO, DPOConfig
from algorithms.factory import capabilities, make_policy
from algorithms.flow_policy import FlowPolicy
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.policy import PolicyConfig, policy_input
from algorithms.ppo import PPOConfig
from algorithms.td import TD, TDConfig
from buffers.check import check_record
from buffers.codec import RecordError, decode_chunk, encode_chunk
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import Learner, LearnerConfig
from rewards.base import RewardConfig
from rewards.env import EnvReward
from tests.chunks import make_chunk
from tests.fakes import FakeRobot, ListOutbox, ListWeights
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


def test_log_prob_of_stored_chunks_with_their_aux_equals_the_act_time_logp():
    """The robot loop stores each call's path; the learner's log_prob on the decoded record
    gives back the behaviour log-probability, which it could not without the path."""
    policy = small_flow(steps=3)
    out = ListOutbox()
    worker = RobotWorker(FakeRobot(max_steps=9), policy, out, ListWeights(),
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
    losses = train_bc(policy, obs, np.ascontiguousarray(targets),
                      BCConfig(steps=100, lr=1e-2, batch=64), offers=capabilities("flow"))
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


class _Coin(FakeRobot):
    """Success when the first coordinate has grown after two steps: about half the episodes,
    so DPO's groups hold pairs."""

    def reset(self, seed: int | None = None):
        obs = super().reset(seed)
        self.start = float(self.x[0])
        return obs

    def send_action(self, action: np.ndarray) -> Feedback:
        fb = super().send_action(action)
        won = self.steps >= 2 and float(self.x[0]) > self.start
        return Feedback(fb.reward, won, fb.truncated and not won)


def group_records(policy: FlowPolicy, groups: int, size: int) -> list[bytes]:
    """Records of `groups` groups of `size` episodes (one start state each), as a robot streams
    them: its `act` answers carry each call's denoising path."""
    out = ListOutbox()
    worker = RobotWorker(_Coin(max_steps=6), policy, out, ListWeights(),
                         WorkerConfig(horizon=2, calls_per_chunk=2))
    for g in range(groups):
        for _ in range(size):
            worker.run_episode(g, group=f"fake-0/{g}")
    return out.records


def test_grpo_hands_the_path_back_and_trains_the_flow_policy(tmp_path):
    """Through the real buffer and learner: the proximal log-probs GRPO computes from the
    stored paths equal the robot's (importance weight 1), and the update moves the weights."""
    policy = small_flow(steps=3)
    records = group_records(policy, groups=2, size=4)
    grpo = GRPO(policy, GRPOConfig(group_size=4, min_groups=1, minibatch=16, lr=1e-3, epochs=2))
    chunks = [decode_chunk(r) for r in records]
    batch = grpo.prepare(chunks, [c.reward for c in chunks])
    assert len(batch) > 0 and batch.aux is not None
    np.testing.assert_allclose(batch.prox_logp.numpy(), batch.behaviour_logp.numpy(),
                               rtol=1e-4, atol=1e-3)
    before = {k: v.copy() for k, v in policy.policy_state().items()}
    with ReplayBuffer(tmp_path / "buf") as buf:
        learner = Learner(policy, GRPO(policy, GRPOConfig(group_size=4, min_groups=1,
                                                          minibatch=16, lr=1e-3, epochs=2)),
                          EnvReward(), buf, ListWeights(),
                          LearnerConfig(batch_calls=1, max_wait_s=0.5), tmp_path / "ckpt")
        buf.insert(records)
        m = learner.step()
    assert learner.updates == 1 and m["is_weight"] == pytest.approx(1.0, abs=1e-3)
    assert np.isfinite(m["policy_loss"]) and m["kl_ref"] >= 0
    after = policy.policy_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_dpo_hands_the_path_back_and_trains_the_flow_policy():
    """DPO's per-call log-probs of the preference set, from the stored paths, equal the robot's;
    the round trains (the margin grows from 0: the reference is the policy that acted)."""
    policy = small_flow(steps=3)
    chunks = [decode_chunk(r) for r in group_records(policy, groups=6, size=4)]
    dpo = DPO(policy, DPOConfig(group_size=4, set_pairs=4, held_out_every=0, lr=1e-3,
                                epochs=4))
    batch = dpo.prepare(chunks, [c.reward for c in chunks])
    assert len(batch.pairs) >= 4 and batch.aux is not None
    by_episode: dict[str, list] = {}
    for c in chunks:
        by_episode.setdefault(c.episode_id, []).append(c)
    recorded = {e: np.concatenate([c.logp for c in sorted(cs, key=lambda c: c.chunk_seq)])
                for e, cs in by_episode.items()}
    with torch.no_grad():
        rows = log_prob(policy, batch.obs, batch.chunk, batch.aux).numpy()
    # every row's log-prob is one the robot recorded, in the set's order of episodes
    episodes = batch.episode.numpy()
    got = [rows[episodes == e] for e in range(len(batch.ref_logp))]
    assert all(any(len(g) == len(r) and np.allclose(g, r, rtol=1e-4, atol=1e-3)
                   for r in recorded.values()) for g in got)
    m = dpo.update(batch)
    assert np.isfinite(m["dpo_loss"]) and m["margin_gain"] > 0


def test_td_trains_the_flow_policys_actor_through_its_euler_steps():
    """TD's π(s) is the flow's deterministic chain (`mean_chunk`): what deterministic `act`
    returns, and differentiable, so the actor step moves the velocity field."""
    policy = small_flow(steps=3)
    obs = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    pi = policy.mean_chunk(torch.from_numpy(obs))
    assert pi.requires_grad
    np.testing.assert_allclose(pi.detach().numpy().reshape(4, 2, 2),
                               np.stack([policy.act(o, deterministic=True)[0] for o in obs]),
                               rtol=1e-5, atol=1e-6)
    chunks = [decode_chunk(r) for r in group_records(policy, groups=4, size=2)]
    td = TD(policy, TDConfig(ensemble=2, minibatch=32, updates_per_step=1.0,
                             actor_warmup_steps=0, hidden=32))
    before = {k: v.copy() for k, v in policy.policy_state().items()}
    m = td.update(td.prepare(chunks, [c.reward for c in chunks]))
    assert m["actor_trained"] == 1.0 and np.isfinite(m["actor_loss"])
    after = policy.policy_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith("actor"))


def test_config_takes_flow_with_every_algorithm_and_the_inference_server():
    from fleet.config import load_config

    for override in ("algorithm=ppo", "algorithm=grpo", "algorithm=dpo", "algorithm=td",
                     "fleet.inference=server"):
        assert load_config(["policy=flow", override]).policy.kind == "flow"


@pytest.mark.parametrize("override,words", [
    ("policy.params.stepz=3", r"policy\.params\.stepz: policy\.kind=flow takes params steps"),
    ("policy.params.steps=0", r"policy\.params\.steps must be >= 1"),
    ("policy.params.steps=2.5", r"policy\.params\.steps must be int"),
    ("policy.params.min_std=0.5", r"min_std <= init_std"),
])
def test_bad_flow_params_stop_the_run_at_config_load(tmp_path, capsys, override, words):
    """Exit 2 naming the key, before any demo is collected or run directory written."""
    import re

    from fleet.cli import main

    assert main(["train", "policy=flow", override, f"run.dir={tmp_path}/runs",
                 f"pretrain.cache_dir={tmp_path}/cache"]) == 2
    assert re.search(words, " ".join(capsys.readouterr().out.split()))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
