"""A recording process for the durability test: it records like the studio does and prints
`ack <kind> <id>` only after each write returned (what the studio shows as saved), until killed."""

from __future__ import annotations

import sys

import numpy as np

from sessions.store import SessionStore


def main(root: str) -> None:
    writer = SessionStore(root).create({"task": "press_buttons_in_order", "fps": 50})
    print("session", writer.id, flush=True)
    rng = np.random.default_rng(0)
    views = {c: rng.integers(0, 255, (64, 64, 3), np.uint8) for c in ("front", "left", "right")}
    i = 0
    while True:
        v = writer.plan([f"event {i}", "press the red button"], "operator", f"edit {i}", True, 0)
        print("ack plan", v, flush=True)
        rid = writer.record("command", "operator", 0, type="pause", n=i)
        print("ack record", rid, flush=True)
        for _ in range(5):
            n = writer.step(np.full(7, i, np.float32), views, step=i, event_index=0)
            writer.frames.wait_flushed(n + 1)
            print("ack step", n, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1])
