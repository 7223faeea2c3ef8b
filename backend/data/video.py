"""MP4 video I/O for the dataset layer (PyAV): one file per camera, episodes concatenated.

LeRobot v3 concatenates the episodes of a camera into one MP4 and locates an episode by
`[from_timestamp, to_timestamp)` in the episodes table. We write H.264 (yuv420p) with one
presentation timestamp per control step (time base 1/fps), no B-frames, and force an IDR
frame at the first frame of every episode so that seeking to an episode decodes nothing
of the one before it. Reading accepts any codec PyAV decodes (LeRobot writes AV1 by
default) and matches frames to requested timestamps within a tolerance, as LeRobot does.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# LeRobot's default tolerance when matching decoded frames to requested timestamps.
DEFAULT_TOLERANCE_S = 1e-4


class VideoWriter:
    """Append episodes (T, H, W, 3) uint8 to one MP4; returns each episode's time span."""

    def __init__(
        self,
        path: str | Path,
        fps: int,
        width: int,
        height: int,
        codec: str = "libx264",
        crf: int = 18,
        gop: int | None = None,
        preset: str = "veryfast",
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps, self.width, self.height = int(fps), int(width), int(height)
        self._container = av.open(str(self.path), "w")
        options = {"crf": str(crf), "g": str(gop or 2 * fps), "bf": "0"}
        if codec == "libx264":
            # A forced I frame must be an IDR frame, or seeking into an episode could need
            # reference frames of the previous one.
            options.update({"preset": preset, "forced-idr": "1"})
        self._stream = self._container.add_stream(codec, rate=self.fps, options=options)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = Fraction(1, self.fps)
        self.num_frames = 0

    @property
    def codec(self) -> str:
        return self._stream.codec_context.name

    def add_episode(self, frames: np.ndarray) -> tuple[float, float]:
        """Encode one episode's frames; return (from_timestamp, to_timestamp) in seconds."""
        frames = np.asarray(frames)
        if (
            frames.ndim != 4
            or frames.shape[1:] != (self.height, self.width, 3)
            or frames.dtype != np.uint8
        ):
            raise ValueError(
                f"{self.path.name}: frames must be uint8 (T, {self.height}, {self.width}, 3), "
                f"got {frames.dtype} {frames.shape}"
            )
        start = self.num_frames
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.num_frames
            frame.time_base = Fraction(1, self.fps)
            if t == 0:
                frame.pict_type = av.video.frame.PictureType.I
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.num_frames += 1
        return start / self.fps, self.num_frames / self.fps

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_frames(
    path: str | Path, timestamps: np.ndarray, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> np.ndarray:
    """Frames at `timestamps` (seconds, file time) -> (N, H, W, 3) uint8.

    Seeks to the keyframe before the first timestamp and decodes forward to the last, then
    picks the decoded frame nearest each request; raises if one is further than tolerance.
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.size == 0:
        raise ValueError("decode_frames needs at least one timestamp")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {path}")
    first, last = float(ts.min()), float(ts.max())
    loaded, loaded_ts = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if first > 0:
            container.seek(
                int(first / stream.time_base), stream=stream, backward=True, any_frame=False
            )
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if t < first - tolerance_s:
                continue
            loaded.append(frame.to_ndarray(format="rgb24"))
            loaded_ts.append(t)
            if t >= last - tolerance_s:
                break
    if not loaded:
        raise ValueError(f"{path}: no frame decoded in [{first:.4f}, {last:.4f}] s")
    loaded_ts_arr = np.asarray(loaded_ts)
    dist = np.abs(ts[:, None] - loaded_ts_arr[None, :])  # (N, M)
    nearest = dist.argmin(axis=1)
    worst = dist[np.arange(len(ts)), nearest].max()
    if worst > tolerance_s:
        raise ValueError(
            f"{path}: a requested timestamp is {worst:.4f} s from the nearest decoded frame "
            f"(tolerance {tolerance_s} s); the video and the data table disagree"
        )
    return np.stack([loaded[i] for i in nearest])


def video_info(path: str | Path) -> dict:
    """The `info` block LeRobot keeps per video feature in meta/info.json."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        return {
            "video.height": int(ctx.height),
            "video.width": int(ctx.width),
            "video.codec": ctx.name,
            "video.pix_fmt": ctx.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": float(stream.average_rate) if stream.average_rate else None,
            "video.channels": 3,
            "has_audio": len(container.streams.audio) > 0,
        }
