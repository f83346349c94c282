"""A LeRobotDataset directory (the v3.0 on-disk layout, and v2.x) as demonstration chunks.

Example:

    chunks, unused = import_lerobot(Path("datasets/pusht"), horizon=4)   # `fleet data import`
    buffer.insert([encode_chunk(c) for c in chunks])

What is read (LeRobot's own layout, https://github.com/huggingface/lerobot, no lerobot import):

    meta/info.json      fps, robot_type, features {name: {dtype, shape}}
    meta/tasks.parquet  the task strings by task_index (v3; v2: meta/tasks.jsonl)
    data/**/*.parquet   one row per frame: each feature's column, episode_index, frame_index,
                        task_index (v3 packs many episodes per file, v2 one per file)
    meta/episodes/**/*.parquet   one row per episode (v3): where its frames lie in each camera's
                        video (`videos/<key>/chunk_index`, `file_index`, `from_timestamp`)
    videos/**/*.mp4     one file per camera per chunk (v3, many episodes one after another) or
                        per episode (v2.x, `info["video_path"]`)

Mapping, per episode of N frames: `observation.state` is `obs["state"]`; every other
`observation.*` feature of dtype `image` (PNG/JPEG bytes in the parquet) or `video` (mp4, decoded
with PyAV: frame `from_timestamp + timestamp`, within 0.4 / fps) is a uint8 camera named by its
last part (`observation.images.top` -> `obs["top"]`); any other numeric `observation.<name>`
is `obs[name]`; `action` is the action; `next.reward` and `next.success` fill the reward and
success columns. Fleet's steps go from one observation to the next, so N frames give N - 1
steps (the last frame's action has no observation after it and is dropped). The episode ends in
success when `next.success` says so, else it is truncated (a dataset says nothing about
failure), unless the episodes metadata carries Fleet's own `fleet/outcome`, `fleet/robot_id`
and `fleet/episode_id` (`fleet data export` writes them). Every step is `intervened` (a
demonstration). Features with no Fleet column (`next.done`, `complementary_info.*`) are
returned by name. Needs pyarrow (Pillow for `image` features, PyAV for `video` ones).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from buffers.episodes import check_episode, episode_chunks
from buffers.records import RolloutChunk

REQUIRED = ("observation.state", "action")
INDEX = ("timestamp", "frame_index", "episode_index", "index", "task_index")
STEP = ("next.reward", "next.success")


def import_lerobot(root: Path, horizon: int = 4, chunk_steps: int = 64
                   ) -> tuple[list[RolloutChunk], list[str]]:
    """(chunks of every episode in episode order, features with no Fleet column). A missing
    feature, column, video file or frame, or a shape that differs from `meta/info.json`, raises
    `ValueError` naming the file and the feature."""
    episodes, unused = iter_lerobot(root, horizon, chunk_steps)
    return [c for chunks in episodes for c in chunks], unused


def iter_lerobot(root: Path, horizon: int = 4, chunk_steps: int = 64
                 ) -> tuple[Iterator[list[RolloutChunk]], list[str]]:
    """`import_lerobot` one episode at a time (its chunks), so that only one episode's camera
    frames are decoded at once; info.json is checked and the parquet read before it returns."""
    info = _info(root)
    features: dict[str, Any] = info["features"]
    cameras = [k for k, f in features.items()
               if k.startswith("observation.") and f.get("dtype") in ("image", "video")]
    numbers = [k for k, f in features.items() if k.startswith("observation.")
               and k not in cameras and _numeric(f)]
    images = [k for k in cameras if features[k]["dtype"] == "image"]
    step = [k for k in STEP if k in features]
    unused = [k for k in features if k not in (*cameras, *numbers, "action", *step, *INDEX)]
    frames = _frames(root, [*numbers, "action", *images, *step])
    tasks = _tasks(root)
    fleet = _episodes_meta(root)
    videos = _Videos(root, info, fleet, [k for k in cameras if k not in images])

    def episodes() -> Iterator[list[RolloutChunk]]:
        order = np.lexsort((frames["frame_index"], frames["episode_index"]))
        episode = frames["episode_index"][order]
        for index in np.unique(episode):
            rows = order[episode == index]
            if len(rows) < 2:
                continue  # one frame: no step from it
            arrays = _episode(frames, rows, features, numbers, images)
            for key in videos.keys:
                arrays["obs." + key.rsplit(".", 1)[-1]] = videos.episode(key, int(index),
                                                                         frames, rows)
            meta = fleet.get(int(index), {})
            task = tasks.get(int(frames["task_index"][rows[0]]), "lerobot") \
                if "task_index" in frames else "lerobot"
            robot = meta.get("fleet/robot_id") or str(info.get("robot_type") or "lerobot")
            arrays |= {"meta.task": np.array(task[:200]), "meta.robot_id": np.array(robot[:64])}
            if meta.get("fleet/outcome") in ("success", "failure", "truncated"):
                arrays["meta.outcome"] = np.array(meta["fleet/outcome"])
            check_episode(arrays)
            name = meta.get("fleet/episode_id") or f"episode_{int(index):06d}"
            yield episode_chunks(arrays, str(name)[:64], horizon, chunk_steps, "lerobot")

    return episodes(), unused


def _numeric(feature: dict[str, Any]) -> bool:
    return str(feature.get("dtype", "")).startswith(("float", "int", "uint", "bool"))


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
        for name in [*columns, "episode_index", "frame_index", "task_index", "timestamp"]:
            if name not in table.column_names:
                if name in ("task_index", "timestamp"):
                    continue
                raise ValueError(f"{path}: has no column {name!r}")
            parts.setdefault(name, []).extend(table.column(name).to_pylist())
    if len(parts.get("timestamp", [])) != len(parts["episode_index"]):
        parts.pop("timestamp", None)  # not in every file: frame_index / fps instead
    return {k: np.array(v, dtype=object) if k in columns else np.asarray(v)
            for k, v in parts.items()}


def _episode(frames: dict[str, np.ndarray], rows: np.ndarray, features: dict[str, Any],
             numbers: list[str], images: list[str]) -> dict[str, np.ndarray]:
    """One episode's frames as `import_npz`'s arrays (N frames -> N - 1 steps), videos aside."""
    out: dict[str, np.ndarray] = {"action": _numbers(frames, rows, "action", features)[:-1]}
    for name in numbers:
        values = _numbers(frames, rows, name, features)
        out["obs." + name.rsplit(".", 1)[-1]] = values.reshape(len(values), -1)
    for name in images:
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


def _episodes_meta(root: Path) -> dict[int, dict[str, Any]]:
    """episode_index -> its row of `meta/episodes/**/*.parquet` (v3), else none (v2.x)."""
    import pyarrow.parquet as pq

    rows: dict[int, dict[str, Any]] = {}
    for path in sorted((root / "meta" / "episodes").glob("**/*.parquet")):
        names = [n for n in pq.read_schema(path).names if not n.startswith("stats/")]
        for row in pq.read_table(path, columns=names).to_pylist():
            rows[int(row["episode_index"])] = row
    return rows


class _Videos:
    """Each `video` feature's frames for one episode: its span of the file, decoded from the
    keyframe before it (LeRobot writes one every 2 frames)."""

    def __init__(self, root: Path, info: dict[str, Any], episodes: dict[int, dict[str, Any]],
                 keys: list[str]) -> None:
        self.root, self.info, self.episodes, self.keys = root, info, episodes, keys
        self.fps = float(info.get("fps") or 0)
        if keys and not self.fps > 0:
            raise ValueError(f"{root / 'meta' / 'info.json'}: video features need a fps > 0")
        if keys and not isinstance(info.get("video_path"), str):
            raise ValueError(f"{root / 'meta' / 'info.json'}: video features ({keys[0]!r}) "
                             f"but no 'video_path'")

    def episode(self, key: str, index: int, frames: dict[str, np.ndarray],
                rows: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3]: the frames at this episode's rows' timestamps."""
        from buffers.video import frames_at, read_mp4

        path, start = self._where(key, index)
        if not path.is_file():
            raise ValueError(f"{path}: no such video (feature {key!r}, episode {index})")
        stamps = start + (frames["timestamp"][rows].astype(np.float64) if "timestamp" in frames
                          else frames["frame_index"][rows] / self.fps)
        tolerance = 0.4 / self.fps
        try:  # only this episode's span of the file is decoded
            times, images = read_mp4(path, stamps.min() - tolerance, stamps.max() + tolerance)
        except ImportError as e:
            raise ValueError(f"{path}: decoding mp4 needs PyAV (pip install av, or the "
                             f"package's data extra)") from e
        got = frames_at(times, images, stamps, tolerance,
                        f"{path} (feature {key!r}, episode {index})")
        self._check_shape(key, got)
        return got

    def _where(self, key: str, index: int) -> tuple[Path, float]:
        """(the file holding episode `index` of `key`, the episode's first frame time in it)."""
        template = str(self.info["video_path"])
        if not self.episodes:  # v2.x: one file per episode, starting at 0 s
            chunk = index // int(self.info.get("chunks_size") or 1000)
            return self.root / template.format(episode_chunk=chunk, video_key=key,
                                               episode_index=index), 0.0
        row = self.episodes.get(index)
        col = f"videos/{key}/"
        if row is None or f"{col}chunk_index" not in row or f"{col}file_index" not in row:
            raise ValueError(f"{self.root / 'meta' / 'episodes'}: episode {index} has no "
                             f"'{col}chunk_index' / 'file_index' (where its video lies)")
        path = self.root / template.format(video_key=key, chunk_index=int(row[f"{col}chunk_index"]),
                                           file_index=int(row[f"{col}file_index"]))
        return path, float(row.get(f"{col}from_timestamp") or 0.0)

    def _check_shape(self, key: str, got: np.ndarray) -> None:
        feature = self.info["features"][key]
        shape = [int(d) for d in feature.get("shape", [])]
        names = feature.get("names") or []
        if names and names[0] == "channels" and len(shape) == 3:
            shape = [*shape[1:], shape[0]]  # declared [C, H, W]
        if shape != list(got.shape[1:]):
            raise ValueError(f"feature {key!r}: video frames of shape {list(got.shape[1:])}, "
                             f"meta/info.json declares {feature.get('shape')}")
