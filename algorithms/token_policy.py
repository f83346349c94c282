"""A token policy in the style of VLAs (RT-2, OpenVLA): every action number is one of 256 bins.

Each action dimension is discretised into `bins` (256) uniform bins over [-1, 1]; a chunk
[H, A] is H * A tokens. The tokens are decoded either autoregressively (each token sees the
ones before it, as a causal transformer decoder over the chunk) or in parallel (one categorical
per token from the observation alone). The policy is conditioned on a language instruction,
embedded with a hashed bag of words (no tokenizer, nothing downloaded).

Example:

    policy = TokenPolicy(TokenPolicyConfig(obs_dim=39, action_dim=4, horizon=4))
    policy.set_instruction("push the puck to the goal")
    chunk, logp = policy.act(obs)                       # [H, A], float
    logp = policy.log_prob(obs_batch, chunk_batch)      # [B]: the bins of the executed actions
    critic = policy.make_critic()                       # PPO's value MLP; robots never run one

`log_prob` is the same interface `ChunkPolicy` gives PPO and GRPO: an executed (continuous)
action is mapped to its bin, and the chunk's log-probability is the sum over its H * A tokens.
The acting chunk is the bins' centres, so a re-evaluated chunk lands in the same bins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from algorithms.policy import ignore_old_critic, mlp


@dataclasses.dataclass(frozen=True)
class TokenPolicyConfig:
    """Shape and capacity of a `TokenPolicy`."""

    obs_dim: int = 39
    action_dim: int = 4
    horizon: int = 4
    bins: int = 256  # per action number, uniform over [-1, 1]
    decode: str = "autoregressive"  # autoregressive | parallel
    d_model: int = 64
    heads: int = 4
    layers: int = 2  # transformer decoder layers (autoregressive)
    hidden: int = 256  # MLP width of the observation encoder and of `make_critic`'s network
    vocab: int = 1024  # hashed bag-of-words buckets for the instruction
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "horizon", "bins", "d_model", "heads", "layers",
                     "hidden", "vocab"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if self.bins < 2:
            raise ValueError("policy.bins must be >= 2")
        if self.decode not in ("autoregressive", "parallel"):
            raise ValueError(f"policy.decode={self.decode!r}: autoregressive or parallel")
        if self.d_model % self.heads:
            raise ValueError("policy.d_model must be a multiple of policy.heads")
        if not self.temperature > 0:
            raise ValueError("policy.temperature must be > 0")


def to_bins(actions: torch.Tensor, bins: int) -> torch.Tensor:
    """Continuous actions (clipped to [-1, 1]) -> bin index in [0, bins)."""
    x = (actions.clamp(-1.0, 1.0) + 1.0) / 2.0 * bins
    return x.floor().long().clamp(0, bins - 1)


def from_bins(index: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index -> the bin's centre in [-1, 1]."""
    return (index.float() + 0.5) / bins * 2.0 - 1.0


def hashed_words(text: str, vocab: int) -> np.ndarray:
    """Bag of words hashed into `vocab` buckets (stable across processes: blake2b, not hash())."""
    counts = np.zeros(vocab, np.float32)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        counts[int.from_bytes(digest, "little") % vocab] += 1.0
    return counts


class TokenActor(nn.Module):
    """The actor's weights: observation encoder, instruction embedding, token decoder, head."""

    def __init__(self, cfg: TokenPolicyConfig) -> None:
        super().__init__()
        tokens = cfg.horizon * cfg.action_dim
        self.obs_encoder = mlp(cfg.obs_dim, cfg.hidden, 2, cfg.d_model)
        self.instruction = nn.Linear(cfg.vocab, cfg.d_model, bias=False)  # learned word embedding
        self.head: nn.Module
        if cfg.decode == "autoregressive":
            self.bin_embed = nn.Embedding(cfg.bins + 1, cfg.d_model)  # last index: start token
            self.pos_embed = nn.Parameter(torch.zeros(tokens, cfg.d_model))
            layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, 4 * cfg.d_model,
                                               dropout=0.0, batch_first=True)
            self.decoder = nn.TransformerDecoder(layer, cfg.layers)
            self.head = nn.Linear(cfg.d_model, cfg.bins)
        else:
            self.head = nn.Sequential(nn.Tanh(), nn.Linear(cfg.d_model, tokens * cfg.bins))


class TokenPolicy(nn.Module):
    """Categorical over 256 bins per action number, language-conditioned. Holds no critic:
    `make_critic` builds one for the algorithm that needs it."""

    capabilities: frozenset[str] = frozenset()  # no mean_chunk: bins are not differentiable

    def __init__(self, config: TokenPolicyConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.tokens = cfg.horizon * cfg.action_dim
        self.actor = TokenActor(cfg)  # every weight of the token distribution (PPO's actor)
        mask = torch.triu(torch.full((self.tokens, self.tokens), float("-inf")), 1)
        self.causal: torch.Tensor
        self.register_buffer("causal", mask, persistent=False)
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        self.instruction_bow: torch.Tensor
        self.register_buffer("obs_mean", torch.zeros(cfg.obs_dim))
        self.register_buffer("obs_std", torch.ones(cfg.obs_dim))
        self.register_buffer("instruction_bow", torch.zeros(cfg.vocab))
        self.register_load_state_dict_pre_hook(ignore_old_critic)

    # -- conditioning --------------------------------------------------------------------------

    def set_instruction(self, text: str) -> None:
        """The language instruction every following call is conditioned on (saved with weights)."""
        self.instruction_bow.copy_(torch.as_tensor(hashed_words(text, self.config.vocab)))

    def set_obs_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)

    def _context(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] -> conditioning vector [B, d_model] (observation + instruction)."""
        words = self.actor.instruction(self.instruction_bow)
        return self.actor.obs_encoder(self._norm(obs)) + words

    # -- token logits --------------------------------------------------------------------------

    def logits(self, obs: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """obs [B, D], bins [B, H * A] (teacher forcing; autoregressive only) -> [B, H*A, bins].

        Autoregressive: logits of token t depend on tokens < t of `index`. Parallel: `index` is
        not needed."""
        ctx = self._context(obs)
        cfg = self.config
        if cfg.decode == "parallel":
            return self.actor.head(ctx).reshape(len(obs), self.tokens, cfg.bins)
        if index is None:
            raise ValueError("autoregressive logits need the chunk's bins (teacher forcing)")
        start = torch.full((len(obs), 1), cfg.bins, dtype=torch.long, device=obs.device)
        inp = torch.cat([start, index[:, :-1]], dim=1)
        h = self.actor.bin_embed(inp) + self.actor.pos_embed
        h = self.actor.decoder(h, ctx.unsqueeze(1), tgt_mask=self.causal)
        return self.actor.head(h)

    def log_prob(self, obs: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """obs [B, D], executed chunk [B, H, A] -> log-probability [B] of the chunk's bins."""
        index = to_bins(chunk.reshape(len(obs), self.tokens), self.config.bins)
        logits = self.logits(obs, index) / self.config.temperature
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)

    # -- for an algorithm's critic ------------------------------------------------------------

    def make_critic(self) -> nn.Module:
        """A fresh value MLP for an algorithm: `critic_input` rows [B, D + vocab] -> [B, 1]."""
        cfg = self.config
        return mlp(cfg.obs_dim + cfg.vocab, cfg.hidden, 2, 1).to(self.obs_mean.device)

    def critic_input(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] -> [B, D + vocab]: the normalised state and the instruction's bag of words."""
        bow = self.instruction_bow.expand(len(obs), -1)
        return torch.cat([self._norm(obs), bow], dim=-1)

    # -- acting --------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, obs: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, D] -> (bins [B, H * A], log-probability [B])."""
        cfg = self.config

        def pick(step_logits: torch.Tensor) -> torch.Tensor:  # [B, bins] -> [B]
            if deterministic:
                return step_logits.argmax(-1)
            probs = torch.softmax(step_logits, dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

        if cfg.decode == "parallel":
            logits = self.logits(obs) / cfg.temperature
            index = torch.stack([pick(logits[:, t]) for t in range(self.tokens)], dim=1)
        else:
            index, logits = self._decode_cached(obs, pick)
        logp = torch.log_softmax(logits, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)
        return index, logp

    def _decode_cached(self, obs: torch.Tensor, pick: Callable[[torch.Tensor], torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Autoregressive decode computing each token once: obs [B, D] -> (bins [B, H*A],
        logits [B, H*A, bins] / temperature), the same as `logits` teacher-forced on the bins.

        Each decoder layer keeps the keys and values of the tokens so far (a KV cache), so token
        t costs one position, not t. The layers are post-norm with no dropout (built in
        `TokenActor`); the memory is one vector (the context), so cross-attention's softmax is
        over one key, is exactly 1, and its output does not depend on the query: computed once."""
        cfg = self.config
        actor = self.actor
        batch, tokens, d = len(obs), self.tokens, cfg.d_model
        heads, width = cfg.heads, cfg.d_model // cfg.heads
        memory = self._context(obs).unsqueeze(1)  # [B, 1, d_model]
        layers = list(actor.decoder.layers)
        cross = [layer.multihead_attn(memory, memory, memory, need_weights=False)[0][:, 0]
                 for layer in layers]
        cache = obs.new_zeros(len(layers), 2, batch, heads, tokens, width)  # keys, values
        index = torch.zeros(batch, tokens, dtype=torch.long, device=obs.device)
        steps = obs.new_zeros(batch, tokens, cfg.bins)
        previous = torch.full((batch,), cfg.bins, dtype=torch.long, device=obs.device)  # start
        # each layer's weights, looked up once (module attribute lookups dominate at batch 1)
        weights = [(layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias,
                    layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias,
                    layer.linear1.weight, layer.linear1.bias, layer.linear2.weight,
                    layer.linear2.bias, layer.activation, [(n.weight, n.bias, n.eps) for n in
                                                           (layer.norm1, layer.norm2, layer.norm3)])
                   for layer in layers]
        for t in range(tokens):
            x = actor.bin_embed(previous) + actor.pos_embed[t]  # [B, d]
            for i, (w_in, b_in, w_out, b_out, w1, b1, w2, b2, act, norms) in enumerate(weights):
                qkv = F.linear(x, w_in, b_in)  # [B, 3 d]: query, key, value
                cache[i, :, :, :, t] = qkv[:, d:].reshape(batch, 2, heads, width).transpose(0, 1)
                mixed = F.scaled_dot_product_attention(
                    qkv[:, :d].reshape(batch, heads, 1, width),
                    cache[i, 0, :, :, :t + 1], cache[i, 1, :, :, :t + 1])  # tokens <= t
                x = F.layer_norm(x + F.linear(mixed.reshape(batch, d), w_out, b_out), (d,),
                                 *norms[0])
                x = F.layer_norm(x + cross[i], (d,), *norms[1])
                x = F.layer_norm(x + F.linear(act(F.linear(x, w1, b1)), w2, b2), (d,), *norms[2])
            steps[:, t] = actor.head(x) / cfg.temperature
            index[:, t] = previous = pick(steps[:, t])
        return index, steps

    @torch.no_grad()
    def act_batch(self, obs: torch.Tensor, deterministic: bool = False,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """B robots' calls at once (the inference server's): obs [B, D] -> (chunks [B, H, A] of
        bin centres, log-probabilities [B])."""
        index, logp = self.decode(obs.to(self.obs_mean.device), deterministic, generator)
        cfg = self.config
        return from_bins(index, cfg.bins).reshape(len(obs), cfg.horizon, cfg.action_dim), logp

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, float]:
        """One policy call: obs [D] -> (chunk [H, A] of bin centres, log-prob)."""
        x = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        chunks, logp = self.act_batch(x, deterministic, generator)
        return chunks[0].cpu().numpy().astype(np.float32), float(logp[0])

    def policy_state(self) -> dict[str, np.ndarray]:
        """Weights as flat numpy arrays: what robots load and what crosses process boundaries."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
