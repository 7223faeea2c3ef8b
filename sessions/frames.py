"""Executed telemetry, one record per control step, in an append-only file (`frames.bin`).

A record is the robot's state at a control step plus its camera views:

    magic b"WWF1" | u32 meta length | u32 payload length | u32 crc32(meta + payload)
    meta     msgpack map: index, t_ns, control_step, state [7], mode, chunk_id, step,
             event_index, intervention, task_progress, images [[cam, h, w, offset, length]]
    payload  the views, each zlib-compressed uint8 (h, w, 3), back to back

Why not SQLite rows: at 50 Hz with three views a step, one insert + commit per step costs more
than the 2 ms budget (docs/sessions.md). The caller's `append` only copies references into a
queue (microseconds); a writer thread compresses, writes and flushes each record to the OS
(then it survives a SIGKILL of the studio) and fsyncs at most every `fsync_every_s` and at
close (then it survives a power cut). A record torn by a crash fails its length or CRC check:
the reader stops there and reports how many bytes it dropped.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

MAGIC = b"WWF1"
HEADER = struct.Struct("<4sIII")  # magic, meta length, payload length, crc32
FRAMES_FILE = "frames.bin"
MAX_META = 1 << 20
MAX_PAYLOAD = 1 << 28


@dataclass
class Frame:
    """One recorded control step."""

    index: int
    t_ns: int
    state: np.ndarray  # (7,) float32 measured end-effector pose + gripper
    images: dict[str, np.ndarray] = field(default_factory=dict)  # cam -> uint8 (h, w, 3)
    control_step: int = -1
    mode: str = ""
    chunk_id: str | None = None
    step: int = 0  # actions of that chunk completed
    event_index: int | None = None
    intervention: bool = False
    task_progress: int | None = None
    target: np.ndarray | None = None  # (7,) the target commanded after this step, when known


class FrameWriter:
    """Append frames from any thread; a writer thread makes them durable in order."""

    def __init__(self, path: str | Path, level: int = 1, fsync_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.level, self.fsync_every_s = level, fsync_every_s
        records, dropped = scan(self.path)
        if dropped:  # a record torn by a crash: cut it off before appending after it
            os.truncate(self.path, self.path.stat().st_size - dropped)
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._count = len(records)  # index of the next frame
        self._lock = threading.Lock()
        self._flushed = self._count  # frames written to the OS (survive a killed process)
        self._flushed_cond = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="session-frames", daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        """Frames appended so far (queued or written)."""
        return self._count

    @property
    def flushed(self) -> int:
        """Frames written to the OS: these survive the studio being killed."""
        return self._flushed

    def append(
        self, state: np.ndarray, images: Mapping[str, np.ndarray], t_ns: int | None = None, **tags
    ) -> int:
        """Queue one control step; returns its frame index. Cheap: no copy, no I/O here.

        The arrays must not be modified afterwards (observation replies are fresh arrays).
        """
        if self._error is not None:
            raise OSError(f"the frame writer failed: {self._error}")
        with self._lock:
            index = self._count
            self._count += 1
        self._queue.put((index, t_ns or time.time_ns(), state, dict(images), tags))
        return index

    def wait_flushed(self, count: int | None = None, timeout: float = 10.0) -> bool:
        """Block until `count` frames (default: all appended) are written to the OS."""
        target = self._count if count is None else count
        with self._flushed_cond:
            return self._flushed_cond.wait_for(lambda: self._flushed >= target, timeout)

    def close(self) -> None:
        """Write what is queued, fsync, stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if not self._file.closed:
            self._file.close()

    def _run(self) -> None:
        last_sync = time.monotonic()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                self._file.write(self._encode(*item))
                # Drain what else is queued before the flush: one syscall for a burst.
                n = 1
                while True:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)
                        break
                    self._file.write(self._encode(*nxt))
                    n += 1
                self._file.flush()
                with self._flushed_cond:
                    self._flushed += n
                    self._flushed_cond.notify_all()
                if time.monotonic() - last_sync >= self.fsync_every_s:
                    os.fsync(self._file.fileno())
                    last_sync = time.monotonic()
        except BaseException as e:  # a full disk: say so on the next append
            self._error = e
        finally:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())

    def _encode(self, index: int, t_ns: int, state, images: dict, tags: dict) -> bytes:
        parts, table, offset = [], [], 0
        for cam, img in images.items():
            img = np.ascontiguousarray(img, dtype=np.uint8)
            blob = zlib.compress(img.tobytes(), self.level)
            table.append([cam, int(img.shape[0]), int(img.shape[1]), offset, len(blob)])
            parts.append(blob)
            offset += len(blob)
        target = tags.pop("target", None)
        meta = {
            "index": index,
            "t_ns": int(t_ns),
            "state": np.asarray(state, np.float32).tolist(),
            "images": table,
            **{k: _plain(v) for k, v in tags.items()},
        }
        if target is not None:
            meta["target"] = np.asarray(target, np.float32).tolist()
        head = msgpack.packb(meta)
        payload = b"".join(parts)
        crc = zlib.crc32(payload, zlib.crc32(head))
        return HEADER.pack(MAGIC, len(head), len(payload), crc) + head + payload


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def scan(path: str | Path) -> tuple[list[tuple[int, dict]], int]:
    """([(offset of payload, meta)] of the whole records, bytes dropped at the end)."""
    path = Path(path)
    if not path.exists():
        return [], 0
    out: list[tuple[int, dict]] = []
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos + HEADER.size <= size:
            magic, n_meta, n_payload, crc = HEADER.unpack(f.read(HEADER.size))
            end = pos + HEADER.size + n_meta + n_payload
            if magic != MAGIC or n_meta > MAX_META or n_payload > MAX_PAYLOAD or end > size:
                break
            head = f.read(n_meta)
            payload = f.read(n_payload)
            if zlib.crc32(payload, zlib.crc32(head)) != crc:
                break
            try:
                meta = msgpack.unpackb(head)
            except (ValueError, msgpack.UnpackException):
                break
            out.append((pos + HEADER.size + n_meta, meta))
            pos = end
    return out, size - pos


class FrameReader:
    """Read the frames of a session: metadata at once, images on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index, self.dropped_bytes = scan(self.path)

    def __len__(self) -> int:
        return len(self._index)

    def meta(self, i: int) -> dict:
        return self._index[i][1]

    def frame(self, i: int, images: bool = True) -> Frame:
        offset, m = self._index[i]
        imgs: dict[str, np.ndarray] = {}
        if images and m.get("images"):
            with open(self.path, "rb") as f:
                for cam, h, w, off, length in m["images"]:
                    f.seek(offset + off)
                    raw = zlib.decompress(f.read(length))
                    imgs[cam] = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        target = m.get("target")
        return Frame(
            index=int(m["index"]),
            t_ns=int(m["t_ns"]),
            state=np.asarray(m["state"], np.float32),
            images=imgs,
            control_step=int(m.get("control_step", -1)),
            mode=str(m.get("mode", "")),
            chunk_id=m.get("chunk_id"),
            step=int(m.get("step") or 0),
            event_index=m.get("event_index"),
            intervention=bool(m.get("intervention", False)),
            task_progress=m.get("task_progress"),
            target=None if target is None else np.asarray(target, np.float32),
        )

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.frame(i)

    def states(self) -> np.ndarray:
        """(T, 7) float32."""
        if not self._index:
            return np.zeros((0, 7), np.float32)
        return np.asarray([m["state"] for _, m in self._index], np.float32)
