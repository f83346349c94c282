import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from fleet.remote.inference import batched_act


def _policy():
    torch.manual_seed(0)
    return ChunkPolicy(PolicyConfig(obs_dim=7, action_dim=3, horizon=8, init="default"))


def test_batched_equals_per_request_deterministic():
    p = _policy()
    obs = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    chunks, logp, _ = batched_act(p, obs, deterministic=True)
    assert chunks.shape == (5, 8, 3) and logp.shape == (5,)
    for i in range(5):
        c, lp = p.act(obs[i], deterministic=True)
        np.testing.assert_allclose(chunks[i], c, rtol=1e-5, atol=1e-5)
        assert lp == pytest.approx(float(logp[i]), rel=1e-4, abs=1e-4)


def test_batched_sample_logp_matches_policy_log_prob():
    p = _policy()
    obs = np.random.default_rng(1).standard_normal((4, 7)).astype(np.float32)
    chunks, logp, _ = batched_act(p, obs, generator=torch.Generator().manual_seed(3))
    ref = p.log_prob(torch.from_numpy(obs), torch.from_numpy(chunks)).detach().numpy()
    np.testing.assert_allclose(logp, ref, rtol=1e-4, atol=1e-3)
    assert not np.allclose(chunks, batched_act(p, obs, deterministic=True)[0])


def test_batched_rejects_single_obs():
    with pytest.raises(ValueError):
        batched_act(_policy(), np.zeros(7, np.float32))


def test_server_batches_concurrent_requests_and_matches_local(local_ray):
    from fleet.remote.inference import RemotePolicy, inference_server

    cfg = PolicyConfig(obs_dim=7, action_dim=3, horizon=8)
    p = _policy()
    server = inference_server(cfg, max_batch=8, max_wait_s=0.05)
    local_ray.get(server.load_policy_state.remote(p.policy_state()))
    obs = np.random.default_rng(2).standard_normal((8, 7)).astype(np.float32)
    refs = [server.act.remote(o, True) for o in obs]
    out = local_ray.get(refs)
    for i in range(8):
        np.testing.assert_allclose(out[i][0], p.act(obs[i], deterministic=True)[0],
                                   rtol=1e-5, atol=1e-5)
    stats = local_ray.get(server.stats.remote())
    assert stats["requests"] == 8 and stats["batches"] < 8
    chunk, logp = RemotePolicy(server).act(obs[0], deterministic=True)
    assert chunk.shape == (8, 3) and np.isfinite(logp)


def test_server_adopts_hub_weights_and_reports_versions(local_ray):
    """The server picks up the learner's publications itself; a RemotePolicy reports the
    version that answered it as its WeightSource."""
    import time

    from fleet.remote.inference import RemotePolicy, inference_server
    from fleet.remote.weights import HubWeights, WeightHub

    cfg = PolicyConfig(obs_dim=7, action_dim=3, horizon=8)
    old, new = _policy(), ChunkPolicy(PolicyConfig(obs_dim=7, action_dim=3, horizon=8))
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.5)
    hub = WeightHub.remote()
    server = inference_server(cfg, max_batch=4, max_wait_s=0.001, hub=hub,
                              state=old.policy_state(), policy_version=3, poll_s=0.01)
    remote = RemotePolicy(server, policy_version=3)
    obs = np.random.default_rng(4).standard_normal(7).astype(np.float32)
    np.testing.assert_allclose(remote.act(obs, True)[0], old.act(obs, True)[0], atol=1e-5)
    assert remote.poll(3) is None
    HubWeights(hub, "float16").publish(7, new.policy_state())
    deadline = time.monotonic() + 20
    while remote.policy_version < 7:
        assert time.monotonic() < deadline, "the server never adopted the published weights"
        chunk = remote.act(obs, True)[0]
        time.sleep(0.01)
    np.testing.assert_allclose(chunk, new.act(obs, True)[0], atol=5e-2)  # float16 on the wire
    assert remote.poll(3) == (7, {}) and remote.poll(7) is None
    stats = local_ray.get(server.stats.remote())
    assert stats["policy_version"] == 7 and stats["adopted"] == 1


def test_server_hands_the_flow_policys_path_to_the_robot_record(local_ray):
    """`policy=flow` behind the server: each answer carries the call's denoising path, the robot
    stores it in the rollout record, and the learner's log-prob from it is the recorded one."""
    from actors.worker import RobotWorker, WorkerConfig
    from algorithms.call_data import aux_rows, aux_spec, log_prob
    from algorithms.factory import make_policy
    from algorithms.policy import policy_input
    from buffers.codec import decode_chunk
    from fleet.remote.inference import RemotePolicy, inference_server
    from tests.fakes import FakeRobot, ListOutbox

    torch.manual_seed(0)
    cfg = PolicyConfig(kind="flow", obs_dim=3, action_dim=2, horizon=2, hidden=16,
                       params={"steps": 3})
    flow = make_policy(cfg)
    server = inference_server(cfg, max_batch=4, max_wait_s=0.01, state=flow.policy_state())
    remote = RemotePolicy(server)
    chunk, logp, aux = remote.act(np.zeros(3, np.float32))
    assert chunk.shape == (2, 2) and aux["path"].shape == (3, 2, 2) and np.isfinite(logp)
    out = ListOutbox()
    worker = RobotWorker(FakeRobot(max_steps=6), remote, out, remote,
                         WorkerConfig(horizon=2, calls_per_chunk=2))
    worker.run_episode(0)
    chunks = [decode_chunk(r) for r in out.records]
    obs = torch.cat([policy_input(c.obs)[: c.num_steps: c.horizon] for c in chunks])
    acts = torch.as_tensor(np.concatenate([c.policy_action for c in chunks]))
    with torch.no_grad():
        again = log_prob(flow, obs, acts, aux_rows(chunks, aux_spec(flow))).numpy()
    np.testing.assert_allclose(again, np.concatenate([c.logp for c in chunks]),
                               rtol=1e-4, atol=1e-3)
