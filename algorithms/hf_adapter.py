"""A Hugging Face (vision-)language model as a chunk policy, as OpenVLA does: image and
instruction in, action tokens out, the last `bins` ids of the tokenizer's vocabulary being the
action bins (`algorithms.token_policy.to_bins`/`from_bins`).

The checkpoint is a local directory (`save_pretrained`; `local_files_only=True`, nothing is
downloaded) holding the model and its own tokenizer, and its processor when the policy sees a
camera: with `image_key` set (`policy.image_key=pixels` on PushT) it is loaded with
`AutoProcessor` and `AutoModelForImageTextToText` (a Llava, PaliGemma, Idefics3 ... checkpoint),
else with `AutoTokenizer` and `AutoModelForCausalLM` (text only: the state alone). One call's
prompt is, in token ids:

    processor(image_token + "In: What action should the robot take to ", image)
    + instruction (tokenizer, at most `instruction_tokens`; padding masked out)
    + "?\\nOut:" + the normalised state, each number one action-bin token (OpenVLA style)

then the H * A action tokens are decoded with a KV cache (one forward pass for the prompt, then
one token per step, logits restricted to the bins). Padding sits where the instruction is short,
masked out of attention and skipped by the position ids, so every prompt has the same length
and a batch of calls with different instructions is one forward pass.

Language corrections: the instruction is not part of the weights. `set_instruction` changes it
for the following calls (the robot's worker does so when the console sends a correction,
`takes_corrections`), and each call records the ids it was conditioned on as per-call data
(`aux_spec`: `instruction` int64 [instruction_tokens], the ids then -1; `algorithms.call_data`).
`log_prob(rows, chunks, aux=...)` rebuilds each call's prompt from those ids, so the learner
scores an executed chunk with the instruction that was actually used; without `aux` (BC) it
uses the current one. It holds no critic: `make_critic` builds a small MLP on the state.

Example:

    policy = HFVLAPolicy(HFPolicyConfig(path="/models/tiny-vla", obs_dim=2, action_dim=2,
                                        image_key="pixels"))
    policy.set_instruction("push the T block home")
    chunk, logp, aux = policy.act(obs)                 # obs: {"state": [2], "pixels": uint8}
    logp = policy.log_prob(rows, chunks, aux={"instruction": ids})  # [B]
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.policy import add_obs_norm, mlp
from algorithms.token_policy import from_bins, to_bins

PREFIX = "In: What action should the robot take to "  # OpenVLA's prompt, around the instruction
SUFFIX = "?\nOut:"
STATE_RANGE = 3.0  # normalised state numbers in [-3, 3] map onto the bins


@dataclasses.dataclass(frozen=True)
class HFPolicyConfig:
    path: str = ""  # a local directory written by `save_pretrained` (model, tokenizer, processor)
    obs_dim: int = 39
    action_dim: int = 4
    horizon: int = 4
    bins: int = 256  # the last `bins` ids of the tokenizer's vocabulary
    hidden: int = 64  # width of `make_critic`'s network
    temperature: float = 1.0
    image_key: str = ""  # a camera: obs[image_key] uint8 [image_size, image_size, 3]
    image_size: int = 96
    instruction_tokens: int = 32  # longer instructions (corrections) are cut to this many ids

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("policy.path: a local Hugging Face checkpoint directory")
        for name in ("obs_dim", "action_dim", "horizon", "bins", "hidden", "image_size",
                     "instruction_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError("policy.temperature must be > 0")


def _cache_name(model: nn.Module) -> str:
    """The keyword of the KV cache: `past_key_values` up to transformers 5.x, where `cache`
    replaces it (5.24 takes both, warning)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out: Mapping[str, Any]) -> Any:
    cache = out.get("cache")
    return out.get("past_key_values") if cache is None else cache


class HFVLAPolicy(nn.Module):
    """Categorical over the action-bin tokens of a Hugging Face model, image and instruction in.
    `actor` is the whole model (vision tower included): PPO trains all of it."""

    takes_corrections = True  # the worker calls set_instruction with the console's corrections
    capabilities: frozenset[str] = frozenset()  # no mean_chunk: bins are not differentiable

    def __init__(self, config: HFPolicyConfig) -> None:
        super().__init__()
        import transformers  # optional heavy import, only here (the `hf` extra)

        self.config = config
        path = config.path
        if not Path(path).is_dir():
            raise ValueError(f"policy.path={path!r} is not a directory (a local Hugging Face "
                             "checkpoint written by save_pretrained)")
        self.processor: Any = None
        try:
            if config.image_key:
                self.processor = transformers.AutoProcessor.from_pretrained(
                    path, local_files_only=True)
                tokenizer = self.processor.tokenizer
                model = transformers.AutoModelForImageTextToText.from_pretrained(
                    path, local_files_only=True)
            else:
                tokenizer = transformers.AutoTokenizer.from_pretrained(path,
                                                                       local_files_only=True)
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    path, local_files_only=True)
        except (OSError, KeyError, ValueError) as e:  # no tokenizer, processor, model of that kind
            kind = ("a vision-language model with its processor" if config.image_key
                    else "a causal language model with its tokenizer")
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ValueError(f"policy.path={path!r} is not {kind} ({type(e).__name__}: "
                             f"{first})") from e
        self.tokenizer: Any = tokenizer
        self.actor = model
        self.actor.eval()  # no dropout: act and log_prob must agree
        # OpenVLA: the last `bins` ids of the base vocabulary (added tokens such as <image> and
        # <pad> come after it); none of them may be a special token
        self.base = int(tokenizer.vocab_size) - config.bins
        if self.base < 1:
            raise ValueError(f"policy.bins={config.bins}: the tokenizer's vocabulary of "
                             f"{tokenizer.vocab_size} has no room for them")
        special = [i for i in tokenizer.all_special_ids if self.base <= i < tokenizer.vocab_size]
        if special:
            raise ValueError(f"policy.bins={config.bins}: the action bins would cover special "
                             f"token ids {special}; use fewer bins")
        self.tokens = config.horizon * config.action_dim
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.suffix_ids = torch.tensor(self._ids(SUFFIX), dtype=torch.long)
        if self.processor is None:
            self.prefix_ids = torch.tensor(tokenizer(PREFIX)["input_ids"], dtype=torch.long)
        else:
            image_token = getattr(self.processor, "image_token", None) or "<image>"
            self.prefix_text = image_token + PREFIX
        self.cache_name = _cache_name(model)
        self.keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.instruction = ""
        self.instruction_ids = np.full(config.instruction_tokens, -1, np.int64)
        self.aux_spec = {"instruction": ((config.instruction_tokens,), "int64")}
        self.obs_mean: torch.Tensor
        self.obs_std: torch.Tensor
        add_obs_norm(self, config.obs_dim)

    @property
    def takes_obs_dict(self) -> bool:
        """With a camera `act` wants the whole observation dict, else obs["state"]."""
        return bool(self.config.image_key)

    # -- conditioning --------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def set_instruction(self, text: str) -> None:
        """The instruction of every following call (not saved with the weights: each call
        records the ids it used). Cut to `instruction_tokens` ids."""
        ids = self._ids(text)[: self.config.instruction_tokens]
        self.instruction = text
        self.instruction_ids = np.full(self.config.instruction_tokens, -1, np.int64)
        self.instruction_ids[: len(ids)] = ids

    def set_obs_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Statistics of the state (the first obs_dim numbers of each input row)."""
        d = self.config.obs_dim
        self.obs_mean.copy_(torch.as_tensor(mean[:d], dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(np.maximum(std[:d], 1e-3), dtype=torch.float32))

    def _norm(self, state: torch.Tensor) -> torch.Tensor:
        return ((state - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)

    # -- prompts -------------------------------------------------------------------------------

    def _prompt(self, rows: torch.Tensor, instruction: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Input rows [B, D (+ pixels)] and instruction ids [B, L] (-1: none) -> (prompt ids
        [B, P], attention mask [B, P], the processor's image inputs)."""
        cfg = self.config
        device = self.obs_mean.device
        batch = len(rows)
        state = self._norm(rows[:, : cfg.obs_dim].to(device))
        state_ids = to_bins(state / STATE_RANGE, cfg.bins) + self.base
        images: dict[str, Any] = {}
        if self.processor is None:
            prefix = self.prefix_ids.to(device).expand(batch, -1)
        else:
            size = cfg.image_size
            pixels = rows[:, cfg.obs_dim: cfg.obs_dim + size * size * 3]
            frames = list(pixels.reshape(batch, size, size, 3).to(torch.uint8).cpu().numpy())
            enc = self.processor(text=[self.prefix_text] * batch, images=frames,
                                 return_tensors="pt")
            prefix = enc["input_ids"].to(device)
            dtype = next(self.actor.parameters()).dtype  # a bfloat16 checkpoint takes bfloat16
            images = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                      for k, v in enc.items()
                      if k not in ("input_ids", "attention_mask", "token_type_ids")}
        instruction = instruction.to(device)
        words = instruction.clamp(min=0)
        words[instruction < 0] = self.pad_id
        ids = torch.cat([prefix, words, self.suffix_ids.to(device).expand(batch, -1),
                         state_ids], dim=1)
        mask = torch.ones_like(ids)
        start = prefix.shape[1]
        mask[:, start: start + instruction.shape[1]] = (instruction >= 0).long()
        # padding of every row goes (one call: all of it); an all-ones mask lets the model skip
        # building one, several times faster per decoded token on CPU
        used = mask.bool().any(0)
        return ids[:, used], mask[:, used], images

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, images: Mapping[str, Any],
                 keep: int, use_cache: bool = False, cache: Any = None) -> Any:
        """One pass of the model: position ids skip the masked padding; logits of the last
        `keep` positions."""
        kwargs: dict[str, Any] = dict(images)
        if self.keep_logits:
            kwargs["logits_to_keep"] = keep
        if cache is not None:
            kwargs[self.cache_name] = cache
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        return self.actor(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=use_cache, **kwargs)

    def _bin_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., self.base: self.base + self.config.bins].float() / \
            self.config.temperature

    def _instructions(self, batch: int, aux: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        if aux is not None:
            return torch.as_tensor(aux["instruction"], dtype=torch.long)
        return torch.as_tensor(self.instruction_ids).expand(batch, -1)

    # -- the algorithms' side ------------------------------------------------------------------

    def log_prob(self, rows: torch.Tensor, chunk: torch.Tensor,
                 aux: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Rows [B, D (+ pixels)], executed chunks [B, H, A], each call's recorded instruction
        ids (`aux["instruction"]` [B, L]; None: the current instruction) -> log-probability [B]
        of the chunks' bins, teacher-forced in one pass."""
        batch = len(rows)
        index = to_bins(chunk.reshape(batch, self.tokens).to(self.obs_mean.device),
                        self.config.bins)
        ids, mask, images = self._prompt(rows, self._instructions(batch, aux))
        ids = torch.cat([ids, index[:, :-1] + self.base], dim=1)
        mask = torch.cat([mask, torch.ones_like(index[:, :-1])], dim=1)
        logits = self._forward(ids, mask, images, keep=self.tokens).logits[:, -self.tokens:]
        logp = torch.log_softmax(self._bin_logits(logits), dim=-1)
        return logp.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)

    def make_critic(self) -> nn.Module:
        """A fresh value MLP for an algorithm: `critic_input` rows [B, D] -> [B, 1]."""
        return mlp(self.config.obs_dim, self.config.hidden, 2, 1).to(self.obs_mean.device)

    def critic_input(self, rows: torch.Tensor) -> torch.Tensor:
        """Input rows [B, D (+ pixels)] -> the normalised state [B, D]."""
        return self._norm(rows[:, : self.config.obs_dim])

    # -- acting --------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, rows: torch.Tensor, instruction: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None, use_cache: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [B, D (+ pixels)], instruction ids [B, L] -> (bins [B, H * A], log-prob [B]).
        With the KV cache: the prompt in one pass, then one token per pass; without (the
        baseline of `fleet bench vla_decode`): the whole sequence again for every token."""
        ids, mask, images = self._prompt(rows, instruction)
        batch = len(ids)
        index = torch.zeros(batch, self.tokens, dtype=torch.long, device=ids.device)
        total = torch.zeros(batch, device=ids.device)
        out = self._forward(ids, mask, images, keep=1, use_cache=use_cache)
        cache = _cache_of(out) if use_cache else None
        for t in range(self.tokens):
            step = torch.log_softmax(self._bin_logits(out.logits[:, -1]), dim=-1)
            if deterministic:
                pick = step.argmax(-1)
            else:
                pick = torch.multinomial(step.exp().cpu(), 1, generator=generator)
                pick = pick.squeeze(-1).to(ids.device)
            index[:, t] = pick
            total += step.gather(-1, pick[:, None]).squeeze(-1)
            if t == self.tokens - 1:
                break
            token = pick[:, None] + self.base
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            if use_cache:
                out = self._forward(token, mask, {}, keep=1, use_cache=True, cache=cache)
                cache = _cache_of(out)
            else:
                ids = torch.cat([ids, token], dim=1)
                out = self._forward(ids, mask, images, keep=1)
        return index, total

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = False,
            generator: torch.Generator | None = None
            ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """One policy call: obs (the observation dict with a camera, else the state [D]) ->
        (chunk [H, A] of bin centres, log-prob, {"instruction": the ids it used})."""
        cfg = self.config
        if cfg.image_key:
            image = np.asarray(obs[cfg.image_key])
            if image.shape != (cfg.image_size, cfg.image_size, 3):
                raise ValueError(f"obs[{cfg.image_key!r}] is {image.shape}, policy.image_size="
                                 f"{cfg.image_size} needs ({cfg.image_size}, {cfg.image_size}, 3)")
            row = np.concatenate([np.asarray(obs["state"], np.float32),
                                  image.reshape(-1).astype(np.float32)])
        else:
            row = np.asarray(obs, np.float32)
        used = self.instruction_ids.copy()
        index, logp = self.decode(torch.as_tensor(row)[None], torch.as_tensor(used)[None],
                                  deterministic, generator)
        chunk = from_bins(index[0], cfg.bins).reshape(cfg.horizon, cfg.action_dim)
        return chunk.cpu().numpy().astype(np.float32), float(logp[0]), {"instruction": used}

    def policy_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
