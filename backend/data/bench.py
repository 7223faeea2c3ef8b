"""`wallwm bench data`: control steps per second to simulate, render the views and encode.

For each resolution, the same expert episodes are run three ways on warm environments
(scene compiled, renderer open, as during `wallwm data generate`): physics and expert only,
physics + rendering of every view (`record_episode`), and writing the recorded episodes
with the dataset writer (H.264 per camera + parquet). The headline figure is
steps / (record + write) time: the throughput of dataset generation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT_TASKS = ("pick_place_bin", "press_buttons_in_order", "peg_insertion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resolutions", type=int, nargs="+", default=[64, 128], help="frame sizes (default 64 128)"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_TASKS),
        help="tasks to run, one episode per seed each",
    )
    parser.add_argument("--seeds", type=int, default=2, help="train seeds per task (default 2)")
    parser.add_argument("--wrist", action="store_true", help="render the wrist camera too")


def measure(resolution: int, tasks: list[str], seeds: int, wrist: bool = False) -> dict[str, float]:
    """Timings of one resolution; every figure is in control steps per second."""
    from backend.data.lerobot import DatasetWriter
    from robot.sim.env import SimEnv
    from robot.sim.experts import record_episode, run_expert
    from robot.sim.tasks import split

    if seeds < 1 or not tasks:
        raise ValueError("need at least one task and one seed")
    envs, plan = {}, []
    t0 = time.perf_counter()
    for task in tasks:
        train = [s for s in range(5 * seeds) if split(task, s) == "train"][:seeds]
        envs[task] = SimEnv(task, seed=train[0], resolution=resolution, wrist=wrist)
        envs[task].observe(
            render=True
        )  # the first render opens the GL context: setup, not throughput
        plan += [(task, s) for s in train]
    setup_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        sim_steps = 0
        for task, seed in plan:  # physics + expert, no rendering
            envs[task].reset(seed)
            sim_steps += sum(1 for _ in run_expert(envs[task], render=False))
        sim_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        episodes = [
            record_episode(task, seed, resolution=resolution, wrist=wrist, env=envs[task])
            for task, seed in plan
        ]
        record_s = time.perf_counter() - t0
    finally:
        for env in envs.values():
            env.close()
    steps = sum(e.length for e in episodes)
    views = len(episodes[0].frames)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with DatasetWriter(Path(tmp) / "ds", fps=episodes[0].fps) as writer:
            for ep in episodes:
                writer.add_episode(ep)
        write_s = time.perf_counter() - t0
    return {
        "steps": steps,
        "views": views,
        "setup_s": setup_s,
        "sim_steps_per_s": sim_steps / sim_s,
        "record_steps_per_s": steps / record_s,
        "encode_steps_per_s": steps / write_s,
        "steps_per_s": steps / (record_s + write_s),
    }


def run(args: argparse.Namespace):
    from app.bench import BenchResult

    numbers: dict[str, float] = {}
    rows = []
    for res in args.resolutions:
        m = measure(res, args.tasks, args.seeds, args.wrist)
        numbers[f"steps_per_s_{res}"] = round(m["steps_per_s"], 1)
        numbers[f"sim_steps_per_s_{res}"] = round(m["sim_steps_per_s"], 1)
        numbers[f"record_steps_per_s_{res}"] = round(m["record_steps_per_s"], 1)
        numbers[f"encode_steps_per_s_{res}"] = round(m["encode_steps_per_s"], 1)
        numbers[f"steps_{res}"] = m["steps"]
        rows.append(
            f"| {res}×{res} | {m['views']} | {m['steps']} | {m['sim_steps_per_s']:.0f} | "
            f"{m['record_steps_per_s']:.0f} | {m['encode_steps_per_s']:.0f} | **{m['steps_per_s']:.1f}** |"
        )
    target = numbers.get("steps_per_s_64")
    verdict = (
        f"Target ≥ 40 steps/s at 64×64: {'met' if target >= 40 else 'not met'} ({target:.1f})."
        if target is not None
        else "64×64 was not measured."
    )
    markdown = "\n".join(
        [
            f"Expert episodes of {', '.join(args.tasks)} ({args.seeds} train seeds each), warm environments. "
            "Columns are control steps per second: physics + expert only; + rendering every view "
            "(`record_episode`); writing the recorded episodes (H.264 crf 18 per camera + parquet); and "
            "end to end, record + write.",
            "",
            "| frames | views | steps | simulate | simulate + render | encode + write | **end to end** |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            verdict,
        ]
    )
    return BenchResult(target="data", numbers=numbers, markdown=markdown)
