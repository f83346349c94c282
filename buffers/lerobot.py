"""A LeRobotDataset directory (the v3.0 on-disk layout, and v2.x) as demonstration chunks.

Example:

    chunks = import_lerobot(Path("datasets/pusht"), horizon=4)   # `fleet buffer import` uses it
    buffer.insert([encode_chunk(c) for c in chunks])

What is read (LeRobot's own layout, https://github.com/huggingface/lerobot, no lerobot import):

    meta/info.json      fps, robot_type, features {name: {dtype, shape}}
    meta/tasks.parquet  the task strings by task_index (v3; v2: meta/tasks.jsonl)
    data/**/*.parquet   one row per frame: each feature's column, episode_index, frame_index,
                        task_index (v3 packs many episodes per file, v2 one per file)

Mapping, per episode of N frames: `observation.state` is `obs["state"]`; every other
`observation.*` feature of dtype `image` (PNG/JPEG bytes in the parquet) is a uint8 camera
named by its last part (`observation.images.top` -> `obs["top"]`); `action` is the action;
`next.reward` and `next.success` fill the reward and success columns. Fleet's steps go from one
observation to the next, so N frames give N - 1 steps (the last frame's action has no
observation after it and is dropped). The episode ends in success when `next.success` says so,
else it is truncated (a dataset says nothing about failure). Every step is `intervened` (a
demonstration). Features of dtype `video` (mp4 under `videos/`) are not decoded here: they are
returned by name as skipped. Needs pyarrow (and Pillow for `image` features).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from buffers.episodes import check_episode, episode_chunks
from buffers.records import RolloutChunk

REQUIRED = ("observation.state", "action")


def import_lerobot(root: Path, horizon: int = 4, chunk_steps: int = 64
                   ) -> tuple[list[RolloutChunk], list[str]]:
    """(chunks of every episode in episode order, video features skipped). A missing feature,
    column or file, or a shape that differs from `meta/info.json`, raises `ValueError` naming
    the file and the feature."""
    info = _info(root)
    features: dict[str, Any] = info["features"]
    cameras = [k for k, f in features.items()
               if k.startswith("observation.") and f.get("dtype") == "image"]
    skipped = [k for k, f in features.items() if f.get("dtype") == "video"]
    frames = _frames(root, [*REQUIRED, *cameras,
                            *[k for k in ("next.reward", "next.success") if k in features]])
    tasks = _tasks(root)
    chunks: list[RolloutChunk] = []
    order = np.lexsort((frames["frame_index"], frames["episode_index"]))
    episode = frames["episode_index"][order]
    for index in np.unique(episode):
        rows = order[episode == index]
        if len(rows) < 2:
            continue  # one frame: no step from it
        arrays = _episode(frames, rows, features, cameras)
        task = tasks.get(int(frames["task_index"][rows[0]]), "lerobot") \
            if "task_index" in frames else "lerobot"
        arrays |= {"meta.task": np.array(task[:200]),
                   "meta.robot_id": np.array(str(info.get("robot_type") or "lerobot")[:64])}
        check_episode(arrays)
        chunks += episode_chunks(arrays, f"episode_{int(index):06d}", horizon, chunk_steps,
                                  "lerobot")
    return chunks, skipped


def _info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read it ({e})") from e
    features = info.get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        raise ValueError(f"{path}: has no 'features' mapping")
    for name in REQUIRED:
        if name not in features:
            raise ValueError(f"{path}: has no {name!r} feature (Fleet needs "
                             f"{' and '.join(REQUIRED)})")
    return info


def _frames(root: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Every data file's rows, the named columns and the index columns, as object/number
    arrays."""
    import pyarrow.parquet as pq

    files = sorted((root / "data").glob("**/*.parquet"))
    if not files:
        raise ValueError(f"{root / 'data'}: no parquet files")
    parts: dict[str, list[Any]] = {}
    for path in files:
        table = pq.read_table(path)
        for name in [*columns, "episode_index", "frame_index", "task_index"]:
            if name not in table.column_names:
                if name == "task_index":
                    continue
                raise ValueError(f"{path}: has no column {name!r}")
            parts.setdefault(name, []).extend(table.column(name).to_pylist())
    return {k: np.array(v, dtype=object) if k in columns else np.asarray(v)
            for k, v in parts.items()}


def _episode(frames: dict[str, np.ndarray], rows: np.ndarray, features: dict[str, Any],
             cameras: list[str]) -> dict[str, np.ndarray]:
    """One episode's frames as `import_npz`'s arrays (N frames -> N - 1 steps)."""
    out: dict[str, np.ndarray] = {
        "obs.state": _numbers(frames, rows, "observation.state", features),
        "action": _numbers(frames, rows, "action", features)[:-1]}
    for name in cameras:
        key = "obs." + name.rsplit(".", 1)[-1]
        out[key] = np.stack([_image(frames[name][r], name) for r in rows])
    if "next.reward" in frames:
        out["reward"] = _numbers(frames, rows, "next.reward", features).reshape(-1)[:-1]
    if "next.success" in frames:
        success = _numbers(frames, rows, "next.success", features).reshape(-1).astype(bool)
        out["success"] = success[:-1]
        out["meta.outcome"] = np.array("success" if success.any() else "truncated")
    else:
        out["meta.outcome"] = np.array("truncated")
    return out


def _numbers(frames: dict[str, np.ndarray], rows: np.ndarray, name: str,
             features: dict[str, Any]) -> np.ndarray:
    """A numeric feature's rows [N, *shape], checked against its declared shape."""
    shape = [int(d) for d in features[name].get("shape", [])]
    try:
        values = np.array([np.asarray(frames[name][r], np.float32) for r in rows])
    except (TypeError, ValueError) as e:  # ragged rows
        raise ValueError(f"feature {name!r}: rows of different lengths ({e})") from e
    if shape and list(values.shape[1:]) != shape and not (shape == [1] and values.ndim == 1):
        raise ValueError(f"feature {name!r}: rows of shape {list(values.shape[1:])}, "
                         f"meta/info.json declares {shape}")
    return values


def _image(cell: Any, name: str) -> np.ndarray:
    """An `image` feature's cell ({"bytes": PNG/JPEG, "path": ...}) -> uint8 [H, W, 3]."""
    from PIL import Image

    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise ValueError(f"feature {name!r}: a frame without image bytes")
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def _tasks(root: Path) -> dict[int, str]:
    """task_index -> task string (v3 meta/tasks.parquet, v2 meta/tasks.jsonl), else none."""
    path = root / "meta" / "tasks.parquet"
    if path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pydict()
        text = table.get("task") or table.get("__index_level_0__") or []
        return {int(i): str(t) for i, t in zip(table.get("task_index", []), text, strict=False)}
    path = root / "meta" / "tasks.jsonl"
    if path.is_file():
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return {int(x["task_index"]): str(x["task"]) for x in lines}
    return {}
