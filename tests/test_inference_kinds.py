"""The inference server serves every policy kind: the token policy decodes many robots' calls in
one batch, image policies and plug-ins are answered one `act` per request, each row as the
policy itself would answer it."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig
from fleet.remote.inference import InferenceServerImpl, batched_act
from tests.test_e2e import ROOT, fleet

TOKEN = PolicyConfig(kind="token", obs_dim=5, action_dim=2, horizon=3, bins=16, d_model=16,
                     heads=2, layers=1, hidden=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_token_policy_decodes_a_batch_as_it_decodes_each_call():
    torch.manual_seed(0)
    policy = make_policy(TOKEN)
    obs = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    chunks, logp, _ = batched_act(policy, obs, deterministic=True)
    assert chunks.shape == (6, 3, 2) and logp.shape == (6,)
    for i in range(6):
        c, lp = policy.act(obs[i], deterministic=True)
        np.testing.assert_array_equal(chunks[i], c)
        assert lp == pytest.approx(float(logp[i]), abs=1e-4)
    chunks, logp, _ = batched_act(policy, obs, generator=torch.Generator().manual_seed(1))
    ref = policy.log_prob(torch.from_numpy(obs), torch.from_numpy(chunks))
    np.testing.assert_allclose(logp, ref.detach().numpy(), rtol=1e-4, atol=1e-4)  # behaviour


def test_an_image_policy_is_served_its_observation_dicts():
    torch.manual_seed(0)
    cfg = PolicyConfig(obs_dim=2, action_dim=2, horizon=2, hidden=16, image_key="pixels",
                       image_size=24)
    policy = make_policy(cfg)
    rng = np.random.default_rng(0)
    obs = [{"state": rng.standard_normal(2).astype(np.float32),
            "pixels": rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)} for _ in range(3)]
    chunks, _, _ = batched_act(policy, obs, deterministic=True)
    for i in range(3):
        np.testing.assert_allclose(chunks[i], policy.act(obs[i], deterministic=True)[0],
                                   rtol=1e-5, atol=1e-6)


def test_the_server_batches_token_policy_calls():
    torch.manual_seed(0)
    policy = make_policy(TOKEN)
    server = InferenceServerImpl(TOKEN, max_batch=8, max_wait_s=0.05,
                                 state=policy.policy_state())
    obs = np.random.default_rng(2).standard_normal((8, 5)).astype(np.float32)

    async def calls():
        return await asyncio.gather(*[server.act(o, True) for o in obs])

    out = asyncio.run(calls())
    for i in range(8):
        np.testing.assert_array_equal(out[i][0], policy.act(obs[i], deterministic=True)[0])
    assert server.stats()["requests"] == 8 and server.stats()["batches"] < 8


@pytest.mark.slow
def test_fleet_train_with_the_token_policy_behind_the_server(tmp_path):
    done = fleet("train", "experiment=smoke", "robot=gym", "robot.task=InvertedPendulum-v5",
                 "policy=token", "policy.decode=parallel", "fleet.inference=server",
                 "run.name=tok", f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/c",
                 "logger.wandb=disabled", "console.enabled=false", "train.env_steps=600",
                 "eval.episodes=2", cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "tok" / "summary.json").read_text())
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0
