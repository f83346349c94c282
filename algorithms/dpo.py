"""DPO over episode preference pairs, against a frozen reference policy.

Paper: Rafailov et al. 2023 (https://arxiv.org/abs/2305.18290); for robot policies GRAPE
(Zhang et al. 2024, https://arxiv.org/abs/2411.19309) and NORA-1.5 prefer whole
trajectories ranked by a reward model. Loss per
pair (w preferred over l):

    -log σ(β · [(log π(w) - log π_ref(w)) - (log π(l) - log π_ref(l))])

Deviations:

- A pair is two episodes of one group (same task and start state, see `buffers.groups`), ranked
  by their summed rewards, from any reward model: the env, a VLM, or human labels (a human
  reward model scores what operators labelled). Every better/worse pair in a group counts;
  equal returns give no pair.
- An episode's log-prob is the *mean* over its policy calls of the chunk log-probs, so a short
  (often successful) episode is not preferred or penalised for its length.

Example:

    dpo = DPO(policy, DPOConfig(beta=0.1, group_size=4))
    batch = dpo.prepare(chunks, rewards)       # complete groups of complete episodes
    metrics = dpo.update(batch)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.policy import ChunkPolicy
from buffers.feed import DataNeeds
from buffers.groups import complete_groups
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1  # β: strength of the implicit KL to the reference
    group_size: int = 4  # episodes per start state; pairs are formed inside a group
    epochs: int = 4  # full-batch passes per update
    lr: float = 1e-5
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if not self.beta > 0 or not self.lr > 0:
            raise ValueError("dpo: beta and lr must be > 0")
        if self.group_size < 2 or self.epochs < 1:
            raise ValueError("dpo: group_size must be >= 2 (a pair) and epochs >= 1")


@dataclasses.dataclass(frozen=True)
class DPOBatch:
    """Calls of the paired episodes: obs [N, D], chunk [N, H, A], episode [N] (row -> episode
    index), ref_logp [E] (mean per episode under the reference); pairs [P, 2] (winner, loser)."""

    obs: torch.Tensor
    chunk: torch.Tensor
    episode: torch.Tensor
    ref_logp: torch.Tensor
    pairs: torch.Tensor

    def __len__(self) -> int:
        return len(self.obs)


def dpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Mean DPO loss over pairs; all inputs [P]."""
    return -F.logsigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))).mean()


def preference_pairs(returns: Sequence[float]) -> list[tuple[int, int]]:
    """Every (better, worse) pair of indices with different returns."""
    return [(i, j) for i, ri in enumerate(returns) for j, rj in enumerate(returns) if ri > rj]


def episode_logp(policy: ChunkPolicy, batch: DPOBatch) -> torch.Tensor:
    """Mean chunk log-prob per episode, [E]."""
    logp = policy.log_prob(batch.obs, batch.chunk)
    episodes = len(batch.ref_logp)
    total = torch.zeros(episodes, device=logp.device).index_add(0, batch.episode, logp)
    count = torch.zeros(episodes, device=logp.device).index_add(
        0, batch.episode, torch.ones_like(logp))
    return total / count


class DPO:
    """Updates only the actor; the reference is the policy as it was when DPO started."""

    def __init__(self, policy: ChunkPolicy, config: DPOConfig) -> None:
        self.policy, self.config = policy, config
        self.reference = copy.deepcopy(policy).requires_grad_(False)
        self.opt = torch.optim.Adam(policy.actor.parameters(), lr=config.lr)

    @staticmethod
    def needs(config: DPOConfig) -> DataNeeds:
        """Complete groups of `group_size` episodes (pairs form inside a group), fresh ones."""
        return DataNeeds(group_size=config.group_size)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> DPOBatch:
        score = {c.key: float(r.sum()) for c, r in zip(chunks, rewards, strict=True)}
        groups, _ = complete_groups(list(chunks), self.config.group_size)
        device = self.policy.obs_mean.device
        obs, acts, rows, pairs = [], [], [], []
        episodes = 0
        for group in groups:
            returns = [sum(score[c.key] for c in ep) for ep in group]
            pairs += [(episodes + w, episodes + ll) for w, ll in preference_pairs(returns)]
            for episode in group:
                for c in episode:
                    obs.append(c.obs["state"][: c.num_steps : c.horizon].astype(np.float32))
                    acts.append(c.policy_action.astype(np.float32))
                    rows.append(np.full(c.num_calls, episodes))
                episodes += 1
        d, pc = self.policy.config.obs_dim, self.policy.config
        batch = DPOBatch(
            obs=torch.as_tensor(np.concatenate(obs) if obs else np.zeros((0, d), np.float32),
                                device=device),
            chunk=torch.as_tensor(np.concatenate(acts) if acts else
                                  np.zeros((0, pc.horizon, pc.action_dim), np.float32),
                                  device=device),
            episode=torch.as_tensor(np.concatenate(rows) if rows else np.zeros(0, np.int64),
                                    device=device),
            ref_logp=torch.zeros(episodes, device=device),
            pairs=torch.as_tensor(np.array(pairs, np.int64).reshape(-1, 2), device=device))
        return dataclasses.replace(batch, ref_logp=episode_logp(self.reference, batch))

    def update(self, batch: DPOBatch, train_actor: bool = True) -> dict[str, float]:
        """`train_actor` is ignored: there is no critic to warm up first."""
        if len(batch.pairs) == 0:  # every group's returns were equal
            return {"dpo_loss": 0.0, "pairs": 0.0, "margin": 0.0, "pair_accuracy": 0.0}
        w, lo = batch.pairs[:, 0], batch.pairs[:, 1]
        for _ in range(self.config.epochs):
            logp = episode_logp(self.policy, batch)
            loss = dpo_loss(logp[w], logp[lo], batch.ref_logp[w], batch.ref_logp[lo],
                            self.config.beta)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.actor.parameters(),
                                           self.config.max_grad_norm)
            self.opt.step()
        with torch.no_grad():
            logp = episode_logp(self.policy, batch)
            margin = (logp[w] - batch.ref_logp[w]) - (logp[lo] - batch.ref_logp[lo])
        return {"dpo_loss": loss.item(), "pairs": float(len(w)), "margin": float(margin.mean()),
                "pair_accuracy": float((margin > 0).float().mean())}

    def state_dict(self) -> dict[str, object]:
        return {"opt": self.opt.state_dict(), "reference": self.reference.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.opt.load_state_dict(state["opt"])  # type: ignore[arg-type]
        self.reference.load_state_dict(state["reference"])  # type: ignore[arg-type]
