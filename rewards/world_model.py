"""A world-model reward: an action-conditioned latent dynamics model whose heads predict
progress toward success and the probability of success; the reward is the change of that
prediction from step to step (as NORA-1.5 and World-Env reward a policy with a world model).

Example:

    wm = WorldModelReward(WorldModelConfig())
    wm.fit(episodes)                      # finished episodes (lists of chunks), from the buffer
    r = wm.score(chunk)                   # [T]: scale * (gamma * phi(z[t+1]) - phi(z[t]))
    wm.load_weights(v, other.weights())   # adopt weights trained elsewhere (fleet.remote.reward)

Model (`z = enc(s)`, all MLPs): `enc: state -> latent`, `dyn: (z, action) -> z'` (residual),
`progress: z -> [0, 1]`, `success: z -> logit`, and a decoder `z -> state` that keeps the latent
informative. Losses on each transition `(s, a, s')`: latent consistency
`|dyn(enc(s), a) - sg(enc(s'))|²`, reconstruction, and both heads on the encoded *and* the
imagined next latent, so the heads also read the dynamics' predictions. Targets
(`rewards.episodes.targets`): progress `t / T_s` on successful episodes, outcome on all.

The potential `phi = mean of the chosen heads` (`signal`: progress, success or both) is read on
the encoded next observation (`mode=observed`) or on the latent the dynamics predicts from
`(z[t], action[t])` (`mode=imagined`, the world model imagining the step). The env's reward and
success flag are never read at score time; an unfitted model scores zeros. `version` is the
number of fits (or the version of adopted weights), so labels cache per (name, version).

Labels (`labels`): `outcome` (the default) trains on every episode's success label as above.
`self` trains from what a deployment has without anyone saying which episode succeeded:

    wm.fit(fleet_episodes, demos=demo_episodes)

Each demonstration is a success by what it is (progress `t / T`, outcome 1, its own flags
unread); the fleet's episodes are unlabelled and get their targets from the model itself:
before the first fit all count as failures (policy states as negatives, as VICE does), after it
an episode counts as a success (progress `t / T`, outcome 1) when the success head's probability
at its last observation is at least `self_threshold` times the demos' mean there, else as a
failure (outcome 0, progress unknown). The env's reward, success flags and episode outcomes of
the fleet's episodes are never read (tests/test_dpo_world_model.py flips them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from buffers.records import RolloutChunk
from rewards.episodes import Episode, observations, targets
from rewards.trainer import LearnsOnline


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    key: str = "state"  # the obs column the model reads
    latent: int = 64
    hidden: int = 256
    lr: float = 1e-3
    signal: str = "both"  # progress | success | both: the heads that make the potential
    mode: str = "observed"  # observed | imagined: read phi on enc(s[t+1]) or dyn(z[t], a[t])
    gamma: float = 1.0  # r = scale * (gamma * phi' - phi)
    scale: float = 10.0
    fit_steps: int = 200  # gradient steps per fit
    batch: int = 512
    keep_episodes: int = 256  # the trainer's pool of newest finished episodes
    min_episodes: int = 8  # a trainer fits once it has this many finished episodes ...
    fit_every_s: float = 5.0  # ... at most this often
    seed: int = 0
    labels: str = "outcome"  # outcome: episodes' success labels; self: demos + own predictions
    self_threshold: float = 0.5  # labels=self: success if p(end) >= this x the demos' mean p(end)

    def __post_init__(self) -> None:
        if self.labels not in ("outcome", "self"):
            raise ValueError(f"world_model labels={self.labels!r}: outcome or self")
        if not 0 < self.self_threshold <= 1:
            raise ValueError("world_model self_threshold must be in (0, 1]")
        if self.signal not in ("progress", "success", "both"):
            raise ValueError(f"world_model signal={self.signal!r}: progress, success or both")
        if self.mode not in ("observed", "imagined"):
            raise ValueError(f"world_model mode={self.mode!r}: observed or imagined")
        if min(self.latent, self.hidden, self.fit_steps, self.batch, self.min_episodes) < 1:
            raise ValueError("world_model latent, hidden, fit_steps, batch, min_episodes >= 1")


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                         nn.Linear(hidden, n_out))


class LatentDynamics(nn.Module):
    mean: torch.Tensor  # [D] input normalisation, set by the first fit
    std: torch.Tensor

    def __init__(self, state_dim: int, action_dim: int, config: WorldModelConfig) -> None:
        super().__init__()
        h, z = config.hidden, config.latent
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))
        self.enc = nn.Sequential(_mlp(state_dim, h, z), nn.LayerNorm(z))
        self.dyn = _mlp(z + action_dim, h, z)
        self.dec = _mlp(z, h, state_dim)
        self.progress = _mlp(z, h, 1)
        self.success = _mlp(z, h, 1)

    def encode(self, state: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, latent]."""
        return self.enc((state - self.mean) / self.std)

    def step(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The imagined next latent [N, latent] after `action` [N, A]."""
        return z + self.dyn(torch.cat([z, action], -1))

    def heads(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Progress in [0, 1] and success logit, each [N]."""
        return torch.sigmoid(self.progress(z)).squeeze(-1), self.success(z).squeeze(-1)


@dataclasses.dataclass
class Transitions:
    """Every step of some episodes: s [N, D], a [N, A], s' [N, D], and the next observation's
    progress (NaN where unknown) and outcome targets [N]."""

    s: torch.Tensor
    a: torch.Tensor
    s2: torch.Tensor
    progress: torch.Tensor
    success: torch.Tensor

    @classmethod
    def of(cls, episodes: Sequence[Episode], key: str,
           labels: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Transitions:
        """`labels`: (progress, outcome) [T + 1] per episode; default `targets(episode)`."""
        s, a, p, y = [], [], [], []
        for i, ep in enumerate(episodes):
            s.append(observations(ep, key))
            a.append(np.concatenate([c.action for c in ep]))
            progress, success = targets(ep) if labels is None else labels[i]
            p.append(progress)
            y.append(success)
        states = [torch.as_tensor(x, dtype=torch.float32).flatten(1) for x in s]
        return cls(torch.cat([x[:-1] for x in states]),
                   torch.as_tensor(np.concatenate(a), dtype=torch.float32),
                   torch.cat([x[1:] for x in states]),
                   torch.as_tensor(np.concatenate([x[1:] for x in p])),
                   torch.as_tensor(np.concatenate([x[1:] for x in y])))


def world_model_loss(net: LatentDynamics, b: Transitions) -> tuple[torch.Tensor, dict[str, float]]:
    z, z2 = net.encode(b.s), net.encode(b.s2)
    imagined = net.step(z, b.a)
    dyn = (imagined - z2.detach()).pow(2).sum(-1).mean()
    recon = (net.dec(z2) - (b.s2 - net.mean) / net.std).pow(2).mean()
    known = ~torch.isnan(b.progress)
    prog_loss = succ_loss = torch.zeros(())
    for latent in (z2, imagined):
        progress, logit = net.heads(latent)
        if known.any():
            prog_loss = prog_loss + (progress[known] - b.progress[known]).pow(2).mean()
        succ_loss = succ_loss + nn.functional.binary_cross_entropy_with_logits(logit, b.success)
    loss = dyn + recon + 10.0 * prog_loss + succ_loss
    parts = {"loss": loss, "dyn": dyn, "recon": recon, "progress": prog_loss / 2,
             "success": succ_loss / 2}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def demo_targets(episode: Sequence[RolloutChunk]) -> tuple[np.ndarray, np.ndarray]:
    """A success by what it is: progress `t / T` and outcome 1 on each observation [T + 1]; no
    flag or outcome of the episode is read."""
    T = sum(len(c.action) for c in episode)
    return np.arange(T + 1, dtype=np.float32) / max(T, 1), np.ones(T + 1, np.float32)


def _failure(episode: Sequence[RolloutChunk]) -> tuple[np.ndarray, np.ndarray]:
    T = sum(len(c.action) for c in episode)
    return np.full(T + 1, np.nan, np.float32), np.zeros(T + 1, np.float32)


class WorldModelReward(LearnsOnline):
    def __init__(self, config: WorldModelConfig | None = None, name: str = "world_model") -> None:
        self.config: WorldModelConfig = config or WorldModelConfig()
        self.name, self.version = name, "0"
        self.net: LatentDynamics | None = None  # built on first fit or load (dims from data)
        self.opt: torch.optim.Optimizer | None = None
        self._fits = 0

    def _build(self, state_dim: int, action_dim: int) -> LatentDynamics:
        torch.manual_seed(self.config.seed)
        self.net = LatentDynamics(state_dim, action_dim, self.config)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        return self.net

    def fit(self, episodes: Sequence[Episode], steps: int | None = None,
            demos: Sequence[Episode] = ()) -> dict[str, float]:
        """Gradient steps on the transitions of `demos` and `episodes`; returns the last batch's
        losses (with `labels=self`, also `self_success`: the share of `episodes` the model
        counts as successes)."""
        extra: dict[str, float] = {}
        if self.config.labels == "self":
            labels = [demo_targets(ep) for ep in demos] + self.self_targets(episodes, demos)
            extra["self_success"] = float(np.mean([y[-1] for _, y in labels[len(demos):]])
                                          ) if episodes else 0.0
            data = Transitions.of([*demos, *episodes], self.config.key, labels)
        else:
            data = Transitions.of([*demos, *episodes], self.config.key)
        net = self.net or self._build(data.s.shape[1], data.a.shape[1])
        if self._fits == 0:  # normalise inputs by the first data seen (kept thereafter)
            net.mean.copy_(data.s.mean(0))
            net.std.copy_(data.s.std(0).clamp_min(1e-3))
        assert self.opt is not None
        g = torch.Generator().manual_seed(self.config.seed + self._fits)
        stats: dict[str, float] = {}
        for _ in range(steps if steps is not None else self.config.fit_steps):
            idx = torch.randint(len(data.s), (min(self.config.batch, len(data.s)),), generator=g)
            loss, stats = world_model_loss(net, Transitions(
                data.s[idx], data.a[idx], data.s2[idx], data.progress[idx], data.success[idx]))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self._fits += 1
        self.version = str(self._fits)  # new weights, new cached labels
        return stats | extra

    def fit_online(self, fleet: Sequence[Episode], demos: Sequence[Episode],
                   first: bool) -> dict[str, float]:
        """`fit(fleet, demos=demos)`: with `labels=self` the fleet's episodes are unlabelled
        beside the demos, with `outcome` all are fitted on their outcomes; `fit_steps` each."""
        return self.fit(fleet, demos=demos)

    @torch.no_grad()
    def end_success(self, episodes: Sequence[Episode]) -> np.ndarray:
        """The success head's probability at each episode's last observation [E]."""
        assert self.net is not None
        last = np.stack([np.asarray(ep[-1].obs[self.config.key])[len(ep[-1].action)]
                         for ep in episodes])
        state = torch.as_tensor(last, dtype=torch.float32).flatten(1)
        return torch.sigmoid(self.net.heads(self.net.encode(state))[1]).numpy()

    def self_targets(self, episodes: Sequence[Episode],
                     demos: Sequence[Episode]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`labels=self` targets of unlabelled episodes from the model's own success head (all
        failures before the first fit); reads observations only."""
        if not episodes:
            return []
        if self.net is None or not demos:
            won = np.zeros(len(episodes), bool)
        else:
            bar = self.config.self_threshold * float(self.end_success(demos).mean())
            won = self.end_success(episodes) >= bar
        return [demo_targets(ep) if w else _failure(ep) for ep, w in zip(episodes, won,
                                                                           strict=True)]

    @torch.no_grad()
    def potential(self, chunk: RolloutChunk) -> np.ndarray:
        """phi of each observation [T + 1] (`mode=observed`); for `imagined`, phi[t + 1] is
        read on the latent predicted from (z[t], action[t])."""
        assert self.net is not None
        T = len(chunk.action)
        state = torch.as_tensor(np.asarray(chunk.obs[self.config.key])[:T + 1],
                                dtype=torch.float32).flatten(1)
        z = self.net.encode(state)
        if self.config.mode == "imagined":
            action = torch.as_tensor(chunk.action, dtype=torch.float32)
            z = torch.cat([z[:1], self.net.step(z[:-1], action)])
        progress, logit = self.net.heads(z)
        parts = {"progress": [progress], "success": [torch.sigmoid(logit)],
                 "both": [progress, torch.sigmoid(logit)]}[self.config.signal]
        return torch.stack(parts).mean(0).numpy()

    @property
    def ready(self) -> bool:
        """False until fitted (or given weights): the learner skips batches until then rather
        than train on all-zero rewards."""
        return self.net is not None

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        """[T] float32: scale * (gamma * phi[t + 1] - phi[t]); zeros before the first fit."""
        T = len(chunk.action)
        if self.net is None:
            return np.zeros(T, np.float32)
        phi = self.potential(chunk)
        c = self.config
        return (c.scale * (c.gamma * phi[1:T + 1] - phi[:T])).astype(np.float32)

    @torch.no_grad()
    def success_probability(self, chunk: RolloutChunk) -> np.ndarray:
        """[T]: the success head's p(the episode succeeds) at each step's resulting
        observation (what `fleet reward-eval` detects success with)."""
        T = len(chunk.action)
        if self.net is None:
            return np.zeros(T, np.float32)
        state = torch.as_tensor(np.asarray(chunk.obs[self.config.key])[1:T + 1],
                                dtype=torch.float32).flatten(1)
        return torch.sigmoid(self.net.heads(self.net.encode(state))[1]).numpy()

    def weights(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays (what crosses process boundaries), dims included."""
        assert self.net is not None, "weights() before the first fit"
        return {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}

    def load_weights(self, version: int | str, state: dict[str, np.ndarray]) -> None:
        """Adopt weights from `weights()` (of a model with the same config) as `version`."""
        if self.net is None:
            self._build(state["mean"].shape[0], state["dyn.0.weight"].shape[1] -
                        self.config.latent)
        assert self.net is not None
        self.net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        self.version = str(version)
