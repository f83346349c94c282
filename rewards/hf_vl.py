"""A reward from a Hugging Face vision-language checkpoint (CLIP, SigLIP, ...) on a local path:
progress is the image-instruction similarity, the reward its change from step to step.

Example:

    reward = HFVisionLanguageReward(path="checkpoints/siglip-base", key="pixels")
    r = reward.score(chunk)       # [T]: scale * (sim(obs[t + 1], instruction) - sim(obs[t], ...))

Any checkpoint `transformers.AutoModel` loads with `get_image_features` and
`get_text_features` works; its tokenizer (and image processor's mean/std, when it ships one)
load from the same folder. Nothing is downloaded (`local_files_only`). Images are uint8
[T + 1, H, W, 3] under obs[key], resized to the vision tower's `image_size`. Text embeddings
are cached per instruction. The version is the checkpoint folder's name, so relabelling follows
a change of checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from buffers.records import RolloutChunk


class HFVisionLanguageReward:
    def __init__(self, path: str, key: str = "pixels", scale: float = 10.0,
                 instruction: str = "", batch: int = 64, name: str = "hf_vl") -> None:
        """`instruction`: used for chunks that carry none."""
        from transformers import AutoModel, AutoTokenizer

        self.path, self.key, self.scale, self.batch = Path(path), key, scale, batch
        self.instruction, self.name = instruction, name
        self.version = self.path.name
        if not self.path.is_dir():  # a hub id would mean a download: local folders only
            raise FileNotFoundError(f"hf_vl: no checkpoint folder at {self.path}")
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        vision = getattr(self.model.config, "vision_config", self.model.config)
        self.size = int(vision.image_size)
        mean, std = self._normalisation()
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self._text: dict[str, torch.Tensor] = {}

    def _normalisation(self) -> tuple[list[float], list[float]]:
        """The image processor's mean/std when the checkpoint ships one, else CLIP's."""
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(self.path, local_files_only=True)
            return list(proc.image_mean), list(proc.image_std)
        except (OSError, ValueError, AttributeError):
            return [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]

    @torch.no_grad()
    def text_embedding(self, text: str) -> torch.Tensor:
        """[E], unit norm, cached."""
        if text not in self._text:
            tokens = self.tokenizer([text], padding=True, return_tensors="pt")
            emb = _features(self.model.get_text_features(**tokens))[0]
            self._text[text] = emb / emb.norm().clamp_min(1e-8)
        return self._text[text]

    @torch.no_grad()
    def image_embeddings(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> [N, E], unit norm."""
        out = []
        for i in range(0, len(images), self.batch):
            x = torch.as_tensor(images[i:i + self.batch]).permute(0, 3, 1, 2).float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                align_corners=False)
            emb = _features(self.model.get_image_features(pixel_values=(x - self.mean) / self.std))
            out.append(emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8))
        return torch.cat(out)

    def progress(self, chunk: RolloutChunk) -> np.ndarray:
        """Cosine similarity of each observation with the instruction [T + 1]."""
        T = len(chunk.action)
        images = np.asarray(chunk.obs[self.key])[:T + 1]
        text = self.text_embedding(chunk.instruction or self.instruction)
        return (self.image_embeddings(images) @ text).numpy()

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        return (self.scale * np.diff(self.progress(chunk))).astype(np.float32)


def _features(out: Any) -> torch.Tensor:
    """The projected embeddings [N, E] of `get_text_features` / `get_image_features`: a tensor
    up to transformers 4.x, a `BaseModelOutputWithPooling` whose `pooler_output` holds them
    from 5.0 on."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
