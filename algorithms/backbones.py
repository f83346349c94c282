"""Backbones for the chunked Gaussian policy beyond its default MLP.

- `ChunkTransformer`: each observation number is one state token (value × learned direction +
  learned position), H chunk query tokens attend to them and each other through a small
  transformer encoder, and each query emits its step's A action means. Output [B, H * A], as
  the MLP actor's.
- `ImageEncoder`: a small CNN for camera observations [B, h, w, 3] uint8 -> feature [B, F],
  to concatenate to the state.
- `KeypointEncoder`: a spatial-softmax CNN, what `ChunkPolicy` uses with `policy.image_key`.

Example:

    actor = ChunkTransformer(obs_dim=39, action_dim=4, horizon=4, d_model=64, heads=4, layers=2)
    mean = actor(obs)                                   # [B, 16]
"""

from __future__ import annotations

import torch
from torch import nn


class ChunkTransformer(nn.Module):
    """obs [B, D] -> mean chunk [B, H * A] through state tokens and chunk queries."""

    def __init__(self, obs_dim: int, action_dim: int, horizon: int, d_model: int = 64,
                 heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.state_dir = nn.Parameter(torch.randn(obs_dim, d_model) / d_model ** 0.5)
        self.state_pos = nn.Parameter(torch.zeros(obs_dim, d_model))
        self.queries = nn.Parameter(torch.randn(horizon, d_model) / d_model ** 0.5)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, action_dim)
        nn.init.zeros_(self.out.bias)
        nn.init.normal_(self.out.weight, std=0.01)  # near-zero first actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        tokens = obs.unsqueeze(-1) * self.state_dir + self.state_pos  # [B, D, d]
        queries = self.queries.expand(len(obs), -1, -1)
        h = self.encoder(torch.cat([tokens, queries], dim=1))[:, -self.horizon:]
        return self.out(h).reshape(len(obs), self.horizon * self.action_dim)


class ImageEncoder(nn.Module):
    """Camera frames [B, h, w, 3] (uint8 or float in [0, 255]) -> features [B, features]."""

    def __init__(self, features: int = 64, channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, features), nn.Tanh())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float().permute(0, 3, 1, 2) / 255.0
        return self.net(x)


class KeypointEncoder(nn.Module):
    """Camera frames [B, h, w, 3] (0..255) -> features [B, features] through spatial-softmax
    keypoints (Levine et al. 2016, https://arxiv.org/abs/1504.00702): each of `keypoints` conv
    maps gives the expected (x, y) of its activation, which keeps where things are, as pushing
    needs. Frames are halved first: a cheap CNN for CPU robots."""

    def __init__(self, features: int = 64, keypoints: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(),
            nn.Conv2d(16, keypoints, 3), nn.ReLU(), nn.Conv2d(keypoints, keypoints, 1))
        self.out = nn.Sequential(nn.Linear(2 * keypoints, features), nn.Tanh())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.net(image.float().permute(0, 3, 1, 2) / 127.5 - 1.0)  # [B, K, h', w']
        b, k, h, w = x.shape
        attn = torch.softmax(x.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device)
        kp = torch.stack([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=-1)
        return self.out(kp.reshape(b, 2 * k))
