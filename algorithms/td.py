"""Chunked TD: a critic ensemble over action chunks, n-step chunk backups, BC-regularised actor.

Papers: Q-chunking (Li, Zhou, Levine 2025, https://arxiv.org/abs/2507.07969) and CO-RFT
(Huang et al. 2025, https://arxiv.org/abs/2508.02219): the critic scores a whole chunk,
Q(s_t, a_t..a_{t+H-1}), and backs up over the H env steps the chunk ran,

    y = sum_{i<n} γ^i r_{t+i} + γ^n (1 - done) · agg_j Q̄_j(s_{t+n}, π(s_{t+n}))

(n = H except for an episode's short last call; agg = min or mean over the target ensemble,
Polyak-averaged copies). The actor maximises Q with a BC term to the dataset's chunks, as
TD3+BC (Fujimoto & Gu 2021, https://arxiv.org/abs/2106.06860) normalises it:
loss = -Q(s, π(s)) / mean|Q| + α · ||π(s) - a||². Demonstrations and operator-chosen calls go
to a second replay that fills `demo_ratio` of every minibatch (RLPD, Ball et al. 2023,
https://arxiv.org/abs/2302.02948). Deviations:

- π(s) is the policy's mean chunk (deterministic, like TD3); robots explore with its Gaussian.
- Off-policy replay is in memory here, filled from every chunk the learner reads (the whole
  buffer from cursor 0) plus the demos; it is saved with checkpoints.

Example:

    td = TD(policy, TDConfig())
    td.offline(demo_chunks, demo_rewards)      # offline phase: demos only
    batch = td.prepare(chunks, rewards)        # fresh chunks -> transitions, one per call
    metrics = td.update(batch)                 # into the replay, then `utd` gradient steps
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from algorithms.policy import ChunkPolicy, mlp
from algorithms.returns import chunk_rewards
from buffers.feed import DataNeeds
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class TDConfig:
    gamma: float = 0.99  # per env step; a full chunk bootstraps with γ^H
    ensemble: int = 2  # critics
    target: str = "min"  # min | mean over the target ensemble
    tau: float = 0.005  # Polyak rate of the target critics
    critic_lr: float = 3e-4
    actor_lr: float = 1e-4
    hidden: int = 256
    layers: int = 2
    minibatch: int = 256  # policy calls
    utd: int = 8  # gradient steps per learner update (update-to-data ratio)
    bc_coef: float = 2.5  # α: weight of BC to the dataset's chunks in the actor loss
    demo_ratio: float = 0.5  # share of each minibatch drawn from demos and operator calls
    offline_updates: int = 1000  # gradient steps on demos alone before online training
    capacity: int = 200_000  # policy calls kept in each replay (oldest go first)
    max_grad_norm: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("td: gamma and tau must be in (0, 1]")
        if self.ensemble < 1 or self.minibatch < 1 or self.utd < 1 or self.capacity < 1:
            raise ValueError("td: ensemble, minibatch, utd and capacity must be >= 1")
        if self.target not in ("min", "mean"):
            raise ValueError(f"td.target={self.target!r}: min or mean")
        if not 0 <= self.demo_ratio <= 1 or self.bc_coef < 0 or self.offline_updates < 0:
            raise ValueError("td: demo_ratio in [0, 1], bc_coef and offline_updates >= 0")


@dataclasses.dataclass(frozen=True)
class Transitions:
    """One row per policy call: obs [N, D], chunk [N, H*A] (the executed actions), reward [N]
    (discounted sum over the call's steps), discount [N] (γ^n, 0 after a terminal state),
    next_obs [N, D], expert [N] (an operator or demonstrator chose every step)."""

    obs: torch.Tensor
    chunk: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    expert: torch.Tensor

    def __len__(self) -> int:
        return len(self.obs)

    def rows(self, idx: torch.Tensor) -> Transitions:
        return Transitions(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))

    @staticmethod
    def cat(parts: Sequence[Transitions]) -> Transitions:
        return Transitions(*(torch.cat([getattr(p, f.name) for p in parts])
                             for f in dataclasses.fields(Transitions)))


def chunk_transitions(chunk: RolloutChunk, reward: np.ndarray,
                      gamma: float) -> dict[str, np.ndarray]:
    """The n-step chunk backups of one rollout chunk, as numpy columns (see `Transitions`).

    Call k starts at step kH and bootstraps from obs[min((k+1)H, T)]; only the last call of a
    chunk that ends an episode in a terminal state gets discount 0.
    """
    calls, horizon, steps = chunk.num_calls, chunk.horizon, chunk.num_steps
    state = chunk.obs["state"].astype(np.float32)
    r, disc = chunk_rewards(reward, horizon, gamma)
    if chunk.episode_end is not None and chunk.episode_end.terminal:
        disc[-1] = 0.0
    executed = chunk.policy_action.reshape(calls * horizon, -1).copy()
    executed[:steps] = chunk.action
    starts = np.arange(calls) * horizon
    taken = np.zeros(calls * horizon, bool)
    taken[:steps] = chunk.intervened
    return {"obs": state[starts], "chunk": executed.reshape(calls, -1),
            "reward": r.astype(np.float32), "discount": disc.astype(np.float32),
            "next_obs": state[np.minimum(starts + horizon, steps)],
            "expert": np.asarray(taken.reshape(calls, horizon).all(axis=1))}


class Critic(nn.Module):
    """An ensemble of E MLPs Q_j(s, chunk): obs [B, D], chunk [B, H*A] -> [E, B]."""

    def __init__(self, policy: ChunkPolicy, config: TDConfig) -> None:
        super().__init__()
        pc = policy.config
        self.nets = nn.ModuleList(mlp(pc.obs_dim + pc.horizon * pc.action_dim, config.hidden,
                                      config.layers, 1) for _ in range(config.ensemble))

    def forward(self, obs_normed: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs_normed, chunk], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in self.nets])


class _Replay:
    """A ring of transitions on the learner's device (oldest overwritten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.next = capacity, 0
        self.data: Transitions | None = None

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data)

    def add(self, rows: Transitions) -> None:
        rows = rows.rows(torch.arange(max(0, len(rows) - self.capacity), len(rows)))
        if self.data is None or len(self.data) < self.capacity:
            merged = rows if self.data is None else Transitions.cat([self.data, rows])
            self.data = merged.rows(torch.arange(max(0, len(merged) - self.capacity),
                                                 len(merged)))
            return
        idx = (self.next + torch.arange(len(rows))) % self.capacity
        for f in dataclasses.fields(Transitions):
            getattr(self.data, f.name)[idx.to(getattr(self.data, f.name).device)] = getattr(
                rows, f.name)
        self.next = int((self.next + len(rows)) % self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> Transitions:
        assert self.data is not None
        return self.data.rows(torch.randint(0, len(self.data), (n,), generator=gen)
                              .to(self.data.obs.device))


class TD:
    """Chunked TD. Owns the critics, their targets, both optimisers and the replays."""

    @staticmethod
    def needs(config: TDConfig) -> DataNeeds:
        """Every chunk however stale (replayed here, from cursor 0), and the demos first."""
        return DataNeeds(replay=True, demos=True)

    def __init__(self, policy: ChunkPolicy, config: TDConfig) -> None:
        self.policy, self.config = policy, config
        device = policy.obs_mean.device
        self.critic = Critic(policy, config).to(device)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.actor_opt = torch.optim.Adam(policy.actor.parameters(), lr=config.actor_lr)
        self.online, self.demos = _Replay(config.capacity), _Replay(config.capacity)
        self.gen = torch.Generator().manual_seed(0)

    def q(self, obs: torch.Tensor, chunk: torch.Tensor, target: bool = False) -> torch.Tensor:
        """obs [B, D], chunk [B, H*A] -> Q [E, B] of the (target) ensemble."""
        return (self.target if target else self.critic)(self.policy._norm(obs), chunk)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk],
                rewards: Sequence[np.ndarray]) -> Transitions:
        cols = [chunk_transitions(c, r, self.config.gamma)
                for c, r in zip(chunks, rewards, strict=True)]
        device = self.policy.obs_mean.device
        return Transitions(*(torch.as_tensor(np.concatenate([c[f.name] for c in cols]),
                                             device=device)
                             for f in dataclasses.fields(Transitions)))

    def offline(self, chunks: Sequence[RolloutChunk],
                rewards: Sequence[np.ndarray]) -> dict[str, float]:
        """The offline phase: demos into the demo replay, `offline_updates` steps on them."""
        demos = self.prepare(chunks, rewards)
        self.demos.add(demos.rows(torch.arange(len(demos))))
        stats = [self._gradient_step(self.demos.sample(self.config.minibatch, self.gen), True)
                 for _ in range(self.config.offline_updates)]
        return _mean(stats)

    def update(self, batch: Transitions, train_actor: bool = True) -> dict[str, float]:
        """Add `batch` to the replays (operator calls count as demos), then `utd` steps."""
        self.online.add(batch)
        if bool(batch.expert.any()):
            self.demos.add(batch.rows(batch.expert.nonzero().squeeze(-1)))
        stats = [self._gradient_step(self._minibatch(), train_actor)
                 for _ in range(self.config.utd)]
        return dict(_mean(stats), replay_calls=float(len(self.online)),
                    demo_calls=float(len(self.demos)))

    def _minibatch(self) -> Transitions:
        n = self.config.minibatch
        n_demo = round(n * self.config.demo_ratio) if len(self.demos) else 0
        parts = [self.online.sample(n - n_demo, self.gen)] if n > n_demo else []
        if n_demo:
            parts.append(self.demos.sample(n_demo, self.gen))
        return Transitions.cat(parts)

    def _gradient_step(self, b: Transitions, train_actor: bool) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            next_q = self.q(b.next_obs, self.policy.mean_chunk(b.next_obs), target=True)
            agg = next_q.min(0).values if cfg.target == "min" else next_q.mean(0)
            y = b.reward + b.discount * agg
        critic_loss = ((self.q(b.obs, b.chunk) - y) ** 2).mean()
        _step(self.critic_opt, critic_loss, self.critic, cfg.max_grad_norm)
        out = {"critic_loss": critic_loss.item(), "q_mean": float(y.mean())}
        if train_actor:
            pi = self.policy.mean_chunk(b.obs)
            q_pi = self.q(b.obs, pi).mean(0)
            bc = ((pi - b.chunk) ** 2).mean()
            actor_loss = -q_pi.mean() / q_pi.abs().mean().detach().clamp(min=1e-6) \
                + cfg.bc_coef * bc
            _step(self.actor_opt, actor_loss, self.policy.actor, cfg.max_grad_norm)
            out.update(actor_loss=actor_loss.item(), bc_loss=bc.item())
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters(), strict=True):
                tp.lerp_(p, cfg.tau)
        return out

    def state_dict(self) -> dict[str, object]:
        return {"critic": self.critic.state_dict(), "target": self.target.state_dict(),
                "critic_opt": self.critic_opt.state_dict(),
                "actor_opt": self.actor_opt.state_dict(),
                "online": _replay_state(self.online), "demos": _replay_state(self.demos)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.critic.load_state_dict(state["critic"])  # type: ignore[arg-type]
        self.target.load_state_dict(state["target"])  # type: ignore[arg-type]
        self.critic_opt.load_state_dict(state["critic_opt"])  # type: ignore[arg-type]
        self.actor_opt.load_state_dict(state["actor_opt"])  # type: ignore[arg-type]
        for replay, saved in ((self.online, state["online"]), (self.demos, state["demos"])):
            replay.data, replay.next = saved  # type: ignore[misc]


def _replay_state(replay: _Replay) -> tuple[Transitions | None, int]:
    return replay.data, replay.next


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module, clip: float) -> None:
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    opt.step()


def _mean(stats: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for s in stats for k in s}
    return {k: float(np.mean([s[k] for s in stats if k in s])) for k in keys}
