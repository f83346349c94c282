"""`fleet data`: demonstrations in, a run's episodes out.

    fleet data import SRC --out BUFFER [--horizon 4]   a LeRobot dataset (v3.0 or v2.x: parquet,
                                                       mp4 videos, meta/) or a folder of .npz
                                                       episodes, into a buffer as demonstrations
    fleet data export RUN --format lerobot OUT [--fps 10]   a LeRobotDataset v3.0 directory
    fleet data export RUN --format npz OUT                  one .npz file per episode

RUN is a run directory (`runs/<name>`, its `buffer/` is read), a run name under `runs/`, or a
buffer directory. `fleet buffer import` is the same import under its old name. Bad input exits
2 naming the file and key, and writes nothing: an import checks and encodes every episode
before it opens the buffer; an export writes a temporary folder and renames it into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from fleet.config import ConfigError


def add_data_parser(sub: Any) -> None:
    dp = sub.add_parser("data", help="import demonstrations (LeRobot, .npz); export a run's "
                                     "episodes (LeRobot v3, .npz)")
    dsub = dp.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import", help="a LeRobot dataset or .npz episodes into a buffer, "
                                         "as demonstrations")
    imp.add_argument("path", help="a LeRobotDataset directory (meta/info.json) or a folder of "
                                  ".npz episodes")
    imp.add_argument("--out", required=True, help="the buffer to add them to (made if missing)")
    imp.add_argument("--horizon", type=int, default=4,
                     help="H, the policy calls' length the chunks are cut into")
    imp.add_argument("--chunk-steps", type=int, default=64, help="steps per rollout chunk")
    exp = dsub.add_parser("export", help="a run's episodes as a LeRobot v3 dataset or .npz files")
    exp.add_argument("run", help="a run directory, a run name under runs/, or a buffer")
    exp.add_argument("out", help="the folder to write (must not exist)")
    exp.add_argument("--format", choices=["lerobot", "npz"], default="lerobot")
    exp.add_argument("--fps", type=int, default=10,
                     help="lerobot: frames per second recorded in info.json and the videos")
    exp.add_argument("--robot-type", default="fleet", help="lerobot: info.json's robot_type")


def main(args: argparse.Namespace, console: Console) -> int:
    if args.data_command == "import":
        return import_demos(Path(args.path), args.out, args.horizon, args.chunk_steps, console)
    return export_run(args.run, Path(args.out), args.format, args.fps, args.robot_type, console)


def import_demos(src: Path, out: str | None, horizon: int, chunk_steps: int,
                 console: Console) -> int:
    """Every episode of `src` checked and encoded before the buffer is opened, so bad input
    changes nothing (a `ConfigError`: exit 2, the file and key named)."""
    from buffers.codec import encode_chunk
    from buffers.episodes import import_npz
    from buffers.store import ReplayBuffer

    if out is None:
        raise ConfigError("import needs --out BUFFER (a buffer directory, made if missing)")
    if not src.is_dir():
        raise ConfigError(f"{src}: not a folder of .npz episodes or a LeRobot dataset")
    try:
        if (src / "meta" / "info.json").is_file():
            try:
                import pyarrow  # noqa: F401 -- said here, not as a traceback mid-import

                from buffers.lerobot import iter_lerobot
            except ImportError as e:
                raise ConfigError(f"{src} is a LeRobot dataset: reading it needs pyarrow "
                                  f"(pip install pyarrow, or the package's data extra)") from e
            episodes, unused = iter_lerobot(src, horizon, chunk_steps)
            if unused:
                console.print(f"[yellow]not imported (no Fleet column): "
                              f"{escape(', '.join(unused))}[/]", highlight=False)
        else:
            episodes = iter([import_npz(src, horizon, chunk_steps)])
        records, keys, steps = [], set(), 0  # encoded (lz4) as each episode is decoded
        for chunks in episodes:
            records += [encode_chunk(c) for c in chunks]  # schema-checked, before any write
            keys |= {(c.robot_id, c.episode_id) for c in chunks}
            steps += sum(c.num_steps for c in chunks)
        if not records:
            raise ValueError(f"{src}: no episodes (*.npz, or a LeRobot dataset's meta/info.json)")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    with ReplayBuffer(Path(out)) as buf:
        result = buf.insert(records)
    console.print(f"imported {len(keys)} episodes ({steps} steps, {result.stored} new chunks) "
                  f"from {src} into {out}", highlight=False)
    return 0


def run_buffer(run: str) -> Path:
    """The buffer directory RUN names: `RUN/buffer`, `runs/RUN/buffer`, or RUN itself."""
    for path in (Path(run) / "buffer", Path("runs") / run / "buffer", Path(run)):
        if path.is_dir() and (any(path.glob("segment-*.log")) or any(path.glob("shard-*"))):
            return path
    raise ConfigError(f"{run}: no buffer there (a run directory with buffer/, a run name "
                      f"under runs/, or a buffer directory)")


def export_run(run: str, out: Path, fmt: str, fps: int, robot_type: str,
               console: Console) -> int:
    from buffers.shards import ShardedBuffer, open_buffer

    path = run_buffer(run)
    if out.exists():
        raise ConfigError(f"{out}: exists already (give a new folder: nothing is overwritten)")
    buf = open_buffer(path, read_only=True)  # never truncate beside a live writer
    shards = buf.shards if isinstance(buf, ShardedBuffer) else [buf]
    try:
        if fmt == "npz":
            return _export_npz(shards, out, console)
        try:
            from buffers.lerobot_export import export_lerobot

            summary = export_lerobot(shards, out, fps, robot_type)
        except ImportError as e:
            raise ConfigError(f"a LeRobot export needs pyarrow and PyAV ({e.name} is missing: "
                              f"pip install pyarrow av, or the package's data extra)") from e
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from e
    finally:
        buf.close()
    console.print(f"wrote {summary['episodes']} episodes ({summary['frames']} frames, "
                  f"{summary['videos']} camera videos) from {path} to {out} as a LeRobot v3.0 "
                  f"dataset", highlight=False)
    if summary["damaged"]:
        console.print(f"[yellow]left out {summary['damaged']} episodes with a damaged record "
                      f"(fleet buffer verify {path})[/]", highlight=False)
    return 0


def _export_npz(shards: list[Any], out: Path, console: Console) -> int:
    import os
    import shutil

    from buffers.episodes import export_npz

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        n = sum(export_npz(shard, tmp) for shard in shards)  # robots never share a shard
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"wrote {n} episodes to {out}", highlight=False)
    return 0
