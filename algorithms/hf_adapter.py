"""A Hugging Face causal LM as a chunk policy, as OpenVLA does: the last 256 tokens of the
vocabulary are the action bins.

The checkpoint is loaded from a local directory only (`local_files_only=True`; nothing is
downloaded). The observation is projected into one input embedding (a learned linear map) and
the instruction is one more: the mean embedding of its words, each hashed to a token id of the
text part of the vocabulary (no tokenizer files needed). The H * A action tokens are then
decoded autoregressively with the logits restricted to the action bins, and the log-probability
of an executed chunk is that of its bins (`algorithms.token_policy.to_bins`), so PPO and GRPO
use it as they use `ChunkPolicy`. It holds no critic: `make_critic` builds a small MLP on the
observation for the algorithm that needs one (PPO).

Example:

    policy = HFVLAPolicy(HFPolicyConfig(path="/models/tiny-vla", obs_dim=39, action_dim=4))
    policy.set_instruction("push the puck")
    chunk, logp = policy.act(obs)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np
import torch
from torch import nn

from algorithms.policy import ignore_old_critic, mlp
from algorithms.token_policy import from_bins, to_bins

MAX_WORDS = 16


@dataclasses.dataclass(frozen=True)
class HFPolicyConfig:
    path: str = ""  # a local directory written by `save_pretrained`
    obs_dim: int = 39
    action_dim: int = 4
    horizon: int = 4
    bins: int = 256  # the last `bins` tokens of the vocabulary
    hidden: int = 64  # width of `make_critic`'s network
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("policy.path: a local Hugging Face checkpoint directory")
        for name in ("obs_dim", "action_dim", "horizon", "bins", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")


class HFActor(nn.Module):
    """The language model and the observation projection into its embedding space."""

    def __init__(self, lm: nn.Module, obs_dim: int, width: int) -> None:
        super().__init__()
        self.lm = lm
        self.obs_proj = nn.Linear(obs_dim, width)


class HFVLAPolicy(nn.Module):
    def __init__(self, config: HFPolicyConfig) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM  # optional heavy import, only here

        self.config = config
        lm = AutoModelForCausalLM.from_pretrained(config.path, local_files_only=True)
        weight = torch.as_tensor(lm.get_input_embeddings().weight)
        self.vocab: int = int(weight.shape[0])
        width = int(weight.shape[1])
        if self.vocab <= config.bins:
            raise ValueError(f"vocabulary of {self.vocab} tokens has no room for {config.bins} "
                             "action bins")
        self.tokens = config.horizon * config.action_dim
        self.actor = HFActor(lm, config.obs_dim, width)
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        self.instruction_ids: torch.Tensor
        self.register_buffer("obs_mean", torch.zeros(config.obs_dim))
        self.register_buffer("obs_std", torch.ones(config.obs_dim))
        self.register_buffer("instruction_ids", torch.full((MAX_WORDS,), -1, dtype=torch.long))
        self.register_load_state_dict_pre_hook(ignore_old_critic)

    def set_instruction(self, text: str) -> None:
        ids = []
        for word in re.findall(r"[a-z0-9]+", text.lower())[:MAX_WORDS]:
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            ids.append(int.from_bytes(digest, "little") % (self.vocab - self.config.bins))
        self.instruction_ids.fill_(-1)
        self.instruction_ids[: len(ids)] = torch.tensor(ids, dtype=torch.long)

    def set_obs_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)

    def logits(self, obs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """obs [B, D], bins [B, H*A] (teacher forcing) -> action-bin logits [B, H*A, bins]."""
        embed: nn.Module = self.actor.lm.get_input_embeddings()  # type: ignore[operator]
        batch = len(obs)
        state = self.actor.obs_proj(self._norm(obs)).unsqueeze(1)  # [B, 1, W]
        words = self.instruction_ids[self.instruction_ids >= 0]
        if len(words):
            text = embed(words).mean(0)
        else:
            text = torch.zeros(state.shape[-1], device=obs.device)
        prefix = torch.cat([state, text.expand(batch, 1, -1)], dim=1)  # [B, 2, W]
        action_ids = index[:, :-1] + (self.vocab - self.config.bins)
        seq = torch.cat([prefix, embed(action_ids)], dim=1)
        out = self.actor.lm(inputs_embeds=seq).logits  # [B, 2 + T - 1, V]
        return out[:, 1:, self.vocab - self.config.bins:] / self.config.temperature

    def log_prob(self, obs: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """obs [B, D], executed chunk [B, H, A] -> log-probability [B] of the chunk's bins."""
        index = to_bins(chunk.reshape(len(obs), self.tokens), self.config.bins)
        logp = torch.log_softmax(self.logits(obs, index), dim=-1)
        return logp.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)

    def make_critic(self) -> nn.Module:
        """A fresh value MLP for an algorithm: `critic_input` rows [B, D] -> [B, 1]."""
        return mlp(self.config.obs_dim, self.config.hidden, 2, 1).to(self.obs_mean.device)

    def critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] -> the normalised state [B, D]."""
        return self._norm(obs)

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, float]:
        """One policy call: obs [D] -> (chunk [H, A] of bin centres, log-prob)."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.obs_mean.device).unsqueeze(0)
        index = torch.zeros(1, self.tokens, dtype=torch.long, device=x.device)
        for t in range(self.tokens):  # tokens after t do not affect logits[:, t] (causal LM)
            step = self.logits(x, index)[:, t]
            if deterministic:
                index[:, t] = step.argmax(-1)
            else:
                index[:, t] = torch.multinomial(torch.softmax(step, -1), 1,
                                                generator=generator).squeeze(-1)
        logp = torch.log_softmax(self.logits(x, index), -1)
        total = logp.gather(-1, index.unsqueeze(-1)).sum()
        chunk = from_bins(index, self.config.bins).reshape(self.config.horizon,
                                                           self.config.action_dim)
        return chunk.cpu().numpy().astype(np.float32), float(total)

    def policy_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
