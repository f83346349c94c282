"""A buffer's episodes as a LeRobotDataset v3.0 directory (`fleet data export ... lerobot`).

Example:

    with ReplayBuffer("runs/x/buffer", read_only=True) as buf:
        summary = export_lerobot([buf], Path("datasets/x"), fps=10)

What is written (LeRobot's published v3.0 layout; `buffers/lerobot.py` reads it back):

    meta/info.json                          codebase_version "v3.0", fps, features, totals, paths
    meta/stats.json                         min, max, mean, std, count, q01..q99 per feature
    meta/tasks.parquet                      task_index, indexed by the task string (pandas)
    meta/episodes/chunk-000/file-000.parquet  one row per episode: length, tasks, its rows in
                                            the data file, its span in each camera's video, and
                                            Fleet's robot_id, episode_id, outcome (`fleet/...`)
    data/chunk-000/file-000.parquet         one row per frame
    videos/observation.images.<cam>/chunk-000/file-000.mp4   every episode, one after another

Mapping, per episode of T steps (T + 1 observations): T + 1 frames. Frame t holds `obs[t]`
(`observation.state`, every other non-camera observation as `observation.<name>`, each uint8
[H, W, 3] camera as the video `observation.images.<name>`) and `action[t]`, then what followed
it: `next.reward`, `next.success`, `next.done`, and Fleet's columns under LeRobot's RL name
`complementary_info.`: `policy_version` (of the weights that acted), `is_intervention` (an
operator's action replaced the policy's) and `reward.<name>@<version>` for every reward model's
labels in the buffer (NaN where a chunk has none). The last frame is the observation after the
last step: its action repeats the one before, its reward is 0 and `next.done` is True.

The dataset is written in a temporary folder beside OUT and renamed into place only when whole:
a refusal (an OUT that exists, episodes whose columns differ in name or shape) leaves nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from buffers.codec import decode_chunk
from buffers.episodes import Episode, join
from buffers.records import RolloutChunk
from buffers.store import ReplayBuffer
from buffers.video import write_mp4

DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
INDEX = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


@dataclasses.dataclass
class RunEpisode:
    """One episode of a run, with what `Episode` leaves out: per-step policy_version and the
    reward models' labels."""

    episode: Episode
    policy_version: np.ndarray  # [T] int64
    labels: dict[str, np.ndarray]  # "name@version" -> [T] float32, NaN where unlabelled
    outcome_source: str


def run_episodes(buffers: Iterable[ReplayBuffer]) -> list[RunEpisode]:
    """Every episode of every buffer (a run's shards), in the order they started."""
    out = []
    for buf in buffers:
        labels = buf.rewards.labels()
        groups: dict[tuple[str, str], list[RolloutChunk]] = collections.OrderedDict()
        for record in buf.read(0, 2**62)[0]:
            chunk = decode_chunk(record)
            groups.setdefault((chunk.robot_id, chunk.episode_id), []).append(chunk)
        for chunks in groups.values():
            chunks.sort(key=lambda c: c.chunk_seq)
            cols = {f"{n}@{v}": np.concatenate([_label(buf, c, n, v) for c in chunks])
                    for n, v in labels}
            end = chunks[-1].episode_end
            out.append(RunEpisode(
                join(chunks), np.repeat([c.policy_version for c in chunks],
                                        [c.num_steps for c in chunks]).astype(np.int64),
                cols, end.source if end else ""))
    return out


def _label(buf: ReplayBuffer, chunk: RolloutChunk, name: str, version: str) -> np.ndarray:
    got = buf.get_rewards(chunk.key, name, version)
    if got is None or len(got) != chunk.num_steps:
        return np.full(chunk.num_steps, np.nan, np.float32)
    return got.astype(np.float32)


def export_lerobot(buffers: Iterable[ReplayBuffer], out: Path, fps: int = 10,
                   robot_type: str = "fleet") -> dict[str, int]:
    """Write the buffers' episodes to `out` (which must not exist) as a LeRobot v3.0 dataset;
    returns {"episodes", "frames", "videos"}. `ValueError` names what is refused."""
    if out.exists():
        raise ValueError(f"{out}: exists already (give a new folder: nothing is overwritten)")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    episodes = run_episodes(buffers)
    if not episodes:
        raise ValueError("the buffer holds no episodes")
    layout = _layout(episodes)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "meta").mkdir(parents=True)
        summary = _write(tmp, episodes, layout, fps, robot_type)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


@dataclasses.dataclass(frozen=True)
class Layout:
    cameras: list[str]  # obs names stored as video
    numbers: dict[str, tuple[int, ...]]  # obs name -> per-step shape (state first)
    action_dim: int
    labels: list[str]


def _layout(episodes: list[RunEpisode]) -> Layout:
    """The columns every episode shares; an episode that differs is refused by name."""
    first = episodes[0].episode
    cameras = [k for k, v in first.obs.items() if v.dtype == np.uint8 and v.ndim == 4]
    for k in cameras:
        if first.obs[k].shape[-1] != 3:
            raise ValueError(f"episode {first.episode_id}: camera {k!r} has "
                             f"{first.obs[k].shape[-1]} channels; video needs 3 (RGB)")
    numbers = {k: v.shape[1:] for k, v in first.obs.items() if k not in cameras}
    for k, shape in numbers.items():
        if len(shape) != 1:
            raise ValueError(f"episode {first.episode_id}: observation {k!r} has per-step "
                             f"shape {list(shape)}; only vectors and uint8 [H, W, 3] cameras "
                             f"are exported")
    if "state" not in numbers:
        raise ValueError(f"episode {first.episode_id}: has no 'state' observation")
    want = {k: first.obs[k].shape[1:] for k in first.obs}
    for run in episodes[1:]:
        ep = run.episode
        have = {k: v.shape[1:] for k, v in ep.obs.items()}
        for k in sorted(set(want) | set(have)):
            if want.get(k) != have.get(k):
                raise ValueError(
                    f"episode {ep.robot_id}/{ep.episode_id}: observation {k!r} has shape "
                    f"{_shape(have.get(k))}, episode {first.robot_id}/{first.episode_id} "
                    f"{_shape(want.get(k))}: one dataset needs one shape per feature")
        if ep.action.shape[1] != first.action.shape[1]:
            raise ValueError(f"episode {ep.robot_id}/{ep.episode_id}: action has "
                             f"{ep.action.shape[1]} dims, the first episode "
                             f"{first.action.shape[1]}")
    labels = sorted({k for run in episodes for k in run.labels})
    order = ["state", *sorted(k for k in numbers if k != "state")]
    return Layout(sorted(cameras), {k: numbers[k] for k in order}, first.action.shape[1], labels)


def _shape(shape: tuple[int, ...] | None) -> str:
    return "(none)" if shape is None else str(list(shape))


def _frames(run: RunEpisode, layout: Layout) -> dict[str, np.ndarray]:
    """One episode's T + 1 frames, column by column (cameras excluded)."""
    ep = run.episode
    T = len(ep.action)
    done = np.zeros(T + 1, bool)
    done[-1] = True

    def after(x: np.ndarray, last: Any) -> np.ndarray:  # a step's column, one more frame
        return np.concatenate([x, np.asarray([last], x.dtype)])

    cols: dict[str, np.ndarray] = {
        _obs_key(k): ep.obs[k].astype(np.float32) for k in layout.numbers}
    cols["action"] = np.concatenate([ep.action, ep.action[-1:]]).astype(np.float32)
    cols["next.reward"] = after(ep.reward.astype(np.float32), 0.0)
    cols["next.success"] = after(ep.success.astype(bool), bool(ep.success[-1]))
    cols["next.done"] = done
    cols["complementary_info.policy_version"] = after(run.policy_version,
                                                      run.policy_version[-1])
    cols["complementary_info.is_intervention"] = after(ep.intervened.astype(bool), False)
    for name in layout.labels:
        label = run.labels.get(name, np.full(T, np.nan, np.float32))
        cols[f"complementary_info.reward.{name}"] = after(label, 0.0)
    return cols


def _obs_key(name: str) -> str:
    return "observation.state" if name == "state" else f"observation.{name}"


def _write(root: Path, episodes: list[RunEpisode], layout: Layout, fps: int,
           robot_type: str) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks = list(dict.fromkeys(run.episode.task for run in episodes))
    columns: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    meta_rows: list[dict[str, Any]] = []
    start = 0
    for i, run in enumerate(episodes):
        cols = _frames(run, layout)
        n = len(cols["action"])
        cols |= {"timestamp": (np.arange(n) / fps).astype(np.float32),
                 "frame_index": np.arange(n, dtype=np.int64),
                 "episode_index": np.full(n, i, np.int64),
                 "index": np.arange(start, start + n, dtype=np.int64),
                 "task_index": np.full(n, tasks.index(run.episode.task), np.int64)}
        for k, v in cols.items():
            columns[k].append(v)
        meta_rows.append(_episode_row(i, run, start, n, fps, layout))
        start += n
    data = {k: np.concatenate(v) for k, v in columns.items()}
    features = {k: _feature(v) for k, v in data.items()}
    videos = {}
    for cam in layout.cameras:
        key = f"observation.images.{cam}"
        path = root / VIDEO.format(video_key=key, chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True)
        frames = np.concatenate([run.episode.obs[cam] for run in episodes])
        videos[key] = write_mp4(path, frames, fps)
        h, w, c = frames.shape[1:]
        features[key] = {"dtype": "video", "shape": [h, w, c],
                         "names": ["height", "width", "channels"], "info": videos[key]}
        data[key] = frames  # for stats only
    path = root / DATA.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({k: _arrow(v) for k, v in data.items() if k not in videos}), path)
    (root / EPISODES).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(meta_rows), root / EPISODES)
    _write_tasks(root / "meta" / "tasks.parquet", tasks)
    order = [*[k for k in data if not k.startswith("observation.") and k not in INDEX],
             *INDEX]
    feats = {**{k: features[k] for k in data if k.startswith("observation.")},
             **{k: features[k] for k in order}}
    info = {"codebase_version": "v3.0", "robot_type": robot_type, "total_episodes":
            len(episodes), "total_frames": start, "total_tasks": len(tasks), "chunks_size": 1000,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA,
            "video_path": VIDEO if videos else None, "features": feats}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    stats = {k: _stats(v, k in videos) for k, v in data.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    return {"episodes": len(episodes), "frames": start, "videos": len(videos)}


def _episode_row(i: int, run: RunEpisode, start: int, n: int, fps: int,
                 layout: Layout) -> dict[str, Any]:
    ep = run.episode
    row: dict[str, Any] = {
        "episode_index": i, "tasks": [ep.task], "length": n, "data/chunk_index": 0,
        "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": start + n}
    for cam in layout.cameras:
        key = f"videos/observation.images.{cam}"
        row |= {f"{key}/chunk_index": 0, f"{key}/file_index": 0,
                f"{key}/from_timestamp": start / fps, f"{key}/to_timestamp": (start + n) / fps}
    return row | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                  "fleet/robot_id": ep.robot_id, "fleet/episode_id": ep.episode_id,
                  "fleet/outcome": ep.outcome or "unfinished",
                  "fleet/outcome_source": run.outcome_source}


def _feature(values: np.ndarray) -> dict[str, Any]:
    dtype = {np.dtype(bool): "bool", np.dtype(np.int64): "int64"}.get(values.dtype, "float32")
    shape = [1] if values.ndim == 1 else [int(d) for d in values.shape[1:]]
    return {"dtype": dtype, "shape": shape, "names": None}


def _arrow(values: np.ndarray) -> Any:
    """A column: scalars as they are, a vector [N, D] as a fixed-size list (LeRobot's
    `Sequence(length=D)`)."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes a frame indexed by task (LeRobot reads it with
    `pd.read_parquet`, then `tasks.iloc[task_index].name` is the string)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0"}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "task": pa.array(tasks, pa.string())})
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    pq.write_table(table, path)


def _stats(values: np.ndarray, image: bool) -> dict[str, Any]:
    """LeRobot's per-feature stats: over frames (and pixels, per channel in [0, 1], shaped
    [3, 1, 1], for a camera). NaN (an unlabelled step) is left out."""
    if image:  # at most ~100 frames, evenly spaced: pixels are many and alike
        step = max(1, len(values) // 100)
        x = values[::step].reshape(-1, 3).astype(np.float64) / 255.0
    else:
        x = values.reshape(len(values), -1).astype(np.float64)
    out: dict[str, Any] = {"min": np.nanmin(x, 0), "max": np.nanmax(x, 0),
                           "mean": np.nanmean(x, 0), "std": np.nanstd(x, 0)}
    out |= {f"q{round(q * 100):02d}": np.nanquantile(x, q, 0) for q in QUANTILES}
    shape = (3, 1, 1) if image else (x.shape[1],)
    stats = {k: np.nan_to_num(v).reshape(shape).tolist() for k, v in out.items()}
    return stats | {"count": [len(values)]}
