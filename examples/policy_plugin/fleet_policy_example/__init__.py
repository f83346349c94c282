"""A policy from outside Fleet: a linear Gaussian over action chunks, post-trained by Fleet.

Install it next to Fleet and select it by name:

    pip install -e examples/policy_plugin
    fleet train policy.kind=linear policy.params.init_std=0.3
    fleet train policy.kind=linear policy.checkpoint=runs/lin/checkpoints/latest.safetensors

Fleet finds it through the `fleet.policies` entry point in this package's pyproject.toml and
calls `LinearChunkPolicy(config)`: `config` is Fleet's `PolicyConfig`, carrying the robot's
`obs_dim` and `action_dim`, the `horizon` H, and this package's own settings in
`config.params`. What Fleet needs of the policy is the contract of `algorithms.factory.Policy`
(README, "Plug in a policy"): `act`, `log_prob`, `policy_state`, `load_policy_state`, plus
`config`, `actor`, `obs_mean`, `set_obs_stats`, `make_critic` and `critic_input` for BC and PPO;
`capabilities` declares what it offers besides (`mean_chunk`: TD may train it), read at config
load from the class. It imports nothing of Fleet's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


class LinearChunkPolicy(nn.Module):
    """Chunk [H, A] ~ Normal(W @ normalised obs + b, std): one linear layer is the whole actor.
    Settings (`policy.params`): `init_std` (0.2), `critic_hidden` (64)."""

    capabilities = frozenset({"mean_chunk"})  # differentiable mean chunk: TD's actor π(s)

    def __init__(self, config: Any) -> None:
        super().__init__()
        params = {"init_std": 0.2, "critic_hidden": 64, **config.params}
        if set(params) != {"init_std", "critic_hidden"}:
            raise ValueError(f"policy.params: this policy takes init_std and critic_hidden, "
                             f"got {sorted(config.params)}")
        init_std, critic_hidden = float(params["init_std"]), int(params["critic_hidden"])
        if not init_std > 0:
            raise ValueError(f"policy.params.init_std must be > 0, got {init_std}")
        self.config = config  # Fleet reads obs_dim, action_dim, horizon from it
        self.critic_hidden = critic_hidden
        out = config.horizon * config.action_dim
        self.actor = nn.Linear(config.obs_dim, out)  # what PPO's actor step clips
        self.log_std = nn.Parameter(torch.full((out,), math.log(init_std)))
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        self.register_buffer("obs_mean", torch.zeros(config.obs_dim))
        self.register_buffer("obs_std", torch.ones(config.obs_dim))

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)

    def mean_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] -> mean chunk [B, H * A] (what BC fits)."""
        return self.actor(self._norm(obs))

    def log_prob(self, obs: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """obs [B, D], chunk [B, H, A] -> log-probability [B] of each whole chunk."""
        mean = self.mean_chunk(obs)
        dist = torch.distributions.Normal(mean, self.log_std.exp())
        return dist.log_prob(chunk.reshape(mean.shape)).sum(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, float]:
        """obs [D] -> (chunk [H, A], its log-probability under `log_prob`)."""
        x = torch.as_tensor(np.asarray(obs, np.float32), device=self.obs_mean.device)[None]
        mean = self.mean_chunk(x)
        chunk = mean if deterministic else mean + self.log_std.exp() * torch.randn_like(mean)
        chunk = chunk.reshape(1, self.config.horizon, self.config.action_dim)
        return chunk[0].cpu().numpy().astype(np.float32), float(self.log_prob(x, chunk)[0])

    def set_obs_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def make_critic(self) -> nn.Module:
        """A value MLP for PPO: `critic_input` rows [B, D] -> [B, 1]. The algorithm owns it."""
        d, h = self.config.obs_dim, self.critic_hidden
        net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(),
                            nn.Linear(h, 1))
        return net.to(self.obs_mean.device)

    def critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        return self._norm(obs)

    def policy_state(self) -> dict[str, np.ndarray]:
        """Weights as flat numpy arrays: what robots load."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
