"""DPO over episode preference pairs, in rounds: collect a preference set, train, refresh.

Paper: Rafailov et al. 2023 (https://arxiv.org/abs/2305.18290); for robot policies GRAPE
(Zhang et al. 2024, https://arxiv.org/abs/2411.19309) and NORA-1.5, which collect preferences
with the current policy, train on them, and repeat. Loss per pair (w preferred over l):

    -log σ(β · [(log π(w) - log π_ref(w)) - (log π(l) - log π_ref(l))])  -  α · log π(w)

Choices:

- **Pairs by outcome, never by summed dense reward**: two episodes of one group (same task and
  start state, see `buffers.groups`); every success is preferred to every failure of its group
  (a truncated episode is a failure). The outcome is the episode's `EpisodeEnd`, whoever said it
  (the env, or an operator's label from the console). Two successes are paired only with
  `same_outcome_pairs` (the shorter preferred; equal lengths give no pair), so the share of
  same-outcome pairs is 0 by default. Failures are never paired with each other.
- **Or pairs by a reward model's ranking** (`pairs=reward_model`, as NORA-1.5 ranks with a
  world model): each episode's score is the sum of the rewards the learner labelled it with
  (with `reward=world_model`, gamma 1: the world model's predicted progress/success at its end
  minus at its start, the start shared by the group) minus `deviation_coef` times its mean
  squared distance from the base policy's mean chunk (the action-deviation term; 0: off). Every
  episode of a group whose score exceeds another's by more than `margin` is preferred to it, so
  near-ties give no pair (`ranked_pairs`). No success flag, outcome or env reward is read to form
  these pairs; the outcomes are read afterwards only to log how the pairs agree with them
  (`outcome_agreement`: of the pairs between a success and a failure, the share the success
  wins; `outcome_recall`: the share of a group's success-over-failure pairs found).
- **Rounds** (GRAPE-style iterative DPO): `prepare` adds each group's episodes and pairs to a
  preference set and returns an empty batch until the set holds `set_pairs` training pairs
  (the learner then holds without publishing, so the whole set comes from one policy). An
  update trains `epochs` full-batch steps on the set, then **refreshes the reference** to the
  trained policy for the next round.
- An **NLL term on winners** (`nll_coef` α, the RPO / Llama-3 recipe) keeps their likelihood from
  sliding while the margin grows.
- An episode's log-prob is the *mean* over its policy calls of the chunk log-probs, so length
  alone neither helps nor hurts an episode.
- A policy with per-call data (`aux_spec`, e.g. the flow policy's denoising path) gets each
  call's `aux` from the record back in every `log_prob`, the reference's too
  (`algorithms.call_data`).
- Every `held_out_every`-th group with pairs is kept out of training: its pairs give
  `heldout_pair_accuracy` (implicit-reward margin > 0 after the update). `drift_kl` is the k3
  estimate of KL(π_ref ‖ π) over the set's calls (sampled by the reference) before the refresh.

Example:

    dpo = DPO(policy, DPOConfig(group_size=4))
    batch = dpo.prepare(chunks, rewards)       # complete groups of complete episodes
    if len(batch):                             # 0: the preference set is still filling
        metrics = dpo.update(batch)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.call_data import aux_rows, aux_spec, log_prob
from algorithms.grpo import k3_kl
from algorithms.policy import ChunkPolicy, input_keys, policy_input
from buffers.feed import DataNeeds
from buffers.groups import complete_groups
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    beta: float = 1.0  # β: strength of the implicit KL to the reference; larger than LLM DPO's
    # 0.1 because an episode's log-prob here is a mean over calls, not a sum over tokens
    group_size: int = 4  # episodes per start state; pairs are formed inside a group
    epochs: int = 8  # full-batch steps on a preference set per update
    lr: float = 3e-5  # 1e-4 with nll_coef 0.1 moved push-v3 ~3.5 nats/call a round and
    # collapsed it (62% -> 10%); 3e-5 with nll_coef 1 lifted it to 82% (docs/results.md)
    nll_coef: float = 1.0  # α: weight of the winners' negative log-likelihood (0: off)
    set_pairs: int = 64  # training pairs a preference set needs before an update
    held_out_every: int = 5  # every n-th group with pairs is held out (0: none)
    same_outcome_pairs: bool = False  # also pair two successes, the shorter preferred
    refresh_reference: bool = True  # the reference becomes the trained policy after an update
    max_grad_norm: float = 1.0
    pairs: str = "outcome"  # outcome: successes over failures; reward_model: by the rewards'
    # sums (a learned reward model, e.g. reward=world_model reward.params.labels=self)
    margin: float = 1.0  # reward_model: a pair needs a score gap > margin (the reward's units)
    deviation_coef: float = 0.0  # reward_model: score -= coef * mean sq. distance from the base

    def __post_init__(self) -> None:
        if self.pairs not in ("outcome", "reward_model"):
            raise ValueError(f"dpo: pairs={self.pairs!r}: outcome or reward_model")
        if self.margin < 0 or self.deviation_coef < 0:
            raise ValueError("dpo: margin and deviation_coef must be >= 0")
        if not self.beta > 0 or not self.lr > 0:
            raise ValueError("dpo: beta and lr must be > 0")
        if self.group_size < 2 or self.epochs < 1:
            raise ValueError("dpo: group_size must be >= 2 (a pair) and epochs >= 1")
        if self.nll_coef < 0 or self.set_pairs < 1 or self.held_out_every < 0:
            raise ValueError("dpo: nll_coef >= 0, set_pairs >= 1, held_out_every >= 0")


@dataclasses.dataclass(frozen=True)
class DPOBatch:
    """Calls of the paired episodes: obs [N, D], chunk [N, H, A], episode [N] (row -> episode
    index), ref_logp [E] (mean per episode under the reference); pairs [P, 2] (winner, loser)
    to train on, held_out [Q, 2] to evaluate on; same_outcome: the share of all pairs whose
    two episodes had the same outcome."""

    obs: torch.Tensor
    chunk: torch.Tensor
    episode: torch.Tensor
    ref_logp: torch.Tensor
    pairs: torch.Tensor
    held_out: torch.Tensor | None = None
    same_outcome: float = 0.0
    aux: Mapping[str, torch.Tensor] | None = None  # {name: [N, ...]}: per-call data of a policy
    # that declares some (`algorithms.call_data`), passed back to its `log_prob`
    pair_log: Mapping[str, float] = dataclasses.field(default_factory=dict)  # reward-model
    # pairs against the outcomes, for the update's metrics only

    def __len__(self) -> int:
        return len(self.obs)


class _OutcomeLog:
    """Counts, over the groups of a preference set, how reward-model pairs agree with the true
    outcomes. Logging only: nothing here feeds back into which pairs are formed."""

    def __init__(self) -> None:
        self.groups = self.possible = self.pairs = self.mixed = self.agree = 0
        self.outcome_pairs = self.found = 0

    def add(self, pairs: Sequence[tuple[int, int]], success: Sequence[bool]) -> None:
        n = len(success)
        self.groups += 1
        self.possible += n * (n - 1) // 2
        self.pairs += len(pairs)
        mixed = [(w, lo) for w, lo in pairs if success[w] != success[lo]]
        self.mixed += len(mixed)
        self.agree += sum(success[w] for w, _ in mixed)
        truth = outcome_pairs(success, [0] * n)
        self.outcome_pairs += len(truth)
        self.found += len(set(truth) & set(pairs))

    def metrics(self) -> dict[str, float]:
        out = {"rm_pair_share": self.pairs / max(self.possible, 1),
               "rm_mixed_pairs": float(self.mixed), "rm_groups": float(self.groups)}
        if self.mixed:  # absent, not NaN, when no pair had two outcomes
            out["outcome_agreement"] = self.agree / self.mixed
        if self.outcome_pairs:
            out["outcome_recall"] = self.found / self.outcome_pairs
        return out


def dpo_loss(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Mean DPO loss over pairs; all inputs [P]."""
    return -F.logsigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))).mean()


def dpo_objective(logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor,
                  ref_l: torch.Tensor, beta: float, nll_coef: float) -> torch.Tensor:
    """The DPO loss plus `nll_coef` times the winners' mean negative log-likelihood."""
    return dpo_loss(logp_w, logp_l, ref_w, ref_l, beta) - nll_coef * logp_w.mean()


def outcome_pairs(success: Sequence[bool], length: Sequence[int],
                  same_outcome: bool = False) -> list[tuple[int, int]]:
    """(winner, loser) indices: every success over every failure; with `same_outcome`, also
    the shorter of two successes over the longer. Failures are never ranked among themselves."""
    pairs = [(i, j) for i, si in enumerate(success) for j, sj in enumerate(success)
             if si and not sj]
    if same_outcome:
        pairs += [(i, j) for i, si in enumerate(success) for j, sj in enumerate(success)
                  if si and sj and length[i] < length[j]]
    return pairs


def ranked_pairs(scores: Sequence[float], margin: float) -> list[tuple[int, int]]:
    """(winner, loser) indices: every episode over every other it outscores by more than
    `margin`, best winners first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [(i, j) for i in order for j in order if scores[i] - scores[j] > margin]


def episode_logp(policy: ChunkPolicy, batch: DPOBatch) -> torch.Tensor:
    """Mean chunk log-prob per episode, [E]."""
    return _per_episode(log_prob(policy, batch.obs, batch.chunk, batch.aux), batch)


def _per_episode(logp: torch.Tensor, batch: DPOBatch) -> torch.Tensor:
    episodes = len(batch.ref_logp)
    total = torch.zeros(episodes, device=logp.device).index_add(0, batch.episode, logp)
    count = torch.zeros(episodes, device=logp.device).index_add(
        0, batch.episode, torch.ones_like(logp))
    return total / count


class DPO:
    """Updates only the actor; the reference is the policy at the start of each round."""

    def __init__(self, policy: ChunkPolicy, config: DPOConfig) -> None:
        self.policy, self.config = policy, config
        self.reference = copy.deepcopy(policy).requires_grad_(False)
        # the base policy, for the action-deviation term of reward-model pairs
        self.base = (copy.deepcopy(policy).requires_grad_(False) if config.deviation_coef > 0
                     else None)
        if self.base is not None and not hasattr(self.base, "mean_chunk"):
            raise ValueError(f"dpo: deviation_coef needs a policy with mean_chunk, not "
                             f"{type(policy).__name__}")
        self.opt = torch.optim.Adam(policy.actor.parameters(), lr=config.lr)
        # the preference set being collected: episodes' (obs, chunk) rows, pairs of indices
        # into it (train, held out), same-outcome pair count, groups seen
        self._episodes: list[tuple[torch.Tensor, torch.Tensor,
                                   dict[str, torch.Tensor] | None]] = []
        self._pairs: list[tuple[int, int]] = []
        self._held: list[tuple[int, int]] = []
        self._same = 0
        self._log = _OutcomeLog()  # how reward-model pairs agree with outcomes (logged only)
        self._groups = 0  # groups with pairs, ever (for the held-out split)
        self._seen = 0  # groups seen in this round

    @staticmethod
    def needs(config: DPOConfig) -> DataNeeds:
        """Complete groups of `group_size` episodes (pairs form inside a group), fresh ones."""
        return DataNeeds(group_size=config.group_size, holds_batches=True)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> DPOBatch:
        """Adds the complete groups of `chunks` to the preference set; returns the set once it
        holds `set_pairs` training pairs, else an empty batch. `rewards` ([T] per chunk, from
        the learner's reward model) are read only with `pairs=reward_model`."""
        cfg = self.config
        groups, _ = complete_groups(list(chunks), cfg.group_size)
        device = self.policy.obs_mean.device
        keys = input_keys(self.policy.config)
        reward_of = {id(c): r for c, r in zip(chunks, rewards, strict=True)}
        for group in groups:
            self._seen += 1
            if cfg.pairs == "reward_model":
                pairs = ranked_pairs(self.scores(group, [[reward_of[id(c)] for c in ep]
                                                         for ep in group]), cfg.margin)
            success = [ep[-1].episode_end is not None and ep[-1].episode_end.outcome == "success"
                       for ep in group]  # pairs=reward_model: read after its pairs, to log
            if cfg.pairs == "outcome":
                length = [sum(c.num_steps for c in ep) for ep in group]
                pairs = outcome_pairs(success, length, cfg.same_outcome_pairs)
            else:
                self._log.add(pairs, success)
            if not pairs:
                continue
            first = len(self._episodes)
            for episode in group:
                obs = torch.cat([policy_input(c.obs, keys, device)[: c.num_steps : c.horizon]
                                 for c in episode])
                act = torch.cat([torch.as_tensor(c.policy_action, dtype=torch.float32,
                                                 device=device) for c in episode])
                self._episodes.append((obs, act, aux_rows(episode, aux_spec(self.policy),
                                                          device)))
            self._same += sum(success[w] == success[lo] for w, lo in pairs)
            self._groups += 1
            held = cfg.held_out_every and self._groups % cfg.held_out_every == 0
            (self._held if held else self._pairs).extend((first + w, first + lo)
                                                         for w, lo in pairs)
        if len(self._pairs) < cfg.set_pairs:
            return self._empty(device)
        rows = [len(o) for o, _, _ in self._episodes]
        auxes = [x for _, _, x in self._episodes if x is not None]
        batch = DPOBatch(
            obs=torch.cat([o for o, _, _ in self._episodes]),
            chunk=torch.cat([a for _, a, _ in self._episodes]),
            episode=torch.repeat_interleave(torch.arange(len(rows), device=device),
                                            torch.tensor(rows, device=device)),
            ref_logp=torch.zeros(len(rows), device=device),
            pairs=torch.tensor(self._pairs, dtype=torch.int64, device=device),
            held_out=torch.tensor(self._held, dtype=torch.int64, device=device).reshape(-1, 2),
            same_outcome=self._same / (len(self._pairs) + len(self._held)),
            aux={k: torch.cat([x[k] for x in auxes]) for k in auxes[0]} if auxes else None,
            pair_log=self._log.metrics() if cfg.pairs == "reward_model" else {})
        self._episodes, self._pairs, self._held, self._same, self._seen = [], [], [], 0, 0
        self._log = _OutcomeLog()
        return dataclasses.replace(batch, ref_logp=episode_logp(self.reference, batch))

    def scores(self, group: Sequence[Sequence[RolloutChunk]],
               rewards: Sequence[Sequence[np.ndarray]]) -> list[float]:
        """Each episode's summed reward, minus `deviation_coef` times the mean squared distance
        of its sampled chunks from the base policy's mean chunks. Reads observations, sampled
        chunks and the given rewards only."""
        out = [float(sum(np.sum(r, dtype=np.float64) for r in rs)) for rs in rewards]
        if self.base is None:
            return out
        keys, device = input_keys(self.policy.config), self.policy.obs_mean.device
        for i, episode in enumerate(group):
            obs = torch.cat([policy_input(c.obs, keys, device)[: c.num_steps : c.horizon]
                             for c in episode])
            act = torch.cat([torch.as_tensor(c.policy_action, dtype=torch.float32,
                                             device=device) for c in episode])
            mean = self.base.mean_chunk(obs).reshape(act.shape)
            out[i] -= self.config.deviation_coef * float((act - mean).pow(2).mean())
        return out

    def _empty(self, device: torch.device) -> DPOBatch:
        pc = self.policy.config
        none = torch.zeros(0, 2, dtype=torch.int64, device=device)
        return DPOBatch(torch.zeros(0, pc.obs_dim, device=device),
                        torch.zeros(0, pc.horizon, pc.action_dim, device=device),
                        torch.zeros(0, dtype=torch.int64, device=device),
                        torch.zeros(0, device=device), none, none)

    def holding(self) -> dict[str, float]:
        """The preference set so far: training pairs, held-out pairs, groups seen."""
        return {"pairs_held": float(len(self._pairs)), "heldout_pairs_held": float(len(self._held)),
                "groups_seen": float(self._seen)}

    def update(self, batch: DPOBatch, train_actor: bool = True) -> dict[str, float]:
        """`epochs` full-batch steps on a preference set, then the reference refresh.
        `train_actor` is ignored: there is no critic to warm up first."""
        cfg = self.config
        if len(batch.pairs) == 0:  # the set is still filling (or no group had a pair)
            return {"dpo_loss": 0.0, "pairs": 0.0, "margin": 0.0, "pair_accuracy": 0.0}
        w, lo = batch.pairs[:, 0], batch.pairs[:, 1]
        with torch.no_grad():
            ref_rows = log_prob(self.reference, batch.obs, batch.chunk, batch.aux)
            start = episode_logp(self.policy, batch)
        margin_before = self._margin(start, batch, batch.pairs)
        losses = []
        for _ in range(cfg.epochs):
            logp = episode_logp(self.policy, batch)
            loss = dpo_objective(logp[w], logp[lo], batch.ref_logp[w], batch.ref_logp[lo],
                                 cfg.beta, cfg.nll_coef)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.actor.parameters(), cfg.max_grad_norm)
            self.opt.step()
            losses.append(dpo_loss(logp[w], logp[lo], batch.ref_logp[w], batch.ref_logp[lo],
                                   cfg.beta).item())
        with torch.no_grad():
            rows = log_prob(self.policy, batch.obs, batch.chunk, batch.aux)
            logp = _per_episode(rows, batch)
            margin = self._margin(logp, batch, batch.pairs)
            out = {"dpo_loss": losses[-1], "dpo_loss_first": losses[0],
                   "pairs": float(len(w)), "margin": float(margin.mean()),
                   "margin_gain": float((margin - margin_before).mean()),
                   "pair_accuracy": float((margin > 0).float().mean()),
                   "winner_logp_change": float((logp[w] - start[w]).mean()),
                   "same_outcome_share": batch.same_outcome,
                   "drift_kl": float(k3_kl(ref_rows, rows)),
                   "drift_logp": float((rows - ref_rows).mean())}
            out |= batch.pair_log
            held = batch.held_out
            if held is not None and len(held):
                m = self._margin(logp, batch, held)
                out |= {"heldout_pairs": float(len(held)),
                        "heldout_pair_accuracy": float((m > 0).float().mean()),
                        "heldout_margin": float(m.mean())}
        if cfg.refresh_reference:
            self.reference.load_state_dict(self.policy.state_dict())
        return out

    @staticmethod
    def _margin(logp: torch.Tensor, batch: DPOBatch, pairs: torch.Tensor) -> torch.Tensor:
        w, lo = pairs[:, 0], pairs[:, 1]
        return (logp[w] - batch.ref_logp[w]) - (logp[lo] - batch.ref_logp[lo])

    def state_dict(self) -> dict[str, object]:
        return {"opt": self.opt.state_dict(), "reference": self.reference.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.opt.load_state_dict(state["opt"])  # type: ignore[arg-type]
        self.reference.load_state_dict(state["reference"])  # type: ignore[arg-type]
