"""A few-step flow chunk policy with a tractable log-probability, in the manner of ReinFlow.

Paper: Zhang et al. 2025, "ReinFlow: Fine-tuning Flow Matching Policy with Online Reinforcement
Learning", https://arxiv.org/abs/2505.22094. A velocity field `v(x, t | obs)` over action chunks
(flattened, `H * A` numbers) is trained by flow matching (Lipman et al. 2023,
https://arxiv.org/abs/2210.02747) from N(0, I) to the demonstrations' chunks; acting integrates
it in K Euler steps, and each step adds Gaussian noise:

    x_0 ~ N(0, I);  x_{k+1} = x_k + v(x_k, k / K | obs) / K + sigma_k * eps_k;  chunk = x_K

so the chain is a Markov chain of Gaussians and its log-probability is a sum of K + 1 Gaussian
log-densities. That needs the path `x_0 .. x_{K-1}`, not only the chunk: it is the policy's
per-call data (`aux_spec = {"path": ((K, H, A), "float32")}`, `algorithms.call_data`), stored
by the robot in the rollout record and handed back as `log_prob(rows, chunks, aux={"path": ...})`.
Deviations from ReinFlow: the noise std is one number per step and action number (fixed at
`policy.init_std`, or learned with `policy.learn_std=true`, clamped to [min_std, max_std]),
not a noise network conditioned on the observation; time is one scalar input, not an
embedding; BC samples t uniformly in [0, 1).

Example:

    policy = FlowPolicy(FlowPolicyConfig(obs_dim=39, action_dim=4, horizon=4, steps=4))
    chunk, logp, aux = policy.act(obs)               # [H, A], float, {"path": [K, H, A]}
    logp = policy.log_prob(rows, chunks, aux={"path": paths})   # [B]; equals act's logp
    loss = policy.bc_loss(rows, chunks, generator)   # flow matching, what `fleet pretrain` fits
    critic = policy.make_critic()                    # PPO's value MLP; robots never run one
    pi = policy.mean_chunk(rows)                     # [B, H * A], differentiable: TD's actor
    chunks, logp, aux = policy.act_batch(rows)       # many robots at once (inference server)

Deterministic acting (held-out evaluation) starts from x_0 = 0 and adds no noise. With a
trained velocity field the last step lands the chain on the predicted chunk whatever the
earlier noise, so the chunk's spread is about `sigma_{K-1}`, as a Gaussian chunk policy's is
its std. That deterministic chain is also `mean_chunk`, with gradients through its K Euler
steps: the reparameterised π(s) an off-policy actor maximises Q of (`algorithms.td`).
An operator-chosen call (PPO's BC term) is scored with the sampled call's path and the
executed chunk as its end: the likelihood that the last step lands there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.policy import add_obs_norm, mlp


@dataclasses.dataclass(frozen=True)
class FlowPolicyConfig:
    """Shape and capacity of a `FlowPolicy` (`policy.kind=flow`; `steps`, `min_std` and
    `max_std` come from `policy.params`)."""

    obs_dim: int = 39
    action_dim: int = 4
    horizon: int = 4
    hidden: int = 256
    layers: int = 2
    steps: int = 4  # K: denoising (Euler) steps per call
    init_std: float = 0.2  # noise std added at each step, per action number
    learn_std: bool = False
    min_std: float = 0.02  # a learned std stays in [min_std, max_std] (ReinFlow bounds it too)
    max_std: float = 0.5

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "horizon", "hidden", "layers", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.min_std <= self.init_std <= self.max_std:
            raise ValueError("flow policy: need 0 < min_std <= init_std <= max_std, got "
                             f"{self.min_std}, {self.init_std}, {self.max_std}")


PARAMS = {"steps": int, "min_std": float, "max_std": float}  # what `policy.params` may set


def flow_config(policy: Any) -> FlowPolicyConfig:
    """A `PolicyConfig` of `kind=flow` as the flow policy's config: `policy.params` checked
    (known keys, types, ranges), each error naming its key; run at config load."""
    params = dict(policy.params)
    for key, value in params.items():
        kind = PARAMS.get(key)
        if kind is None:
            raise ValueError(f"policy.params.{key}: policy.kind=flow takes params "
                             f"{', '.join(PARAMS)}")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (kind is int and not isinstance(value, int)):
            raise ValueError(f"policy.params.{key} must be {kind.__name__}, got {value!r}")
        params[key] = kind(value)
    if params.get("steps", 1) < 1:
        raise ValueError(f"policy.params.steps must be >= 1, got {params['steps']}")
    try:
        return FlowPolicyConfig(
            obs_dim=policy.obs_dim, action_dim=policy.action_dim, horizon=policy.horizon,
            hidden=policy.hidden, layers=policy.layers, init_std=policy.init_std,
            learn_std=policy.learn_std, **params)
    except ValueError as e:
        raise ValueError(f"policy.init_std and policy.params: {e}") from e


class FlowPolicy(nn.Module):
    """K-step noisy flow over action chunks `[H, A]`; holds no critic (`make_critic` builds one
    for the algorithm)."""

    capabilities = frozenset({"mean_chunk", "bc_loss"})  # `algorithms.factory.CAPABILITIES`

    def __init__(self, config: FlowPolicyConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.size = cfg.horizon * cfg.action_dim
        # the velocity field: [normalised obs, x_t, t] -> [H * A]
        self.actor: nn.Module = mlp(cfg.obs_dim + self.size + 1, cfg.hidden, cfg.layers,
                                    self.size)
        self.log_std = nn.Parameter(torch.full((cfg.steps, self.size), math.log(cfg.init_std)),
                                    requires_grad=cfg.learn_std)
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        add_obs_norm(self, cfg.obs_dim)

    @property
    def aux_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-call data (`algorithms.call_data`): the path x_0 .. x_{K-1} of each call."""
        cfg = self.config
        return {"path": ((cfg.steps, cfg.horizon, cfg.action_dim), "float32")}

    # -- inputs ---------------------------------------------------------------------------------

    def set_obs_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        d = self.config.obs_dim
        self.obs_mean.copy_(torch.as_tensor(mean[:d], dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std[:d], 1e-3), dtype=torch.float32))

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)

    def velocity(self, cond: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Normalised obs [B, D], x_t [B, H * A], t [B, 1] -> velocity [B, H * A]."""
        return self.actor(torch.cat([cond, x, t], dim=-1))

    def std(self) -> torch.Tensor:
        """The noise std of each step [K, H * A]."""
        cfg = self.config
        return self.log_std.exp().clamp(cfg.min_std, cfg.max_std)

    # -- likelihood -----------------------------------------------------------------------------

    def _chain_logp(self, cond: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """cond [B, D], the chain xs [B, K + 1, H * A] -> log-probability [B]: x_0 under N(0, I)
        plus each step's Gaussian transition, all K velocities in one forward pass."""
        b, k = len(xs), self.config.steps
        t = (torch.arange(k, device=xs.device, dtype=xs.dtype) / k).repeat(b).unsqueeze(-1)
        v = self.velocity(cond.repeat_interleave(k, 0), xs[:, :-1].reshape(b * k, -1), t)
        mean = xs[:, :-1] + v.reshape(b, k, -1) / k
        steps = torch.distributions.Normal(mean, self.std()).log_prob(xs[:, 1:]).sum((1, 2))
        start = -0.5 * (xs[:, 0] ** 2).sum(-1) - 0.5 * self.size * math.log(2 * math.pi)
        return start + steps

    def log_prob(self, obs: torch.Tensor, chunk: torch.Tensor,
                 aux: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """obs [B, D], chunk [B, H, A], aux {"path": [B, K, H, A]} -> log-probability [B] of the
        chain that ended in each chunk."""
        if aux is None or "path" not in aux:
            raise ValueError("policy.kind=flow needs each call's denoising path "
                             "(log_prob(rows, chunks, aux={'path': ...}), "
                             "algorithms.call_data); this algorithm does not pass it")
        b = len(obs)
        xs = torch.cat([aux["path"].reshape(b, self.config.steps, -1),
                        chunk.reshape(b, 1, -1)], dim=1)
        return self._chain_logp(self._norm(obs), xs.float())

    def bc_loss(self, obs: torch.Tensor, chunk: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow matching toward demonstrated chunks: obs [B, D], chunk [B, H, A] -> scalar.
        x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I), target velocity x_1 - x_0."""
        x1 = chunk.reshape(len(obs), -1)
        x0 = torch.randn(x1.shape, generator=generator).to(x1.device)
        t = torch.rand((len(obs), 1), generator=generator).to(x1.device)
        v = self.velocity(self._norm(obs), (1 - t) * x0 + t * x1, t)
        return ((v - (x1 - x0)) ** 2).mean()

    # -- for an algorithm's critic --------------------------------------------------------------

    def make_critic(self) -> nn.Module:
        """A fresh value MLP for an algorithm: `critic_input` rows [B, D] -> [B, 1]."""
        cfg = self.config
        return mlp(cfg.obs_dim, cfg.hidden, cfg.layers, 1).to(self.obs_mean.device)

    def critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        return self._norm(obs)

    # -- acting ---------------------------------------------------------------------------------

    def mean_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] -> the deterministic chunk [B, H * A] (x_0 = 0, no noise), differentiable
        through the K Euler steps."""
        b, k = len(obs), self.config.steps
        cond = self._norm(obs)
        x = torch.zeros(b, self.size, device=obs.device)
        for i in range(k):
            x = x + self.velocity(cond, x, torch.full((b, 1), i / k, device=obs.device)) / k
        return x

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs [B, D] -> (chunks [B, H, A], log-probabilities [B], paths [B, K, H, A])."""
        cfg = self.config
        b, k = len(obs), cfg.steps
        cond = self._norm(obs)
        std = self.std()

        def noise() -> torch.Tensor:
            return torch.randn((b, self.size), generator=generator).to(obs.device)

        x = torch.zeros(b, self.size, device=obs.device) if deterministic else noise()
        xs = [x]
        for i in range(k):
            t = torch.full((b, 1), i / k, device=obs.device)
            x = x + self.velocity(cond, x, t) / k
            if not deterministic:
                x = x + std[i] * noise()
            xs.append(x)
        chain = torch.stack(xs, dim=1)
        logp = self._chain_logp(cond, chain)
        return (x.reshape(b, cfg.horizon, cfg.action_dim), logp,
                chain[:, :-1].reshape(b, k, cfg.horizon, cfg.action_dim))

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False,
            generator: torch.Generator | None = None
            ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """One policy call: obs [D] -> (chunk [H, A], log-prob, {"path": [K, H, A]})."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.obs_mean.device).unsqueeze(0)
        chunk, logp, path = self.sample(x, deterministic, generator)
        return (chunk[0].cpu().numpy().astype(np.float32), float(logp[0]),
                {"path": path[0].cpu().numpy().astype(np.float32)})

    @torch.no_grad()
    def act_batch(self, rows: torch.Tensor, deterministic: bool = False,
                  generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """rows [B, D] -> (chunks [B, H, A], log-probs [B], {"path": [B, K, H, A]}): many
        robots' calls in one pass (the inference server's call)."""
        chunks, logp, path = self.sample(rows.to(self.obs_mean.device), deterministic, generator)
        return chunks, logp, {"path": path}

    def policy_state(self) -> dict[str, np.ndarray]:
        """Weights as flat numpy arrays: what robots load and what crosses process boundaries."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
