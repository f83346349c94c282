"""A chunked Gaussian policy: one call maps an observation to an action chunk of H actions.

Example:

    policy = ChunkPolicy(PolicyConfig(obs_dim=39, action_dim=4, horizon=4))
    chunk, logp = policy.act(obs)                 # [H, A], float
    policy.load_policy_state(other.policy_state())
    critic = policy.make_critic()                 # an algorithm's (PPO's), never a robot's
    value = critic(policy.critic_input(obs_rows)).squeeze(-1)   # [B]

With `image_key` set (`policy=chunk_cnn`), the policy also sees a camera: `act` then takes the
observation dict, and the learner's rows are `policy_input(obs, input_keys(config))`, the state
followed by the image's pixels flattened (float); the actor (and a critic from `make_critic`)
encodes the image with a small CNN (`algorithms.backbones.KeypointEncoder`) and concatenates the
features to the normalised state. With `mask_key` set (mixed embodiments, `robot=mixed`),
`obs[mask_key]` [A] (1: the robot executes this action number, 0: padding) sits between state
and pixels in each row; the networks never see it, and log-probabilities count only unmasked
numbers.

The whole chunk `[H, A]` is one action for the RL algorithms: its log-probability is that of a
diagonal Gaussian over `H * A` numbers. The policy holds only what acting needs (actor, std,
observation statistics), so `policy_state()`, what every robot downloads, carries no critic. An
algorithm that needs a value function builds one with `make_critic()`, the same design as the
actor, and owns it with its optimizer (STYLE rule 5). States saved while the policy still held
the value head (`critic.*` keys: cached BC bases, earlier checkpoints) load, those keys ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Shape and capacity of a `ChunkPolicy`."""

    obs_dim: int = 39
    action_dim: int = 4
    horizon: int = 4  # H: actions per policy call
    hidden: int = 256
    layers: int = 2
    init_std: float = 0.2  # std of the Gaussian head, per action number
    learn_std: bool = False
    init: str = "default"  # default (torch's) | orthogonal (as SB3 / CleanRL, for RL from scratch)
    kind: str = "chunk"  # chunk (this class) | token | hf | act | flow | a `fleet.policies` plug-in
    backbone: str = "mlp"  # mlp | transformer (algorithms.backbones.ChunkTransformer)
    d_model: int = 64  # transformer width (backbone=transformer, kind=token)
    heads: int = 4
    bins: int = 256  # kind=token|hf: bins per action number over [-1, 1]
    decode: str = "autoregressive"  # kind=token: autoregressive | parallel
    instruction: str = ""  # kind=token|hf: language instruction the policy is conditioned on
    path: str = ""  # kind=hf: local Hugging Face checkpoint directory
    image_key: str = ""  # kind=chunk|hf: also see obs[image_key], uint8 [size, size, 3] (pixels)
    image_size: int = 96
    mask_key: str = ""  # kind=chunk: obs[mask_key] [A] marks executed action numbers (padding: 0)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # a plug-in's own config
    checkpoint: str = ""  # a saved policy to post-train instead of the BC base (fleet.run.pretrain)
    bound: str = "none"  # kind=chunk: none | tanh (the mean chunk squashed into (-1, 1), where
    # robots clip their actions: an off-policy actor cannot leave the critic's data (algorithms.td)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "horizon", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if not self.init_std > 0:
            raise ValueError(f"policy.init_std must be > 0, got {self.init_std}")
        if self.init not in ("default", "orthogonal"):
            raise ValueError(f"policy.init={self.init!r}: default or orthogonal")
        known = self.kind in BUILTIN_KINDS or self.kind in policy_kinds()  # (scans plug-ins)
        if not known or self.backbone not in ("mlp", "transformer"):
            raise ValueError(f"policy.kind={self.kind!r} ({'|'.join(policy_kinds())}), "
                             f"policy.backbone={self.backbone!r} (mlp|transformer)")
        if self.bound not in ("none", "tanh"):
            raise ValueError(f"policy.bound={self.bound!r}: none or tanh")
        chunk_only = self.image_key or self.mask_key or self.bound != "none"
        if chunk_only and self.kind in ("token", "hf", "flow") and not (
                self.kind == "hf" and not self.mask_key and self.bound == "none"):
            raise ValueError("policy.image_key, policy.mask_key and policy.bound need "
                             "policy.kind=chunk (image_key: also hf), or a plug-in that reads "
                             "them")


BUILTIN_KINDS = ("chunk", "token", "hf", "act", "flow")  # `algorithms.factory.BUILTIN` builds each
GROUP = "fleet.policies"  # the entry-point group of third-party policies


def policy_kinds() -> tuple[str, ...]:
    """Every `policy.kind`: the built-ins, then the installed `fleet.policies` plug-ins."""
    plugins = sorted({ep.name for ep in metadata.entry_points(group=GROUP)} - set(BUILTIN_KINDS))
    return BUILTIN_KINDS + tuple(plugins)


_ADDED = ("kind", "backbone", "d_model", "heads", "bins", "decode", "instruction", "path",
          "image_key", "image_size", "mask_key", "params", "checkpoint", "bound")


def config_key_fields(config: PolicyConfig) -> dict[str, object]:
    """The config as a dict for cache keys, leaving out fields added after the MLP policy while
    they hold their defaults, so keys (and cached bases) of MLP policies stay as they were, and
    `checkpoint` (a base loaded from a file is never cached; its demos are the BC base's)."""
    default = PolicyConfig()
    return {k: v for k, v in dataclasses.asdict(config).items()
            if k != "checkpoint" and (k not in _ADDED or v != getattr(default, k))}


def input_keys(config: Any) -> tuple[str, ...]:
    """The observations besides the state that a policy's input rows carry, in row order
    (`params["cameras"]`: further cameras of `kind=act`, `algorithms.act_policy`)."""
    more = tuple(getattr(config, "params", {}).get("cameras", ())) \
        if getattr(config, "kind", "") == "act" else ()
    return tuple(k for k in (getattr(config, "mask_key", ""), getattr(config, "image_key", ""),
                             *more) if k)


def policy_input(obs: Mapping[str, np.ndarray], keys: Sequence[str] = (),
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Observations [T, ...] per key -> a policy's input rows [T, D + ...]: the state, then each
    of `keys` (`input_keys(config)`) flattened, as float (an image's pixels stay 0..255)."""
    state = torch.as_tensor(np.array(obs["state"], np.float32), device=device)  # a copy
    if not keys:
        return state
    extra = [torch.as_tensor(np.array(obs[k]), device=device).reshape(len(state), -1).float()
             for k in keys]
    return torch.cat([state, *extra], dim=1)


def add_obs_norm(module: nn.Module, obs_dim: int) -> None:
    """A policy's observation normalisation: `obs_mean` (zeros) and `obs_std` (ones) buffers of
    [obs_dim], set from data by `set_obs_stats`, and the `ignore_old_critic` load hook."""
    module.register_buffer("obs_mean", torch.zeros(obs_dim))
    module.register_buffer("obs_std", torch.ones(obs_dim))
    module.register_load_state_dict_pre_hook(ignore_old_critic)


def ignore_old_critic(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """A `load_state_dict` pre-hook of every policy: drops the `critic.*` keys of states saved
    while policies held their value head, so cached BC bases and earlier checkpoints still load.
    Any other unknown key is still an error (`load_state_dict` is strict)."""
    for key in [k for k in state if k.startswith(prefix + "critic.")]:
        del state[key]


class _WithImage(nn.Module):
    """Input rows [B, D + s*s*3] (normalised state, raw pixels) -> head(state, CNN(image))."""

    def __init__(self, obs_dim: int, size: int, head: Any, features: int = 64) -> None:
        super().__init__()
        from algorithms.backbones import KeypointEncoder

        self.obs_dim, self.size = obs_dim, size
        self.encoder = KeypointEncoder(features)
        self.head = head(obs_dim + features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, self.obs_dim:].reshape(len(x), self.size, self.size, 3)
        return self.head(torch.cat([x[:, :self.obs_dim], self.encoder(image)], dim=1))


def mlp(inp: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else hidden, hidden), nn.Tanh()]
    mods.append(nn.Linear(hidden, out))
    return nn.Sequential(*mods)


def _orthogonal(net: nn.Sequential, last_gain: float) -> None:
    """Orthogonal weights, zero biases: the initialisation PPO implementations tune for
    (Andrychowicz et al. 2021, https://arxiv.org/abs/2006.05990)."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, last_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(layer.bias)


class ChunkPolicy(nn.Module):
    """Gaussian over action chunks `[H, A]`; `make_critic` gives algorithms a value MLP to match.

    Observations are normalised by fixed statistics (set from demonstrations, saved with the
    weights) so that BC and RL see the same inputs on every robot.
    """

    capabilities = frozenset({"mean_chunk"})  # `algorithms.factory.CAPABILITIES`

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        chunk = config.horizon * config.action_dim
        self.actor: nn.Module = mlp(config.obs_dim, config.hidden, config.layers, chunk)
        if config.backbone == "transformer":
            from algorithms.backbones import ChunkTransformer

            self.actor = ChunkTransformer(config.obs_dim, config.action_dim, config.horizon,
                                          config.d_model, config.heads, config.layers)
        if config.image_key:
            if config.backbone != "mlp":
                raise ValueError("policy.image_key needs policy.backbone=mlp")
            self.actor = _WithImage(config.obs_dim, config.image_size,
                                    lambda n: mlp(n, config.hidden, config.layers, chunk))
        self.log_std = nn.Parameter(
            torch.full((chunk,), math.log(config.init_std)), requires_grad=config.learn_std
        )
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        self.register_buffer("obs_mean", torch.zeros(config.obs_dim))
        self.register_buffer("obs_std", torch.ones(config.obs_dim))
        if config.init == "orthogonal":
            actor = getattr(self.actor, "head", self.actor)
            if isinstance(actor, nn.Sequential):
                _orthogonal(actor, last_gain=0.01)  # near-zero first actions
        self.register_load_state_dict_pre_hook(ignore_old_critic)

    def make_critic(self) -> nn.Module:
        """A fresh value network for an algorithm: `critic_input` rows [B, F] -> [B, 1].

        The actor's design with one output: an MLP of `hidden` x `layers` on the normalised state,
        with its own CNN for the image when the policy sees one; orthogonal weights (last gain 1)
        with `init=orthogonal`. It lives on the policy's device."""
        cfg = self.config
        critic: nn.Module = mlp(cfg.obs_dim, cfg.hidden, cfg.layers, 1)
        if cfg.image_key:
            critic = _WithImage(cfg.obs_dim, cfg.image_size,
                                lambda n: mlp(n, cfg.hidden, cfg.layers, 1))
        head = getattr(critic, "head", critic)
        if cfg.init == "orthogonal" and isinstance(head, nn.Sequential):
            _orthogonal(head, last_gain=1.0)
        return critic.to(self.obs_mean.device)

    def critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        """Input rows [B, D (+ mask, pixels)] -> what `make_critic`'s network sees [B, F]: the
        normalised state (and the pixels), as the actor sees them."""
        return self._norm(obs)

    @property
    def takes_obs_dict(self) -> bool:
        """Whether `act` wants the whole observation dict (an image policy) or obs["state"]."""
        return bool(self.config.image_key or self.config.mask_key)

    def set_obs_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Statistics of the state (the first obs_dim numbers of each input row)."""
        d = self.config.obs_dim
        self.obs_mean.copy_(torch.as_tensor(mean[:d], dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std[:d], 1e-3), dtype=torch.float32))

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        """Input rows -> what the networks see: the normalised state (and the pixels)."""
        d = self.config.obs_dim
        state = ((obs[:, :d] - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)
        if self.config.mask_key:
            d += self.config.action_dim
        return torch.cat([state, obs[:, d:]], dim=1) if obs.shape[1] > d else state

    def _masked_sum(self, obs: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """Per-number log-probabilities [B, H * A] -> [B], padded action numbers left out."""
        if not self.config.mask_key:
            return logp.sum(-1)
        d, a = self.config.obs_dim, self.config.action_dim
        return (logp * obs[:, d:d + a].repeat(1, self.config.horizon)).sum(-1)

    def mean_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] -> mean chunk [B, H * A] (in (-1, 1) with `bound=tanh`)."""
        mean = self.actor(self._norm(obs))
        return torch.tanh(mean) if self.config.bound == "tanh" else mean

    def log_prob(self, obs: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """obs [B, D], chunk [B, H, A] -> log-probability [B] of each whole chunk."""
        mean = self.mean_chunk(obs)
        dist = torch.distributions.Normal(mean, self.log_std.exp())
        return self._masked_sum(obs, dist.log_prob(chunk.reshape(mean.shape)))

    @torch.no_grad()
    def act(
        self, obs: np.ndarray | Mapping[str, np.ndarray], deterministic: bool = False,
        generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, float]:
        """One policy call: obs [D] (or the observation dict) -> (chunk [H, A], log-prob)."""
        if isinstance(obs, Mapping):
            x = policy_input({k: np.asarray(v)[None] for k, v in obs.items()},
                             input_keys(self.config), self.obs_mean.device)
        else:
            x = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        mean = self.mean_chunk(x)
        std = self.log_std.exp()
        if deterministic:
            sample = mean
        else:
            noise = torch.randn(mean.shape, generator=generator)
            sample = mean + std * noise
        logp = self._masked_sum(x, torch.distributions.Normal(mean, std).log_prob(sample))
        chunk = sample.reshape(self.config.horizon, self.config.action_dim)
        return chunk.numpy().astype(np.float32), float(logp)

    def policy_state(self) -> dict[str, np.ndarray]:
        """Weights as flat numpy arrays: what robots load and what crosses process boundaries."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
