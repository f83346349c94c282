"""PPO over action chunks, aware that robots act with slightly older weights.

Paper: Schulman et al. 2017, https://arxiv.org/abs/1707.06347. Deviations:

- The action is a whole chunk [H, A]; GAE runs over policy calls (`algorithms.returns`).
- Decoupled PPO (Hilton et al. 2021, https://arxiv.org/abs/2110.00641): the clip is taken
  around the *proximal* policy (the learner's weights when the batch was formed) and the gap
  between it and the robot's behaviour policy is corrected by an importance weight truncated at
  `is_clip`. With fresh data both are the same and this is plain PPO.
- Separate actor and critic optimisers; the critic may train alone first (`train_actor=False`),
  which FACTS.md found necessary when the actor comes from BC and the critic is fresh.
- A policy with per-call data (`aux_spec`, e.g. the flow policy's denoising path) gets each
  call's `aux` from the record back in every `log_prob` (`algorithms.call_data`).
- The critic is PPO's own (`policy.make_critic()`), saved in `state_dict()`: robots download and
  run the actor only, and values are computed here, in `prepare`, never on a robot.

Example:

    ppo = PPO(policy, PPOConfig())
    batch = ppo.prepare(chunks, rewards)       # rewards: per chunk, [T] each
    metrics = ppo.update(batch, train_actor=True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from algorithms.call_data import aux_rows, aux_spec, log_prob
from algorithms.policy import ChunkPolicy, input_keys, policy_input
from algorithms.returns import chunk_rewards, gae
from buffers.feed import DataNeeds
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    gamma: float = 0.99  # per env step
    lam: float = 0.95  # GAE λ, per policy call
    clip: float = 0.2
    epochs: int = 5
    minibatch: int = 128  # policy calls
    actor_lr: float = 3e-5
    critic_lr: float = 3e-4
    is_clip: float = 2.0  # truncation of the behaviour→proximal importance weight
    target_kl: float = 0.2  # loose on purpose: a tight one freezes 16-d chunk policies (FACTS)
    max_grad_norm: float = 1.0
    bc_coef: float = 1.0  # weight of behaviour cloning on operator-chosen calls (0: ignore them)
    per_task_advantage: bool = True  # normalise advantages within each task of a batch, so a
    # task with large rewards does not drown the others (no change with one task)

    def __post_init__(self) -> None:
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError("ppo: gamma must be in (0, 1] and lam in [0, 1]")
        if self.epochs < 1 or self.minibatch < 1:
            raise ValueError("ppo: epochs and minibatch must be >= 1")
        if not (self.clip > 0 and self.is_clip >= 1 and self.target_kl > 0):
            raise ValueError("ppo: clip and target_kl must be > 0 and is_clip >= 1")


@dataclasses.dataclass(frozen=True)
class PPOBatch:
    """One tensor row per policy call. obs [N, D], chunk [N, H, A], others [N]."""

    obs: torch.Tensor
    chunk: torch.Tensor
    behaviour_logp: torch.Tensor
    prox_logp: torch.Tensor
    advantage: torch.Tensor
    value_target: torch.Tensor
    task: torch.Tensor | None = None  # [N] task index per row, for per-task normalisation
    own: torch.Tensor | None = None  # [N] bool: the policy chose every step of the call
    expert: torch.Tensor | None = None  # [N] bool: an operator chose every step; `chunk` then
    # holds the executed actions, learned by behaviour cloning (HG-DAgger)
    weight: torch.Tensor | None = None  # [N] per-row loss weight (GRPO: 1 / calls of the
    # row's episode, so every episode counts the same); PPO ignores it
    aux: Mapping[str, torch.Tensor] | None = None  # {name: [N, ...]}: per-call data of a policy
    # that declares some (`algorithms.call_data`), passed back to its `log_prob`

    def __len__(self) -> int:
        return len(self.obs)


def clipped_policy_loss(logp: torch.Tensor, prox_logp: torch.Tensor, behaviour_logp: torch.Tensor,
                        adv: torch.Tensor, clip: float, is_clip: float) -> torch.Tensor:
    """Decoupled clipped surrogate, to be minimised. All inputs [B]."""
    ratio = (logp - prox_logp).exp()
    weight = (prox_logp - behaviour_logp).exp().clamp(max=is_clip)
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return -(weight * surrogate).mean()


def operator_calls(chunk: RolloutChunk) -> tuple[np.ndarray, np.ndarray]:
    """Which steps of each policy call an operator chose, [K, H] bool (steps past the episode's
    end count as not chosen), and the executed actions [K, H, A] (zeros past the end)."""
    calls, horizon = chunk.num_calls, chunk.horizon
    taken = np.zeros(calls * horizon, bool)
    taken[: chunk.num_steps] = chunk.intervened
    executed = np.zeros((calls * horizon, chunk.action.shape[1]), np.float32)
    executed[: chunk.num_steps] = chunk.action
    return taken.reshape(calls, horizon), executed.reshape(calls, horizon, -1)


def normalized(adv: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Advantages with zero mean and unit std, over the batch or within each group."""
    if groups is None or len(groups.unique()) == 1:
        return (adv - adv.mean()) / (adv.std() + 1e-8)
    out = torch.empty_like(adv)
    for g in groups.unique():
        rows = groups == g
        part = adv[rows]
        out[rows] = (part - part.mean()) / (part.std(unbiased=False) + 1e-8)
    return out


class PPO:
    """Chunk-level PPO. Owns the critic and both optimisers; the policy is the actor alone."""

    @staticmethod
    def needs(config: PPOConfig) -> DataNeeds:
        """On-policy: chunks within the learner's `max_staleness`, each used once."""
        return DataNeeds()

    def __init__(self, policy: ChunkPolicy, config: PPOConfig) -> None:
        self.policy = policy
        self.config = config
        self.critic = policy.make_critic()  # fresh: [B, F] -> [B, 1], on the policy's device
        actor_params = [p for p in policy.parameters() if p.requires_grad]
        self.actor_opt = torch.optim.Adam(actor_params, lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """Input rows [B, D (+ pixels)] -> the critic's value estimate [B]."""
        return self.critic(self.policy.critic_input(obs)).squeeze(-1)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> PPOBatch:
        """Advantages from the current critic; each chunk is bootstrapped from its last obs."""
        cfg, obs_rows, chunk_rows, blogp, advs, targets = self.config, [], [], [], [], []
        device = self.policy.obs_mean.device
        keys = input_keys(self.policy.config)
        task_ids: dict[str, int] = {}
        tasks, own, expert = [], [], []
        for chunk, reward in zip(chunks, rewards, strict=True):
            horizon = chunk.horizon
            state = policy_input(chunk.obs, keys, device)  # [T + 1, D (+ pixels)]
            call_obs = state[: chunk.num_steps : horizon]
            values = self.value(torch.cat([call_obs, state[-1:]])).cpu().numpy()
            r, disc = chunk_rewards(reward, horizon, cfg.gamma)
            terminal = chunk.episode_end is not None and chunk.episode_end.terminal
            adv, target = gae(r, values[:-1], float(values[-1]), disc, terminal, cfg.lam)
            obs_rows.append(call_obs)
            taken, executed = operator_calls(chunk)
            by_operator = np.all(taken, axis=1)
            own.append(torch.as_tensor(~np.any(taken, axis=1)))
            expert.append(torch.as_tensor(by_operator))
            chosen = np.where(by_operator[:, None, None], executed, chunk.policy_action)
            chunk_rows.append(torch.as_tensor(chosen, dtype=torch.float32))
            blogp.append(torch.tensor(chunk.logp))
            advs.append(torch.as_tensor(adv, dtype=torch.float32))
            targets.append(torch.as_tensor(target, dtype=torch.float32))
            tasks.append(torch.full((len(call_obs),), task_ids.setdefault(chunk.task,
                                                                            len(task_ids))))
        obs, acts = torch.cat(obs_rows), torch.cat(chunk_rows).to(device)
        aux = aux_rows(chunks, aux_spec(self.policy), device)
        return PPOBatch(obs=obs, chunk=acts, behaviour_logp=torch.cat(blogp).to(device),
                        prox_logp=log_prob(self.policy, obs, acts, aux), aux=aux,
                        advantage=torch.cat(advs).to(device),
                        value_target=torch.cat(targets).to(device),
                        task=torch.cat(tasks).to(device), own=torch.cat(own).to(device),
                        expert=torch.cat(expert).to(device))

    def update(self, batch: PPOBatch, train_actor: bool = True) -> dict[str, float]:
        cfg = self.config
        adv = normalized(batch.advantage, batch.task if cfg.per_task_advantage else None)
        gen = torch.Generator().manual_seed(len(batch))  # CPU: only permutes indices
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "kl": [],
                                         "clip_frac": []}
        stopped = False
        for _ in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=gen).to(batch.obs.device)
            for idx in order.split(cfg.minibatch):
                value_loss = (self.value(batch.obs[idx]) - batch.value_target[idx]) ** 2
                self._step(self.critic_opt, 0.5 * value_loss.mean(), self.critic)
                stats["value_loss"].append(value_loss.mean().item())
                if not train_actor or stopped:
                    continue
                own = idx if batch.own is None else idx[batch.own[idx]]
                expert = idx[:0] if batch.expert is None else idx[batch.expert[idx]]
                logp = log_prob(self.policy, batch.obs[own], batch.chunk[own], batch.aux, own)
                loss = clipped_policy_loss(logp, batch.prox_logp[own], batch.behaviour_logp[own],
                                           adv[own], cfg.clip, cfg.is_clip) if len(own) else 0.0
                if cfg.bc_coef > 0 and len(expert):  # as demonstrations, mixed into the batch
                    expert_logp = log_prob(self.policy, batch.obs[expert], batch.chunk[expert],
                                           batch.aux, expert)
                    loss = loss - cfg.bc_coef * expert_logp.mean() / batch.chunk[0].numel()
                if not isinstance(loss, torch.Tensor):
                    continue
                self._step(self.actor_opt, loss, self.policy.actor)
                if not len(own):
                    continue
                with torch.no_grad():
                    log_ratio = logp - batch.prox_logp[own]
                    kl = float(((log_ratio.exp() - 1) - log_ratio).mean())
                stats["policy_loss"].append(loss.item())
                stats["kl"].append(kl)
                stats["clip_frac"].append(float(((log_ratio.exp() - 1).abs() > cfg.clip).float()
                                                .mean()))
                stopped = kl > cfg.target_kl
        out = {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}
        out["is_weight"] = float((batch.prox_logp - batch.behaviour_logp).exp()
                                 .clamp(max=cfg.is_clip).mean())
        return out

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor,
              module: torch.nn.Module) -> None:
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.max_grad_norm)
        opt.step()

    def state_dict(self) -> dict[str, object]:
        return {"critic": self.critic.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "critic" not in state:  # its critic went into the policy's weights, now ignored
            raise ValueError("this PPO checkpoint is from before PPO owned its critic (the value "
                             "head was saved with the policy) and cannot be resumed; start a new "
                             "run")
        self.critic.load_state_dict(state["critic"])  # type: ignore[arg-type]
        self.actor_opt.load_state_dict(state["actor_opt"])  # type: ignore[arg-type]
        self.critic_opt.load_state_dict(state["critic_opt"])  # type: ignore[arg-type]
