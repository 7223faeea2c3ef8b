"""Camera sight cones as pictures: frustums, open3d cone meshes, view overlap, token mask.

The geometry is the one the model's attention uses (`backend.model.sight_cone`): a camera sees
the space its image footprint back-projects to over depths [d_min, d_max] (z-depth along the
optical axis, OpenCV convention), clipped to the workspace box. That region is the
intersection of two convex hexahedra, the truncated frustum and the box, so it is built
exactly: the vertices of either solid inside the other plus every edge/face crossing, and
open3d's convex hull (qhull) turns that point set into a closed triangle mesh.

The overlap numbers come from `sight_cone_mask` itself, so the matrix shown is the mask the
model attends with, never a second estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

import numpy as np
import plotly.graph_objects as go

from backend.model.presets import ModelConfig
from backend.model.sight_cone import sight_cone_mask, view_overlap
from robot.types import CameraCalib

_CONFIG = {f.name: f.default for f in fields(ModelConfig)}
# The shipped model's cone parameters, so pictures default to what the model attends with.
D_MIN: float = _CONFIG["cone_d_min"]
D_MAX: float = _CONFIG["cone_d_max"]
WORKSPACE_MIN: tuple[float, float, float] = _CONFIG["workspace_min"]
WORKSPACE_MAX: tuple[float, float, float] = _CONFIG["workspace_max"]

# One colour per camera, in the order of the cameras mapping; Rerun and plotly share it.
CAMERA_COLOURS: tuple[str, ...] = ("#e4572e", "#2e86ab", "#3bb273", "#9b5de5", "#f3a712", "#6c757d")

# Hexahedron topology shared by the frustum and the box. Corners 0-3 are one quad (near plane /
# z-min face), 4-7 the opposite quad, both in the same winding, so corner i+4 is across from i.
_EDGES = np.array(
    [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
)
_FACES = np.array(
    [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
)
_EPS = 1e-9


def camera_colour(index: int) -> str:
    """Hex colour of the index-th camera (cycles past the palette)."""
    return CAMERA_COLOURS[index % len(CAMERA_COLOURS)]


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _image_corners(camera: CameraCalib) -> np.ndarray:
    """Pixel corners of the image, (4, 2), clockwise from top-left in image coordinates."""
    w, h = float(camera.width), float(camera.height)
    return np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]])


def frustum_corners(camera: CameraCalib, d_near: float, d_far: float) -> np.ndarray:
    """World corners (8, 3) of the image pyramid between z-depths d_near and d_far."""
    uv = np.vstack([_image_corners(camera)] * 2)  # (8, 2)
    depth = np.repeat([float(d_near), float(d_far)], 4)
    return camera.unproject(uv, depth)


def box_corners(workspace_min: Sequence[float], workspace_max: Sequence[float]) -> np.ndarray:
    """Corners (8, 3) of an axis-aligned box in the hexahedron order used here."""
    lo, hi = _box(workspace_min, workspace_max)
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    return np.array(
        [
            [x0, y0, z0],
            [x1, y0, z0],
            [x1, y1, z0],
            [x0, y1, z0],
            [x0, y0, z1],
            [x1, y0, z1],
            [x1, y1, z1],
            [x0, y1, z1],
        ]
    )


def box_segments(workspace_min: Sequence[float], workspace_max: Sequence[float]) -> np.ndarray:
    """The 12 edges of the workspace box as segments, (12, 2, 3)."""
    return box_corners(workspace_min, workspace_max)[_EDGES]


def _box(
    workspace_min: Sequence[float], workspace_max: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(workspace_min, dtype=np.float64).reshape(3)
    hi = np.asarray(workspace_max, dtype=np.float64).reshape(3)
    if np.any(hi <= lo):
        raise ValueError(f"workspace_max {hi} must exceed workspace_min {lo} on every axis")
    return lo, hi


def _check_depths(d_min: float, d_max: float) -> None:
    if not 0 <= d_min < d_max:
        raise ValueError(f"need 0 <= d_min < d_max, got d_min={d_min}, d_max={d_max}")


def camera_frustum_lines(camera: CameraCalib, depth: float) -> np.ndarray:
    """Frustum wireframe to z-depth ``depth`` in world coordinates, (8, 2, 3) segments.

    Four rays from the camera centre to the image corners at ``depth`` and the four edges of
    that far rectangle, the way a pinhole is drawn in Rerun.
    """
    if not depth > 0:
        raise ValueError(f"frustum depth must be > 0, got {depth}")
    far = frustum_corners(camera, depth, depth)[:4]  # (4, 3)
    rays = np.stack([np.broadcast_to(camera.center, (4, 3)), far], axis=1)  # (4, 2, 3)
    rim = np.stack([far, np.roll(far, -1, axis=0)], axis=1)  # (4, 2, 3)
    return np.concatenate([rays, rim])


def _planes(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inward unit normals (6, 3) and offsets (6,) of a convex hexahedron: n·p + d >= 0 inside."""
    centroid = corners.mean(axis=0)
    normals, offsets = [], []
    for f in _FACES:
        a, b, c, d = corners[f]
        n = np.cross(c - a, d - b)  # diagonals: robust even if a face is slightly non-planar
        n /= np.linalg.norm(n)
        off = -float(n @ corners[f].mean(axis=0))
        if n @ centroid + off < 0:
            n, off = -n, -off
        normals.append(n)
        offsets.append(off)
    return np.array(normals), np.array(offsets)


def _inside(points: np.ndarray, normals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.all(points @ normals.T + offsets >= -1e-7, axis=1)


def _edge_crossings(corners: np.ndarray, normals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Points where the hexahedron's edges cross the other solid's face planes, (K, 3)."""
    a, b = corners[_EDGES[:, 0]], corners[_EDGES[:, 1]]  # (12, 3)
    sa = a @ normals.T + offsets  # (12, 6) signed distances
    sb = b @ normals.T + offsets
    cross = (sa * sb) < 0
    t = np.where(cross, sa / np.where(cross, sa - sb, 1.0), 0.0)  # (12, 6)
    pts = a[:, None] + t[..., None] * (b - a)[:, None]  # (12, 6, 3)
    return pts[cross]


def cone_mesh(
    camera: CameraCalib,
    d_min: float = D_MIN,
    d_max: float = D_MAX,
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
) -> tuple[np.ndarray, np.ndarray]:
    """The camera's sight cone clipped to the workspace as a closed mesh.

    Returns ``vertices`` (N, 3) float64 (world, m) and ``triangles`` (M, 3) int64; both are
    empty when the camera sees none of the workspace within [d_min, d_max].
    """
    import open3d as o3d  # heavy import, only where meshes are built

    _check_depths(d_min, d_max)
    frustum = frustum_corners(camera, max(d_min, _EPS), d_max)
    box = box_corners(workspace_min, workspace_max)
    fn, fo = _planes(frustum)
    bn, bo = _planes(box)
    pts = np.concatenate(
        [
            frustum[_inside(frustum, bn, bo)],
            box[_inside(box, fn, fo)],
            _edge_crossings(frustum, bn, bo),
            _edge_crossings(box, fn, fo),
        ]
    )
    empty = np.zeros((0, 3), dtype=np.float64), np.zeros((0, 3), dtype=np.int64)
    if len(pts):
        pts = pts[_inside(pts, fn, fo) & _inside(pts, bn, bo)]  # crossings outside the other solid
    if len(pts) < 4:
        return empty
    centred = pts - pts.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-9) < 3:  # flat: the cone only grazes the box
        return empty
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    hull, _ = cloud.compute_convex_hull()
    vertices = np.asarray(hull.vertices, dtype=np.float64)
    triangles = np.asarray(hull.triangles, dtype=np.int64)
    return vertices, triangles


def frustum_depth(
    camera: CameraCalib,
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
    d_max: float = D_MAX,
) -> float:
    """A depth at which to draw a frustum: where it first reaches the workspace.

    The cone mesh shows the rest; a frustum drawn through the whole box would cross the table.
    Falls back to 0.1 m when the workspace is behind the camera.
    """
    _, depth = camera.project(box_corners(workspace_min, workspace_max))
    ahead = depth[depth > 0]
    return float(min(ahead.min(), d_max)) if len(ahead) else 0.1


def _segments_xyz(segments: np.ndarray) -> tuple[list, list, list]:
    """(S, 2, 3) segments -> plotly line coordinates with None breaks between segments."""
    xs, ys, zs = [], [], []
    for a, b in segments:
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
        zs += [a[2], b[2], None]
    return xs, ys, zs


def _scene_layout(title: str) -> dict:
    axis = {"showbackground": True, "backgroundcolor": "#f6f6f6", "gridcolor": "#d9d9d9"}
    return {
        "title": {"text": title, "x": 0.02, "xanchor": "left"},
        "scene": {
            "xaxis": {**axis, "title": {"text": "x (m)"}},
            "yaxis": {**axis, "title": {"text": "y (m)"}},
            "zaxis": {**axis, "title": {"text": "z (m)"}},
            "aspectmode": "data",  # one metre is one metre on every axis
            "camera": {"eye": {"x": 1.5, "y": -1.3, "z": 0.9}, "up": {"x": 0, "y": 0, "z": 1}},
        },
        "legend": {
            "x": 1.0,
            "y": 1.0,
            "xanchor": "right",
            "yanchor": "top",
            "bgcolor": "rgba(255,255,255,0.8)",
        },
        "margin": {"l": 0, "r": 0, "t": 40, "b": 0},
        "template": "plotly_white",
    }


def workspace_trace(workspace_min: Sequence[float], workspace_max: Sequence[float]) -> go.Scatter3d:
    """The workspace box as a grey wireframe trace."""
    xs, ys, zs = _segments_xyz(box_segments(workspace_min, workspace_max))
    return go.Scatter3d(
        x=xs,
        y=ys,
        z=zs,
        mode="lines",
        name="workspace",
        line={"color": "#555555", "width": 3},
        hoverinfo="name",
    )


def _check_cameras(cameras: Mapping[str, CameraCalib]) -> list[CameraCalib]:
    cams = list(cameras.values())
    if not cams:
        raise ValueError("no cameras given")
    for name, cam in cameras.items():
        if not isinstance(cam, CameraCalib):
            raise TypeError(f"camera {name!r}: expected a CameraCalib, got {type(cam).__name__}")
    return cams


def cones_figure(
    cameras: Mapping[str, CameraCalib],
    d_min: float = D_MIN,
    d_max: float = D_MAX,
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
) -> go.Figure:
    """Plotly 3D: camera centres, frustums, semi-transparent sight cones and the workspace box."""
    _check_cameras(cameras)
    fig = go.Figure()
    fig.add_trace(workspace_trace(workspace_min, workspace_max))
    for i, (name, cam) in enumerate(cameras.items()):
        colour = camera_colour(i)
        verts, tris = cone_mesh(cam, d_min, d_max, workspace_min, workspace_max)
        if len(tris):
            fig.add_trace(
                go.Mesh3d(
                    x=verts[:, 0],
                    y=verts[:, 1],
                    z=verts[:, 2],
                    i=tris[:, 0],
                    j=tris[:, 1],
                    k=tris[:, 2],
                    color=colour,
                    opacity=0.12,
                    flatshading=True,
                    name=f"{name} cone",
                    legendgroup=name,
                    showlegend=False,
                    hoverinfo="name",
                )
            )
            ex, ey, ez = _segments_xyz(_hull_edges(verts, tris))
            fig.add_trace(
                go.Scatter3d(
                    x=ex,
                    y=ey,
                    z=ez,
                    mode="lines",
                    name=f"{name} cone edges",
                    legendgroup=name,
                    showlegend=False,
                    line={"color": colour, "width": 2},
                    hoverinfo="name",
                )
            )
        depth = frustum_depth(cam, workspace_min, workspace_max, d_max)
        xs, ys, zs = _segments_xyz(camera_frustum_lines(cam, depth))
        sees = "" if len(tris) else " (sees no workspace)"
        fig.add_trace(
            go.Scatter3d(
                x=xs,
                y=ys,
                z=zs,
                mode="lines",
                name=f"{name}{sees}",
                legendgroup=name,
                line={"color": colour, "width": 4},
                hoverinfo="name",
            )
        )
        c = cam.center
        fig.add_trace(
            go.Scatter3d(
                x=[c[0]],
                y=[c[1]],
                z=[c[2]],
                mode="markers+text",
                text=[name],
                textposition="top center",
                marker={"size": 6, "color": colour, "symbol": "diamond"},
                legendgroup=name,
                showlegend=False,
                name=name,
                hovertemplate=f"{name}<br>centre %{{x:.3f}}, %{{y:.3f}}, %{{z:.3f}} m<extra></extra>",
            )
        )
    fig.update_layout(
        **_scene_layout(f"Sight cones: depth {d_min:g}–{d_max:g} m, clipped to the workspace")
    )
    return fig


def overlap_matrix(
    cameras: Mapping[str, CameraCalib],
    grid: tuple[int, int] = (4, 4),
    d_min: float = D_MIN,
    d_max: float = D_MAX,
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
) -> np.ndarray:
    """(V, V) fraction of patch pairs the sight-cone mask allows between each pair of views.

    ``grid`` = (gh, gw) patches per image, as in `sight_cone_mask`; the diagonal is 1 (same
    view always attends), the matrix is symmetric (the mask is).
    """
    cams = _check_cameras(cameras)
    mask = sight_cone_mask(cams, grid, d_min, d_max, workspace_min, workspace_max)
    return view_overlap(mask, len(cams))


def overlap_figure(matrix: np.ndarray, names: Sequence[str]) -> go.Figure:
    """Annotated heatmap of a (V, V) view-overlap matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    names = [str(n) for n in names]
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise ValueError(
            f"overlap matrix must be (V, V) with V = {len(names)} names, got {m.shape}"
        )
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=names,
            y=names,
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            text=[[f"{v:.2f}" for v in row] for row in m],
            texttemplate="%{text}",
            textfont={"size": 16},
            colorbar={"title": {"text": "allowed"}},
            hovertemplate="query %{y} → key %{x}: %{z:.3f} of patch pairs<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": "View overlap: share of patch pairs the sight-cone mask allows", "x": 0.02},
        xaxis={"title": {"text": "key view"}, "side": "bottom", "constrain": "domain"},
        yaxis={"title": {"text": "query view"}, "autorange": "reversed", "scaleanchor": "x"},
        template="plotly_white",
        margin={"l": 80, "r": 20, "t": 50, "b": 60},
    )
    return fig


# Larger masks are shown as block means: a browser heatmap of 7k x 7k cells is unreadable and slow.
MAX_HEATMAP_CELLS = 512


def token_mask_figure(mask: np.ndarray, camera_names: Sequence[str]) -> go.Figure:
    """The sight-cone attention mask the model uses (patch x patch or token x token) as a heatmap.

    Rows are queries, columns keys, both in the model's token order (view-major); thin lines
    separate the views. Masks wider than ``MAX_HEATMAP_CELLS`` are shown as the mean of square
    blocks (the title says so), so the picture stays a picture.
    """
    m = np.asarray(mask)
    if m.ndim == 4 and m.shape[:2] == (1, 1):
        m = m[0, 0]  # (B, 1, N, N) dense mask of one sample
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"mask must be square (N, N), got {m.shape}")
    names = [str(n) for n in camera_names]
    n, views = m.shape[0], len(names)
    if views == 0 or n % views:
        raise ValueError(f"a mask of {n} tokens does not split into {views} views")
    m = m.astype(bool)
    density = float(m.mean())
    per_view = n // views
    block = 1
    while n // block > MAX_HEATMAP_CELLS or per_view % block:
        block += 1
        if block > per_view:  # no block size divides the views evenly: subsample instead
            block = 0
            break
    if block == 0:
        step = -(-n // MAX_HEATMAP_CELLS)
        shown, scale = m[::step, ::step].astype(np.float64), step
        how = f"every {step}th token shown"
    elif block > 1:
        nb = n // block
        shown = m.reshape(nb, block, nb, block).mean(axis=(1, 3))  # (nb, nb) block densities
        scale, how = block, f"mean over {block}×{block} blocks"
    else:
        shown, scale, how = m.astype(np.float64), 1, ""
    size = shown.shape[0]
    centres = [(v + 0.5) * per_view / scale - 0.5 for v in range(views)]
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            zmin=0.0,
            zmax=1.0,
            colorscale=[[0.0, "#ffffff"], [1.0, "#1f3b73"]],
            colorbar={"title": {"text": "allowed"}},
            hovertemplate="query %{y}, key %{x}: %{z:.2f}<extra></extra>",
        )
    )
    for v in range(1, views):
        edge = v * per_view / scale - 0.5
        line = {"color": "#e4572e", "width": 2}
        fig.add_shape(type="line", x0=edge, x1=edge, y0=-0.5, y1=size - 0.5, line=line)
        fig.add_shape(type="line", y0=edge, y1=edge, x0=-0.5, x1=size - 0.5, line=line)
    detail = f"; {how}" if how else ""
    fig.update_layout(
        title={
            "text": f"Sight-cone mask, {n}×{n} tokens: density {density:.1%}{detail}",
            "x": 0.02,
        },
        xaxis={
            "title": {"text": "key (view)"},
            "tickvals": centres,
            "ticktext": names,
            "range": [-0.5, size - 0.5],
            "constrain": "domain",
            "showgrid": False,
        },
        yaxis={
            "title": {"text": "query (view)"},
            "tickvals": centres,
            "ticktext": names,
            "range": [size - 0.5, -0.5],
            "scaleanchor": "x",
            "showgrid": False,
        },
        template="plotly_white",
        margin={"l": 90, "r": 20, "t": 50, "b": 60},
    )
    return fig


def log_cones(
    cameras: Mapping[str, CameraCalib],
    d_min: float = D_MIN,
    d_max: float = D_MAX,
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
    recording=None,
) -> None:
    """Log each camera's sight cone as static Rerun geometry under ``/world/cones/<cam>``.

    The entity holds a semi-transparent ``Mesh3D`` (the cone clipped to the workspace) and a
    ``LineStrips3D`` of the hull's silhouette edges so the cone reads even where the viewer
    draws meshes opaque. A camera that sees no workspace logs nothing.
    """
    import rerun as rr

    _check_cameras(cameras)
    for i, (name, cam) in enumerate(cameras.items()):
        verts, tris = cone_mesh(cam, d_min, d_max, workspace_min, workspace_max)
        if not len(tris):
            continue
        r, g, b = hex_to_rgb(camera_colour(i))
        rr.log(
            f"world/cones/{name}",
            rr.Mesh3D(vertex_positions=verts, triangle_indices=tris, albedo_factor=[r, g, b, 60]),
            rr.LineStrips3D(_hull_edges(verts, tris), colors=[r, g, b, 255], radii=0.0015),
            static=True,
            recording=recording,
        )


def _hull_edges(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Edges of a convex hull between faces that are not coplanar (the polyhedron's real edges)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-15
    faces_of: dict[tuple[int, int], list[int]] = {}
    for f, tri in enumerate(triangles):
        for u, v in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            faces_of.setdefault((min(u, v), max(u, v)), []).append(f)
    edges = [
        (u, v)
        for (u, v), fs in faces_of.items()
        if len(fs) != 2 or float(normals[fs[0]] @ normals[fs[1]]) < 1 - 1e-6
    ]
    return vertices[np.array(edges, dtype=np.int64).reshape(-1, 2)]  # (E, 2, 3)
