"""Trajectory figures on real expert paths."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from viewers.trajectories import (
    GRIPPER_CLOSED,
    KIND_DASH,
    MARKER_CLOSED,
    MARKER_OPEN,
    event_colour,
    trajectory_figure,
)


def _events(ep, n: int = 5) -> list[dict]:
    return [
        {
            "label": f"e{k}: {e.action}",
            "ground_truth": ep.actions[e.start : e.end],
            "executed": ep.states[e.start : min(e.end + 1, ep.length)],
        }
        for k, e in enumerate(ep.events[:n])
    ]


def _paths(fig: go.Figure) -> list[go.Scatter3d]:
    return [t for t in fig.data if t.mode == "lines+markers"]


def test_one_line_per_event_and_kind(pick_episode):
    events = _events(pick_episode)
    events[1]["imagined"] = events[1]["ground_truth"] + np.r_[0.01, 0, 0, 0, 0, 0, 0]
    fig = trajectory_figure(events)
    paths = _paths(fig)
    assert len(paths) == 2 * len(events) + 1
    for t in paths:
        k = int(t.legendgroup[1:])
        kind = t.name.replace(" ", "_")
        p = np.asarray(events[k][kind])
        np.testing.assert_allclose(np.c_[t.x, t.y, t.z], p[:, :3])
        assert t.line.color == event_colour(k) and t.line.dash == KIND_DASH[kind]
        assert t.legendgrouptitle.text == events[k]["label"]
    # Each path has its start/end markers; a legend key explains the marker code.
    ends = [t for t in fig.data if t.name and t.name.endswith("start/end")]
    assert len(ends) == len(paths)
    assert any(t.name == "large marker: gripper closed" for t in fig.data)


def test_gripper_state_is_on_the_path(pick_episode):
    events = _events(pick_episode, n=len(pick_episode.events))
    fig = trajectory_figure(events)
    sizes = []
    for t in _paths(fig):
        p = np.asarray(events[int(t.legendgroup[1:])][t.name.replace(" ", "_")])
        size = np.asarray(t.marker.size)
        np.testing.assert_array_equal(
            size, np.where(p[:, 6] > GRIPPER_CLOSED, MARKER_CLOSED, MARKER_OPEN)
        )
        sizes.append(size)
    sizes = np.concatenate(sizes)
    # The expert grasps and releases: both states appear, on commands and on measured states.
    assert (sizes == MARKER_CLOSED).any() and (sizes == MARKER_OPEN).any()
    held = [
        t
        for t in _paths(fig)
        if t.name == "executed" and (np.asarray(t.marker.size) == MARKER_CLOSED).any()
    ]
    assert held, "the measured gripper closure while holding the block counts as closed"


def test_axes_are_equal_metres_and_contain_every_path(pick_episode):
    events = _events(pick_episode, n=len(pick_episode.events))
    fig = trajectory_figure(events)
    scene = fig.layout.scene
    xyz = np.concatenate([np.c_[t.x, t.y, t.z] for t in _paths(fig)])
    ranges = np.array([scene.xaxis.range, scene.yaxis.range, scene.zaxis.range])
    assert np.all(xyz >= ranges[:, 0]) and np.all(xyz <= ranges[:, 1])
    span = ranges[:, 1] - ranges[:, 0]
    ratio = np.array([scene.aspectratio.x, scene.aspectratio.y, scene.aspectratio.z])
    np.testing.assert_allclose(ratio / ratio.max(), span / span.max())  # 1 m is 1 m on every axis
    assert scene.xaxis.title.text == "x (m)" and scene.zaxis.title.text == "z (m)"


def test_empty_list_gives_a_labelled_empty_figure():
    fig = trajectory_figure([])
    assert len(fig.data) == 0
    assert "no events" in fig.layout.title.text
    assert fig.layout.scene.xaxis.title.text == "x (m)"


def test_event_without_paths_draws_nothing_for_it(pick_episode):
    fig = trajectory_figure([{"label": "e0: not imagined yet"}, _events(pick_episode, 1)[0]])
    assert {t.legendgroup for t in _paths(fig)} == {"e1"}


def test_bad_input_names_the_event():
    good = np.zeros((4, 7))
    with pytest.raises(ValueError, match=r"event 0 \('a'\) executed: expected an \(N, 7\)"):
        trajectory_figure([{"label": "a", "executed": np.zeros((4, 6))}])
    with pytest.raises(ValueError, match="non-finite"):
        trajectory_figure([{"label": "a", "imagined": np.r_[good, [[np.nan] * 7]]}])
    with pytest.raises(ValueError, match="label"):
        trajectory_figure([{"executed": good}])
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        trajectory_figure([{"label": "a", "executed": np.zeros((0, 7))}])
