"""The policy seam and its registry: `make_policy(config)` builds the class `policy.kind` names.

Example (what robots, the inference server and the learner do with any policy):

    policy = make_policy(PolicyConfig(kind="token", obs_dim=39, action_dim=4, decode="parallel"))
    chunk, logp = policy.act(obs)                         # a robot's call: [H, A], float
    logp = policy.log_prob(rows, chunks)                  # an algorithm's: [B] of executed chunks
    chunk, logp, aux = flow.act(obs)                      # a policy with per-call data (aux_spec)
    logp = flow.log_prob(rows, chunks, aux=aux_rows)      # ... gets it back from the record
    robot_copy.load_policy_state(policy.policy_state())   # weights out, then in

Built-in kinds are listed in `BUILTIN` (chunk, token, hf, act, flow) and imported when named.
Third-party policies plug in through the entry-point group `fleet.policies`: the entry point is
the policy class, called as `cls(config: PolicyConfig)` (the config carries the robot's sizes,
`horizon`, and the plug-in's own settings in `policy.params`), selected with
`policy.kind=<name>` (`examples/policy_plugin/`); any factory `make(config) -> Policy` also
works, but declares no `capabilities`. Nothing registers itself on import.

Capabilities: what a policy offers beyond the `Policy` contract, declared by its class as
`capabilities = frozenset({...})` of `CAPABILITIES`' names, is read at config load without
building it (`capabilities(kind)`); an algorithm declares those it calls as `policy_needs`
(`algorithms.check_policy`), so TD with a policy lacking `mean_chunk` stops there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Protocol

import numpy as np
import torch

from algorithms.policy import GROUP, ChunkPolicy, PolicyConfig, policy_kinds


class Policy(Protocol):
    """Observation -> action chunk; what a robot runs and an on-policy algorithm improves.

        chunk, logp = policy.act(obs)                     # obs: obs["state"] [D], or the whole
                                                          # observation dict if `takes_obs_dict`
        logp = policy.log_prob(rows, chunks)              # rows [B, D'], chunks [B, H, A] -> [B]
        other.load_policy_state(policy.policy_state())    # flat numpy arrays: what robots load

    The policy is a `torch.nn.Module`; besides these, PPO, GRPO and DPO read `config`
    (`obs_dim`, `action_dim`, `horizon`, and `image_key`/`mask_key` when the rows carry more
    than the state), `actor` (the module whose parameters the actor step clips), `obs_mean` (a
    buffer: its device is the policy's), PPO `make_critic()`, PPO and TD `critic_input(rows)`,
    TD `mean_chunk(rows)` (differentiable: its actor's π(s); the capability `mean_chunk`);
    BC calls `set_obs_stats(mean, std)` and fits `mean_chunk(rows)` [B, H * A] where its
    kind declares it, else maximises `log_prob`. `rows` are
    `algorithms.policy.policy_input(obs, keys)`: the state, then each of `input_keys(config)`
    flattened. Optional: `takes_obs_dict` (True:
    `act` gets the whole observation dict, cameras included) and `act_batch(rows [B, D],
    deterministic, generator) -> (chunks [B, H, A], logp [B])` as tensors (and, for a policy
    with per-call data, its `aux` {name: [B, ...]} third), with which
    `fleet.inference=server` answers many robots in one pass (else one `act` per request).
    The log-probability of `act` must
    be that of `log_prob` on the same chunk: it is PPO's behaviour log-probability.

    Per-call data: a policy whose likelihood needs more per call than the chunk (a flow
    policy's denoising path; sampled ids where they cannot be read back from the chunk)
    declares `aux_spec = {name: (shape, dtype)}` (one call's arrays: float32, int32 or int64),
    returns `(chunk, logp, aux)` from `act` with exactly those arrays, and takes
    `log_prob(rows, chunks, aux={name: [B, *shape]})`. Robots store `aux` per call in the
    rollout record (`RolloutChunk.aux` [K, *shape], checked at ingest); PPO, GRPO and DPO hand
    it back (`algorithms.call_data`); TD uses `mean_chunk` only. A policy without `aux_spec`
    is never passed `aux`. BC calls `bc_loss(rows, chunks, generator)` where a policy declares
    one (the capability `bc_loss`: the flow policy's flow matching), before `mean_chunk`. The
    token policy needs no `aux`: its acting chunk is the sampled bins' centres, which
    `log_prob` maps back to the same bins.

    Language corrections: a policy with `takes_corrections = True`, `instruction` (the text it
    acts on) and `set_instruction(text)` is set by its robot's worker to the console's newest
    correction of the episode before each call (back to its own instruction in a new
    episode); it must record the instruction per call in `aux` (the hf adapter's
    `instruction` ids) so that `log_prob` scores each chunk with the one actually used.
    """

    config: Any
    obs_mean: torch.Tensor

    def act(self, obs: Any, deterministic: bool = False) -> tuple[np.ndarray, float]: ...

    def log_prob(self, obs: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor: ...

    def policy_state(self) -> dict[str, np.ndarray]: ...

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None: ...


def _chunk(config: PolicyConfig) -> Any:
    return ChunkPolicy(config)


def _token(config: PolicyConfig) -> Any:
    from algorithms.token_policy import TokenPolicy, TokenPolicyConfig

    return TokenPolicy(TokenPolicyConfig(
        obs_dim=config.obs_dim, action_dim=config.action_dim, horizon=config.horizon,
        bins=config.bins, decode=config.decode, d_model=config.d_model, heads=config.heads,
        layers=config.layers, hidden=config.hidden))


def _hf(config: PolicyConfig) -> Any:
    from algorithms.hf_adapter import HFPolicyConfig, HFVLAPolicy

    return HFVLAPolicy(HFPolicyConfig(
        path=config.path, obs_dim=config.obs_dim, action_dim=config.action_dim,
        horizon=config.horizon, bins=config.bins, hidden=config.hidden,
        image_key=config.image_key, image_size=config.image_size, **config.params))


def _act(config: PolicyConfig) -> Any:
    from algorithms.act_policy import make

    return make(config)


def _flow(config: PolicyConfig) -> Any:
    from algorithms.flow_policy import FlowPolicy, flow_config

    return FlowPolicy(flow_config(config))


# the kinds of `algorithms.policy.BUILTIN_KINDS`, which PolicyConfig checks without importing this
BUILTIN: Mapping[str, Callable[[PolicyConfig], Any]] = {"chunk": _chunk, "token": _token,
                                                        "hf": _hf, "act": _act, "flow": _flow}
# the class each of them builds (module, name): its `capabilities`, read without building it
BUILTIN_CLASSES: Mapping[str, tuple[str, str]] = {
    "chunk": ("algorithms.policy", "ChunkPolicy"), "token": ("algorithms.token_policy",
                                                             "TokenPolicy"),
    "hf": ("algorithms.hf_adapter", "HFVLAPolicy"), "act": ("algorithms.act_policy", "ACTPolicy"),
    "flow": ("algorithms.flow_policy", "FlowPolicy")}

# Every capability a policy class may declare, and what it promises.
CAPABILITIES: Mapping[str, str] = {
    "mean_chunk": "mean_chunk(rows) -> [B, H * A], differentiable: an off-policy actor's π(s)",
    "bc_loss": "bc_loss(rows, chunks [B, H, A], generator) -> loss: its own behaviour cloning "
               "objective, which `algorithms.bc.train_bc` minimises instead of L2 on mean_chunk"}


def capabilities(kind: str) -> frozenset[str]:
    """What `policy.kind=kind` declares it offers (its class's `capabilities`; none for a
    plug-in factory that declares none), without building it or importing its heavy parts."""
    if kind in BUILTIN_CLASSES:
        module, name = BUILTIN_CLASSES[kind]
        declared = getattr(importlib.import_module(module), name).capabilities
    else:  # the entry point: a class's own attribute, or a factory's if it set one
        declared = getattr(_factory(kind), "capabilities", frozenset())
    return frozenset(declared)


def make_policy(config: PolicyConfig) -> Any:
    """chunk -> ChunkPolicy (mlp or transformer backbone); token -> TokenPolicy; hf ->
    HFVLAPolicy (transformers imported only then); any other kind -> the `fleet.policies`
    entry point of that name, called with `config`."""
    policy = _factory(config.kind)(config)
    if config.instruction:
        policy.set_instruction(config.instruction)
    return policy


def _factory(kind: str) -> Callable[[PolicyConfig], Any]:
    if kind in BUILTIN:
        return BUILTIN[kind]
    for ep in metadata.entry_points(group=GROUP):
        if ep.name == kind:
            factory: Callable[[PolicyConfig], Any] = ep.load()
            return factory
    raise ValueError(f"unknown policy.kind={kind!r}; known: {', '.join(policy_kinds())}")
