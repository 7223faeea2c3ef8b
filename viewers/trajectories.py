"""End-effector paths in 3D (plotly): imagined vs executed vs ground truth, per event.

Each event gets one colour; each kind of path one line style (imagined dashed, executed
solid, ground truth dotted), so "where did execution diverge from imagination" is a matter
of comparing two lines of the same colour. The gripper is drawn on the path: steps where it
is closed (``gripper > GRIPPER_CLOSED``) carry large markers, open steps small ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from robot.types import ACTION_DIM

# Event colours: plotly's qualitative "Dark2"-like set, distinct from the camera colours.
EVENT_COLOURS: tuple[str, ...] = (
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
)
KINDS: tuple[str, ...] = ("imagined", "executed", "ground_truth")
KIND_DASH = {"imagined": "dash", "executed": "solid", "ground_truth": "dot"}
KIND_LABEL = {"imagined": "imagined", "executed": "executed", "ground_truth": "ground truth"}
# Gripper: commands are 0 (open) or 1 (closed); the measured closure stops near 0.5 when the
# fingers hold a 4 cm block, so a midpoint threshold would call a grasp open.
GRIPPER_CLOSED = 0.25
MARKER_OPEN, MARKER_CLOSED = 3.0, 10.0
MIN_EXTENT = 0.1  # m: an axis spans at least this much, so a vertical press is not a needle


def event_colour(index: int) -> str:
    return EVENT_COLOURS[index % len(EVENT_COLOURS)]


def check_path(path: np.ndarray, what: str) -> np.ndarray:
    """A finite (N >= 1, 7) ee_pose_abs path as float64, or a ValueError that names ``what``."""
    p = np.asarray(path, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != ACTION_DIM or p.shape[0] == 0:
        raise ValueError(
            f"{what}: expected an (N, {ACTION_DIM}) ee_pose_abs array, got shape {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{what}: contains non-finite values")
    return p


def _hover(label: str, kind: str, p: np.ndarray) -> list[str]:
    state = np.where(p[:, 6] > GRIPPER_CLOSED, "closed", "open")
    return [
        f"{label} · {KIND_LABEL[kind]}<br>step {t}: {x:.3f}, {y:.3f}, {z:.3f} m<br>gripper {g:.2f} ({s})"
        for t, (x, y, z, g, s) in enumerate(zip(p[:, 0], p[:, 1], p[:, 2], p[:, 6], state))
    ]


def _equal_axes(xyz: np.ndarray) -> dict:
    """Axis ranges padded to at least MIN_EXTENT and an aspect ratio that keeps metres equal."""
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = (lo + hi) / 2
    half = np.maximum((hi - lo) * 1.1, MIN_EXTENT) / 2  # 10 % margin
    ratio = half / half.max()
    out: dict = {"aspectmode": "manual", "aspectratio": dict(zip("xyz", ratio.tolist()))}
    for axis, c, h in zip("xyz", centre, half):
        out[f"{axis}axis"] = {"title": {"text": f"{axis} (m)"}, "range": [c - h, c + h]}
    return out


def trajectory_figure(events: Sequence[dict]) -> go.Figure:
    """Plotly 3D figure of end-effector paths.

    ``events``: dicts with ``label`` (str) and any of ``imagined``, ``executed``,
    ``ground_truth`` as (N, 7) ee_pose_abs arrays (other keys are ignored). One legend group
    per event, one line per kind; a diamond marks each path's start and a cross its end.
    An empty list gives an empty figure with its axes and title.
    """
    fig = go.Figure()
    drawn = 0
    points = []  # (N, 3) blocks of every drawn position, for the axis ranges
    for e, event in enumerate(events):
        if not isinstance(event, dict) or "label" not in event:
            raise ValueError(f"event {e}: expected a dict with a 'label', got {event!r:.80}")
        label = str(event["label"])
        colour = event_colour(e)
        for kind in KINDS:
            if event.get(kind) is None:
                continue
            p = check_path(event[kind], f"event {e} ({label!r}) {kind}")
            closed = p[:, 6] > GRIPPER_CLOSED
            points.append(p[:, :3])
            fig.add_trace(
                go.Scatter3d(
                    x=p[:, 0],
                    y=p[:, 1],
                    z=p[:, 2],
                    mode="lines+markers",
                    name=KIND_LABEL[kind],
                    legendgroup=f"e{e}",
                    legendgrouptitle_text=label,
                    line={"color": colour, "width": 5, "dash": KIND_DASH[kind]},
                    marker={
                        "color": colour,
                        "size": np.where(closed, MARKER_CLOSED, MARKER_OPEN),
                        "line": {"width": 0},
                    },
                    hovertext=_hover(label, kind, p),
                    hoverinfo="text",
                )
            )
            ends = p[[0, -1]]
            fig.add_trace(
                go.Scatter3d(
                    x=ends[:, 0],
                    y=ends[:, 1],
                    z=ends[:, 2],
                    mode="markers",
                    name=f"{KIND_LABEL[kind]} start/end",
                    legendgroup=f"e{e}",
                    showlegend=False,
                    marker={
                        "color": colour,
                        "size": 6,
                        "symbol": ["diamond", "x"],
                        "line": {"color": "#222222", "width": 1},
                    },
                    hovertext=[
                        f"{label} · {KIND_LABEL[kind]} start",
                        f"{label} · {KIND_LABEL[kind]} end",
                    ],
                    hoverinfo="text",
                )
            )
            drawn += 1
    if drawn:
        # Legend-only key for the marker code (no data, so it does not affect the axes).
        fig.add_trace(
            go.Scatter3d(
                x=[None],
                y=[None],
                z=[None],
                mode="markers",
                name="large marker: gripper closed",
                marker={"color": "#444444", "size": MARKER_CLOSED},
                legendgroup="key",
                legendgrouptitle_text="markers",
            )
        )
        fig.add_trace(
            go.Scatter3d(
                x=[None],
                y=[None],
                z=[None],
                mode="markers",
                name="◆ start, ✕ end",
                marker={"color": "#444444", "size": 6, "symbol": "diamond"},
                legendgroup="key",
            )
        )
    scene = {
        "xaxis": {"title": {"text": "x (m)"}},
        "yaxis": {"title": {"text": "y (m)"}},
        "zaxis": {"title": {"text": "z (m)"}},
        "aspectmode": "data",
        "camera": {"eye": {"x": 1.4, "y": -1.4, "z": 0.9}, "up": {"x": 0, "y": 0, "z": 1}},
    }
    if points:
        scene.update(_equal_axes(np.concatenate(points)))
    title = "End-effector paths: imagined (dashed), executed (solid), ground truth (dotted)"
    fig.update_layout(
        title={"text": title if drawn else "End-effector paths: no events yet", "x": 0.02},
        scene=scene,
        legend={"groupclick": "toggleitem", "bgcolor": "rgba(255,255,255,0.8)"},
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        template="plotly_white",
    )
    return fig
