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

from buffers.episodes import Episode, join
from buffers.index import RecordMeta
from buffers.log import CorruptLogError
from buffers.records import RolloutChunk
from buffers.store import ReplayBuffer
from buffers.video import Mp4Writer

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


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one episode's records lie; `load` decodes them (one episode in memory at a time)."""

    buffer: ReplayBuffer
    metas: list[RecordMeta]

    def load(self) -> RunEpisode | None:
        """None when a record of the episode is damaged (the buffer counts it)."""
        buf = self.buffer
        try:
            chunks = sorted((buf.get(m) for m in self.metas), key=lambda c: c.chunk_seq)
        except CorruptLogError:
            return None
        labels = {f"{n}@{v}": np.concatenate([_label(buf, c, n, v) for c in chunks])
                  for n, v in buf.rewards.labels()}
        end = chunks[-1].episode_end
        return RunEpisode(join(chunks), np.repeat(
            [c.policy_version for c in chunks], [c.num_steps for c in chunks]).astype(np.int64),
            labels, end.source if end else "")


def run_episodes(buffers: Iterable[ReplayBuffer]) -> list[Source]:
    """Every episode of every buffer (a run's shards), in the order they started."""
    out = []
    for buf in buffers:
        groups: dict[tuple[str, str], list[RecordMeta]] = collections.OrderedDict()
        for meta in buf.records():
            groups.setdefault(meta.key[:2], []).append(meta)
        out += [Source(buf, metas) for metas in groups.values()]
    return out


def _label(buf: ReplayBuffer, chunk: RolloutChunk, name: str, version: str) -> np.ndarray:
    got = buf.get_rewards(chunk.key, name, version)
    if got is None or len(got) != chunk.num_steps:
        return np.full(chunk.num_steps, np.nan, np.float32)
    return got.astype(np.float32)


def export_lerobot(buffers: Iterable[ReplayBuffer], out: Path, fps: int = 10,
                   robot_type: str = "fleet") -> dict[str, int]:
    """Write the buffers' episodes to `out` (which must not exist) as a LeRobot v3.0 dataset;
    returns {"episodes", "frames", "videos", "damaged"} (episodes left out for a damaged
    record). `ValueError` names what is refused."""
    if out.exists():
        raise ValueError(f"{out}: exists already (give a new folder: nothing is overwritten)")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    buffers = list(buffers)
    sources = run_episodes(buffers)
    if not sources:
        raise ValueError("the buffer holds no episodes")
    labels = sorted({f"{n}@{v}" for buf in buffers for n, v in buf.rewards.labels()})
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "meta").mkdir(parents=True)
        summary = _write(tmp, sources, labels, fps, robot_type)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


@dataclasses.dataclass(frozen=True)
class Layout:
    """The columns of the first episode, which every other must have."""

    first: Episode
    cameras: list[str]  # obs names stored as video
    numbers: list[str]  # other obs names, state first
    labels: list[str]

    @staticmethod
    def of(first: Episode, labels: list[str]) -> Layout:
        cameras = [k for k, v in first.obs.items() if v.dtype == np.uint8 and v.ndim == 4]
        for k in cameras:
            if first.obs[k].shape[-1] != 3:
                raise ValueError(f"episode {first.episode_id}: camera {k!r} has "
                                 f"{first.obs[k].shape[-1]} channels; video needs 3 (RGB)")
        numbers = [k for k in first.obs if k not in cameras]
        for k in numbers:
            if first.obs[k].ndim != 2:
                raise ValueError(f"episode {first.episode_id}: observation {k!r} has per-step "
                                 f"shape {list(first.obs[k].shape[1:])}; only vectors and "
                                 f"uint8 [H, W, 3] cameras are exported")
        if "state" not in numbers:
            raise ValueError(f"episode {first.episode_id}: has no 'state' observation")
        return Layout(first, sorted(cameras),
                      ["state", *sorted(k for k in numbers if k != "state")], labels)

    def check(self, ep: Episode) -> None:
        """Refuse an episode whose observations or action differ from the first's, by name."""
        first = self.first
        want = {k: v.shape[1:] for k, v in first.obs.items()}
        have = {k: v.shape[1:] for k, v in ep.obs.items()}
        for k in sorted(set(want) | set(have)):
            if want.get(k) != have.get(k):
                raise ValueError(
                    f"episode {ep.robot_id}/{ep.episode_id}: observation {k!r} has shape "
                    f"{_shape(have.get(k))}, episode {first.robot_id}/{first.episode_id} "
                    f"{_shape(want.get(k))}: one dataset needs one shape per feature")
        if ep.action.shape[1:] != first.action.shape[1:]:
            raise ValueError(f"episode {ep.robot_id}/{ep.episode_id}: action has shape "
                             f"{list(ep.action.shape[1:])}, episode {first.robot_id}/"
                             f"{first.episode_id} {list(first.action.shape[1:])}")


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


def _write(root: Path, sources: list[Source], labels: list[str], fps: int,
           robot_type: str) -> dict[str, int]:
    """One pass over the episodes: columns gathered (no cameras), frames straight to video."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks: dict[str, int] = {}
    columns: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    meta_rows: list[dict[str, Any]] = []
    videos: dict[str, Mp4Writer] = {}
    samples: dict[str, list[np.ndarray]] = collections.defaultdict(list)  # for camera stats
    layout: Layout | None = None
    start, damaged = 0, 0
    try:
        for source in sources:
            run = source.load()
            if run is None:
                damaged += 1
                continue
            i = len(meta_rows)
            if layout is None:
                layout = Layout.of(run.episode, labels)
                for cam in layout.cameras:
                    key = f"observation.images.{cam}"
                    path = root / VIDEO.format(video_key=key, chunk_index=0, file_index=0)
                    path.parent.mkdir(parents=True)
                    videos[key] = Mp4Writer(path, fps)
            layout.check(run.episode)
            cols = _frames(run, layout)
            n = len(cols["action"])
            task = tasks.setdefault(run.episode.task, len(tasks))
            cols |= {"timestamp": (np.arange(n) / fps).astype(np.float32),
                     "frame_index": np.arange(n, dtype=np.int64),
                     "episode_index": np.full(n, i, np.int64),
                     "index": np.arange(start, start + n, dtype=np.int64),
                     "task_index": np.full(n, task, np.int64)}
            for k, v in cols.items():
                columns[k].append(v)
            for cam in layout.cameras:
                frames = run.episode.obs[cam]
                videos[f"observation.images.{cam}"].add(frames)
                samples[cam].append(frames[:: max(1, len(frames) // 4)])
            meta_rows.append(_episode_row(i, run, start, n, fps, layout))
            start += n
    finally:
        for writer in videos.values():
            writer.close()
    if layout is None:
        raise ValueError("every episode has a damaged record (fleet buffer verify)")
    data = {k: np.concatenate(v) for k, v in columns.items()}
    features = {k: _feature(v) for k, v in data.items()}
    stats = {k: _stats(v, False) for k, v in data.items()}
    for cam in layout.cameras:
        key, writer = f"observation.images.{cam}", videos[f"observation.images.{cam}"]
        features[key] = {"dtype": "video", "shape": [*layout.first.obs[cam].shape[1:]],
                         "names": ["height", "width", "channels"], "info": writer.info}
        stats[key] = _stats(np.concatenate(samples[cam]), True) | {"count": [start]}
    path = root / DATA.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({k: _arrow(v) for k, v in data.items()}), path)
    (root / EPISODES).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(meta_rows), root / EPISODES)
    _write_tasks(root / "meta" / "tasks.parquet", list(tasks))
    order = [*sorted(k for k in features if k.startswith("observation.")),
             *[k for k in data if not k.startswith("observation.") and k not in INDEX], *INDEX]
    info = {"codebase_version": "v3.0", "robot_type": robot_type, "total_episodes":
            len(meta_rows), "total_frames": start, "total_tasks": len(tasks),
            "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": fps, "splits": {"train": f"0:{len(meta_rows)}"}, "data_path": DATA,
            "video_path": VIDEO if videos else None, "features": {k: features[k] for k in order}}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    return {"episodes": len(meta_rows), "frames": start, "videos": len(videos),
            "damaged": damaged}


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
    if image:  # a few frames per episode (`_write`), at most ~100: pixels are many and alike
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
