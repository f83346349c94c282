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
    with Mp4Writer(path, fps, codec, crf) as writer:
        writer.add(frames)
    return writer.info


class Mp4Writer:
    """Frames appended episode by episode into one mp4, so a long run is never held whole.

        with Mp4Writer(path, fps=10) as w:
            for frames in episodes: w.add(frames)      # uint8 [n, H, W, 3], same H, W
        w.info                                         # LeRobot's `video.*` info
    """

    def __init__(self, path: Path, fps: int, codec: str = CODEC, crf: int = CRF) -> None:
        import av

        self.path, self.fps, self.frames, self.closed = path, fps, 0, False
        self.info: dict[str, object] = {}
        self._out = av.open(str(path), "w")
        self._stream = cast("av.video.stream.VideoStream", self._out.add_stream(
            codec, rate=fps, options={"crf": str(crf), "g": str(GOP)}))

    def add(self, frames: np.ndarray) -> None:
        import av

        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{self.path.name}: frames must be uint8 [N, H, W, 3], got "
                             f"{frames.dtype} {list(frames.shape)}")
        stream = self._stream
        if not self.frames:  # 4:2:0 needs even sizes
            stream.height, stream.width = frames.shape[1:3]
            even = stream.height % 2 == 0 and stream.width % 2 == 0
            stream.pix_fmt = "yuv420p" if even else "yuv444p"
        elif list(frames.shape[1:3]) != [stream.height, stream.width]:
            raise ValueError(f"{self.path.name}: frames of {list(frames.shape[1:3])}, the "
                             f"first were {[stream.height, stream.width]}")
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self._out.mux(stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        stream, out = self._stream, self._out
        self.closed = True
        if not self.frames:
            out.close()
            raise ValueError(f"{self.path.name}: no frames")
        out.mux(stream.encode())
        out.close()
        self.info = {"video.height": stream.height, "video.width": stream.width,
                     "video.codec": _codec_name(self.path), "video.pix_fmt": stream.pix_fmt,
                     "video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3,
                     "has_audio": False}

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
        elif not self.closed:  # an error on the way: the file is left to its folder's cleanup
            self.closed = True
            self._out.close()


def _codec_name(path: Path) -> str:
    """The stream's codec as a decoder names it (`h264`), as LeRobot's `get_video_info` says."""
    import av

    with av.open(str(path)) as f:
        return str(f.streams.video[0].codec_context.codec.canonical_name)


def read_mp4(path: Path, start: float | None = None, end: float | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The frames of the first video stream (those from `start` to `end` seconds, if given:
    a seek to the keyframe before `start`, then decoding up to `end`): (timestamps in s [N],
    uint8 RGB [N, H, W, 3])."""
    import av

    times, frames = [], []
    try:
        with av.open(str(path)) as f:
            stream = f.streams.video[0]
            base = stream.time_base
            if start is not None and base is not None and start > 0:
                f.seek(int(start / base), stream=stream, backward=True, any_frame=False)
            for frame in f.decode(stream):
                if frame.pts is None or base is None:
                    continue
                t = float(frame.pts * base)
                if end is not None and t > end:
                    break
                if start is None or t >= start:
                    times.append(t)
                    frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, IndexError) as e:  # IndexError: no video stream
        raise ValueError(f"{path}: cannot decode it as video ({e})") from e
    if not frames:
        span = "" if start is None or end is None else f" from {start:.3f} s to {end:.3f} s"
        raise ValueError(f"{path}: holds no video frames{span}")
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
