"""Throughput of the simulated robot: control steps per second, physics and rendering apart.

`python -m robot.sim.speed` runs the scripted experts for a few episodes and prints steps/s
with and without rendering; the dataset benchmark calls `measure` for its own table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from robot.sim.env import SimEnv
from robot.sim.experts import run_expert
from robot.sim.tasks import get_task


def measure(
    task: str = "pick_place_bin",
    episodes: int = 3,
    resolution: int = 64,
    cameras: Sequence[str] = ("front", "left", "right"),
    wrist: bool = False,
    antialias: bool = False,
) -> dict[str, float]:
    """Run the expert for `episodes` seeds and time simulate+render and simulate alone."""
    get_task(task)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = SimEnv(task, resolution=resolution, cameras=cameras, wrist=wrist, antialias=antialias)
    try:
        env.render()  # create the renderer outside the timed loop
        out: dict[str, float] = {}
        for render in (True, False):
            steps, t0 = 0, time.perf_counter()
            for seed in range(episodes):
                env.reset(seed, render=render)
                steps += sum(1 for _ in run_expert(env, render=render))
            dt = time.perf_counter() - t0
            key = "render" if render else "physics"
            out[f"{key}_steps_per_s"] = steps / dt
            out[f"{key}_ms_per_step"] = 1e3 * dt / steps
        out["render_ms_per_step"] = out["render_ms_per_step"] - out["physics_ms_per_step"]
        out["views"] = float(len(env.camera_names))
        out["resolution"] = float(resolution)
        return out
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot.sim.speed", description=__doc__)
    p.add_argument("--task", default="pick_place_bin")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--cameras", default="front,left,right", help="comma-separated fixed cameras")
    p.add_argument("--wrist", action="store_true", help="add the wrist camera")
    p.add_argument("--antialias", action="store_true", help="4x multisampling")
    args = p.parse_args(argv)
    r = measure(
        args.task,
        args.episodes,
        args.resolution,
        args.cameras.split(","),
        args.wrist,
        args.antialias,
    )
    print(
        f"{args.task}: {int(r['views'])} views at {args.resolution}x{args.resolution}"
        f"{' antialiased' if args.antialias else ''}: "
        f"{r['render_steps_per_s']:.0f} control steps/s with rendering "
        f"({r['physics_ms_per_step']:.1f} ms physics + {r['render_ms_per_step']:.1f} ms rendering per step); "
        f"{r['physics_steps_per_s']:.0f} steps/s without rendering"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
