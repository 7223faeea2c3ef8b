"""Rerun logging: streams read back with rerun's own chunk reader, on real sim data."""

from __future__ import annotations

import gc
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import rerun as rr
import rerun.blueprint as rrb

from robot.types import ACTION_NAMES
from viewers import rerun as vr
from viewers.cones import cone_mesh

ROOT = Path(__file__).resolve().parents[2]
TIMELINES = {"step", "imagined_step", "denoise_step"}


def test_blueprint_has_every_view(record, episode):
    cams = list(episode.cameras)
    rec = record(lambda r: rr.send_blueprint(vr.blueprint(cams), recording=r))
    values = "\n".join(rec.blueprint_values)
    origins = set(re.findall(r"ViewBlueprint:space_origin=\['([^']*)'\]", values))
    assert origins == {
        *(f"/observed/{c}" for c in cams),
        *(f"/imagined/{c}" for c in cams),
        "/world",
        "/plots",
        "/plan/status",
    }
    kinds = re.findall(r"ViewBlueprint:class_identifier=\['([^']*)'\]", values)
    assert sorted(kinds) == sorted(["2D"] * 6 + ["3D", "3D", "TextDocument"] + ["TimeSeries"] * 3)
    names = set(re.findall(r"ViewBlueprint:display_name=\['([^']*)'\]", values))
    assert {"world", "sight cones", "position (m)", "gripper & validity"} <= names
    assert "- /world/cones/**" in values  # the world tab leaves the cones to their own tab
    assert "imagined_step" in values  # the time panel starts on the imagination's timeline
    # ... following the newest data: a looping play repaints forever, ~1 s a frame without a GPU
    following = rrb.components.PlayState.Following.value
    assert f"TimePanelBlueprint:play_state=[{following}]" in values
    with pytest.raises(ValueError, match="camera"):
        vr.blueprint([])


def test_scene_is_static_cameras_workspace_and_cones(record, episode, away_camera):
    cams = {**episode.cameras, "away": away_camera}
    rec = record(lambda r: vr.log_scene(cams, recording=r))
    assert rec.entities() == {
        "/world",
        "/world/workspace",
        *(f"/world/cameras/{c}" for c in cams),
        *(f"/world/cones/{c}" for c in episode.cameras),  # 'away' sees no workspace: no cone
    }
    assert all(rec.static[e] for e in rec.entities())
    for name, cam in episode.cameras.items():
        e = f"/world/cameras/{name}"
        np.testing.assert_allclose(
            rec.column(e, "Transform3D:translation")[0][0], cam.center, atol=1e-6
        )
        rot = np.asarray(rec.column(e, "Transform3D:mat3x3")[0][0]).reshape(
            3, 3, order="F"
        )  # column-major
        np.testing.assert_allclose(rot, cam.T_world_cam[:3, :3], atol=1e-6)
        K = np.asarray(rec.column(e, "Pinhole:image_from_camera")[0][0]).reshape(3, 3, order="F")
        np.testing.assert_allclose(K, cam.K, rtol=1e-6)
        assert rec.column(e, "Pinhole:resolution")[0][0] == [cam.width, cam.height]
        verts, tris = cone_mesh(cam)
        cone = f"/world/cones/{name}"
        np.testing.assert_allclose(rec.column(cone, "Mesh3D:vertex_positions")[0], verts, atol=1e-6)
        assert len(rec.column(cone, "Mesh3D:triangle_indices")[0]) == len(tris)
        assert rec.column(cone, "LineStrips3D:strips")[0]  # the cone's edges


def test_imagination_flow(record, episode, event_chunk):
    """Observation, denoising previews, the final imagination, execution and status, as the studio logs them."""
    chunk, validity, video = event_chunk(episode, 1)
    steps, n_frames = 4, len(next(iter(video.values())))
    length = int((validity > 0).sum())

    def run(r):
        vr.log_scene(episode.cameras, recording=r)
        vr.log_observation(
            {c: f[0] for c, f in episode.frames.items()}, episode.states[0], step=7, recording=r
        )
        vr.highlight_event(1, episode.events[1].subtask, "imagining", recording=r)
        for s in range(1, steps + 1):
            preview = (
                video if s == 2 else None
            )  # a decoded preview every other step, as the model can
            vr.log_preview(1, s, steps, chunk + 0.001 * (steps - s), validity, preview, recording=r)
        vr.log_imagination(
            1, chunk, validity, video, episode.events[1].subtask, recording=r, denoise_steps=steps
        )
        vr.highlight_event(1, episode.events[1].subtask, "executing", recording=r)
        vr.log_executed(1, episode.states[: length + 1], recording=r)

    rec = record(run)
    cams = list(episode.cameras)
    temporal = {
        *(f"/observed/{c}" for c in cams),
        *(f"/imagined/{c}" for c in cams),
        "/world/ee",
        "/world/plan/e1/ee_path",
        "/world/executed/e1/ee_path",
        *(f"/plots/actions/{n}" for n in ACTION_NAMES),
        "/plots/validity",
        "/plan/status",
        "/plan/log",
    }
    assert temporal <= rec.entities()
    for e in temporal:
        assert not rec.static[e] and rec.timelines[e] >= TIMELINES, e  # visible on every timeline
    for c in cams:
        assert rec.rows[f"/observed/{c}"] == 1
        assert rec.column(f"/observed/{c}", "step") == [7]
        assert rec.rows[f"/imagined/{c}"] == 2 * n_frames  # one decoded preview + the final
        final = [t for t, d in zip(rec.column(f"/imagined/{c}", "imagined_step"),
                                   rec.column(f"/imagined/{c}", "denoise_step")) if d == steps]  # fmt: skip
        assert final == list(range(n_frames))
    assert rec.rows["/world/plan/e1/ee_path"] == steps + 1
    assert rec.column("/world/plan/e1/ee_path", "denoise_step") == [1, 2, 3, 4, 4]
    # The final path: the executable prefix, then the grey tail past the validity's end.
    strips = rec.column("/world/plan/e1/ee_path", "LineStrips3D:strips")[-1]
    np.testing.assert_allclose(
        np.concatenate(strips[:-1])[:, :3][[0, -1]], chunk[[0, length - 1], :3], atol=1e-6
    )
    np.testing.assert_allclose(strips[-1], chunk[length - 1 :, :3], atol=1e-6)
    labels = rec.column("/world/plan/e1/ee_path", "LineStrips3D:labels")[-1]
    assert labels[0] == f"e1: {episode.events[1].subtask}"
    for j, name in enumerate(ACTION_NAMES):
        e = f"/plots/actions/{name}"
        assert rec.column(e, "imagined_step") == list(range(len(chunk)))
        np.testing.assert_allclose(np.concatenate(rec.column(e, "Scalars:scalars")), chunk[:, j])
    np.testing.assert_allclose(
        np.concatenate(rec.column("/plots/validity", "Scalars:scalars")), validity
    )
    status = rec.column("/plan/status", "TextDocument:text")
    assert len(status) == 2 and "Event 2" in status[-1][0] and "executing" in status[-1][0]
    assert rec.rows["/plan/log"] == 2


def test_gripper_colours_the_paths(record, pick_episode):
    ep = pick_episode
    closed = ep.states[:, 6] > vr.GRIPPER_CLOSED
    runs = 1 + int(np.count_nonzero(closed[1:] != closed[:-1]))
    rec = record(lambda r: vr.log_executed(0, ep.states, recording=r))
    strips = rec.column("/world/executed/e0/ee_path", "LineStrips3D:strips")[0]
    colours = rec.column("/world/executed/e0/ee_path", "LineStrips3D:colors")[0]
    assert runs >= 3 and len(strips) == runs  # open, holding, open again
    assert len(set(colours)) == 2
    assert (
        sum(len(s) for s in strips) == len(ep.states) + runs - 1
    )  # runs share their boundary points


def test_bad_input_is_refused_with_a_reason(episode):
    rec = rr.RecordingStream("wallwm", recording_id="bad")
    rr.binary_stream(recording=rec)
    img = next(iter(episode.frames.values()))[0]
    with pytest.raises(ValueError, match="uint8"):
        vr.log_observation({"front": img.astype(np.float32)}, episode.states[0], recording=rec)
    with pytest.raises(ValueError, match="state"):
        vr.log_observation({"front": img}, episode.states[0][:6], recording=rec)
    with pytest.raises(ValueError, match="past the 4"):
        vr.log_preview(0, 5, 4, episode.actions[:8], np.ones(8), recording=rec)
    with pytest.raises(ValueError, match="fewer than"):
        vr.log_imagination(0, episode.actions[:8], np.ones(4), None, recording=rec)
    with pytest.raises(ValueError, match="event_index"):
        vr.log_executed(-1, episode.states[:4], recording=rec)
    with pytest.raises(ValueError, match="status"):
        vr.highlight_event(0, "press", "thinking", recording=rec)
    with pytest.raises(ValueError, match=r"video\['front'\]"):
        vr.log_imagination(0, episode.actions[:8], np.ones(8), {"front": img}, recording=rec)


def _docs_example() -> str:
    text = (ROOT / "docs" / "viewers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (example,) = [b for b in blocks if "thread_local_stream" in b]
    return example


def test_docs_streaming_example_runs(tmp_path, episode, event_chunk, read_rrd):
    """The streaming pattern in docs/viewers.md, run as written, yields a valid growing stream."""
    namespace: dict = {}
    exec(compile(_docs_example(), "docs/viewers.md", "exec"), namespace)
    chunk, validity, video = event_chunk(episode, 1)

    class Result:  # the fields of backend.model.wam.Imagination the example reads
        instruction = episode.events[1].subtask

    Result.chunk, Result.validity, Result.video = chunk, validity, video
    messages = [
        *(
            {"type": "preview", "step": s, "steps": 3, "actions": chunk, "validity": validity}
            for s in (1, 2, 3)
        ),
        {"type": "final", "result": Result},
    ]
    obs = {"images": {c: f[0] for c, f in episode.frames.items()}, "state": episode.states[0]}
    pieces = list(namespace["stream_imagination"](episode.cameras, obs, 1, iter(messages)))
    assert len(pieces) == 1 + len(messages) and all(pieces)
    paths = []
    for i, piece in enumerate(pieces):  # each piece is a self-contained .rrd (header ... footer)
        paths.append(tmp_path / f"piece{i}.rrd")
        paths[-1].write_bytes(piece)
    rec = read_rrd(*paths)
    assert len({r.recording_id for r in rec.recordings}) == 1  # one recording per call
    assert rec.recordings[0].application_id == "wallwm"
    assert {
        "/world/cameras/front",
        "/observed/front",
        "/imagined/front",
        "/world/plan/e1/ee_path",
    } <= rec.entities()
    assert rec.rows["/world/plan/e1/ee_path"] == 4


def test_finished_stream_recordings_are_released(episode):
    """Each `@rr.thread_local_stream` call keeps its recording's threads alive until the sweep;
    the blueprint the studio sends with every stream leaves nothing behind."""
    img = next(iter(episode.frames.values()))[0]

    @rr.thread_local_stream("wallwm")
    def one_stream():
        stream = rr.binary_stream()
        vr.send_blueprint(["front"])
        vr.log_observation({"front": img}, episode.states[0])
        yield stream.read()

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    vr.release_finished_recordings()
    before = threads()
    for _ in range(5):
        (data,) = list(one_stream())  # run to the end: the recording is finished
        assert b"observed/front" in data and b"blueprint" in data.lower()
    gc.collect()
    kept = threads() - before
    vr.release_finished_recordings()
    assert kept >= 5  # rerun-sdk 0.39: about two batcher threads per finished recording
    assert threads() <= before


def test_stream_recording_never_sweeps_under_a_live_stream(episode):
    """A stream suspended between yields (a chunk being followed) must not block another
    handler's stream; what both leave behind is given back once neither runs."""
    img = next(iter(episode.frames.values()))[0]

    @vr.stream_recording
    def follow():
        stream = rr.binary_stream()
        vr.send_blueprint(["front"])
        vr.log_observation({"front": img}, episode.states[0])
        yield stream.read()
        vr.log_observation({"front": img}, episode.states[1])
        yield stream.read()

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    list(follow())
    list(follow())  # swept the first one: the steady state, one finished recording kept
    gc.collect()
    steady = threads()
    running = follow()
    assert next(running)  # live, suspended with unread data to come
    done = threading.Event()
    worker = threading.Thread(target=lambda: (list(follow()), done.set()))
    worker.start()
    assert done.wait(10), "a second stream blocked behind the suspended one"
    worker.join()
    assert len(list(running)) == 1  # the suspended one finishes normally
    gc.collect()
    assert threads() > steady  # nothing was swept while a stream was live
    list(follow())  # starts with no stream live: sweeps the finished ones
    gc.collect()
    assert threads() <= steady
