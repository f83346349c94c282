"""GRPO over action chunks: group-relative advantages, no critic, optional KL to a reference.

Papers: Shao et al. 2024 (DeepSeekMath, https://arxiv.org/abs/2402.03300), DAPO (Yu et al.
2025, https://arxiv.org/abs/2503.14476) and SimpleVLA-RL (Li et al. 2025,
https://arxiv.org/abs/2509.09674), which uses it for VLAs with sparse success rewards.
Deviations and choices:

- A group is G episodes of one robot from one start state (simulators reset by seed).
- Every policy call of an episode gets that episode's advantage, the z-score of its return
  within its group. Groups whose returns are all equal (all success or all failure) carry no
  signal; **dynamic sampling** (DAPO): they are counted and left out, and `prepare` keeps the
  informative groups it has seen and returns an empty batch until it holds `min_groups` of
  them, so an update never trains on 0 rows (the learner skips an empty batch without
  publishing, so the held groups stay on-policy). `informative_share` is logged.
- **Asymmetric clip** (DAPO "clip-higher"): the ratio is clipped to [1 - clip_low, 1 + clip_high],
  0.2 / 0.28 by default, as SimpleVLA-RL launches it.
- **Each episode weighs the same**: the loss is the mean over episodes of the mean over that
  episode's calls (rows weigh 1 / calls of their episode), so long failed episodes do not
  outweigh short successful ones.
- The clipped surrogate is decoupled like `algorithms.ppo` (proximal = weights when the batch
  was formed; behaviour = the robot's). The KL to the frozen reference (k3 estimator) is off by
  default (`kl_coef` 0, as DAPO and SimpleVLA-RL); `kl_ref` is logged either way as the drift.
- A policy with per-call data (`aux_spec`, e.g. the flow policy's denoising path) gets each
  call's `aux` from the record back in every `log_prob`, its reference's too
  (`algorithms.call_data`); `is_weight` (behaviour -> proximal) is 1 on fresh data.

Example:

    grpo = GRPO(policy, GRPOConfig(group_size=8))
    batch = grpo.prepare(chunks, rewards)      # chunks: complete groups of complete episodes
    if len(batch):                             # 0: still collecting informative groups
        metrics = grpo.update(batch)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from algorithms.call_data import aux_rows, aux_spec, log_prob
from algorithms.policy import ChunkPolicy, input_keys, policy_input
from algorithms.ppo import PPOBatch
from buffers.feed import DataNeeds
from buffers.groups import complete_groups
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    group_size: int = 8  # G: episodes per start state
    clip_low: float = 0.2  # ratio clipped below at 1 - clip_low
    clip_high: float = 0.28  # and above at 1 + clip_high (DAPO's clip-higher)
    kl_coef: float = 0.0  # β, pull toward the frozen reference (the base policy); 0: off
    min_groups: int = 2  # informative groups (returns not all equal) an update needs
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
        if not (0 < self.clip_low < 1 and self.clip_high > 0) or self.min_groups < 1:
            raise ValueError("grpo: clip_low in (0, 1), clip_high > 0, min_groups >= 1")


def group_advantages(returns: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """returns [N, G] -> (z-scores [N, G], kept [N]); groups with equal returns are dropped."""
    mean = returns.mean(axis=1, keepdims=True)
    std = returns.std(axis=1, keepdims=True)
    kept = std[:, 0] > eps
    return np.where(std > eps, (returns - mean) / np.maximum(std, eps), 0.0), kept


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Mean k3 estimate of KL(π_θ ‖ π_ref) from samples of π_θ: E[(r - 1) - log r], r = π_ref/π_θ;
    every term ≥ 0 (Schulman, "Approximating KL divergence", 2020)."""
    log_r = ref_logp - logp
    return ((log_r.exp() - 1) - log_r).mean()


def grpo_policy_loss(logp: torch.Tensor, prox_logp: torch.Tensor, behaviour_logp: torch.Tensor,
                     adv: torch.Tensor, clip_low: float, clip_high: float, is_clip: float,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Decoupled surrogate with the ratio clipped to [1 - clip_low, 1 + clip_high], to be
    minimised: the `weight`-weighted mean over rows (plain mean without weights). All [B]."""
    ratio = (logp - prox_logp).exp()
    is_weight = (prox_logp - behaviour_logp).exp().clamp(max=is_clip)
    surrogate = is_weight * torch.min(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    if weight is None:
        return -surrogate.mean()
    return -(weight * surrogate).sum() / weight.sum()


class GRPO:
    """Updates only the actor: the group is the baseline, so GRPO needs no critic."""

    def __init__(self, policy: ChunkPolicy, config: GRPOConfig) -> None:
        self.policy = policy
        self.config = config
        self.reference = copy.deepcopy(policy).requires_grad_(False)
        self.opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad],
                                    lr=config.lr)
        # informative groups held until there are `min_groups` (rows of each, on the current
        # weights: nothing updates the policy while they wait), and the groups seen meanwhile
        self._held: list[tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor] | None]] = []
        self._seen = 0
        self._ready: dict[str, float] = {}

    @staticmethod
    def needs(config: GRPOConfig) -> DataNeeds:
        """Complete groups of `group_size` episodes, within the learner's `max_staleness`."""
        return DataNeeds(group_size=config.group_size, holds_batches=True)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> PPOBatch:
        """`chunks` must hold complete groups (see `buffers.groups`); `rewards` [T] per chunk.
        Returns an empty batch while fewer than `min_groups` informative groups are held."""
        score = {c.key: float(r.sum()) for c, r in zip(chunks, rewards, strict=True)}
        groups, _ = complete_groups(list(chunks), self.config.group_size)
        device = self.policy.obs_mean.device
        keys = input_keys(self.policy.config)
        if groups:
            returns = np.array([[sum(score[c.key] for c in ep) for ep in g] for g in groups])
            adv, kept = group_advantages(returns.reshape(len(groups), self.config.group_size))
            self._seen += len(groups)
        for g, group in enumerate(groups):
            if not kept[g]:
                continue
            obs, acts, blogp, advs, weights = [], [], [], [], []
            rows = [c for episode in group for c in episode]  # in the order of the rows
            for e, episode in enumerate(group):
                calls = sum(c.num_calls for c in episode)
                for c in episode:
                    state = policy_input(c.obs, keys, device)
                    obs.append(state[: c.num_steps : c.horizon])
                    acts.append(torch.tensor(c.policy_action, device=device))
                    blogp.append(torch.tensor(c.logp, device=device))
                    advs.append(torch.full((c.num_calls,), float(adv[g, e]), device=device))
                    weights.append(torch.full((c.num_calls,), 1.0 / calls, device=device))
            self._held.append((tuple(torch.cat(x) for x in (obs, acts, blogp, advs, weights)),
                               aux_rows(rows, aux_spec(self.policy), device)))
        if len(self._held) < self.config.min_groups:
            return self._empty(device)
        o, a, b, adv_t, w = (torch.cat(x) for x in zip(*(t for t, _ in self._held), strict=True))
        auxes = [x for _, x in self._held if x is not None]
        aux = {k: torch.cat([x[k] for x in auxes]) for k in auxes[0]} if auxes else None
        self._ready = {"groups_used": float(len(self._held)),
                       "informative_share": len(self._held) / max(self._seen, 1)}
        self._held, self._seen = [], 0
        return PPOBatch(obs=o, chunk=a, behaviour_logp=b,
                        prox_logp=log_prob(self.policy, o, a, aux), advantage=adv_t,
                        value_target=torch.zeros(len(o), device=device), weight=w, aux=aux)

    def _empty(self, device: torch.device) -> PPOBatch:
        empty = torch.zeros(0, device=device)
        pc = self.policy.config
        return PPOBatch(torch.zeros(0, pc.obs_dim, device=device),
                        torch.zeros(0, pc.horizon, pc.action_dim, device=device),
                        empty, empty, empty, empty, weight=empty)

    def holding(self) -> dict[str, float]:
        """Informative groups held for the next update, and groups seen since the last one."""
        return {"groups_held": float(len(self._held)), "groups_seen": float(self._seen)}

    def update(self, batch: PPOBatch, train_actor: bool = True) -> dict[str, float]:
        """`train_actor` is ignored: there is no critic to warm up first."""
        cfg = self.config
        stats: dict[str, list[float]] = {"policy_loss": [], "kl_ref": [], "clip_frac": []}
        if len(batch) == 0:  # not enough informative groups yet: nothing to train on
            return {"policy_loss": 0.0, "kl_ref": 0.0, "clip_frac": 0.0} | self.holding()
        gen = torch.Generator().manual_seed(len(batch))
        for _ in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=gen).to(batch.obs.device)
            for idx in order.split(cfg.minibatch):
                logp = log_prob(self.policy, batch.obs[idx], batch.chunk[idx], batch.aux, idx)
                weight = None if batch.weight is None else batch.weight[idx]
                surrogate = grpo_policy_loss(logp, batch.prox_logp[idx],
                                             batch.behaviour_logp[idx], batch.advantage[idx],
                                             cfg.clip_low, cfg.clip_high, cfg.is_clip, weight)
                with torch.no_grad():
                    ref = log_prob(self.reference, batch.obs[idx], batch.chunk[idx], batch.aux,
                                   idx)
                kl = k3_kl(logp, ref)
                loss = surrogate + cfg.kl_coef * kl if cfg.kl_coef > 0 else surrogate
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.actor.parameters(), cfg.max_grad_norm)
                self.opt.step()
                ratio = (logp - batch.prox_logp[idx]).exp()
                stats["policy_loss"].append(surrogate.item())
                stats["kl_ref"].append(kl.item())
                stats["clip_frac"].append(((ratio < 1 - cfg.clip_low) | (ratio > 1 + cfg.clip_high))
                                          .float().mean().item())
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["is_weight"] = float((batch.prox_logp - batch.behaviour_logp).exp()
                                 .clamp(max=cfg.is_clip).mean())
        out.update(self._ready)
        self._ready = {}
        return out

    def state_dict(self) -> dict[str, object]:
        return {"opt": self.opt.state_dict(), "reference": self.reference.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.opt.load_state_dict(state["opt"])  # type: ignore[arg-type]
        self.reference.load_state_dict(state["reference"])  # type: ignore[arg-type]
