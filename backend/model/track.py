"""End-effector track features: where the gripper is and where the chunk takes it, per patch.

A future latent frame of view v is imagined under a known chunk (DenoiserConfig.future_actions),
but an action vector alone does not say *where in the image* the arm goes: the video tower would
have to learn every camera's projection. With calibrated cameras it does not have to. For every
patch of every future latent frame, :func:`track_features` gives the offset (in patches) from the
patch's centre to the projected end effector at the frame's last step and at the observation, a
narrow and a wide Gaussian bump of each distance, and the gripper command (all zero for a point
behind the camera). The denoiser adds a zero-initialised linear of them to the future
frames' tokens (DenoiserConfig.future_track), so the change it draws can be placed by geometry,
the same geometry the sight-cone mask uses.

Action and state positions are absolute (`ee_pose_abs`, world frame); video frame t + 1 shows the
scene after action t, so latent frame k >= 1 (frames 4k-3 .. 4k) ends with action 4k - 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from robot.types import CameraCalib

TRACK_FEATURES = 9
_OFFSET_CLAMP = 4.0  # patches: farther offsets read the same
_SIGMAS = (0.5, 1.5)  # patches: a bump on the patch itself and one over its neighbours


def _project(points: torch.Tensor, calib: CameraCalib) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (..., 3) -> image coordinates in [0, 1] (..., 2) and in-front flags (...)."""
    T = torch.as_tensor(np.linalg.inv(calib.T_world_cam), dtype=torch.float64)
    K = torch.as_tensor(calib.K, dtype=torch.float64)
    p = points.double() @ T[:3, :3].T + T[:3, 3]
    front = p[..., 2] > 1e-3
    uv = (p @ K.T)[..., :2] / p[..., 2:3].clamp(min=1e-3)
    size = torch.tensor([calib.width, calib.height], dtype=torch.float64)
    return (uv / size).float(), front


def _features(
    point: torch.Tensor, front: torch.Tensor, centres: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """point (..., 2) in [0, 1], front (...), centres (P, 2) -> (..., P, 4): offset, two bumps."""
    scale = torch.tensor([grid[1], grid[0]], dtype=torch.float32)  # (x, y) in patches
    d = (point[..., None, :] - centres) * scale  # (..., P, 2)
    r2 = d.square().sum(-1, keepdim=True)
    bumps = [torch.exp(-r2 / (2 * s * s)) for s in _SIGMAS]
    out = torch.cat([d.clamp(-_OFFSET_CLAMP, _OFFSET_CLAMP), *bumps], dim=-1)
    return out * front[..., None, None]


def track_features(
    state: torch.Tensor,
    actions: torch.Tensor,
    cameras: Sequence[Mapping[str, CameraCalib] | None],
    views: int,
    grid: tuple[int, int],
) -> torch.Tensor:
    """(B, V, F - 1, h * w, TRACK_FEATURES) for the F - 1 future latent frames, patches row-major.

    `state` (B, >= 3) and `actions` (B, 4 (F - 1), >= 7) are absolute end-effector poses (the
    gripper command is column 6); `cameras[b]` the calibrations of sample b in view order. A view
    without a calibration gets zeros (no geometry to give).
    """
    B, H = actions.shape[:2]
    if H % 4:
        raise ValueError(f"the chunk must span whole latent frames (4 steps each), got {H} steps")
    if len(cameras) != B:
        raise ValueError(f"{len(cameras)} calibration sets for a batch of {B}")
    state, actions = state.detach().float().cpu(), actions.detach().float().cpu()
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([(xs.reshape(-1) + 0.5) / w, (ys.reshape(-1) + 0.5) / h], dim=1)
    ends = actions[:, 3::4]  # (B, F - 1, >= 7): each latent frame's last action
    out = torch.zeros(B, views, H // 4, h * w, TRACK_FEATURES)
    for b, cams in enumerate(cameras):
        calibs = list((cams or {}).values())
        if len(calibs) != views:
            continue
        for v, calib in enumerate(calibs):
            target, t_front = _project(ends[b, :, :3], calib)  # (F - 1, 2)
            now, n_front = _project(state[b, :3], calib)  # (2,)
            out[b, v, ..., 0:4] = _features(target, t_front, centres, grid)
            out[b, v, ..., 4:8] = _features(now, n_front, centres, grid)
            out[b, v, ..., 8] = (ends[b, :, 6] * t_front)[:, None]
    return out
