"""Memory kept by rerun-sdk per recording stream: throwaway recordings, released or not, vs one
reused recording.

The studio streams every event to the page through `rr.binary_stream()`; this measures what a
recording costs the process after its stream is read and dropped, and what
`viewers.rerun.release_finished_recordings` (the sweep the studio runs between events) gives
back. Prints RSS and thread count every 10 streams for each pattern:

    python scripts/rerun_recording_memory.py [--streams 40]

Each stream logs what one imagination logs at most: 30 steps x 3 views of 64 px RGB.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import uuid

import numpy as np
import rerun as rr

from viewers.rerun import release_finished_recordings


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def stream_once(recording: rr.RecordingStream, frames: np.ndarray) -> int:
    stream = rr.binary_stream(recording=recording)
    for t, frame in enumerate(frames):
        rr.set_time("step", sequence=t, recording=recording)
        for cam in ("front", "left", "right"):
            rr.log(f"imagined/{cam}", rr.Image(frame), recording=recording)
    return len(stream.read() or b"")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=40)
    args = p.parse_args()
    frames = np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8)
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    patterns = ("new recording per stream", "new recording, released", "one reused recording")
    for pattern in patterns:
        reused = (
            rr.RecordingStream("wallwm", recording_id=uuid.uuid4())
            if pattern.startswith("one")
            else None
        )
        start, threads0 = rss_mb(), len(os.listdir("/proc/self/task"))
        for i in range(args.streams):
            rec = (
                rr.RecordingStream("wallwm", recording_id=uuid.uuid4())
                if pattern.startswith("new")
                else reused
            )
            size = stream_once(rec, frames)
            del rec
            gc.collect()
            if pattern.endswith("released"):
                release_finished_recordings()
            trim(0)
            if (i + 1) % 10 == 0:
                print(
                    f"{pattern}: {i + 1} streams of {size / 1e6:.1f} MB: RSS {rss_mb():.0f} MB "
                    f"({rss_mb() - start:+.0f}), threads {len(os.listdir('/proc/self/task')) - threads0:+d}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
