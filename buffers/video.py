"""Camera frames to and from mp4 files, as LeRobotDataset v3 stores cameras (PyAV, no ffmpeg CLI).

Example:

    write_mp4(Path("cam.mp4"), frames, fps=10)           # frames: uint8 [N, H, W, 3]
    times, frames = read_mp4(Path("cam.mp4"))           # seconds [N], uint8 [N, H, W, 3]

A LeRobot v3 video file holds many episodes one after another; an episode's frames are those at
`from_timestamp + timestamp` (`buffers/lerobot.py` looks them up with `frames_at`). Frames get
`pts = i` in a time base of `1 / fps`, so frame i is at exactly `i / fps` seconds.

Encoding is lossy: H.264 (libx264, `yuv420p`, CRF 18, a keyframe every 2 frames as LeRobot
uses for fast seeking) is within a few intensity levels of the source on rendered frames; odd
frame sizes use `yuv444p` (4:2:0 needs even sizes). Needs PyAV (`av`, the `data` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

CODEC = "libx264"
CRF = 18
GOP = 2  # LeRobot's default `g`: a keyframe every 2 frames, so a seek decodes at most one more


def write_mp4(path: Path, frames: np.ndarray, fps: int, codec: str = CODEC,
              crf: int = CRF) -> dict[str, object]:
    """Encode uint8 frames [N, H, W, 3] at `fps`; returns LeRobot's `video.*` info for them."""
    import av

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"{path.name}: frames must be uint8 [N, H, W, 3], got "
                         f"{frames.dtype} {list(frames.shape)}")
    _, height, width, _ = frames.shape
    pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    with av.open(str(path), "w") as out:
        stream = cast("av.video.stream.VideoStream",
                      out.add_stream(codec, rate=fps, options={"crf": str(crf), "g": str(GOP)}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return {"video.height": height, "video.width": width, "video.codec": _codec_name(path),
            "video.pix_fmt": pix_fmt, "video.is_depth_map": False, "video.fps": fps,
            "video.channels": 3, "has_audio": False}


def _codec_name(path: Path) -> str:
    """The stream's codec as a decoder names it (`h264`), as LeRobot's `get_video_info` says."""
    import av

    with av.open(str(path)) as f:
        return str(f.streams.video[0].codec_context.codec.canonical_name)


def read_mp4(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the first video stream: (timestamps in s [N], uint8 RGB [N, H, W, 3])."""
    import av

    times, frames = [], []
    try:
        with av.open(str(path)) as f:
            stream = f.streams.video[0]
            base = stream.time_base
            for frame in f.decode(stream):
                if frame.pts is None or base is None:
                    continue
                times.append(float(frame.pts * base))
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, IndexError) as e:  # IndexError: no video stream
        raise ValueError(f"{path}: cannot decode it as video ({e})") from e
    if not frames:
        raise ValueError(f"{path}: holds no video frames")
    order = np.argsort(times, kind="stable")
    return np.asarray(times)[order], np.stack(frames)[order]


def frames_at(times: np.ndarray, frames: np.ndarray, wanted: np.ndarray, tolerance: float,
              where: str) -> np.ndarray:
    """The decoded frame nearest each wanted timestamp [M] -> [M, H, W, 3]; a timestamp with no
    frame within `tolerance` seconds raises `ValueError` naming `where` and the time."""
    right = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1) if len(times) > 1 \
        else np.zeros(len(wanted), int)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(times[left] - wanted) <= np.abs(times[right] - wanted), left, right)
    gap = np.abs(times[nearest] - wanted)
    if (gap > tolerance).any():
        t = float(wanted[int(np.argmax(gap))])
        raise ValueError(f"{where}: no frame at {t:.4f} s (nearest {float(gap.max()):.4f} s "
                         f"away; the video holds {times[0]:.3f}-{times[-1]:.3f} s)")
    return frames[nearest]
