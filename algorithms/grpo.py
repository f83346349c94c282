"""GRPO over action chunks: group-relative advantages, no critic, KL to a frozen reference.

Papers: Shao et al. 2024 (DeepSeekMath, https://arxiv.org/abs/2402.03300) and SimpleVLA-RL
(Li et al. 2025, https://arxiv.org/abs/2509.09674), which uses it for VLAs with sparse success
rewards. Deviations:

- A group is G episodes of one robot from one start state (simulators reset by seed).
- Every policy call of an episode gets that episode's advantage, the z-score of its return
  within its group; groups whose returns are all equal (all success or all failure) carry no
  signal and are filtered out, as SimpleVLA-RL does.
- The clipped surrogate is decoupled like `algorithms.ppo` (proximal = weights when the batch
  was formed; behaviour = the robot's), and the KL to the reference uses the k3 estimator.

Example:

    grpo = GRPO(policy, GRPOConfig(group_size=8))
    batch = grpo.prepare(chunks, rewards)      # chunks: complete groups of complete episodes
    metrics = grpo.update(batch)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from algorithms.policy import ChunkPolicy, input_keys, policy_input
from algorithms.ppo import PPOBatch, clipped_policy_loss
from buffers.feed import DataNeeds
from buffers.groups import complete_groups
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    group_size: int = 8  # G: episodes per start state
    clip: float = 0.2
    kl_coef: float = 0.02  # β, pull toward the frozen reference (the base policy)
    epochs: int = 4
    minibatch: int = 256  # policy calls
    lr: float = 3e-5
    is_clip: float = 2.0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("grpo.group_size must be >= 2: advantages are relative to a group")
        if self.epochs < 1 or self.minibatch < 1 or not self.lr > 0 or self.kl_coef < 0:
            raise ValueError("grpo: epochs, minibatch >= 1, lr > 0 and kl_coef >= 0")


def group_advantages(returns: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """returns [N, G] -> (z-scores [N, G], kept [N]); groups with equal returns are dropped."""
    mean = returns.mean(axis=1, keepdims=True)
    std = returns.std(axis=1, keepdims=True)
    kept = std[:, 0] > eps
    return np.where(std > eps, (returns - mean) / np.maximum(std, eps), 0.0), kept


class GRPO:
    """Updates only the actor: the group is the baseline, so GRPO needs no critic."""

    def __init__(self, policy: ChunkPolicy, config: GRPOConfig) -> None:
        self.policy = policy
        self.config = config
        self.reference = copy.deepcopy(policy).requires_grad_(False)
        self.opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad],
                                    lr=config.lr)

    @staticmethod
    def needs(config: GRPOConfig) -> DataNeeds:
        """Complete groups of `group_size` episodes, within the learner's `max_staleness`."""
        return DataNeeds(group_size=config.group_size)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> PPOBatch:
        """`chunks` must hold complete groups (see `buffers.groups`); `rewards` [T] per chunk."""
        score = {c.key: float(r.sum()) for c, r in zip(chunks, rewards, strict=True)}
        groups, _ = complete_groups(list(chunks), self.config.group_size)
        returns = np.array([[sum(score[c.key] for c in ep) for ep in g] for g in groups])
        adv, kept = group_advantages(returns.reshape(len(groups), self.config.group_size))
        obs, acts, blogp, advs = [], [], [], []
        device = self.policy.obs_mean.device
        keys = input_keys(self.policy.config)
        for g, group in enumerate(groups):
            if not kept[g]:
                continue
            for e, episode in enumerate(group):
                for c in episode:
                    state = policy_input(c.obs, keys, device)
                    obs.append(state[: c.num_steps : c.horizon])
                    acts.append(torch.tensor(c.policy_action, device=device))
                    blogp.append(torch.tensor(c.logp, device=device))
                    advs.append(torch.full((c.num_calls,), float(adv[g, e]), device=device))
        if not obs:
            empty = torch.zeros(0, device=device)
            return PPOBatch(torch.zeros(0, self.policy.config.obs_dim, device=device),
                            torch.zeros(0, self.policy.config.horizon,
                                        self.policy.config.action_dim, device=device),
                            empty, empty, empty, empty)
        o, a = torch.cat(obs), torch.cat(acts)
        return PPOBatch(obs=o, chunk=a, behaviour_logp=torch.cat(blogp),
                        prox_logp=self.policy.log_prob(o, a), advantage=torch.cat(advs),
                        value_target=torch.zeros(len(o), device=device))

    def update(self, batch: PPOBatch, train_actor: bool = True) -> dict[str, float]:
        """`train_actor` is ignored: there is no critic to warm up first."""
        cfg = self.config
        stats: dict[str, list[float]] = {"policy_loss": [], "kl_ref": [], "clip_frac": []}
        if len(batch) == 0:  # every group was all-success or all-failure
            return {"policy_loss": 0.0, "kl_ref": 0.0, "clip_frac": 0.0}
        gen = torch.Generator().manual_seed(len(batch))
        for _ in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=gen).to(batch.obs.device)
            for idx in order.split(cfg.minibatch):
                logp = self.policy.log_prob(batch.obs[idx], batch.chunk[idx])
                surrogate = clipped_policy_loss(logp, batch.prox_logp[idx],
                                                batch.behaviour_logp[idx], batch.advantage[idx],
                                                cfg.clip, cfg.is_clip)
                with torch.no_grad():
                    ref = self.reference.log_prob(batch.obs[idx], batch.chunk[idx])
                log_r = ref - logp  # k3: E[(r - 1) - log r] with r = π_ref / π_θ, ≥ 0
                kl = ((log_r.exp() - 1) - log_r).mean()
                loss = surrogate + cfg.kl_coef * kl
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.actor.parameters(), cfg.max_grad_norm)
                self.opt.step()
                ratio = (logp - batch.prox_logp[idx]).exp()
                stats["policy_loss"].append(surrogate.item())
                stats["kl_ref"].append(kl.item())
                stats["clip_frac"].append(((ratio - 1).abs() > cfg.clip).float().mean().item())
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def state_dict(self) -> dict[str, object]:
        return {"opt": self.opt.state_dict(), "reference": self.reference.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.opt.load_state_dict(state["opt"])  # type: ignore[arg-type]
        self.reference.load_state_dict(state["reference"])  # type: ignore[arg-type]
