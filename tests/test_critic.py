"""The critic is the algorithm's (STYLE rule 5): a policy holds only what acting needs, robots
download and run the actor alone, PPO owns, trains and checkpoints its critic."""

import copy

import numpy as np
import pytest
import torch

from actors.worker import RobotWorker, WorkerConfig
from algorithms.factory import make_policy
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.policy import PolicyConfig, policy_input
from algorithms.ppo import PPO, PPOConfig
from buffers.codec import decode_chunk
from tests.chunks import make_chunk
from tests.fakes import FakeRobot, ListOutbox, ListWeights

KINDS = {
    "chunk_mlp": PolicyConfig(obs_dim=5, action_dim=2, horizon=3, hidden=16),
    "chunk_cnn": PolicyConfig(obs_dim=2, action_dim=2, horizon=3, hidden=16, image_key="pixels",
                              image_size=32, init="orthogonal"),
    "chunk_transformer": PolicyConfig(obs_dim=5, action_dim=2, horizon=3, hidden=16,
                                      backbone="transformer", d_model=16, heads=2, layers=1),
    "token": PolicyConfig(kind="token", obs_dim=5, action_dim=2, horizon=3, hidden=16,
                          d_model=16, heads=2, layers=1, decode="parallel", instruction="push"),
}


def _rows(config: PolicyConfig, n: int = 6) -> torch.Tensor:
    rng = np.random.default_rng(0)
    obs = {"state": rng.standard_normal((n, config.obs_dim)).astype(np.float32)}
    if config.image_key:
        size = config.image_size
        obs[config.image_key] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return policy_input(obs, [config.image_key] if config.image_key else [])


@pytest.mark.parametrize("name", sorted(KINDS))
def test_policies_hold_no_critic_and_build_one_for_an_algorithm(name):
    torch.manual_seed(0)
    config = KINDS[name]
    policy = make_policy(config)
    assert not any("critic" in k for k in policy.policy_state())
    assert not any("critic" in n for n, _ in policy.named_modules())
    rows = _rows(config)
    critic = policy.make_critic()
    assert critic(policy.critic_input(rows)).shape == (len(rows), 1)
    assert policy.make_critic() is not critic  # fresh each time: one per algorithm
    if config.image_key:  # the same design as the actor: its own CNN on the camera
        assert critic.get_submodule("encoder") is not policy.actor.get_submodule("encoder")


def test_the_default_publication_is_the_actor_alone():
    """Golden bytes for the default policy (obs 39, action 4, horizon 4, MLP 2x256): 626,108
    with the value head it used to carry, 320,952 without it."""
    policy = make_policy(PolicyConfig())
    sent = sum(v.nbytes for v in policy.policy_state().values())
    critic = sum(p.numel() * 4 for p in policy.make_critic().parameters())
    assert (sent, sent + critic) == (320_952, 626_108)


def test_a_robot_acts_and_records_with_no_critic_anywhere():
    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(obs_dim=3, action_dim=2, horizon=4, hidden=16))
    outbox = ListOutbox()
    worker = RobotWorker(FakeRobot(max_steps=10), policy, outbox, ListWeights(),
                         WorkerConfig(4, 2, seed=1))
    worker.run_episode(seed=3)
    chunks = [decode_chunk(r) for r in outbox.records]
    assert sum(c.num_steps for c in chunks) == 10
    for c in chunks:  # the record keeps its value column; robots fill it with 0.0
        assert np.array_equal(c.value, np.zeros(c.num_calls, np.float32))
        assert np.all(np.isfinite(c.logp))


def test_ppo_checkpoints_and_restores_its_critic(tmp_path):
    torch.manual_seed(0)
    config = KINDS["chunk_mlp"]
    rng = np.random.default_rng(0)
    chunks = [make_chunk(rng, T=6, H=3, A=2, D=5, episode_id=str(i)) for i in range(4)]
    policy = make_policy(config)
    ppo = PPO(policy, PPOConfig(epochs=2, minibatch=4, critic_lr=1e-2))
    fresh = copy.deepcopy(ppo.critic.state_dict())
    ppo.update(ppo.prepare(chunks, [c.reward for c in chunks]), train_actor=False)
    assert any(not torch.equal(fresh[k], v) for k, v in ppo.critic.state_dict().items())
    torch.save({"policy": policy.state_dict(), "algorithm": ppo.state_dict()}, tmp_path / "c.pt")

    saved = torch.load(tmp_path / "c.pt", weights_only=False)
    twin = make_policy(config)
    twin.load_state_dict(saved["policy"])
    restored = PPO(twin, PPOConfig(epochs=2, minibatch=4, critic_lr=1e-2))
    restored.load_state_dict(saved["algorithm"])
    rows = _rows(config)
    with torch.no_grad():
        assert torch.equal(restored.value(rows), ppo.value(rows))
    # the critic's optimiser state came back with it: the next update moves both alike
    batch = ppo.prepare(chunks, [c.reward for c in chunks])
    ppo.update(batch, train_actor=False)
    restored.update(restored.prepare(chunks, [c.reward for c in chunks]), train_actor=False)
    with torch.no_grad():
        torch.testing.assert_close(restored.value(rows), ppo.value(rows))


def test_an_old_ppo_checkpoint_is_refused_with_a_reason():
    policy = make_policy(KINDS["chunk_mlp"])
    ppo = PPO(policy, PPOConfig())
    old = {k: v for k, v in ppo.state_dict().items() if k != "critic"}  # as written before
    with pytest.raises(ValueError, match="before PPO owned its critic"):
        PPO(make_policy(KINDS["chunk_mlp"]), PPOConfig()).load_state_dict(old)


@pytest.mark.parametrize("name", ["chunk_mlp", "chunk_cnn", "token"])
def test_old_states_with_a_value_head_load_and_ignore_it(name):
    """Cached BC bases and earlier checkpoints carry `critic.*` keys; they load, the keys
    dropped. Any other unknown key is still refused."""
    torch.manual_seed(0)
    config = KINDS[name]
    policy = make_policy(config)
    head = {f"critic.{k}": v for k, v in policy.make_critic().state_dict().items()}
    old = dict(policy.state_dict(), **head)
    twin = make_policy(config)
    twin.load_state_dict(old)  # a torch state (cached base, checkpoint)
    twin.load_policy_state({k: v.numpy() for k, v in old.items()})  # a numpy publication
    rows = _rows(config, 2)
    chunk = torch.zeros(2, config.horizon, config.action_dim)
    with torch.no_grad():
        assert torch.equal(twin.log_prob(rows, chunk), policy.log_prob(rows, chunk))
    assert "critic.0.weight" in head or "critic.head.0.weight" in head
    with pytest.raises(RuntimeError, match="Unexpected key"):
        twin.load_state_dict(dict(policy.state_dict(), stray=torch.zeros(1)))


def test_an_old_grpo_checkpoint_loads_its_reference_without_the_value_head():
    torch.manual_seed(0)
    policy = make_policy(KINDS["chunk_mlp"])
    grpo = GRPO(policy, GRPOConfig(group_size=2))
    state = grpo.state_dict()
    head = {f"critic.{k}": v for k, v in policy.make_critic().state_dict().items()}
    state["reference"] = dict(state["reference"], **head)  # as written before
    GRPO(make_policy(KINDS["chunk_mlp"]), GRPOConfig(group_size=2)).load_state_dict(state)
