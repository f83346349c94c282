"""`make_policy(config)`: the policy class that `policy.kind` names, built from `PolicyConfig`.

Example:

    policy = make_policy(PolicyConfig(kind="token", obs_dim=39, action_dim=4, decode="parallel"))
    chunk, logp = policy.act(obs)

Every class gives `act`, `log_prob(obs, chunk)`, `actor`, `obs_mean`, `set_obs_stats`,
`policy_state` and `load_policy_state`, what PPO, GRPO and robots use, and `make_critic` with
`critic_input` for an algorithm that needs a value function (PPO); the policy holds no critic.
"""

from __future__ import annotations

from typing import Any

from algorithms.policy import ChunkPolicy, PolicyConfig


def make_policy(config: PolicyConfig) -> Any:
    """chunk -> ChunkPolicy (mlp or transformer backbone); token -> TokenPolicy; hf ->
    HFVLAPolicy (transformers imported only then)."""
    if config.kind == "chunk":
        return ChunkPolicy(config)
    if config.kind == "token":
        from algorithms.token_policy import TokenPolicy, TokenPolicyConfig

        policy: Any = TokenPolicy(TokenPolicyConfig(
            obs_dim=config.obs_dim, action_dim=config.action_dim, horizon=config.horizon,
            bins=config.bins, decode=config.decode, d_model=config.d_model, heads=config.heads,
            layers=config.layers, hidden=config.hidden))
    elif config.kind == "hf":
        from algorithms.hf_adapter import HFPolicyConfig, HFVLAPolicy

        policy = HFVLAPolicy(HFPolicyConfig(
            path=config.path, obs_dim=config.obs_dim, action_dim=config.action_dim,
            horizon=config.horizon, bins=config.bins, hidden=config.hidden))
    else:
        raise ValueError(f"policy.kind={config.kind!r}: chunk, token or hf")
    if config.instruction:
        policy.set_instruction(config.instruction)
    return policy
