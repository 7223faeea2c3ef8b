"""Sight-cone geometry and figures on the simulator's calibrated cameras."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import plotly.graph_objects as go
import pytest

from backend.model.sight_cone import build_attention_mask, sight_cone_mask
from viewers.cones import (
    D_MAX,
    D_MIN,
    WORKSPACE_MAX,
    WORKSPACE_MIN,
    camera_frustum_lines,
    cone_mesh,
    cones_figure,
    frustum_depth,
    overlap_figure,
    overlap_matrix,
    token_mask_figure,
)

LO, HI = np.array(WORKSPACE_MIN), np.array(WORKSPACE_MAX)


def _in_cone(cam, pts: np.ndarray, d_min: float = D_MIN, d_max: float = D_MAX) -> np.ndarray:
    uv, depth = cam.project(pts)
    return (
        (depth >= d_min) & (depth <= d_max)
        & (uv[:, 0] >= 0) & (uv[:, 0] <= cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= cam.height)
    )  # fmt: skip


def test_frustum_lines_reach_the_image_corners(episode):
    for cam in episode.cameras.values():
        seg = camera_frustum_lines(cam, 0.4)
        assert seg.shape == (8, 2, 3)
        np.testing.assert_allclose(
            seg[:4, 0], np.broadcast_to(cam.center, (4, 3))
        )  # rays start at the centre
        uv, depth = cam.project(seg[:4, 1])
        np.testing.assert_allclose(depth, 0.4, atol=1e-9)
        np.testing.assert_allclose(
            uv, [[0, 0], [cam.width, 0], [cam.width, cam.height], [0, cam.height]], atol=1e-6
        )
        np.testing.assert_allclose(seg[4:, 0], seg[:4, 1])  # the far rectangle joins the ray ends
    with pytest.raises(ValueError, match="depth"):
        camera_frustum_lines(cam, 0.0)


def test_cone_mesh_is_the_cone_clipped_to_the_workspace(episode):
    """Closed, inside both solids, and its volume equals a Monte-Carlo estimate of cone ∩ box."""
    rng = np.random.default_rng(0)
    samples = rng.uniform(LO, HI, size=(200_000, 3))
    box_volume = float(np.prod(HI - LO))
    for name, cam in episode.cameras.items():
        verts, tris = cone_mesh(cam)
        assert (
            verts.ndim == 2
            and verts.shape[1] == 3
            and tris.shape[1] == 3
            and tris.dtype == np.int64
        )
        assert np.all(verts >= LO - 1e-9) and np.all(verts <= HI + 1e-9), name
        uv, depth = cam.project(verts)
        assert (
            np.all(uv >= -1e-6)
            and np.all(uv[:, 0] <= cam.width + 1e-6)
            and np.all(uv[:, 1] <= cam.height + 1e-6)
        )
        assert np.all((depth >= D_MIN - 1e-9) & (depth <= D_MAX + 1e-9))
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(tris.astype(np.int32))
        )
        assert mesh.is_watertight(), name
        expected = _in_cone(cam, samples).mean() * box_volume
        assert mesh.get_volume() == pytest.approx(expected, rel=0.02), name
        assert 0 < mesh.get_volume() < box_volume


def test_cone_mesh_respects_the_depth_range(episode):
    cam = episode.cameras["front"]
    d_near = float(np.min(cam.project(np.array([LO, HI]))[1]))  # inside the workspace's depth span
    verts, _ = cone_mesh(cam, d_min=d_near + 0.1, d_max=d_near + 0.2)
    depth = cam.project(verts)[1]
    assert depth.min() >= d_near + 0.1 - 1e-9 and depth.max() <= d_near + 0.2 + 1e-9
    with pytest.raises(ValueError, match="d_min"):
        cone_mesh(cam, d_min=0.5, d_max=0.4)
    with pytest.raises(ValueError, match="workspace_max"):
        cone_mesh(cam, workspace_min=HI, workspace_max=LO)


def test_camera_looking_away_has_no_cone(away_camera):
    verts, tris = cone_mesh(away_camera)
    assert verts.shape == (0, 3) and tris.shape == (0, 3)


def test_overlap_matrix_matches_the_model_mask(episode):
    cams = episode.cameras
    m = overlap_matrix(cams, grid=(4, 4))
    assert m.shape == (3, 3)
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(np.diag(m), 1.0)
    mask = sight_cone_mask(list(cams.values()), (4, 4), D_MIN, D_MAX, WORKSPACE_MIN, WORKSPACE_MAX)
    for i in range(3):
        for j in range(3):
            block = mask[i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16]
            assert m[i, j] == pytest.approx(block.mean())
    off = m[~np.eye(3, dtype=bool)]
    assert np.all((off > 0) & (off < 1))  # the rig's views overlap partly


def test_camera_looking_away_gives_zero_overlap(episode, away_camera):
    cams = {**episode.cameras, "away": away_camera}
    m = overlap_matrix(cams)
    assert m[3, 3] == 1.0
    np.testing.assert_array_equal(m[3, :3], 0.0)
    np.testing.assert_array_equal(m[:3, 3], 0.0)
    np.testing.assert_allclose(m[:3, :3], overlap_matrix(episode.cameras))  # the others unchanged


def test_overlap_figure(episode):
    names = list(episode.cameras)
    m = overlap_matrix(episode.cameras)
    fig = overlap_figure(m, names)
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    np.testing.assert_array_equal(np.asarray(heat.z), m)
    assert list(heat.x) == names and list(heat.y) == names
    assert heat.zmin == 0 and heat.zmax == 1
    assert np.asarray(heat.text)[0, 1] == f"{m[0, 1]:.2f}"
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="V = 2"):
        overlap_figure(m, names[:2])


def test_token_mask_figure_on_the_models_token_mask(episode):
    names = list(episode.cameras)
    pm = sight_cone_mask(
        list(episode.cameras.values()), (4, 4), D_MIN, D_MAX, WORKSPACE_MIN, WORKSPACE_MAX
    )
    tokens = build_attention_mask(pm, frames=5, grid=(4, 4)).dense.numpy()  # (240, 240)
    fig = token_mask_figure(tokens, names)
    (heat,) = fig.data
    np.testing.assert_array_equal(
        np.asarray(heat.z), tokens.astype(float)
    )  # small: shown cell for cell
    assert f"{tokens.mean():.1%}" in fig.layout.title.text
    assert len(fig.layout.shapes) == 2 * (len(names) - 1)  # view separators, both axes
    assert list(fig.layout.xaxis.ticktext) == names and list(fig.layout.yaxis.ticktext) == names


def test_token_mask_figure_shrinks_large_masks_to_block_means(episode):
    pm = sight_cone_mask(
        list(episode.cameras.values()), (4, 4), D_MIN, D_MAX, WORKSPACE_MIN, WORKSPACE_MAX
    )
    big = np.kron(pm, np.ones((20, 20), dtype=bool))  # (960, 960)
    fig = token_mask_figure(big, list(episode.cameras))
    z = np.asarray(fig.data[0].z)
    assert z.shape[0] <= 512 and z.shape[0] == z.shape[1]
    assert z.mean() == pytest.approx(big.mean())
    assert "blocks" in fig.layout.title.text


def test_token_mask_figure_bad_input():
    with pytest.raises(ValueError, match="square"):
        token_mask_figure(np.ones((4, 6), dtype=bool), ["a", "b"])
    with pytest.raises(ValueError, match="split"):
        token_mask_figure(np.ones((5, 5), dtype=bool), ["a", "b"])


def test_cones_figure(episode, away_camera):
    cams = {**episode.cameras, "away": away_camera}
    fig = cones_figure(cams)
    meshes = [t for t in fig.data if isinstance(t, go.Mesh3d)]
    assert [t.name for t in meshes] == ["front cone", "left cone", "right cone"]  # none for 'away'
    for t in meshes:
        xyz = np.c_[t.x, t.y, t.z]
        assert np.all(xyz >= LO - 1e-9) and np.all(xyz <= HI + 1e-9)
        assert 0 < t.opacity < 1
    legend = {t.name for t in fig.data if t.showlegend is not False}
    assert {"workspace", "front", "left", "right", "away (sees no workspace)"} <= legend
    centres = [t for t in fig.data if isinstance(t, go.Scatter3d) and t.mode == "markers+text"]
    assert [t.text[0] for t in centres] == list(cams)
    assert fig.layout.scene.aspectmode == "data"
    assert fig.layout.scene.xaxis.title.text == "x (m)"


def test_frustum_depth_reaches_the_workspace(episode, away_camera):
    for cam in episode.cameras.values():
        d = frustum_depth(cam)
        far = cam.unproject(np.array([[cam.width / 2, cam.height / 2]]), np.array([d]))[0]
        assert D_MIN < d < D_MAX and np.all(
            far >= LO - 0.05
        )  # the frustum ends at the box, not past it
    assert frustum_depth(away_camera) == 0.1
