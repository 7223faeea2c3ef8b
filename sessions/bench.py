"""`wallwm bench sessions`: what recording costs the studio's loop.

A loop paced at 50 Hz receives three real 64 px sim views and the state per step (rendered
once up front from the MuJoCo task, so rendering does not blur the figure) and, in alternate
rounds, records them with `SessionWriter.step`. Per step we time the loop's own work from its
tick to its end (the sleep excluded): `added_ms` is the recorded rounds' mean minus the
baseline rounds' mean, so the writer thread's compression and I/O count too (they take CPU
and the GIL from the loop). Rounds alternate so that load from other programs hits both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from app.bench import BenchResult

LIMIT_MS = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hz", type=float, default=50.0, help="loop rate")
    p.add_argument("--steps", type=int, default=250, help="steps per round")
    p.add_argument("--rounds", type=int, default=6, help="rounds of each kind, interleaved")
    p.add_argument("--resolution", type=int, default=64, help="view size (pixels)")
    p.add_argument("--task", default="press_buttons_in_order", help="sim task the views come from")


def _views(task: str, resolution: int, n: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """`n` real (state, views) pairs from the sim, the scripted expert moving the arm."""
    from robot.sim.env import SimEnv
    from robot.sim.experts import ExpertRollout

    env = SimEnv(task, seed=0, resolution=resolution)
    try:
        out = []
        for step in ExpertRollout(env, render=True):
            out.append((np.asarray(step.obs["state"], np.float32), dict(step.obs["images"])))
            if len(out) >= n:
                break
        return out
    finally:
        env.close()


def _round(views, steps: int, period: float, writer=None) -> tuple[np.ndarray, np.ndarray]:
    """(busy seconds per step, record-call seconds per step)."""
    busy, calls = np.zeros(steps), np.zeros(steps)
    tick = time.perf_counter()
    for i in range(steps):
        state, images = views[i % len(views)]
        t0 = time.perf_counter()
        # The loop's own work: take the step's observation (fresh arrays, as a reply brings).
        obs = {c: img.copy() for c, img in images.items()}
        pose = state.copy()
        if writer is not None:
            t1 = time.perf_counter()
            writer.step(pose, obs, chunk_id="bench", step=i, event_index=0, task_progress=0)
            calls[i] = time.perf_counter() - t1
        busy[i] = time.perf_counter() - t0
        tick += period
        delay = tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            tick = time.perf_counter()  # late: do not burst to catch up
    return busy, calls


def run(args: argparse.Namespace) -> BenchResult:
    from sessions.store import SessionStore

    views = _views(args.task, args.resolution, 100)
    period = 1.0 / args.hz
    base, rec, call = [], [], []
    lag = []
    with tempfile.TemporaryDirectory(prefix="wallwm-bench-sessions-") as tmp:
        writer = SessionStore(tmp).create({"task": args.task, "fps": args.hz})
        try:
            for _ in range(args.rounds):
                b, _ = _round(views, args.steps, period)
                base.append(b)
                r, c = _round(views, args.steps, period, writer)
                rec.append(r)
                call.append(c)
                t0 = time.perf_counter()
                writer.frames.wait_flushed()
                lag.append(time.perf_counter() - t0)
        finally:
            writer.close()
        size = (Path(tmp) / writer.id / "frames.bin").stat().st_size
        frames = writer.frames.count
    base_ms, rec_ms, call_ms = (np.concatenate(x) * 1e3 for x in (base, rec, call))
    added = float(rec_ms.mean() - base_ms.mean())
    numbers = {
        "hz": args.hz,
        "views": len(views[0][1]),
        "resolution": args.resolution,
        "steps_recorded": int(frames),
        "baseline_step_ms_mean": float(base_ms.mean()),
        "recorded_step_ms_mean": float(rec_ms.mean()),
        "added_ms_mean": added,
        "added_ms_p99": float(np.percentile(rec_ms, 99) - np.percentile(base_ms, 99)),
        "record_call_ms_p50": float(np.percentile(call_ms, 50)),
        "record_call_ms_p99": float(np.percentile(call_ms, 99)),
        "record_call_ms_max": float(call_ms.max()),
        "flush_wait_after_round_ms_max": float(max(lag) * 1e3),
        "bytes_per_step": size / max(frames, 1),
        "limit_ms": LIMIT_MS,
        "within_limit": bool(added <= LIMIT_MS),
    }
    markdown = (
        f"Recording {args.hz:.0f} Hz telemetry with {numbers['views']} {args.resolution} px views "
        f"per step ({args.rounds} × {args.steps} recorded steps, interleaved with as many "
        "unrecorded ones):\n\n"
        "| figure | value |\n|---|---|\n"
        f"| added to the loop per step (mean) | {added:.3f} ms (limit {LIMIT_MS} ms: "
        f"{'met' if added <= LIMIT_MS else 'NOT met'}) |\n"
        f"| added per step at p99 | {numbers['added_ms_p99']:.3f} ms |\n"
        f"| `SessionWriter.step` call p50 / p99 / max | {numbers['record_call_ms_p50']:.3f} / "
        f"{numbers['record_call_ms_p99']:.3f} / {numbers['record_call_ms_max']:.3f} ms |\n"
        f"| writer backlog after a round (longest wait to flush) | "
        f"{numbers['flush_wait_after_round_ms_max']:.1f} ms |\n"
        f"| on disk per step | {numbers['bytes_per_step'] / 1024:.1f} KiB |\n"
    )
    return BenchResult("sessions", numbers, markdown)
