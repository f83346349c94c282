"""Checkpoints as safetensors: every tensor under its path in the state, and everything else
(numbers, strings, the nesting itself) as JSON in the file's header. Nothing is unpickled.

Example:

    write_state(path, {"policy": policy.state_dict(), "algorithm": algo.state_dict(), "step": 3})
    state = read_state(path)            # the same nesting; tensors come back as tensors
    state["policy"]["actor.0.weight"]   # the tensor stored as "policy/actor.0.weight"

What a state may hold: tensors, numpy arrays, str, int, float, bool, None, and dicts, lists and
tuples of these (an optimizer's `state_dict()` has int keys and tuples; both come back as such).
Anything else (a dataclass, a module) raises `TypeError` naming where it sits: a checkpoint
holds data, never objects to rebuild.

Checkpoints of Fleet before this format were pickles (`.pt`); `read_state` opens those with
`torch.load(weights_only=True)` only, and an old file that needs more is a `CheckpointError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "CheckpointError", "is_fleet_state", "read_state", "write_state"]

FORMAT = "fleet-state/1"  # the header key holding the JSON skeleton


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, torn, foreign, or an old pickle."""


def write_state(path: Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` (a `.safetensors`) atomically: a reader sees the old file or
    the whole new one."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, "", tensors)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={FORMAT: json.dumps(skeleton)})
    os.replace(tmp, path)
    return path


def read_state(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The state written by `write_state`, tensors on `device`; a legacy `.pt` through
    `torch.load(weights_only=True)`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".pt":
        return _read_legacy(path, device)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = (f.metadata() or {}).get(FORMAT)
            if header is None:
                raise CheckpointError(f"{path}: a safetensors file, but not a Fleet checkpoint "
                                      f"(no {FORMAT!r} in its header)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        state = _decode(json.loads(header), tensors)
    except CheckpointError:
        raise
    except Exception as e:  # a torn or foreign file: say which and why
        raise CheckpointError(f"{path}: cannot read it ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state dict")
    return state


def is_fleet_state(path: Path) -> bool:
    """Whether `path` is a safetensors file `write_state` wrote (else: plain weights)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return FORMAT in (f.metadata() or {})
    except Exception:
        return False


def _read_legacy(path: Path, device: str | torch.device) -> dict[str, Any]:
    try:
        state = torch.load(path, weights_only=True, map_location=device)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot read it without unpickling objects (an older Fleet's checkpoint, "
            f"or not Fleet's; {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state dict")
    return state


def _encode(value: Any, where: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON skeleton of `value`; its tensors go into `tensors` under their path."""
    if isinstance(value, torch.Tensor):
        # a copy: tensors that share storage (tied weights, a view) cannot be saved as they are
        tensors[where] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": where}
    if isinstance(value, np.ndarray):
        tensors[where] = torch.from_numpy(np.array(value, copy=True, order="C"))
        return {"__ndarray__": where}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{where}/{k}" if where else k, tensors)
                    for k, v in value.items()}
        return {"__items__": [[_encode(k, f"{where}/key", tensors),
                               _encode(v, f"{where}/{k}", tensors)] for k, v in value.items()]}
    raise TypeError(f"a checkpoint holds data only: {where or 'the state'} is a "
                    f"{type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].cpu().numpy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}
