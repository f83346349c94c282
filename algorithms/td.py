"""Chunked TD: an ensemble critic over action chunks, n-step chunk backups, a bounded actor.

Papers: Q-chunking (Li, Zhou, Levine 2025, https://arxiv.org/abs/2507.07969): the critic scores a
whole chunk, Q(s_t, a_t..a_{t+H-1}), and backs up over the H env steps the chunk ran,

    y = sum_{i<n} γ^i r_{t+i} + γ^n (1 - done) · min_{j in J} Q̄_j(s_{t+n}, π(s_{t+n}))

(n = H unless the episode ends first; J a random subset of `target_subset` of the E
Polyak-averaged target critics, drawn afresh each gradient step: RLPD, Ball et al. 2023,
https://arxiv.org/abs/2302.02948, after REDQ). From RLPD also: LayerNorm in every critic layer,
demonstrations and operator-chosen steps in their own replay that fills `demo_ratio` (50%) of
every minibatch (symmetric sampling; HIL-SERL, Luo et al. 2024, puts interventions there too),
and no offline pretraining by default. The actor maximises the ensemble's mean Q with a BC term,
normalised as TD3+BC does (Fujimoto & Gu 2021, https://arxiv.org/abs/2106.06860):
loss = -Q(s, π(s)) / mean|Q| + α · BC, where BC is taken only on demo and intervention rows
(`bc="demos"`) or toward the frozen starting policy on every row (`bc="base"`).

Transitions start at every env step (`starts="step"`, as Q-chunking samples sequences): the H
executed actions from step t, stitched across the rollout chunks of one episode. A sequence that
runs past the episode's end is kept with `valid` = 0 on the steps after it (padded with the last
executed action): its reward sums only the steps before the end and it bootstraps from the last
observation (or not at all after a terminal state); nothing from another episode enters it.

Deviations from the published recipes (and why):

- π(s) is the policy's mean chunk (deterministic, as TD3; no SAC entropy); robots explore with
  the policy's fixed Gaussian. Use `policy.bound=tanh` so π stays in [-1, 1], where robots clip
  their actions and the critic has data (the issue measured 7% of numbers outside).
- Gradient steps per env step (`updates_per_step`) defaults to 0.25, one per policy call of
  H = 4: RLPD uses 20 and Q-chunking 1, which a 2-core CPU learner cannot afford; raise it on a
  GPU. The critic is 2×256 (RLPD), not Q-chunking's 4×512, for the same reason.
  With `rate_limit` the learner trains continuously at that ratio, held by the buffer's rate
  limiter (`buffers.rate`, Reverb's SampleToInsertRatio over env steps): robots wait between
  rollout chunks when it is behind, as in RLPD's and HIL-SERL's synchronous ratio. Off by
  default: without it, `update` takes the ratio's share of each batch as it arrives, and the
  learner falls behind when robots outrun it.
- The actor waits for `actor_warmup_steps` online env steps in the replay (the critic has then
  seen the policy's own failures, not only the demos' successes; the issue measured the offline
  phase alone taking the push-v3 base from 62% to 32%).
- Sequences crossing an episode end are kept with a correct shorter backup; Q-chunking instead
  drops them from the critic loss (its flat buffer cannot tell the next episode's actions apart).
- Rows are the policy's input rows (`policy_input(obs, input_keys(config))`, as PPO's): with a
  camera policy (`policy=chunk_cnn`, `act_cnn`) they carry the pixels, and the critic encodes
  each camera with one spatial-softmax CNN shared by the ensemble members (as image RLPD /
  HIL-SERL share the encoder). The replays keep the pixels as uint8 (floats again only in the
  sampled minibatch): about 2 × 28 KB per row at 96×96, so `td.capacity` is bounded by the
  config for camera policies (`replay_row_bytes`).
- π(s) is the policy's `mean_chunk`, differentiated through: for the flow policy
  (`policy=flow`) that is its deterministic K-step Euler chain, reparameterised as TD3's
  deterministic actor is; the noisy chain and its log-probability are not used.

Example:

    td = TD(policy, TDConfig())
    td.offline(demo_chunks, demo_rewards)      # demos into the demo replay
    batch = td.prepare(chunks, rewards)        # fresh chunks -> one row per env step
    metrics = td.update(batch)                 # into the replay, then its share of gradient steps
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.backbones import KeypointEncoder
from algorithms.policy import ChunkPolicy, input_keys, policy_input
from algorithms.returns import chunk_rewards
from buffers.feed import DataNeeds
from buffers.rate import StepRatio
from buffers.records import RolloutChunk


@dataclasses.dataclass(frozen=True)
class TDConfig:
    gamma: float = 0.99  # per env step; a full chunk bootstraps with γ^H
    ensemble: int = 10  # critics (RLPD: 10)
    target_subset: int = 2  # target = min (or mean) over a random subset of this many (RLPD: 2)
    target: str = "min"  # min | mean over the subset
    tau: float = 0.005  # Polyak rate of the target critics
    critic_lr: float = 3e-4
    actor_lr: float = 1e-4
    hidden: int = 256
    layers: int = 2
    layer_norm: bool = True  # in every hidden critic layer (RLPD)
    minibatch: int = 256  # rows
    updates_per_step: float = 0.25  # gradient steps per online env step (RLPD 20, Q-chunking 1)
    rate_limit: bool = False  # True: the learner trains continuously at updates_per_step, held
    # by the buffer's rate limiter (robots wait when it is behind); False: updates_per_step
    # gradient steps per env step of each batch as it arrives
    rate_error_buffer: float | None = None  # the limiter's slack in gradient steps (None: the
    # least that cannot deadlock, updates_per_step * env steps per rollout chunk + 1)
    starts: str = "step"  # step: a row at every env step | call: one per policy call
    bc: str = "demos"  # demos: BC on demo/intervention rows | base: toward the frozen start | none
    bc_coef: float = 2.5  # α: weight of the BC term in the actor loss
    demo_ratio: float = 0.5  # share of each minibatch drawn from demos and interventions
    actor_warmup_steps: int = 10_000  # online env steps in the replay before the actor trains
    offline_updates: int = 0  # critic-only gradient steps on the demos before online data
    capacity: int = 300_000  # rows kept in each replay (oldest go first)
    max_grad_norm: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("td: gamma and tau must be in (0, 1]")
        if self.ensemble < 1 or self.minibatch < 1 or self.capacity < 1:
            raise ValueError("td: ensemble, minibatch and capacity must be >= 1")
        if not 1 <= self.target_subset <= self.ensemble:
            raise ValueError(f"td.target_subset={self.target_subset}: 1..ensemble")
        if self.target not in ("min", "mean"):
            raise ValueError(f"td.target={self.target!r}: min or mean")
        if self.starts not in ("step", "call") or self.bc not in ("demos", "base", "none"):
            raise ValueError("td.starts: step | call; td.bc: demos | base | none")
        if not 0 <= self.demo_ratio <= 1 or self.bc_coef < 0 or self.offline_updates < 0:
            raise ValueError("td: demo_ratio in [0, 1], bc_coef and offline_updates >= 0")
        if self.updates_per_step < 0 or self.actor_warmup_steps < 0:
            raise ValueError("td: updates_per_step and actor_warmup_steps must be >= 0")
        if self.rate_limit and not self.updates_per_step > 0:
            raise ValueError("td.rate_limit needs td.updates_per_step > 0")


REPLAY_BUDGET = 32 * 2**30  # bytes both replays may hold at capacity (the config refuses more)


def _float_width(policy: Any) -> int:
    """Numbers in a policy's input row before the cameras' pixels: the state and the mask."""
    return policy.obs_dim + (policy.action_dim if getattr(policy, "mask_key", "") else 0)


def replay_row_bytes(policy: Any) -> int:
    """Bytes one replayed row holds for a policy config: obs and next_obs (state and mask as
    float32, each camera's pixels as uint8), the chunk, `valid`, reward and discount as float32,
    `expert` as one byte. What `td.capacity` multiplies, in each of the two replays."""
    size = getattr(policy, "image_size", 96)
    cameras = [k for k in input_keys(policy) if k != getattr(policy, "mask_key", "")]
    pixels = len(cameras) * size * size * 3
    chunk = policy.horizon * policy.action_dim
    return 4 * (2 * _float_width(policy) + chunk + policy.horizon + 2) + 2 * pixels + 1


@dataclasses.dataclass(frozen=True)
class Transitions:
    """One row per sequence start: obs [N, D], chunk [N, H*A] (the executed actions, padded
    after an episode's end), valid [N, H] (1: the step ran before the end), reward [N]
    (discounted sum over the valid steps), discount [N] (γ^n, 0 after a terminal state),
    next_obs [N, D], expert [N] (an operator or demonstrator chose every valid step)."""

    obs: torch.Tensor
    chunk: torch.Tensor
    valid: torch.Tensor
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


def chunk_transitions(chunk: RolloutChunk, reward: np.ndarray, gamma: float,
                      keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """One row per policy call (`starts="call"`), as numpy columns (see `Transitions`); obs
    rows are the state and then each of `keys` flattened (`algorithms.policy.policy_input`).

    Call k starts at step kH and bootstraps from obs[min((k+1)H, T)]; only the last call of a
    chunk that ends an episode in a terminal state gets discount 0. A short last call keeps the
    policy's unexecuted tail as its chunk (valid 0 there).
    """
    calls, horizon, steps = chunk.num_calls, chunk.horizon, chunk.num_steps
    state = policy_input(chunk.obs, keys).numpy()
    r, disc = chunk_rewards(reward, horizon, gamma)
    if chunk.episode_end is not None and chunk.episode_end.terminal:
        disc[-1] = 0.0
    executed = chunk.policy_action.reshape(calls * horizon, -1).copy()
    executed[:steps] = chunk.action
    starts = np.arange(calls) * horizon
    taken = np.zeros(calls * horizon, bool)
    taken[:steps] = chunk.intervened
    valid = (np.arange(calls * horizon) < steps).reshape(calls, horizon)
    return {"obs": state[starts], "chunk": executed.reshape(calls, -1),
            "valid": valid.astype(np.float32),
            "reward": r.astype(np.float32), "discount": disc.astype(np.float32),
            "next_obs": state[np.minimum(starts + horizon, steps)],
            "expert": np.asarray(taken.reshape(calls, horizon).all(axis=1))}


@dataclasses.dataclass
class Segment:
    """Consecutive steps of one episode: state [T+1, D] (the policy's input rows), action
    [T, A], reward [T], intervened [T]; `end` is None (the episode goes on), "terminal" or
    "truncated"."""

    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    intervened: np.ndarray
    end: str | None

    def tail(self, start: int) -> Segment:
        """Steps from `start` on, still open."""
        return Segment(self.state[start:], self.action[start:], self.reward[start:],
                       self.intervened[start:], None)

    def then(self, nxt: Segment) -> Segment:
        """This open segment followed by the next steps of the same episode."""
        return Segment(np.concatenate([self.state[:-1], nxt.state]),
                       np.concatenate([self.action, nxt.action]),
                       np.concatenate([self.reward, nxt.reward]),
                       np.concatenate([self.intervened, nxt.intervened]), nxt.end)


def step_transitions(seg: Segment, horizon: int,
                     gamma: float) -> tuple[dict[str, np.ndarray], int]:
    """The rows of every step of `seg` whose H-step sequence is known (`starts="step"`), and the
    first start still waiting for the episode's next steps (T when none waits).

    A sequence from t covers n = min(H, T - t) steps when the segment ends the episode (the
    rest is padding, valid 0), and must cover H steps otherwise (later starts wait).
    """
    steps = len(seg.action)
    ready = steps if seg.end is not None else max(0, steps - horizon + 1)
    t = np.arange(ready)
    idx = t[:, None] + np.arange(horizon)[None, :]  # [N, H]
    valid = idx < steps
    idx = np.minimum(idx, steps - 1)  # padding repeats the last executed action
    n = valid.sum(1)
    powers = gamma ** np.arange(horizon)
    reward = (seg.reward[idx] * powers * valid).sum(1)
    discount = gamma ** n.astype(np.float64)
    if seg.end == "terminal":
        discount[t + n == steps] = 0.0
    rows = {"obs": seg.state[t],
            "chunk": seg.action[idx].reshape(len(t), horizon * seg.action.shape[1]),
            "valid": valid.astype(np.float32), "reward": reward.astype(np.float32),
            "discount": discount.astype(np.float32), "next_obs": seg.state[t + n],
            "expert": (seg.intervened[idx] | ~valid).all(1)}
    return rows, ready


def _segment(chunk: RolloutChunk, reward: np.ndarray, keys: Sequence[str] = ()) -> Segment:
    end = None if chunk.episode_end is None else (
        "terminal" if chunk.episode_end.terminal else "truncated")
    return Segment(policy_input(chunk.obs, keys).numpy(), chunk.action.astype(np.float32),
                   np.asarray(reward, np.float32), np.asarray(chunk.intervened, bool), end)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied at once: x [E, B, in] -> [E, B, out]."""

    def __init__(self, members: int, inp: int, out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(inp)  # nn.Linear's default scale
        self.weight = nn.Parameter(torch.empty(members, inp, out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class Critic(nn.Module):
    """An ensemble of E MLPs Q_j(s, chunk): obs [B, D] (normalised state, then `cameras`
    frames' pixels of `image_size`² × 3 each), chunk [B, H*A] -> [E, B]. Each hidden layer is
    linear → LayerNorm (own gain and shift per member) → ReLU, as RLPD's critic; each camera
    goes through one `KeypointEncoder` shared by the members."""

    def __init__(self, obs_dim: int, chunk_dim: int, config: TDConfig, cameras: int = 0,
                 image_size: int = 96, features: int = 64) -> None:
        super().__init__()
        e, h = config.ensemble, config.hidden
        self.state_dim, self.size = obs_dim, image_size
        self.encoders = nn.ModuleList(KeypointEncoder(features) for _ in range(cameras))
        dims = [obs_dim + cameras * features + chunk_dim] + [h] * config.layers
        self.layers = nn.ModuleList(EnsembleLinear(e, a, b) for a, b in itertools.pairwise(dims))
        self.gains = nn.ParameterList(nn.Parameter(torch.ones(e, 1, h)) for _ in self.layers)
        self.shifts = nn.ParameterList(nn.Parameter(torch.zeros(e, 1, h)) for _ in self.layers)
        self.head = EnsembleLinear(e, h, 1)
        self.members, self.layer_norm = e, config.layer_norm

    def forward(self, obs_normed: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        d, pixels, b = self.state_dim, self.size * self.size * 3, len(obs_normed)
        features = [enc(obs_normed[:, d + i * pixels:d + (i + 1) * pixels]
                        .reshape(b, self.size, self.size, 3))
                    for i, enc in enumerate(self.encoders)]
        x = torch.cat([obs_normed[:, :d], *features, chunk], dim=-1)
        x = x.unsqueeze(0).expand(self.members, -1, -1)
        for layer, gain, shift in zip(self.layers, self.gains, self.shifts, strict=True):
            x = layer(x)
            if self.layer_norm:
                x = F.layer_norm(x, x.shape[-1:]) * gain + shift
            x = F.relu(x)
        return self.head(x).squeeze(-1)


class _Replay:
    """A ring of transitions on the learner's device (oldest overwritten first). Rows are kept
    as columns by `Transitions` field name, except that the camera pixels of obs and next_obs
    (the row's columns from `pixels_from` on, 0..255) are kept apart as uint8 (`obs_pixels`,
    `next_obs_pixels`): 4x fewer bytes than float32, and floats again, the same values, in
    each sampled minibatch."""

    def __init__(self, capacity: int, pixels_from: int | None = None) -> None:
        self.capacity, self.next, self.pixels_from = capacity, 0, pixels_from
        self.columns: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return 0 if self.columns is None else len(self.columns["obs"])

    def nbytes(self) -> int:
        """Bytes the ring's rows hold."""
        return sum(c.nelement() * c.element_size() for c in (self.columns or {}).values())

    def pack(self, rows: Transitions) -> dict[str, torch.Tensor]:
        columns = {f.name: getattr(rows, f.name) for f in dataclasses.fields(rows)}
        if self.pixels_from is not None:
            for name in ("obs", "next_obs"):
                full = columns[name]
                columns[name] = full[:, :self.pixels_from].contiguous()
                pixels = full[:, self.pixels_from:]
                if pixels.numel() and not (pixels.min() >= 0 and pixels.max() <= 255
                                           and torch.equal(pixels, pixels.round())):
                    raise ValueError(f"TD replay: {name}'s camera columns are not whole numbers "
                                     f"in 0..255 (uint8 frames): kept as uint8 they would change")
                columns[f"{name}_pixels"] = pixels.to(torch.uint8)
        return columns

    def unpack(self, columns: dict[str, torch.Tensor]) -> Transitions:
        if self.pixels_from is not None:
            columns = dict(columns, **{name: torch.cat([columns[name],
                                                        columns[f"{name}_pixels"].float()], 1)
                                       for name in ("obs", "next_obs")})
        return Transitions(*(columns[f.name] for f in dataclasses.fields(Transitions)))

    def add(self, rows: Transitions) -> None:
        new = {k: v[max(0, len(v) - self.capacity):] for k, v in self.pack(rows).items()}
        if self.columns is None or len(self) < self.capacity:
            merged = new if self.columns is None else {
                k: torch.cat([v, new[k]]) for k, v in self.columns.items()}
            self.columns = {k: v[max(0, len(v) - self.capacity):].clone()  # not the caller's
                            for k, v in merged.items()}
            return
        idx = (self.next + torch.arange(len(new["obs"]))) % self.capacity
        for k, column in self.columns.items():
            column[idx.to(column.device)] = new[k]
        self.next = int((self.next + len(new["obs"])) % self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> Transitions:
        assert self.columns is not None
        idx = torch.randint(0, len(self), (n,), generator=gen).to(self.columns["obs"].device)
        return self.unpack({k: v[idx] for k, v in self.columns.items()})

    @property
    def data(self) -> Transitions | None:
        """Every row, as floats (tests and inspection; training samples `sample`)."""
        return None if self.columns is None else self.unpack(self.columns)

    def state(self) -> tuple[dict[str, torch.Tensor] | None, int]:
        """The ring as plain tensors by column name (a checkpoint holds data, not classes)."""
        return self.columns, self.next

    def load(self, saved: tuple[dict[str, torch.Tensor] | None, int]) -> None:
        """The ring from `state()`; a checkpoint whose rows kept their pixels as float32 (before
        the uint8 columns) is packed as it loads."""
        columns, self.next = saved
        if columns is not None and self.pixels_from is not None and "obs_pixels" not in columns:
            columns = self.pack(Transitions(**columns))
        self.columns = columns


class TD:
    """Chunked TD. Owns the critics, their targets, both optimisers and the replays."""

    policy_needs = frozenset({"mean_chunk"})  # π(s), differentiated through (`check_policy`)

    @staticmethod
    def needs(config: TDConfig) -> DataNeeds:
        """Every chunk however stale (replayed here, from cursor 0), and the demos first; with
        `rate_limit`, `updates_per_step` held by the buffer's rate limiter."""
        rate = (StepRatio(config.updates_per_step, error_buffer=config.rate_error_buffer)
                if config.rate_limit else None)
        return DataNeeds(replay=True, demos=True, rate=rate)

    def __init__(self, policy: ChunkPolicy, config: TDConfig) -> None:
        self.policy, self.config = policy, config
        device = policy.obs_mean.device
        pc = policy.config
        self.keys = input_keys(pc)  # the observations besides the state in each row
        cameras = [k for k in self.keys if k != getattr(pc, "mask_key", "")]
        self.critic = Critic(pc.obs_dim, pc.horizon * pc.action_dim, config, len(cameras),
                             getattr(pc, "image_size", 96)).to(device)
        pixels_from = _float_width(pc) if cameras else None  # rows' camera columns from here
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.base = copy.deepcopy(policy).requires_grad_(False)  # bc="base": the frozen start
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.actor_opt = torch.optim.Adam(policy.actor.parameters(), lr=config.actor_lr)
        self.online = _Replay(config.capacity, pixels_from)
        self.demos = _Replay(config.capacity, pixels_from)
        self.gen = torch.Generator().manual_seed(0)
        self.online_steps = 0  # env steps whose rows entered the online replay
        self.gradient_steps = 0
        self._credit = 0.0  # gradient steps owed by `updates_per_step`, not yet taken
        self._open: dict[tuple[str, str], tuple[int, Segment]] = {}  # episodes' waiting tails

    def q(self, obs: torch.Tensor, chunk: torch.Tensor, target: bool = False) -> torch.Tensor:
        """obs [B, D], chunk [B, H*A] -> Q [E, B] of the (target) ensemble."""
        return (self.target if target else self.critic)(self.policy.critic_input(obs), chunk)

    @torch.no_grad()
    def prepare(self, chunks: Sequence[RolloutChunk],
                rewards: Sequence[np.ndarray]) -> Transitions:
        """Rows of `chunks` (in arrival order). With `starts="step"` the last H-1 starts of a
        chunk whose episode goes on wait for its next chunk (same robot and episode, next
        `chunk_seq`); a gap in `chunk_seq` drops the waiting starts."""
        cfg = self.config
        if cfg.starts == "call":
            cols = [chunk_transitions(c, r, cfg.gamma, self.keys)
                    for c, r in zip(chunks, rewards, strict=True)]
        else:
            cols = [self._step_rows(c, r) for c, r in zip(chunks, rewards, strict=True)]
        device = self.policy.obs_mean.device
        return Transitions(*(torch.as_tensor(np.concatenate([c[f.name] for c in cols]),
                                             device=device)
                             for f in dataclasses.fields(Transitions)))

    def _step_rows(self, chunk: RolloutChunk, reward: np.ndarray) -> dict[str, np.ndarray]:
        key = (chunk.robot_id, chunk.episode_id)
        seg = _segment(chunk, reward, self.keys)
        waiting = self._open.pop(key, None)
        if waiting is not None and waiting[0] == chunk.chunk_seq - 1:
            seg = waiting[1].then(seg)
        rows, ready = step_transitions(seg, chunk.horizon, self.config.gamma)
        if seg.end is None:
            self._open[key] = (chunk.chunk_seq, seg.tail(ready))
            while len(self._open) > 4096:  # robots lost mid-episode never send the rest
                self._open.pop(next(iter(self._open)))
        return rows

    def offline(self, chunks: Sequence[RolloutChunk],
                rewards: Sequence[np.ndarray]) -> dict[str, float]:
        """Demos into the demo replay (every row counts as expert), then `offline_updates`
        critic-only steps on them."""
        demos = self.prepare(chunks, rewards)
        self.demos.add(dataclasses.replace(demos, expert=torch.ones_like(demos.expert)))
        stats = [self._gradient_step(self.demos.sample(self.config.minibatch, self.gen), False)
                 for _ in range(self.config.offline_updates)]
        return dict(_mean(stats), demo_rows=float(len(self.demos)))

    def add(self, batch: Transitions) -> int:
        """`batch` into the online replay (fully intervened rows into the demo replay too);
        returns the env steps it carries."""
        self.online.add(batch)
        if bool(batch.expert.any()):
            self.demos.add(batch.rows(batch.expert.nonzero().squeeze(-1)))
        steps = len(batch) if self.config.starts == "step" else int(batch.valid.sum())
        self.online_steps += steps
        return steps

    def train(self, steps: int, train_actor: bool = True) -> dict[str, float]:
        """`steps` gradient steps; the actor's only once the warm-up is over."""
        actor = train_actor and self.online_steps >= self.config.actor_warmup_steps
        stats = [self._gradient_step(self._minibatch(), actor) for _ in range(steps)]
        return dict(_mean(stats), actor_trained=float(actor and steps > 0),
                    gradient_steps=float(steps), gradient_steps_total=self.gradient_steps,
                    updates_per_step=self.config.updates_per_step,
                    online_steps=float(self.online_steps), replay_rows=float(len(self.online)),
                    demo_rows=float(len(self.demos)))

    def update(self, batch: Transitions, train_actor: bool = True) -> dict[str, float]:
        """Add `batch`, then `updates_per_step` gradient steps per env step it carries (the
        learner instead calls `add` and `train` itself under a rate limit: `rate_limit`)."""
        self._credit += self.add(batch) * self.config.updates_per_step
        steps, self._credit = int(self._credit), self._credit - int(self._credit)
        return self.train(steps, train_actor)

    def _minibatch(self) -> Transitions:
        """Symmetric sampling: `demo_ratio` of the rows from the demo replay, the rest online
        (all from whichever replay is the only one filled)."""
        n = self.config.minibatch
        n_demo = round(n * self.config.demo_ratio) if len(self.demos) else 0
        if not len(self.online):
            n_demo = n
        parts = [self.online.sample(n - n_demo, self.gen)] if n > n_demo else []
        if n_demo:
            parts.append(self.demos.sample(n_demo, self.gen))
        return Transitions.cat(parts)

    def _gradient_step(self, b: Transitions, train_actor: bool) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            next_q = self.q(b.next_obs, self.policy.mean_chunk(b.next_obs), target=True)
            subset = next_q[torch.randperm(cfg.ensemble, generator=self.gen)[:cfg.target_subset]
                            .to(next_q.device)]
            agg = subset.min(0).values if cfg.target == "min" else subset.mean(0)
            y = b.reward + b.discount * agg
        critic_loss = ((self.q(b.obs, b.chunk) - y) ** 2).mean()
        _step(self.critic_opt, critic_loss, self.critic, cfg.max_grad_norm)
        out = {"critic_loss": critic_loss.item(), "q_mean": float(y.mean())}
        if train_actor:
            out.update(self._actor_step(b))
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters(), strict=True):
                tp.lerp_(p, cfg.tau)
        self.gradient_steps += 1
        return out

    def _actor_step(self, b: Transitions) -> dict[str, float]:
        cfg = self.config
        pi = self.policy.mean_chunk(b.obs)
        q_pi = self.q(b.obs, pi).mean(0)
        bc = self._bc(b, pi)
        actor_loss = -q_pi.mean() / q_pi.abs().mean().detach().clamp(min=1e-6) + cfg.bc_coef * bc
        _step(self.actor_opt, actor_loss, self.policy.actor, cfg.max_grad_norm)
        return {"actor_loss": actor_loss.item(), "bc_loss": bc.item(),
                "q_pi": q_pi.mean().item()}

    def _bc(self, b: Transitions, pi: torch.Tensor) -> torch.Tensor:
        """The BC term: L2 to the expert rows' executed steps (valid ones only), or to the
        frozen starting policy's chunk on every row."""
        if self.config.bc == "none":
            return pi.new_zeros(())
        if self.config.bc == "base":
            with torch.no_grad():
                anchor = self.base.mean_chunk(b.obs)
            return ((pi - anchor) ** 2).mean()
        a = pi.shape[1] // b.valid.shape[1]
        weight = b.valid.repeat_interleave(a, dim=1) * b.expert[:, None]
        return ((pi - b.chunk) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)

    def state_dict(self) -> dict[str, object]:
        return {"format": 2, "critic": self.critic.state_dict(),
                "target": self.target.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "base": self.base.state_dict(),
                "online": self.online.state(), "demos": self.demos.state(),
                "counters": (self.online_steps, self.gradient_steps, self._credit)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("format") != 2:
            raise ValueError("this TD checkpoint predates the LayerNorm ensemble critic and "
                             "per-step rows (TD format 2): start a new run")
        self.critic.load_state_dict(state["critic"])  # type: ignore[arg-type]
        self.target.load_state_dict(state["target"])  # type: ignore[arg-type]
        self.critic_opt.load_state_dict(state["critic_opt"])  # type: ignore[arg-type]
        self.actor_opt.load_state_dict(state["actor_opt"])  # type: ignore[arg-type]
        self.base.load_state_dict(state["base"])  # type: ignore[arg-type]
        for replay, saved in ((self.online, state["online"]), (self.demos, state["demos"])):
            replay.load(cast(tuple[dict[str, torch.Tensor] | None, int], saved))
        self.online_steps, self.gradient_steps, self._credit = state["counters"]  # type: ignore[misc]


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module, clip: float) -> None:
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    opt.step()


def _mean(stats: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for s in stats for k in s}
    return {k: float(np.mean([s[k] for s in stats if k in s])) for k in keys}
