"""Render the viewers' figures for a real simulated scene to PNG, to look at what a person sees.

    python -m viewers.snapshot --out docs/figures/viewers/ [--task pick_place_bin]
        [--seed 3] [--events 6] [--checkpoint DIR]

The scene is the simulator's: its calibrated cameras, and a scripted expert's episode whose
commanded actions are the ground truth and whose measured end-effector states are what was
executed. With ``--checkpoint`` the world action model imagines each event from the
observation at its start, so the trajectory figure also shows imagined paths; without it
there is nothing imagined to draw and the figure says so by its legend.

Writes trajectories.png, cones.png, overlap.png and token_mask.png through plotly's exporter
(kaleido), which drives the system's Chromium (BROWSER_PATH, /usr/bin/chromium by default);
with ``--rrd FILE`` also the scene as a Rerun recording with the studio's blueprint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

FIGURE_SIZE = {"trajectories": (1100, 800), "cones": (1100, 800), "overlap": (640, 560),
               "token_mask": (760, 700)}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m viewers.snapshot", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("docs/figures/viewers"), help="output folder")
    p.add_argument("--task", default="pick_place_bin", help="sim task")
    p.add_argument("--seed", type=int, default=3, help="sim seed")
    p.add_argument("--events", type=int, default=6, help="events drawn in the trajectory figure")
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="model checkpoint: imagine each event"
    )
    p.add_argument("--resolution", type=int, default=64, help="camera image size (px)")
    p.add_argument(
        "--rrd", type=Path, default=None, help="also write the scene as a Rerun .rrd here"
    )
    return p


def _imagined(checkpoint: Path, episode, events) -> list[np.ndarray]:
    """The model's imagined executable chunk for each event, from the observation at its start."""
    import torch

    from backend.model.wam import Observation, WorldActionModel

    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(checkpoint)
    paths = []
    for e in events:
        obs = Observation(
            images={c: f[e.start] for c, f in episode.frames.items()},
            state=episode.states[e.start],
            cameras=episode.cameras,
        )
        result = model.imagine(obs, e.subtask, mode="event", seed=0)
        paths.append(np.asarray(result.actions, dtype=np.float64))
    return paths


def build_figures(task: str, seed: int, n_events: int, checkpoint: Path | None, resolution: int):
    """Figures (name -> plotly Figure) and the episode they were made from."""
    from backend.model.presets import MODEL_PRESETS
    from backend.model.sight_cone import build_attention_mask, sight_cone_mask
    from backend.model.vae import latent_frames
    from robot.sim.experts import record_episode
    from viewers.cones import (
        cones_figure,
        overlap_figure,
        overlap_matrix,
        token_mask_figure,
    )
    from viewers.trajectories import trajectory_figure

    episode = record_episode(task, seed=seed, resolution=resolution)
    events = episode.events[:n_events]
    imagined = _imagined(checkpoint, episode, events) if checkpoint else [None] * len(events)
    traj = [
        {
            "label": f"e{k}: {e.action}",
            "ground_truth": episode.actions[e.start : e.end],
            # states[t] is measured before action t: the event's effect shows up to e.end
            "executed": episode.states[e.start : min(e.end + 1, episode.length)],
            "imagined": imagined[k],
        }
        for k, e in enumerate(events)
    ]
    cams = episode.cameras
    names = list(cams)
    cfg = MODEL_PRESETS["tiny"]  # the shipped preset: the mask the studio's model attends with
    grid = (
        cfg.latent_size // cfg.denoiser.patch_size[1],
        cfg.latent_size // cfg.denoiser.patch_size[2],
    )
    patch_mask = sight_cone_mask(
        list(cams.values()),
        grid,
        cfg.cone_d_min,
        cfg.cone_d_max,
        cfg.workspace_min,
        cfg.workspace_max,
    )
    frames = latent_frames(cfg.h_max + 1)  # observation + future latent frames of the longest event
    token_mask = build_attention_mask(patch_mask, frames, grid).dense.cpu().numpy()
    figures = {
        "trajectories": trajectory_figure(traj),
        "cones": cones_figure(cams),
        "overlap": overlap_figure(overlap_matrix(cams, grid=grid), names),
        "token_mask": token_mask_figure(token_mask, names),
    }
    return figures, episode


def write_rrd(episode, path: Path) -> None:
    """The scene, the first observation and the executed paths, with the studio's blueprint."""
    import rerun as rr

    from viewers import rerun as vr

    rec = rr.RecordingStream("wallwm", recording_id=f"snapshot-{episode.task}-{episode.seed}")
    stream = rr.binary_stream(recording=rec)
    rr.send_blueprint(vr.blueprint(list(episode.cameras)), recording=rec)
    vr.log_scene(episode.cameras, recording=rec)
    vr.log_observation(
        {c: f[0] for c, f in episode.frames.items()}, episode.states[0], step=0, recording=rec
    )
    for k, e in enumerate(episode.events):
        vr.log_executed(k, episode.states[e.start : min(e.end + 1, episode.length)], recording=rec)
    path.write_bytes(stream.read() or b"")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events < 1:
        print("--events must be >= 1", file=sys.stderr)
        return 2
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        print(f"checkpoint directory {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.path.exists("/usr/bin/chromium"):
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    import plotly.io as pio

    t0 = time.perf_counter()
    figures, episode = build_figures(
        args.task, args.seed, args.events, args.checkpoint, args.resolution
    )
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / f"{name}.png" for name in figures]
    sizes = [FIGURE_SIZE[name] for name in figures]
    pio.write_images(
        list(figures.values()),
        paths,
        width=[w for w, _ in sizes],
        height=[h for _, h in sizes],
    )
    if args.rrd is not None:
        write_rrd(episode, args.rrd)
        paths.append(args.rrd)
    for p in paths:
        print(f"{p}  {p.stat().st_size / 1024:.0f} KiB")
    print(
        f"{args.task} seed {args.seed}: {len(episode.events)} events, {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
