"""A learned success classifier (HIL-SERL style): p(success | observation) from labelled frames.

Example:

    clf = SuccessClassifier(state_dim=39, camera=False)
    clf.fit(chunks, steps=300)          # labelled chunks, e.g. from the buffer
    clf.score(chunk)                    # [T]: p(success) of each step's resulting observation

Labels per frame (step t's resulting observation obs[t + 1]): positive where the env's `success`
flag is set, and the last `tail` frames of an episode a human labelled success
(`episode_end.source == "human"`); negative on every frame of a failed episode and on frames
before success. Unlabelled frames (unfinished episodes) are not used. Images (uint8 [H, W, 3]
under obs["camera"], or `image_key`) go through a small CNN whose features join the state MLP's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from buffers.records import RolloutChunk
from rewards.sparse import human_label


class _Net(nn.Module):
    def __init__(self, state_dim: int, camera: bool, hidden: int = 128) -> None:
        super().__init__()
        self.state = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU())
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten()) if camera else None
        self.head = nn.Sequential(nn.Linear(hidden + (32 if camera else 0), hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        h = self.state(state)
        if self.cnn is not None and image is not None:
            h = torch.cat([h, self.cnn(image.permute(0, 3, 1, 2).float() / 255.0)], -1)
        return self.head(h).squeeze(-1)


def frame_labels(chunk: RolloutChunk, tail: int = 1) -> np.ndarray:
    """[T] float: 1 success, 0 not, NaN unlabelled."""
    T = len(chunk.action)
    y = np.asarray(chunk.success, np.float32).copy()
    label, end = human_label(chunk), chunk.episode_end
    if label is True:
        y[max(0, T - tail):] = 1.0
    elif label is False:
        y[:] = 0.0
    elif end is None and not y.any():
        y[:] = np.nan  # mid-episode, no evidence either way
    return y


class SuccessClassifier:
    def __init__(self, state_dim: int, camera: bool = False, lr: float = 1e-3, seed: int = 0,
                 name: str = "classifier", version: str = "0", image_key: str = "camera",
                 ) -> None:
        torch.manual_seed(seed)
        self.image_key = image_key
        self.net, self.camera = _Net(state_dim, camera), camera
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.name, self.version, self._fits = name, version, 0

    def _inputs(self, chunks: Sequence[RolloutChunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        state = torch.as_tensor(np.concatenate([c.obs["state"][1:len(c.action) + 1]
                                                for c in chunks]), dtype=torch.float32)
        image = (torch.as_tensor(np.concatenate([c.obs[self.image_key][1:len(c.action) + 1]
                                                 for c in chunks]))
                 if self.camera else None)
        return state, image

    def fit(self, chunks: Sequence[RolloutChunk], steps: int = 200, batch: int = 256,
            tail: int = 1) -> float:
        """Trains on the labelled frames; returns the final batch's loss. Classes are weighted
        to balance (successes are rare)."""
        state, image = self._inputs(chunks)
        y = torch.as_tensor(np.concatenate([frame_labels(c, tail) for c in chunks]))
        keep = ~torch.isnan(y)
        state, y = state[keep], y[keep]
        image = image[keep] if image is not None else None
        pos = float(y.sum())
        weight = torch.tensor(max(1.0, (len(y) - pos) / max(pos, 1.0)))
        loss = torch.tensor(0.0)
        g = torch.Generator().manual_seed(self._fits)
        for _ in range(steps):
            idx = torch.randint(len(y), (min(batch, len(y)),), generator=g)
            logits = self.net(state[idx], image[idx] if image is not None else None)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y[idx],
                                                                  pos_weight=weight)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self._fits += 1
        self.version = str(self._fits)  # new weights, new cached labels
        return float(loss)

    @torch.no_grad()
    def score(self, chunk: RolloutChunk) -> np.ndarray:
        state, image = self._inputs([chunk])
        return torch.sigmoid(self.net(state, image)).numpy().astype(np.float32)
