"""The learner in one process, against a real on-disk buffer and in-memory weights."""

import dataclasses

import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig
from buffers.codec import encode_chunk
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from learner.loop import Learner, LearnerConfig
from tests.chunks import make_chunk
from tests.fakes import ConstantReward, ListWeights


def fill(buf, n, policy_version, seed=0):
    """Chunks whose behaviour log-probs are those of a fresh policy, as a robot would send."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(0)
    behaviour = ChunkPolicy(PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32))
    chunks = []
    for i in range(n):
        c = make_chunk(rng, T=16, H=4, A=4, D=39, episode_id=f"v{policy_version}", chunk_seq=i,
                       policy_version=policy_version,
                       end=EpisodeEnd("success") if i % 3 == 2 else None)
        obs = torch.tensor(c.obs["state"][:-1:4])
        act = behaviour.mean_chunk(obs).detach().reshape(c.policy_action.shape)
        act = act + 0.2 * torch.randn(act.shape)
        logp = behaviour.log_prob(obs, act).detach().numpy()
        chunks.append(dataclasses.replace(c, policy_action=act.numpy(), logp=logp))
    buf.insert([encode_chunk(c) for c in chunks])


def make_learner(tmp_path, buf, **cfg):
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32))
    weights = ListWeights()
    config = LearnerConfig(batch_calls=32, critic_warmup=1, max_wait_s=0.5, **cfg)
    learner = Learner(policy, PPO(policy, PPOConfig(minibatch=16)), ConstantReward(), buf,
                      weights, config, tmp_path / "ckpt")
    return learner, weights


def test_step_updates_and_publishes_a_new_version(tmp_path):
    with ReplayBuffer(tmp_path / "buf") as buf:
        fill(buf, 20, policy_version=0)
        learner, weights = make_learner(tmp_path, buf)
        before = {k: v.copy() for k, v in learner.policy.policy_state().items()}
        critic = learner.algorithm.critic  # PPO's, not the policy's: robots never get it
        critic_before = critic[0].weight.detach().clone()
        m1 = learner.step()  # critic warm-up: the actor must not move
        state = learner.policy.policy_state()
        np.testing.assert_array_equal(before["actor.0.weight"], state["actor.0.weight"])
        assert not torch.equal(critic_before, critic[0].weight)
        assert not any(k.startswith("critic") for k in state)
        m2 = learner.step()
        assert not np.array_equal(state["actor.0.weight"],
                                  learner.policy.policy_state()["actor.0.weight"])
        assert [v for v, _ in weights.published] == [1, 2]
        assert m1["batch_calls"] >= 32 and m2["policy_version"] == 2


def test_stale_data_is_dropped_and_measured(tmp_path):
    with ReplayBuffer(tmp_path / "buf") as buf:
        learner, _ = make_learner(tmp_path, buf, max_staleness=1)
        learner.policy_version = 5
        fill(buf, 10, policy_version=2, seed=1)  # too old: never trained on
        fill(buf, 10, policy_version=4, seed=2)
        m = learner.step()
        assert m["staleness_max"] == 1.0 and m["staleness_mean"] == 1.0


def test_no_fresh_data_is_an_error_not_a_hang(tmp_path):
    with ReplayBuffer(tmp_path / "buf") as buf:
        learner, _ = make_learner(tmp_path, buf)
        with pytest.raises(TimeoutError, match="robots"):
            learner.step()


def test_checkpoint_round_trip(tmp_path):
    with ReplayBuffer(tmp_path / "buf") as buf:
        fill(buf, 20, policy_version=0)
        learner, _ = make_learner(tmp_path, buf)
        learner.step()
        path = learner.save_checkpoint({"wandb_id": "abc"})
        assert (tmp_path / "ckpt" / "latest.safetensors").resolve() == path.resolve()
        other, _ = make_learner(tmp_path, buf)
        extra = other.load_checkpoint(tmp_path / "ckpt" / "latest.safetensors")
        assert extra == {"wandb_id": "abc"}
        assert (other.policy_version, other.updates) == (1, 1)
        assert other.feed.cursor == learner.feed.cursor
        for k, v in learner.policy.policy_state().items():
            np.testing.assert_array_equal(v, other.policy.policy_state()[k])
        for k, v in learner.algorithm.critic.state_dict().items():  # PPO's critic comes back
            torch.testing.assert_close(v, other.algorithm.critic.state_dict()[k], rtol=0, atol=0)
        # an older Fleet's pickle (what save_checkpoint wrote before) resumes, read weights-only
        old = tmp_path / "ckpt" / "ckpt-000001.pt"
        torch.save({"policy": learner.policy.state_dict(),
                    "algorithm": learner.algorithm.state_dict(), "policy_version": 1,
                    "updates": 1, "env_steps": learner.env_steps, "cursor": learner.feed.cursor,
                    "torch_rng": torch.get_rng_state(), "extra": {"wandb_id": "old"}}, old)
        third, _ = make_learner(tmp_path, buf)
        assert third.load_checkpoint(old) == {"wandb_id": "old"} and third.updates == 1
