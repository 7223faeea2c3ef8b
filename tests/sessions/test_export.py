"""`wallwm export SESSION --format {rrd,mp4}` on a recorded sim session, read back with the
formats' own tools: Rerun's RRD reader and `rerun rrd verify`, PyAV for the mp4 files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest


def _export(sim_session, fmt: str, out: Path) -> list[Path]:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "export", sim_session.id, "--format", fmt,
         "--sessions", str(sim_session.root), "--out", str(out)],
        check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return [Path(line) for line in done.stdout.split()]


def test_mp4_export_has_every_step_of_every_view(sim_session, tmp_path) -> None:
    paths = _export(sim_session, "mp4", tmp_path / "mp4")
    assert sorted(p.name for p in paths) == sorted(f"{c}.mp4" for c in sim_session.cameras)
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert stream.average_rate == 10  # the session's fps
        recorded = sim_session.images[path.stem]
        assert len(frames) == sim_session.steps and frames[0].shape == recorded.shape[1:]
        # the recorded views, through H.264 (crf 18): close, not a blank or shuffled video
        err = np.abs(np.stack(frames).astype(np.float32) - recorded.astype(np.float32))
        assert err.mean() < 6.0, err.mean()
        mid = sim_session.steps // 2
        assert np.abs(frames[mid].astype(float) - recorded[mid]).mean() < np.abs(
            frames[mid].astype(float) - recorded[0]
        ).mean() or np.array_equal(recorded[mid], recorded[0])


def test_rrd_export_opens_in_rerun_with_views_imagination_and_paths(sim_session, tmp_path) -> None:
    from rerun.chunk import RrdReader

    (path,) = _export(sim_session, "rrd", tmp_path / "session.rrd")
    reader = RrdReader(path)
    assert reader.recordings() and reader.blueprints()  # data and the studio's layout
    chunks = reader.stream().to_chunks()
    entities = {c.entity_path for c in chunks}
    for cam in sim_session.cameras:
        assert f"/observed/{cam}" in entities and f"/world/cameras/{cam}" in entities
        assert f"/imagined/{cam}" in entities  # event 0's imagined frames
    assert "/world/plan/e0/ee_path" in entities
    assert {f"/world/executed/e{k}/ee_path" for k in range(sim_session.events)} <= entities
    # one observed image per executed step on the `step` timeline
    rows = sum(
        c.num_rows
        for c in chunks
        if c.entity_path == f"/observed/{sim_session.cameras[0]}" and "step" in c.timeline_names
    )
    assert rows == sim_session.steps
    rerun = shutil.which("rerun", path=str(Path(sys.executable).parent))
    if rerun is None:
        pytest.skip("the rerun CLI is not installed beside this Python")
    subprocess.run([rerun, "rrd", "verify", str(path)], check=True, capture_output=True)


def test_exporting_a_missing_session_says_so(sim_session, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "export", "no-such-session", "--format", "mp4",
         "--sessions", str(sim_session.root), "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "no-such-session" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_replaced_chunk_is_an_event_of_its_own_with_the_text_it_was_asked(tmp_path) -> None:
    """Event 1 starts as "press blue"; the operator edits it, the new imagination replaces the
    running chunk. The exported events say what the robot was executing on each frame."""
    from sessions.export import session_episode
    from sessions.store import SessionStore

    w = SessionStore(tmp_path).create({"task": "t", "seed": 0, "instruction": "press them"})
    w.plan(["press blue", "press red"], "scene", "the page's plan")
    views = {"front": np.zeros((8, 8, 3), np.uint8)}
    state, acts = np.zeros(7, np.float32), np.zeros((4, 7), np.float32)

    def imagine_and_send(text: str, chunk: str, replace: bool) -> None:
        iid = w.imagination(0, text, acts, np.ones(4, np.float32), None, length=4, model="m",
                            checkpoint="c", checkpoint_hash="0" * 16, seed=0, steps=1,
                            mode="event", timings={}, start_state=state)  # fmt: skip
        w.chunk_sent(chunk, 0, iid, acts, {"status": "accepted"}, replace=replace)

    imagine_and_send("press blue", "c1", False)
    for step in (0, 1):
        w.step(state, views, chunk_id="c1", step=step, event_index=0, intervention=False)
    w.plan(["press green", "press red"], "operator", "edit event 1", True, 0)
    imagine_and_send("press green", "c2", True)
    for step in (0, 1, 2):
        w.step(state, views, chunk_id="c2", step=step, event_index=0, intervention=False)
    w.close("done")
    with SessionStore(tmp_path).open(w.id) as r:
        events = session_episode(r).episode.events
    assert [(e.subtask, e.start, e.end) for e in events] == [
        ("press blue", 0, 2),
        ("press green", 2, 5),
    ]
