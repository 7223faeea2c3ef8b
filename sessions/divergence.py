"""Imagined vs executed, per event: how far the robot's path and views went from the imagination.

For a chunk that ran `n` steps of an imagined event, step s (1..n actions completed) pairs:

- the imagined end-effector target `actions[s - 1]` with the measured pose recorded at that
  step: `path_mean_m`, `path_max_m` (Euclidean distance of x, y, z, metres);
- imagined frame `video[s]` (frame 0 is the observation the imagination started from) with
  the recorded views at that step: `video_mae`, the mean absolute difference in [0, 1] over
  views and steps (views resized to the imagined size, nearest neighbour).

`diverged_step` is the first step farther than `DIVERGED_M` from the imagined path: where an
operator should look first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sessions.frames import Frame

DIVERGED_M = 0.02  # same tolerance as the studio's start drift: beyond it, imagine again


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == shape:
        return img
    ys = (np.arange(shape[0]) * img.shape[0] / shape[0]).astype(int)
    xs = (np.arange(shape[1]) * img.shape[1] / shape[1]).astype(int)
    return img[ys][:, xs]


def event_divergence(
    actions: np.ndarray,
    video: Mapping[str, np.ndarray] | None,
    frames: Sequence[Frame],
    threshold_m: float = DIVERGED_M,
) -> dict | None:
    """Divergence of one executed chunk from its imagination; None when no step was executed.

    actions: (L, 7) the imagined (and sent) targets; video: cam -> (L + 1, h, w, 3) or None;
    frames: the recorded frames of that chunk (any order; one per completed step is used).
    """
    actions = np.asarray(actions, np.float32)
    by_step: dict[int, Frame] = {}
    for f in frames:
        if 1 <= f.step <= len(actions) and f.step not in by_step:
            by_step[f.step] = f
    if not by_step:
        return None
    steps = sorted(by_step)
    dist = np.array(
        [float(np.linalg.norm(by_step[s].state[:3] - actions[s - 1, :3])) for s in steps]
    )  # (n,)
    over = np.flatnonzero(dist > threshold_m)
    diffs = []
    for s in steps:
        for cam, imagined in (video or {}).items():
            seen = by_step[s].images.get(cam)
            if seen is None or s >= len(imagined):
                continue
            a = imagined[s].astype(np.float32)
            b = _resize(seen, imagined.shape[1:3]).astype(np.float32)
            diffs.append(float(np.abs(a - b).mean() / 255.0))
    return {
        "steps": len(steps),
        "path_mean_m": float(dist.mean()),
        "path_max_m": float(dist.max()),
        "video_mae": float(np.mean(diffs)) if diffs else None,
        "diverged_step": int(steps[over[0]]) if len(over) else None,
        "distance_m": dist.tolist(),
    }
