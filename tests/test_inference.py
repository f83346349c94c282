import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from fleet.inference import batched_act


def _policy():
    torch.manual_seed(0)
    return ChunkPolicy(PolicyConfig(obs_dim=7, action_dim=3, horizon=8, init="default"))


def test_batched_equals_per_request_deterministic():
    p = _policy()
    obs = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    chunks, logp, value = batched_act(p, obs, deterministic=True)
    assert chunks.shape == (5, 8, 3) and logp.shape == (5,) and value.shape == (5,)
    for i in range(5):
        c, lp, v = p.act(obs[i], deterministic=True)
        np.testing.assert_allclose(chunks[i], c, rtol=1e-5, atol=1e-5)
        assert lp == pytest.approx(float(logp[i]), rel=1e-4, abs=1e-4)
        assert v == pytest.approx(float(value[i]), rel=1e-4, abs=1e-5)


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
    from fleet.inference import RemotePolicy, inference_server

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
    chunk, logp, value = RemotePolicy(server).act(obs[0], deterministic=True)
    assert chunk.shape == (8, 3) and np.isfinite(logp) and np.isfinite(value)
