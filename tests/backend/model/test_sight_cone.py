"""Sight-cone mask: geometry properties, token lifting, and flex == dense attention."""

import dataclasses

import numpy as np
import pytest
import torch

from backend.model.attention import attention, patch_order
from backend.model.denoiser import DENOISER_PRESETS, WorldActionDenoiser, i2v_condition
from backend.model.sight_cone import (
    block_density,
    build_attention_mask,
    look_at_camera,
    sight_cone_mask,
    view_overlap,
)
from robot.sim.scene import CAMERA_RIG

# The sim's fixed rig: position, look-at point, vertical fov per camera.
RIG = CAMERA_RIG
WS_MIN, WS_MAX = (-0.22, -0.22, 0.0), (0.22, 0.22, 0.30)
D_MIN, D_MAX = 0.05, 2.0


def rig(res: int = 64, extra=()):
    cams = [look_at_camera(n, p, t, f, res, res) for n, (p, t, f) in RIG.items()]
    return cams + [look_at_camera(*e, res, res) for e in extra]


def blocks(mask: np.ndarray, v: int, P: int):
    return [[mask[i * P : (i + 1) * P, j * P : (j + 1) * P] for j in range(v)] for i in range(v)]


@pytest.mark.parametrize("res", [64, 128])
def test_rig_mask_properties(res):
    g = res // 16
    mask = sight_cone_mask(rig(res), (g, g), D_MIN, D_MAX, WS_MIN, WS_MAX)
    P = g * g
    assert mask.shape == (3 * P, 3 * P) and mask.dtype == bool
    assert np.array_equal(mask, mask.T)  # symmetric
    b = blocks(mask, 3, P)
    for i in range(3):
        assert b[i][i].all()  # same-view blocks full
        for j in range(3):
            if i != j:  # the rig's views overlap partly: some but not all cross pairs
                assert 0 < b[i][j].mean() < 1
    density = mask.mean()
    print(f"rig {res}px grid {g}x{g}: sight-cone density {density:.3f}")
    assert 1 / 3 < density < 1
    ov = view_overlap(mask, 3)
    assert np.allclose(np.diag(ov), 1) and np.allclose(ov, ov.T)


def test_camera_looking_away_gets_no_cross_view_entries():
    away = ("away", (0.46, 0.0, 0.50), (2.0, 0.3, 0.9), 42.0)  # faces away from the table
    mask = sight_cone_mask(rig(64, [away]), (4, 4), D_MIN, D_MAX, WS_MIN, WS_MAX)
    P = 16
    rows = mask[3 * P :, : 3 * P]
    cols = mask[: 3 * P, 3 * P :]
    assert not rows.any() and not cols.any()
    assert mask[3 * P :, 3 * P :].all()  # it still attends within its own view
    assert mask[: 3 * P, : 3 * P].sum() > 3 * P * P  # the others still see each other


def test_sim_cameras():
    """The real simulator's calibrations give the same mask as the rig rebuilt above."""
    env_mod = pytest.importorskip("robot.sim.env")
    env = env_mod.SimEnv("pick_place_bin", resolution=64)
    try:
        cams = [env.cameras[n] for n in ("front", "left", "right")]
        ws_min, ws_max = env.workspace_min, env.workspace_max
    finally:
        env.close()
    sim = sight_cone_mask(cams, (4, 4), D_MIN, D_MAX, ws_min, ws_max)
    ours = sight_cone_mask(rig(64), (4, 4), D_MIN, D_MAX, ws_min, ws_max)
    assert np.array_equal(sim, sim.T) and sim.mean() < 1
    assert (sim != ours).mean() < 0.01
    print(f"sim cameras 64px: sight-cone density {sim.mean():.3f}")


def test_cache_per_calibration():
    cams = rig(64)
    a = sight_cone_mask(cams, (4, 4), D_MIN, D_MAX, WS_MIN, WS_MAX)
    assert sight_cone_mask(cams, (4, 4), D_MIN, D_MAX, WS_MIN, WS_MAX) is a
    T = cams[0].T_world_cam.copy()
    T[0, 3] += 0.01  # a 1 cm camera jitter is a new calibration
    jittered = [dataclasses.replace(cams[0], T_world_cam=T), *cams[1:]]
    assert sight_cone_mask(jittered, (4, 4), D_MIN, D_MAX, WS_MIN, WS_MAX) is not a
    with pytest.raises(ValueError):
        a[0, 0] = False  # read-only: the cached array cannot be corrupted by a caller


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_min"):
        sight_cone_mask(rig(), (4, 4), 2.0, 1.0, WS_MIN, WS_MAX)
    with pytest.raises(ValueError, match="workspace_max"):
        sight_cone_mask(rig(), (4, 4), D_MIN, D_MAX, WS_MAX, WS_MIN)
    with pytest.raises(ValueError, match="at least one camera"):
        sight_cone_mask([], (4, 4), D_MIN, D_MAX, WS_MIN, WS_MAX)
    with pytest.raises(ValueError, match="does not split"):
        build_attention_mask(np.ones((10, 10), bool), 2, (2, 2))


def test_token_mask_layout():
    """Token (view, Z-ordered patch, frame) i may attend to j iff their patches may."""
    g, F = 4, 3
    mask = sight_cone_mask(rig(64), (g, g), D_MIN, D_MAX, WS_MIN, WS_MAX)
    vm = build_attention_mask(mask, F, (g, g), block_size=16)
    order = torch.cat([patch_order(g, g) + v * g * g for v in range(3)]).numpy()
    tok_patch = order[np.arange(vm.num_tokens) // F]
    assert np.array_equal(vm.dense.numpy(), mask[np.ix_(tok_patch, tok_patch)])
    assert vm.density == pytest.approx(mask.mean())
    assert block_density(vm) >= vm.density - 1e-9
    batched = build_attention_mask(np.stack([mask, np.ones_like(mask)]), F, (g, g), block_size=16)
    assert batched.dense.shape == (2, 1, vm.num_tokens, vm.num_tokens)


@pytest.mark.slow  # compiling flex_attention for CPU takes 5-20 s
def test_flex_equals_dense():
    """The compiled flex_attention path gives the dense masked SDPA result within 1e-5."""
    g, F = 4, 3
    mask = sight_cone_mask(rig(64), (g, g), D_MIN, D_MAX, WS_MIN, WS_MAX)
    vm = build_attention_mask(mask, F, (g, g), block_size=16)
    cfg = dataclasses.replace(DENOISER_PRESETS["tiny"], num_layers=2)
    torch.manual_seed(0)
    net = WorldActionDenoiser(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():  # trained-like weights: heads and embeddings non-zero
            p.normal_(0, 0.5 / max(p.shape[-1], 1) ** 0.5)
    B = 2
    video = torch.randn(B, 3, cfg.out_channels, F, 2 * g, 2 * g)
    cond = i2v_condition(torch.randn(B, 3, cfg.out_channels, 1, 2 * g, 2 * g), F)
    args = (
        video,
        torch.randn(B, 16, 8),
        torch.rand(B),
        torch.rand(B),
        torch.randn(B, 5, cfg.text_dim),
        None,
        torch.randn(B, 7),
    )
    with torch.no_grad():
        q, k, v = (
            torch.randn(B, cfg.num_attention_heads, vm.num_tokens, cfg.attention_head_dim)
            for _ in range(3)
        )
        a_flex = attention(q, k, v, vm.with_backend("flex"))
        a_dense = attention(q, k, v, vm.with_backend("dense"))
        assert (a_flex - a_dense).abs().max() < 1e-5
        assert (a_dense - attention(q, k, v)).abs().max() > 1e-3  # the mask does something
        v_flex, act_flex = net(*args, cond=cond, view_mask=vm.with_backend("flex"))
        v_dense, act_dense = net(*args, cond=cond, view_mask=vm.with_backend("dense"))
    assert (v_flex - v_dense).abs().max() < 1e-5
    assert (act_flex - act_dense).abs().max() < 1e-5
    assert v_dense.abs().max() > 0.1
