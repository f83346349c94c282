"""Policies beyond the MLP ChunkPolicy: the token policy, its bins, PPO and GRPO on it."""

import numpy as np
import pytest
import torch

from algorithms.grpo import GRPO, GRPOConfig
from algorithms.ppo import PPO, PPOConfig
from algorithms.token_policy import TokenPolicy, TokenPolicyConfig, from_bins, hashed_words, to_bins
from tests.chunks import bandit_chunk


def small_token_policy(decode: str = "parallel", **kw) -> TokenPolicy:
    cfg = dict(obs_dim=4, action_dim=1, horizon=2, hidden=32, d_model=32, heads=4, layers=1,
               vocab=64, decode=decode)
    cfg.update(kw)
    policy = TokenPolicy(TokenPolicyConfig(**cfg))
    policy.set_instruction("match the sign of the context")
    return policy


class Batched:
    """Acts like the policy for `bandit_chunk`, from one batched decode of all contexts
    (one call per episode is too slow for a test on a loaded machine)."""

    def __init__(self, policy: TokenPolicy, contexts: np.ndarray) -> None:
        obs = torch.zeros(len(contexts), 4)
        obs[:, 0] = torch.as_tensor(contexts)
        index, logp = policy.decode(obs)
        cfg = policy.config
        self.rows = list(zip(from_bins(index, cfg.bins).reshape(-1, cfg.horizon,
                                                                 cfg.action_dim).numpy(),
                             logp.tolist(), strict=True))

    def act(self, obs):
        return self.rows.pop(0)


def bandit_batch(policy, rng, n=256, group_size=0):
    if group_size:
        contexts = np.repeat(rng.choice([-1.0, 1.0], n // group_size), group_size)
    else:
        contexts = rng.choice([-1.0, 1.0], n)
    acting = Batched(policy, contexts)
    chunks = [bandit_chunk(acting, float(c), str(i), 1.0, -1.0,
                           group=f"g{i // group_size}" if group_size else "")
              for i, c in enumerate(contexts)]
    return chunks, [c.reward for c in chunks]


def test_bins_round_trip():
    bins = 256
    index = torch.arange(bins)
    assert torch.equal(to_bins(from_bins(index, bins), bins), index)
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 3.0, -3.0])
    centre = from_bins(to_bins(x, bins), bins)
    assert torch.all((centre - x.clamp(-1, 1)).abs() <= 1.0 / bins + 1e-6)
    assert to_bins(torch.tensor([1.0]), bins).item() == bins - 1
    assert to_bins(torch.tensor([-1.0]), bins).item() == 0


def test_hashed_instruction_is_stable_and_distinguishes_words():
    a, b = hashed_words("Push the puck", 64), hashed_words("open the drawer", 64)
    assert np.array_equal(a, hashed_words("push THE puck!", 64))
    assert a.sum() == 3 and not np.array_equal(a, b)


@pytest.mark.parametrize("decode", ["parallel", "autoregressive"])
def test_token_policy_shapes_and_log_prob_of_executed_chunk(decode):
    torch.manual_seed(0)
    policy = small_token_policy(decode, action_dim=3, horizon=2)
    obs = np.array([1.0, 0.5, -0.5, 0.0], np.float32)
    chunk, logp = policy.act(obs, generator=torch.Generator().manual_seed(1))
    assert chunk.shape == (2, 3) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) < 1)
    assert isinstance(logp, float)
    x = torch.as_tensor(obs)[None]
    # re-evaluated log-prob of the executed chunk equals the one reported when acting
    assert abs(float(policy.log_prob(x, torch.as_tensor(chunk)[None])) - logp) < 1e-4
    # ... and equals the manual sum of each executed action's bin log-probability
    index = to_bins(torch.as_tensor(chunk).reshape(1, -1), 256)
    with torch.no_grad():
        logits = policy.logits(x, index)
        manual = sum(float(torch.log_softmax(logits[0, t], -1)[index[0, t]]) for t in range(6))
    assert abs(manual - logp) < 1e-4
    # any action inside a bin has that bin's log-probability
    nudged = torch.as_tensor(chunk)[None] + 0.2 / 256
    assert abs(float(policy.log_prob(x, nudged)) - logp) < 1e-4
    # deterministic acting repeats; the instruction changes the distribution
    first = policy.act(obs, deterministic=True)
    assert np.array_equal(first[0], policy.act(obs, deterministic=True)[0])
    before = policy.log_prob(x, torch.as_tensor(chunk)[None])
    policy.set_instruction("something else entirely")
    assert abs(float(policy.log_prob(x, torch.as_tensor(chunk)[None]) - before)) > 1e-6


def test_autoregressive_token_sees_only_earlier_tokens():
    torch.manual_seed(0)
    policy = small_token_policy("autoregressive", action_dim=2, horizon=2)
    x = torch.zeros(1, 4)
    a = torch.tensor([[3, 100, 7, 200]])
    b = torch.tensor([[3, 100, 9, 10]])
    with torch.no_grad():
        la, lb = policy.logits(x, a), policy.logits(x, b)
    assert torch.allclose(la[:, :3], lb[:, :3], atol=1e-5)
    assert not torch.allclose(la[:, 3], lb[:, 3])


def decode_by_recomputing(policy, obs, deterministic=False, generator=None):
    """The autoregressive decode before the KV cache: the whole decoder teacher-forced again
    for every token (H * A + 1 passes). The reference the cached decode must reproduce."""
    cfg = policy.config
    with torch.no_grad():
        index = torch.zeros(len(obs), policy.tokens, dtype=torch.long)
        for t in range(policy.tokens):
            logits = policy.logits(obs, index) / cfg.temperature
            if deterministic:
                index[:, t] = logits[:, t].argmax(-1)
            else:
                probs = torch.softmax(logits[:, t], dim=-1)
                index[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        logits = policy.logits(obs, index) / cfg.temperature
        logp = torch.log_softmax(logits, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)
    return index, logp


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_autoregressive_decode_matches_recomputing_every_token(temperature):
    torch.manual_seed(0)
    policy = small_token_policy("autoregressive", action_dim=3, horizon=3, layers=2,
                                temperature=temperature)
    with torch.no_grad():  # sharp logits, positions and bins that matter: a wrong cache shows
        for p in policy.actor.parameters():
            p.mul_(3.0)
        policy.actor.pos_embed.normal_()
    obs = torch.randn(5, 4)
    for seed in range(4):
        want = decode_by_recomputing(policy, obs, generator=torch.Generator().manual_seed(seed))
        got = policy.decode(obs, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got[0], want[0])  # the same tokens from the same generator
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-5)
    want = decode_by_recomputing(policy, obs, deterministic=True)
    got = policy.decode(obs, deterministic=True)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-5)
    # every token's logits, not only the sampled ones: the cache gives the teacher-forced logits
    index, logits = policy._decode_cached(obs, lambda step: step.argmax(-1))
    with torch.no_grad():
        forced = policy.logits(obs, index) / temperature
    torch.testing.assert_close(logits, forced, rtol=0, atol=1e-4)


def test_token_policy_state_round_trip():
    torch.manual_seed(0)
    policy = small_token_policy("autoregressive")
    twin = small_token_policy("autoregressive")
    policy.set_instruction("a different task")
    twin.load_policy_state(policy.policy_state())
    obs = np.array([1.0, 0, 0, 0], np.float32)
    assert np.array_equal(policy.act(obs, deterministic=True)[0],
                          twin.act(obs, deterministic=True)[0])
    assert all(isinstance(v, np.ndarray) for v in policy.policy_state().values())


@pytest.mark.slow  # 20 PPO iterations: ~130 s on the shared 2-core machine under load
def test_ppo_with_the_token_policy_solves_the_contextual_bandit():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = small_token_policy("parallel")
    ppo = PPO(policy, PPOConfig(actor_lr=3e-3, critic_lr=3e-3, minibatch=32, epochs=4))
    first = float(np.mean([r[-1] for r in bandit_batch(policy, rng)[1]]))
    for _ in range(20):
        chunks, rewards = bandit_batch(policy, rng, 128)
        ppo.update(ppo.prepare(chunks, rewards))
    final = float(np.mean([r[-1] for r in bandit_batch(policy, rng)[1]]))
    for ctx in (-1.0, 1.0):
        act = policy.act(np.array([ctx, 0, 0, 0], np.float32), deterministic=True)[0]
        assert np.all(np.sign(act) == ctx)
    assert final > 0.9 > first


def test_grpo_runs_on_the_autoregressive_token_policy():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    policy = small_token_policy("autoregressive")
    grpo = GRPO(policy, GRPOConfig(group_size=8, lr=3e-3, epochs=2, minibatch=64))
    before = {k: v.copy() for k, v in policy.policy_state().items()}
    for _ in range(2):
        chunks, rewards = bandit_batch(policy, rng, 64, 8)
        metrics = grpo.update(grpo.prepare(chunks, rewards))
        assert np.isfinite(metrics["policy_loss"])
    after = policy.policy_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith("actor"))
    assert set(after) == set(before) and not hasattr(grpo, "critic")  # GRPO needs none


def test_mlp_path_is_unchanged_and_cache_keys_stay():
    from algorithms.policy import ChunkPolicy, PolicyConfig, config_key_fields, mlp

    cfg = PolicyConfig(obs_dim=5, action_dim=2, horizon=3, hidden=16)
    torch.manual_seed(3)
    policy = ChunkPolicy(cfg)
    critic = policy.make_critic()  # now PPO's; drawn right after the actor, as it always was
    torch.manual_seed(3)
    actor, old_critic = mlp(5, 16, 2, 6), mlp(5, 16, 2, 1)  # what the MLP policy always built
    expected = {f"actor.{k}": v for k, v in actor.state_dict().items()}
    state = policy.state_dict()
    assert set(state) == set(expected) | {"log_std", "obs_mean", "obs_std"}
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert all(torch.equal(a, b) for a, b in zip(critic.state_dict().values(),
                                                 old_critic.state_dict().values(), strict=True))
    assert set(config_key_fields(cfg)) == {"obs_dim", "action_dim", "horizon", "hidden", "layers",
                                           "init_std", "learn_std", "init"}
    assert "backbone" in config_key_fields(PolicyConfig(backbone="transformer"))


def test_transformer_backbone_and_image_encoder_shapes():
    from algorithms.backbones import ImageEncoder
    from algorithms.factory import make_policy
    from algorithms.policy import ChunkPolicy, PolicyConfig

    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(obs_dim=6, action_dim=2, horizon=3, backbone="transformer",
                                      d_model=16, heads=2, layers=1, hidden=16))
    assert isinstance(policy, ChunkPolicy)
    chunk, logp = policy.act(np.ones(6, np.float32))
    assert chunk.shape == (3, 2) and np.isfinite(logp)
    obs = torch.randn(5, 6)
    assert policy.log_prob(obs, torch.zeros(5, 3, 2)).shape == (5,)
    # chunk queries attend to the state tokens: the mean depends on the observation
    assert not torch.allclose(policy.mean_chunk(obs[:1]), policy.mean_chunk(obs[1:2]))
    image = torch.randint(0, 255, (4, 8, 8, 3), dtype=torch.uint8)
    assert ImageEncoder(features=12)(image).shape == (4, 12)


def test_make_policy_builds_each_kind():
    from algorithms.factory import make_policy
    from algorithms.policy import PolicyConfig

    token = make_policy(PolicyConfig(kind="token", obs_dim=4, action_dim=1, horizon=2, hidden=16,
                                     d_model=16, heads=2, layers=1, decode="parallel",
                                     instruction="push"))
    assert isinstance(token, TokenPolicy) and token.instruction_bow.sum() == 1
    with pytest.raises(ValueError):
        PolicyConfig(kind="nope")


@pytest.mark.parametrize("name,kind,backbone", [("chunk_mlp", "chunk", "mlp"),
                                                ("chunk_transformer", "chunk", "transformer"),
                                                ("token", "token", "mlp"),
                                                ("flow", "flow", "mlp")])
def test_policy_configs_load(name, kind, backbone):
    from fleet.config import load_config

    cfg = load_config([f"policy={name}"])
    assert (cfg.policy.kind, cfg.policy.backbone) == (kind, backbone)
