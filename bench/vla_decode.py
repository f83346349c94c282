"""`fleet bench vla_decode`: one call of the VLA adapter (`policy.kind=hf`) decoding 112 action
tokens (H = 28, A = 4) with the KV cache, against the same decode recomputing the whole sequence
for every token, on a small Llava built here with random weights (nothing downloaded).

value = cached decode latency in ms (median of calls); baseline = uncached, same model, same
prompt, same run; ratio = value / baseline (below 1: the cache is faster). Needs the `hf` extra.

`build_tiny_vlm` is also what the tests load: a Llava (CLIP vision tower, Llama LM) with its
own processor and a byte-level BPE tokenizer trained here with `tokenizers`, written with
`save_pretrained` the way a user's checkpoint would be.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import result

CORPUS = ["In: What action should the robot take to push the T block home?", "Out:",
          "push the puck to the goal", "move to the left", "slow down and go right",
          "grasp the handle and pull"]


def build_tiny_vlm(path: Path | str, width: int = 32, layers: int = 2, image_size: int = 32,
                   patch: int = 8, vocab: int = 320, vision: bool = True, seed: int = 0,
                   init_std: float = 0.02) -> None:
    """A random-weight Llava (vision=True: CLIP tower on image_size x image_size, patch x patch
    patches, one image token per patch) or a bare Llama causal LM (vision=False), with its
    tokenizer (a byte-level BPE of `vocab` ids trained on `CORPUS`, then <image>), saved to
    `path` with `save_pretrained`. `init_std`: the weights' std (0.02, transformers' default;
    larger gives sharper outputs, which the tests use so that inputs visibly matter)."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(["<image>"])  # after the base vocabulary, out of the action bins
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                           bos_token="<s>", eos_token="</s>")
    text = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=width,
                          intermediate_size=2 * width, num_hidden_layers=layers,
                          num_attention_heads=2, num_key_value_heads=2,
                          max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                          initializer_range=init_std)
    torch.manual_seed(seed)
    model: torch.nn.Module
    if not vision:
        model = tf.LlamaForCausalLM(text)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return
    tower = tf.CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width,
                                num_hidden_layers=layers, num_attention_heads=2,
                                image_size=image_size, patch_size=patch, projection_dim=width,
                                initializer_range=init_std)
    image_token = tok.token_to_id("<image>")
    assert image_token is not None  # added to the vocabulary above
    # initializer_range is a keyword of LlavaConfig in transformers 4.x and taken through its
    # **kwargs in 5.x, whose signature no longer names it
    init: dict[str, Any] = {"initializer_range": init_std}
    config = tf.LlavaConfig(vision_config=tower.to_dict(), text_config=text.to_dict(),
                            image_token_index=image_token, vision_feature_layer=-1,
                            vision_feature_select_strategy="default", **init)
    model = tf.LlavaForConditionalGeneration(config)
    images = tf.CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    processor = tf.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch,
                                  vision_feature_select_strategy="default", image_token="<image>",
                                  num_additional_image_tokens=1)
    model.save_pretrained(path)
    processor.save_pretrained(path)


def run(quick: bool) -> dict[str, object]:
    from algorithms.hf_adapter import HFPolicyConfig, HFVLAPolicy

    torch.set_num_threads(1)
    repeats = 3 if quick else 9
    horizon, action_dim = 28, 4  # 112 action tokens, the figure
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_vlm(tmp, width=256, layers=4, image_size=64, patch=8, vocab=1024)
        policy = HFVLAPolicy(HFPolicyConfig(path=tmp, obs_dim=2, action_dim=action_dim,
                                            horizon=horizon, bins=256, image_key="pixels"))
    policy.set_instruction("push the T block home")
    rng = np.random.default_rng(0)
    state = rng.standard_normal(2).astype(np.float32)
    pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    row = torch.as_tensor(np.concatenate([state, pixels.reshape(-1)]), dtype=torch.float32)[None]
    ids = torch.as_tensor(policy.instruction_ids)[None]

    def latency(use_cache: bool) -> tuple[float, torch.Tensor]:
        times, index = [], torch.zeros(0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            index, _ = policy.decode(row, ids, deterministic=True, use_cache=use_cache)
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times), index

    latency(True)  # warm-up
    cached, a = latency(True)
    uncached, b = latency(False)
    params = sum(p.numel() for p in policy.actor.parameters())
    return result("vla_decode", "decode_ms_112_tokens", cached, "ms", uncached,
                  same_tokens=bool(torch.equal(a, b)), prompt_tokens=int(
                      policy._prompt(row, ids)[0].shape[1]),
                  params=params, load=[round(x, 2) for x in os.getloadavg()])
