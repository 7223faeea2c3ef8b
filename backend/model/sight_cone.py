"""Sight-cone mask: which view tokens may attend to which across cameras (DESIGN §4).

A patch of camera i sees a cone of 3D space: its pixel footprint back-projected over the depth
range [d_min, d_max], clipped to the workspace box. A token of patch p (view i) may attend to a
token of patch q (view j) only if the two cones share space, i.e. some point seen through p lies
in front of camera j, inside its depth range and image, and falls in q's footprint. We sample
that: for each patch a grid of pixels, for each pixel ray the segment inside the workspace and
the depth range at evenly spaced depths; every sample is projected into every other camera, and
a hit in (j, q) marks the pair. Sampling from both sides and OR-ing (symmetrising) closes most
gaps a finite sample leaves. Same-view pairs are always allowed. The result is a patch-level
bool matrix in row-major patch order, cached per calibration; :func:`build_attention_mask`
lifts it to the token layout of the video tower (``(view, patch in Z-order, frame)``, see
``attention``) as a dense mask and a flex_attention ``BlockMask``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from backend.model.attention import ViewMask, patch_order
from robot.types import CameraCalib

_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()
_CACHE_SIZE = 64
# Tokens per flex_attention block. CPU: with 9 latent frames a 32-token block is ~3.5 patches,
# small enough for the rig's sparsity to show (half the blocks skipped at 256 px), large enough
# for the kernel's GEMMs; 64 and 128 were slower in `wallwm bench model`. CUDA: flex_attention's
# default tile.
BLOCK_SIZE = 32
BLOCK_SIZE_CUDA = 128


def look_at_camera(
    name: str,
    position: Sequence[float],
    target: Sequence[float],
    fovy_deg: float,
    width: int,
    height: int,
) -> CameraCalib:
    """A pinhole camera at ``position`` looking at ``target`` (world z up), OpenCV axes, square pixels."""
    pos = np.asarray(position, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - pos
    if np.linalg.norm(fwd) == 0:
        raise ValueError(f"camera {name!r}: position and target coincide")
    z = fwd / np.linalg.norm(fwd)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-9:  # looking straight up or down: any horizontal x will do
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # image y points down
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = pos
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2)
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return CameraCalib(name, K, T, int(width), int(height))


def _ray_box(
    origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: parameters [t0, t1] where rays ``origin + t * dirs`` (R, 3) are inside the box."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        a = (lo - origin) * inv
        b = (hi - origin) * inv
    a = np.where(np.isnan(a), -np.inf, a)  # ray parallel to a slab it lies inside
    b = np.where(np.isnan(b), np.inf, b)
    t0 = np.minimum(a, b).max(axis=1)
    t1 = np.maximum(a, b).min(axis=1)
    return t0, t1


def _cone_samples(
    cam: CameraCalib,
    grid: tuple[int, int],
    d_min: float,
    d_max: float,
    ws_min: np.ndarray,
    ws_max: np.ndarray,
    pixels: int,
    depths: int,
) -> tuple[np.ndarray, np.ndarray]:
    """World points sampled in every patch cone of ``cam`` and the patch index of each point."""
    gh, gw = grid
    ch, cw = cam.height / gh, cam.width / gw
    offs = (np.arange(pixels) + 0.5) / pixels  # stratified pixel positions inside a cell
    py, px = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    oy, ox = np.meshgrid(offs, offs, indexing="ij")
    u = (px.reshape(-1, 1) + ox.reshape(1, -1)) * cw  # (P, s*s)
    v = (py.reshape(-1, 1) + oy.reshape(1, -1)) * ch
    patch = np.repeat(np.arange(gh * gw), pixels * pixels)  # (R,)
    uv = np.stack([u.reshape(-1), v.reshape(-1)], axis=1)  # (R, 2)
    # Rays with unit z in the camera frame, so the ray parameter is the depth.
    dirs = cam.unproject(uv, np.ones(len(uv))) - cam.center  # (R, 3)
    t0, t1 = _ray_box(cam.center, dirs, ws_min, ws_max)
    lo, hi = np.maximum(t0, d_min), np.minimum(t1, d_max)
    hit = hi > lo
    frac = (np.arange(depths) + 0.5) / depths
    d = lo[hit, None] + (hi - lo)[hit, None] * frac[None]  # (R_hit, depths)
    pts = cam.center + dirs[hit, None, :] * d[..., None]  # (R_hit, depths, 3)
    return pts.reshape(-1, 3), np.repeat(patch[hit], depths)


def _key(cameras: Sequence[CameraCalib], *args: object) -> str:
    h = hashlib.sha1()
    for c in cameras:
        h.update(np.ascontiguousarray(c.K, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(c.T_world_cam, dtype=np.float64).tobytes())
        h.update(f"{c.width}x{c.height}".encode())
    h.update(repr(args).encode())
    return h.hexdigest()


def sight_cone_mask(
    cameras: Sequence[CameraCalib],
    grid: tuple[int, int],
    d_min: float,
    d_max: float,
    workspace_min: Sequence[float],
    workspace_max: Sequence[float],
    samples: int = 4,
    depth_samples: int = 16,
) -> np.ndarray:
    """Patch-level sight-cone mask, bool ``(V * gh * gw, V * gh * gw)``, rows/cols ``(view, y, x)``.

    ``grid`` = (gh, gw) patches per image (image size / 16 for an 8x autoencoder and 2x2 latent
    patches); ``samples`` pixels per patch side and ``depth_samples`` depths per pixel ray.
    Cached per calibration and arguments; the returned array is read-only.
    """
    if not cameras:
        raise ValueError("sight_cone_mask needs at least one camera")
    gh, gw = (int(g) for g in grid)
    if gh <= 0 or gw <= 0:
        raise ValueError(f"grid must be two positive ints, got {grid}")
    if not 0 <= d_min < d_max:
        raise ValueError(f"need 0 <= d_min < d_max, got d_min={d_min}, d_max={d_max}")
    ws_min = np.asarray(workspace_min, dtype=np.float64).reshape(3)
    ws_max = np.asarray(workspace_max, dtype=np.float64).reshape(3)
    if np.any(ws_max <= ws_min):
        raise ValueError(f"workspace_max {ws_max} must exceed workspace_min {ws_min} on every axis")
    if samples < 1 or depth_samples < 1:
        raise ValueError(f"samples and depth_samples must be >= 1, got {samples}, {depth_samples}")
    key = _key(
        cameras,
        gh,
        gw,
        float(d_min),
        float(d_max),
        ws_min.tolist(),
        ws_max.tolist(),
        samples,
        depth_samples,
    )
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]

    V, P = len(cameras), gh * gw
    mask = np.zeros((V * P, V * P), dtype=bool)
    for i in range(V):
        mask[i * P : (i + 1) * P, i * P : (i + 1) * P] = True  # same view: always allowed
    for i, ci in enumerate(cameras):
        pts, src = _cone_samples(ci, (gh, gw), d_min, d_max, ws_min, ws_max, samples, depth_samples)
        if len(pts) == 0:
            continue  # this camera sees none of the workspace: no cross-view entries
        for j, cj in enumerate(cameras):
            if j == i:
                continue
            uv, depth = cj.project(pts)
            ok = (depth >= d_min) & (depth <= d_max)
            ok &= (uv[:, 0] >= 0) & (uv[:, 0] < cj.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cj.height)
            qx = np.floor(uv[ok, 0] / (cj.width / gw)).astype(np.int64)
            qy = np.floor(uv[ok, 1] / (cj.height / gh)).astype(np.int64)
            mask[i * P + src[ok], j * P + qy * gw + qx] = True
    mask |= mask.T  # symmetrise: cones overlap both ways
    mask.setflags(write=False)
    _CACHE[key] = mask
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return mask


def view_overlap(patch_mask: np.ndarray, num_views: int) -> np.ndarray:
    """Density of each (view i, view j) block of a patch mask, ``(V, V)`` in [0, 1]."""
    n = patch_mask.shape[-1]
    if n % num_views:
        raise ValueError(f"mask of {n} patches does not split into {num_views} views")
    P = n // num_views
    return (
        np.asarray(patch_mask, dtype=np.float64)
        .reshape(num_views, P, num_views, P)
        .mean(axis=(1, 3))
    )


def build_attention_mask(
    view_patch_mask: np.ndarray | torch.Tensor,
    frames: int,
    grid: tuple[int, int],
    block_size: int | None = None,
    device: str | torch.device = "cpu",
    backend: str = "auto",
) -> ViewMask:
    """Lift a patch mask ``(P, P)`` (or per sample ``(B, P, P)``) to video-tower tokens.

    ``view_patch_mask`` rows/cols are ``(view, y, x)`` row-major as from :func:`sight_cone_mask`;
    ``grid`` = (gh, gw). Tokens are ``(view, patch in Z-order, frame)``; every frame of patch p
    may attend to every frame of an allowed patch q, so the token mask is
    ``patch_mask ⊗ ones(frames, frames)``. Returns a :class:`ViewMask` with the dense bool mask
    (``(N, N)`` or ``(B, 1, N, N)``) and the equivalent flex_attention ``BlockMask``.
    ``block_size`` defaults to :data:`BLOCK_SIZE` on CPU and :data:`BLOCK_SIZE_CUDA` on CUDA.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    if block_size is None:
        block_size = BLOCK_SIZE_CUDA if torch.device(device).type == "cuda" else BLOCK_SIZE
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    pm = torch.as_tensor(np.array(view_patch_mask, dtype=bool), device=device)
    if pm.ndim not in (2, 3) or pm.shape[-1] != pm.shape[-2]:
        raise ValueError(f"view_patch_mask must be (P, P) or (B, P, P), got {tuple(pm.shape)}")
    gh, gw = (int(g) for g in grid)
    per_view = gh * gw
    if per_view <= 0 or pm.shape[-1] % per_view:
        raise ValueError(f"mask of {pm.shape[-1]} patches does not split into views of {gh}x{gw}")
    order = patch_order(gh, gw).to(pm.device)
    order = torch.cat([order + v * per_view for v in range(pm.shape[-1] // per_view)])
    pm = pm[..., order, :][..., order]  # patches of each view in Z-order
    n = pm.shape[-1] * frames
    dense = pm.repeat_interleave(frames, dim=-1).repeat_interleave(frames, dim=-2)  # (.., N, N)
    if pm.ndim == 2:

        def mask_mod(b, h, q_idx, kv_idx):
            return pm[q_idx // frames, kv_idx // frames]

        batch = None
    else:

        def mask_mod(b, h, q_idx, kv_idx):
            return pm[b, q_idx // frames, kv_idx // frames]

        batch = pm.shape[0]
        dense = dense[:, None]  # (B, 1, N, N): broadcast over heads
    block_mask = create_block_mask(
        mask_mod, batch, None, n, n, device=str(device), BLOCK_SIZE=block_size
    )
    return ViewMask(dense=dense, block_mask=block_mask, frames=frames, backend=backend)


def block_density(mask: ViewMask) -> float:
    """Fraction of (query block, key block) pairs flex_attention has to visit."""
    bm = mask.block_mask
    visited = bm.kv_num_blocks.sum() + (
        bm.full_kv_num_blocks.sum() if bm.full_kv_num_blocks is not None else 0
    )
    q_blocks, kv_blocks = bm.kv_indices.shape[-2:]
    return float(visited) / (bm.kv_num_blocks.shape[0] * q_blocks * kv_blocks)
