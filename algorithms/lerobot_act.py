"""LeRobot's own ACT (`lerobot.policies.act.ACTPolicy`) as a Fleet chunk policy (`lerobot_act`).

The `fleet[lerobot]` extra (Python >= 3.12: every lerobot 0.5-0.6 release needs it; 0.6.1 needs
torch < 2.12) installs lerobot; Fleet's own pyproject registers this module's `LeRobotACT` under the
`fleet.policies` entry-point group, the plug-in seam any third-party policy uses
(`algorithms.factory`). Nothing here imports lerobot until a policy is built, so Fleet imports
without it (tests/test_dependencies.py) and building one says which extra is missing.

    pip install "torch==2.11.0" && pip install -e ".[lerobot]"         # Python 3.12
    fleet train robot=gym policy.kind=lerobot_act policy.horizon=4 policy.params.dim_model=64

LeRobot's network is built from its `ACTConfig` with random weights and no download
(`pretrained_backbone_weights=None`): `chunk_size = n_action_steps = policy.horizon`; width,
heads and encoder layers from `policy.d_model`, `policy.heads`, `policy.layers` (Fleet's small
defaults, so a CPU robot can run it); any other `ACTConfig` field from `policy.params` (e.g.
`policy.params.dim_model=512 policy.params.n_decoder_layers=7` for the paper's size).
Inputs: the normalised state as ACT's `observation.environment_state` token (state-only), or,
with `policy.image_key`, as `observation.state` beside one camera `observation.images.<key>`
(ResNet backbone from torchvision, random weights, pixels scaled to [0, 1]).

For RL, ACT's output chunk is the mean of the same diagonal Gaussian over `H * A` numbers as
`ChunkPolicy` (state-independent log-std): `act`, `log_prob`, BC on the mean chunk, the
weights, PPO and the critic come from `algorithms.act_policy.ACTPolicy`. ACT's CVAE is off
(`use_vae=False`: ACT sets z = 0 when acting anyway) and dropout is 0, so the chunk a robot
sampled has the same log-probability in the learner (train and eval mode agree).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from algorithms.act_policy import ACTPolicy, camera_keys
from algorithms.policy import PolicyConfig

KIND = "lerobot_act"
NEEDS = (f"policy.kind={KIND} needs lerobot: pip install 'fleet[lerobot]' "
         "(Python >= 3.12, lerobot 0.5-0.6)")


class LeRobotACTActor(nn.Module):
    """Rows [B, D (+ s·s·3)] (normalised state, then one camera's pixels 0..255) -> mean chunk
    [B, H·A] through LeRobot's `ACT` model (`self.policy.model`)."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        try:
            from lerobot.configs.types import FeatureType, PolicyFeature
            from lerobot.policies.act.configuration_act import ACTConfig
            from lerobot.policies.act.modeling_act import ACTPolicy as LeRobotACTPolicy
        except ImportError as e:
            raise ValueError(f"{NEEDS} ({e})") from e
        self.obs_dim, self.action_dim, self.horizon = (config.obs_dim, config.action_dim,
                                                       config.horizon)
        self.cameras = camera_keys(config)
        if len(self.cameras) > 1:
            raise ValueError(f"policy.kind={KIND} takes one camera (policy.image_key)")
        self.size = config.image_size
        state = PolicyFeature(type=FeatureType.STATE if self.cameras else FeatureType.ENV,
                              shape=(config.obs_dim,))
        inputs = {"observation.state" if self.cameras else "observation.environment_state":
                  state}
        inputs |= {f"observation.images.{k}": PolicyFeature(
            type=FeatureType.VISUAL, shape=(3, self.size, self.size)) for k in self.cameras}
        settings: dict[str, Any] = dict(
            chunk_size=config.horizon, n_action_steps=config.horizon, use_vae=False,
            dropout=0.0, pretrained_backbone_weights=None, device="cpu",
            dim_model=config.d_model, n_heads=config.heads, n_encoder_layers=config.layers,
            dim_feedforward=4 * config.d_model)
        fields = {f.name for f in dataclasses.fields(ACTConfig)}
        unknown = sorted(set(config.params) - fields)
        if unknown:
            raise ValueError(f"policy.params {unknown} are not fields of LeRobot's ACTConfig")
        settings |= dict(config.params)
        if settings["use_vae"] or settings["dropout"]:
            raise ValueError(f"policy.kind={KIND} needs use_vae=false and dropout=0: the "
                             "learner must recompute the robot's log-probability")
        if settings["chunk_size"] != config.horizon:
            raise ValueError("policy.params.chunk_size: set policy.horizon instead")
        self.act_config = ACTConfig(
            input_features=inputs,
            output_features={"action": PolicyFeature(type=FeatureType.ACTION,
                                                     shape=(config.action_dim,))},
            **settings)
        self.policy = LeRobotACTPolicy(self.act_config)  # random weights, nothing downloaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = x[:, :self.obs_dim]
        # ACT reads observation.state's device even when its only state token is the env's
        batch: dict[str, Any] = {"observation.state": state,
                                 "observation.environment_state": state}
        if self.cameras:
            pixels = x[:, self.obs_dim:].reshape(len(x), self.size, self.size, 3)
            batch["observation.images"] = [pixels.permute(0, 3, 1, 2) / 255.0]
        actions, _ = self.policy.model(batch)  # [B, H, A]
        return actions.reshape(len(x), self.horizon * self.action_dim)


class LeRobotACT(ACTPolicy):
    """`ACTPolicy`'s Gaussian chunk head, critic and observation statistics around LeRobot's ACT
    network (`actor.policy` is the `lerobot` `ACTPolicy`; its state dict keys are LeRobot's
    under `actor.policy.`). The `fleet.policies` entry point `lerobot_act` (Fleet's pyproject.toml);
    `capabilities` are `ChunkPolicy`'s."""

    def __init__(self, config: PolicyConfig) -> None:
        if config.backbone != "mlp" or config.bound != "none" or config.mask_key:
            raise ValueError(f"policy.kind={KIND}: LeRobot's ACT is the network; leave "
                             "policy.backbone, policy.bound and policy.mask_key unset")
        super().__init__(config)

    def make_actor(self, config: PolicyConfig) -> nn.Module:
        return LeRobotACTActor(config)

