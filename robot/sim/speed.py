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


def render_variants(resolution: int = 64, frames: int = 60) -> dict[str, float]:
    """Milliseconds to render the three fixed views once, for the options that matter on
    software GL: MuJoCo's per-view `Renderer` with its defaults (shadows, 4x multisampling)
    down to our one-read-back multi-view renderer without either."""
    import mujoco

    def per_view(env: SimEnv, shadows: bool) -> float:
        r = mujoco.Renderer(env.model, resolution, resolution)
        try:
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
            t0 = time.perf_counter()
            for _ in range(frames):
                for c in env.camera_names:
                    r.update_scene(env.data, camera=c)
                    r.render()
            return 1e3 * (time.perf_counter() - t0) / frames
        finally:
            r.close()

    def multi_view(env: SimEnv) -> float:
        env.render()
        t0 = time.perf_counter()
        for _ in range(frames):
            env.render()
        return 1e3 * (time.perf_counter() - t0) / frames

    out = {}
    for shadows, aa, label in (
        (True, True, "Renderer per view, shadows (2048 map) + 4x MSAA"),
        (False, True, "Renderer per view, 4x MSAA"),
        (False, False, "Renderer per view, plain"),
    ):
        env = SimEnv("pick_place_bin", resolution=resolution, shadows=shadows, antialias=aa)
        out[label] = per_view(env, shadows)
        env.close()
    for aa, label in (
        (True, "multi-view, one read-back, 4x MSAA"),
        (False, "multi-view, one read-back, plain"),
    ):
        env = SimEnv("pick_place_bin", resolution=resolution, antialias=aa)
        out[label] = multi_view(env)
        env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot.sim.speed", description=__doc__)
    p.add_argument("--task", default="pick_place_bin")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--cameras", default="front,left,right", help="comma-separated fixed cameras")
    p.add_argument("--wrist", action="store_true", help="add the wrist camera")
    p.add_argument("--antialias", action="store_true", help="4x multisampling")
    p.add_argument(
        "--render-variants", action="store_true", help="compare rendering options instead"
    )
    args = p.parse_args(argv)
    if args.render_variants:
        for label, ms in render_variants(args.resolution).items():
            print(f"{label}: {ms:.1f} ms per 3 views at {args.resolution}x{args.resolution}")
        return 0
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
