"""A transformer chunk policy in the line of ACT: observation tokens, an encoder, H chunk queries.

Paper: ACT (Zhao, Kumar, Levine, Finn 2023, https://arxiv.org/abs/2304.13705). The observation
becomes tokens: one for the state (a linear projection of the normalised state) and, for each
camera, one per cell of a small CNN's feature map (`CameraTokens`, plus a learned position per
cell and an embedding per camera). A transformer encoder mixes them; a transformer decoder with H
learned queries cross-attends to the encoded tokens, and each query emits its step's A action
means. For RL the mean chunk is the mean of `ChunkPolicy`'s diagonal Gaussian over `H * A`
numbers with a state-independent log-std, so `act`, `log_prob`, the weights, BC (L2 on the
mean chunk), PPO, GRPO, DPO and chunked TD work on it as on `ChunkPolicy`.

Deviations from ACT (and why):

- No CVAE style latent: ACT samples z only in training and sets z = 0 when acting; here the
  Gaussian head is the stochastic part RL needs, and BC is L2 (FACTS.md: better than NLL here).
- A 3-layer CNN (36 tokens per 96×96 camera), d_model 64 and 2 + 2 layers instead of a ResNet-18
  and 4 + 7 layers of width 512: it must act and train on a CPU robot and learner.
- No temporal ensembling inside the policy: that is the actor's execution mode
  (`actors.execution`).

Example:

    policy = make_policy(PolicyConfig(kind="act", obs_dim=2, action_dim=2, horizon=8,
                                      image_key="pixels"))
    chunk, logp = policy.act({"state": s, "pixels": frame})      # [H, A], float
    logp = policy.log_prob(policy_input(obs, input_keys(policy.config)), chunks)   # [B]

Cameras are `policy.image_key` and then each of `policy.params.cameras` (more keys), uint8
[image_size, image_size, 3] each; a state-only ACT has neither. Input rows are the state,
the mask (`mask_key`), then each camera's pixels flattened, as `input_keys` orders them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from algorithms.backbones import KeypointEncoder
from algorithms.policy import ChunkPolicy, PolicyConfig, add_obs_norm, input_keys, mlp


def camera_keys(config: Any) -> tuple[str, ...]:
    """The cameras an ACT policy sees, in row order: `image_key`, then `params["cameras"]`."""
    keys = input_keys(config)
    return tuple(k for k in keys if k != getattr(config, "mask_key", ""))


class CameraTokens(nn.Module):
    """Frames [B, s, s, 3] (0..255) -> tokens [B, n, d]: a small strided CNN's feature map
    (halved first, as `KeypointEncoder`), one token per cell, plus a learned position per cell."""

    def __init__(self, size: int, d_model: int, channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(3, channels, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, d_model, 3, stride=2, padding=1))
        with torch.no_grad():
            cells = self.net(torch.zeros(1, 3, size, size)).shape[-2:].numel()
        self.pos = nn.Parameter(torch.randn(cells, d_model) * 0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.net(image.float().permute(0, 3, 1, 2) / 127.5 - 1.0)  # [B, d, h, w]
        return x.flatten(2).transpose(1, 2) + self.pos


class ACTNet(nn.Module):
    """Rows [B, D + C·s·s·3] (normalised state, then C cameras' pixels) -> mean chunk [B, H·A]."""

    def __init__(self, obs_dim: int, action_dim: int, horizon: int, cameras: int = 0,
                 image_size: int = 96, d_model: int = 64, heads: int = 4,
                 layers: int = 2) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.horizon = obs_dim, action_dim, horizon
        self.cameras, self.size = cameras, image_size
        self.state = nn.Linear(obs_dim, d_model)
        self.camera = nn.ModuleList(CameraTokens(image_size, d_model) for _ in range(cameras))
        self.camera_embed = nn.Parameter(torch.randn(max(cameras, 1), d_model) * 0.02)
        enc = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0,
                                         batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers, enable_nested_tensor=False)
        dec = nn.TransformerDecoderLayer(d_model, heads, 4 * d_model, dropout=0.0,
                                         batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec, layers)
        self.queries = nn.Parameter(torch.randn(horizon, d_model) / math.sqrt(d_model))
        self.out = nn.Linear(d_model, action_dim)
        nn.init.zeros_(self.out.bias)
        nn.init.normal_(self.out.weight, std=0.01)  # near-zero first actions

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Rows [B, ...] -> observation tokens [B, 1 + cameras·cells, d]."""
        parts = [self.state(x[:, :self.obs_dim]).unsqueeze(1)]
        pixels = self.size * self.size * 3
        for i, cam in enumerate(self.camera):
            start = self.obs_dim + i * pixels
            frame = x[:, start:start + pixels].reshape(len(x), self.size, self.size, 3)
            parts.append(cam(frame) + self.camera_embed[i])
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.encoder(self.tokens(x))
        h = self.decoder(self.queries.expand(len(x), -1, -1), memory)  # [B, H, d]
        return self.out(h).reshape(len(x), self.horizon * self.action_dim)


class CameraCritic(nn.Module):
    """Value network for PPO: rows [B, D + C·s·s·3] -> [B, 1], an MLP on the normalised state
    and one `KeypointEncoder` feature vector per camera (cheaper than a second transformer).
    Spatial-softmax keypoints keep where things are; the global average pool of `ImageEncoder`
    (its first critic) dropped it, so on push from a top-down camera the critic could not see
    how far the puck was from the goal. The keypoints also cost half its CPU (0.07 vs 0.16 s
    for a forward and backward pass of 128 frames, one thread)."""

    def __init__(self, obs_dim: int, cameras: int, size: int, hidden: int, layers: int,
                 features: int = 32) -> None:
        super().__init__()
        self.obs_dim, self.size = obs_dim, size
        self.encoders = nn.ModuleList(KeypointEncoder(features) for _ in range(cameras))
        self.head = mlp(obs_dim + cameras * features, hidden, layers, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self.size * self.size * 3
        feats = [enc(x[:, self.obs_dim + i * pixels:self.obs_dim + (i + 1) * pixels]
                     .reshape(len(x), self.size, self.size, 3))
                 for i, enc in enumerate(self.encoders)]
        return self.head(torch.cat([x[:, :self.obs_dim], *feats], dim=1))


class ACTPolicy(ChunkPolicy):
    """`ChunkPolicy`'s Gaussian over chunks with `ACTNet` as its actor (`policy.kind=act`).

    Inherited unchanged: `act`, `log_prob`, `mean_chunk` (with `bound=tanh`), the observation
    statistics, `critic_input`, `policy_state`/`load_policy_state`, `capabilities`.
    """

    def __init__(self, config: PolicyConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.cameras = camera_keys(config)
        self.actor: nn.Module = self.make_actor(config)
        chunk = config.horizon * config.action_dim
        self.log_std = nn.Parameter(torch.full((chunk,), math.log(config.init_std)),
                                    requires_grad=config.learn_std)
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        add_obs_norm(self, config.obs_dim)

    def make_actor(self, config: PolicyConfig) -> nn.Module:
        """The network from rows to chunk means (a subclass brings another, as `lerobot_act`)."""
        return ACTNet(config.obs_dim, config.action_dim, config.horizon, len(self.cameras),
                      config.image_size, config.d_model, config.heads, config.layers)

    @property
    def takes_obs_dict(self) -> bool:
        return bool(input_keys(self.config))

    def make_critic(self) -> nn.Module:
        """A value MLP of `hidden` x `layers` on the normalised state (and a CNN per camera)."""
        cfg = self.config
        critic: nn.Module = (CameraCritic(cfg.obs_dim, len(self.cameras), cfg.image_size,
                                          cfg.hidden, cfg.layers) if self.cameras
                             else mlp(cfg.obs_dim, cfg.hidden, cfg.layers, 1))
        return critic.to(self.obs_mean.device)

    @torch.no_grad()
    def act_batch(self, rows: torch.Tensor, deterministic: bool = False,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """rows [B, D'] -> (chunks [B, H, A], log-probs [B]): many robots in one pass (the
        inference server's call)."""
        rows = rows.to(self.obs_mean.device)
        mean = self.mean_chunk(rows)
        std = self.log_std.exp()
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        sample = mean if deterministic else mean + std * noise
        logp = self._masked_sum(rows, torch.distributions.Normal(mean, std).log_prob(sample))
        return sample.reshape(len(rows), self.config.horizon, self.config.action_dim), logp


def make(config: PolicyConfig) -> ACTPolicy:
    """The `policy.kind=act` factory (`algorithms.factory.BUILTIN`)."""
    if config.backbone != "mlp":
        raise ValueError("policy.kind=act is its own transformer: leave policy.backbone unset")
    return ACTPolicy(config)

