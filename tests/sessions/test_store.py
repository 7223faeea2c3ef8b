"""The session store: durable writes, a SIGKILLed recorder, damaged files, the migration path."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sessions import schema
from sessions.frames import FRAMES_FILE, FrameReader
from sessions.store import DB_FILE, SessionError, SessionReader, SessionStore

VIEWS = ("front", "left", "right")


def _views(value: int = 0) -> dict[str, np.ndarray]:
    return {c: np.full((64, 64, 3), value, np.uint8) for c in VIEWS}


def test_a_session_records_and_reads_back(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    w = store.create({"task": "push_to_target", "fps": 10})
    assert w.plan(["a", "b"], "scene", "the task's plan") == 1
    assert w.plan(["a", "c"], "operator", "edit event 2", correction=True, event_index=1) == 2
    video = {c: np.zeros((5, 64, 64, 3), np.uint8) for c in VIEWS}
    iid = w.imagination(
        1, "c", np.ones((8, 7)), np.ones(8), video, length=4, model="tiny/event",
        checkpoint="ck", checkpoint_hash="abc", seed=3, steps=4, mode="event",
        timings={"total_s": 0.5}, start_state=np.zeros(7),
    )  # fmt: skip
    w.chunk_sent("c1", 1, iid, np.ones((4, 7)), {"status": "accepted"})
    for s in range(5):
        w.step(np.full(7, s, np.float32), _views(s), chunk_id="c1", step=s, event_index=1)
    w.chunk_ended("c1", {"status": "done", "executed_steps": 4, "clipped_steps": 0})
    w.progress(3, [{"name": "press red", "weight": 3, "done": True}])
    w.close("success")

    (s,) = store.list()
    assert (s.task, s.outcome, s.steps, s.corrections, s.imaginations) == (
        "push_to_target", "success", 5, 1, 1,
    )  # fmt: skip
    with store.open(s.id[:12]) as r:
        assert [p["plan"] for p in r.plan_versions()] == [["a", "b"], ["a", "c"]]
        (im,) = r.imaginations()
        assert (im["seed"], im["steps"], im["checkpoint_hash"], im["plan_version"]) == (
            3,
            4,
            "abc",
            2,
        )
        assert r.imagination_arrays(im)["video"]["left"].shape == (5, 64, 64, 3)
        (c,) = r.chunks()
        assert (c["status"], c["executed_steps"], c["imagination_id"]) == ("done", 4, iid)
        assert r.frames.frame(3).images["right"][0, 0, 0] == 3
        assert r.frames.frame(4).chunk_id == "c1"
        assert [t["what"] for t in r.timeline()][:2] == ["plan v1 (scene)", "plan v2 (operator)"]


def test_sigkilled_recorder_keeps_everything_it_acknowledged(tmp_path: Path) -> None:
    """Everything the recorder said was saved is there after SIGKILL; the store opens cleanly."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "record_proc.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    acked: dict[str, list[int]] = {"plan": [], "record": [], "step": []}
    try:
        sid = proc.stdout.readline().split()[1]
        while len(acked["step"]) < 200:
            _, kind, ident = proc.stdout.readline().split()
            acked[kind].append(int(ident))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-session, writes in flight
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    (summary,) = SessionStore(tmp_path).list()
    assert summary.error == "" and summary.outcome.startswith("open")
    with SessionStore(tmp_path).open(sid) as r:
        versions = {p["version"] for p in r.plan_versions()}
        assert set(acked["plan"]) <= versions
        assert set(acked["record"]) <= {x["id"] for x in r.records("command")}
        assert len(r.frames) >= max(acked["step"]) + 1
        last = r.frames.frame(max(acked["step"]))
        assert last.images["front"].shape == (64, 64, 3)
    # The session can be appended to again: a torn last frame is cut off first.
    from sessions.store import SessionWriter

    w = SessionWriter(tmp_path / sid)
    n = w.step(np.zeros(7, np.float32), _views())
    w.close()
    assert len(FrameReader(tmp_path / sid / FRAMES_FILE)) == n + 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_a_damaged_session_file_says_so_and_the_rest_still_open(tmp_path: Path, damage) -> None:
    store = SessionStore(tmp_path)
    good, bad = store.create({"task": "good"}), store.create({"task": "bad"})
    for w in (good, bad):
        w.plan(["x"] * 50, "scene", "plan " * 200)
        w.close()
    db = tmp_path / bad.id / DB_FILE
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 3])
    else:
        db.unlink()
    with pytest.raises(
        SessionError,
        match=rf"{bad.id}.*session.db: (the session database is corrupt or truncated|missing)",
    ):
        store.open(bad.id)
    rows = {s.id: s for s in store.list()}
    assert rows[bad.id].error and rows[bad.id].outcome == "unreadable"
    assert rows[good.id].error == "" and rows[good.id].task == "good"
    with store.open(good.id) as r:
        assert r.plan_versions()[0]["plan"] == ["x"] * 50


def test_a_truncated_frames_file_reads_up_to_the_torn_record(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create()
    for s in range(4):
        w.step(np.zeros(7, np.float32), _views(s), step=s)
    w.close()
    path = tmp_path / w.id / FRAMES_FILE
    path.write_bytes(path.read_bytes()[:-100])
    r = SessionReader(tmp_path / w.id)
    assert len(r.frames) == 3 and r.frames.dropped_bytes > 0
    assert r.frames.frame(2).images["left"][5, 5, 1] == 2


def test_a_version_1_file_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    d = tmp_path / "20250101-000000-aaaaaa"
    d.mkdir()
    conn = sqlite3.connect(d / DB_FILE, isolation_level=None)
    assert schema.migrate(conn, target=1) == 1
    conn.execute("INSERT INTO meta VALUES ('task', '\"stack\"')")
    conn.execute("INSERT INTO plan_versions VALUES (1, 0, 0, 'scene', 'loaded', '[\"grasp\"]')")
    conn.close()
    with SessionReader(d) as r:
        assert r.meta["task"] == "stack"
        assert r.plan_versions()[0]["plan"] == ["grasp"]
        assert r.divergence() == []  # the table version 2 added
    conn = sqlite3.connect(d / DB_FILE)
    assert schema.version(conn) == schema.SCHEMA_VERSION == 2
    conn.close()


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    conn = sqlite3.connect(d / DB_FILE)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SessionError, match="schema version 99, newer"):
        SessionReader(d)
