"""Pause a running plan in the middle of a chunk, edit the event, imagine it again and resume:
the edited event is what the robot executes next, and the session store says so.

No browser: the studio's handlers run in-process against a real MuJoCo sim behind a real
ZeroMQ robot server in slow motion (time scale 0.05: one control step lasts 2 s of wall time),
so the Pause lands while a chunk executes, every time. The browser test of the same correction
(tests/e2e/test_sessions.py) pauses wherever the plan run happens to be.
"""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.slow

EDITED = "press the green button gently"


def _drain(gen, statuses: list[str]) -> None:
    for item in gen:
        if isinstance(item[1], str):
            statuses.append(item[1])


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def studio(tiny_checkpoint, tmp_path):
    from app.studio.recording import RecordingStudio
    from backend.service import Backend, resolve_checkpoint
    from robot.client import RobotClient
    from robot.server import RobotServer, ServerConfig
    from robot.sim.robot import SimRobot
    from robot.sim.tasks import TASKS

    sim = SimRobot(task="press_buttons_in_order", seed=3, time_scale=0.05)
    server = RobotServer(
        sim, ServerConfig(cmd_port=0, telemetry_port=0, heartbeat_timeout_s=5.0)
    ).start()
    ports = [int(e.rsplit(":", 1)[1]) for e in (server.cmd_endpoint, server.telemetry_endpoint)]
    client = RobotClient("127.0.0.1", *ports, timeout_s=5.0, name="test-studio").connect()
    client.hello()
    backend = Backend(resolve_checkpoint(tiny_checkpoint), client)
    backend.wait_ready()
    studio = RecordingStudio(
        backend, client, {n: t.description for n, t in TASKS.items()}, sessions=tmp_path
    )
    studio.reset_scene("press_buttons_in_order", 3)
    yield studio
    studio.close_all()
    client.close()
    backend.close()
    server.close()
    sim.disconnect()


def test_pause_mid_chunk_edit_reimagine_resume_executes_the_edited_event(studio) -> None:
    from app.studio import teleop
    from app.studio.session import Session

    session = Session()
    for _ in studio.on_load(session):
        pass
    session.set_plan(session.plan[:2])
    statuses: list[str] = []
    run = threading.Thread(
        target=_drain, args=(teleop.run_plan(studio, session, "event", 0, 1), statuses)
    )
    run.start()
    _wait(lambda: studio.mode() == "EXECUTING", 120, "the first chunk never ran")
    message = teleop.pause(studio, session)
    assert message.startswith("Paused: the plan run stops. The running chunk holds.")
    run.join(30)
    assert not run.is_alive()
    assert statuses[-1].startswith("Paused during event 1"), statuses[-3:]
    assert studio.mode() == "PAUSED" and session.active == 0

    studio.save_event(session, EDITED)
    statuses.clear()
    _drain(studio.imagine(session, "event", 0, 1), statuses)
    assert statuses[-1].startswith("Imagined event 1 (final)"), statuses[-1]

    statuses.clear()
    _drain(teleop.resume(studio, session, "event", 0, 1), statuses)
    assert "Plan done" in statuses[-1], statuses[-5:]
    assert "Saved." in statuses[-1]  # the page says the chunk ended only once the store has it

    from sessions.store import SessionStore

    with SessionStore(studio.store.root).open(studio.recording(session).writer.id) as r:
        commands = [c["data"]["type"] for c in r.records("command")]
        corrections = [c["data"]["type"] for c in r.records("correction")]
        sent = [(c["event_index"], c["status"], c["imagination_id"]) for c in r.chunks()]
        edited = [im["id"] for im in r.imaginations() if im["text"] == EDITED]
    assert commands[:3] == ["pause", "pause_plan", "stop"]  # robot pause, operator's, swap
    assert corrections == ["plan_edit", "replace_chunk"]
    assert [(e, s) for e, s, _ in sent] == [(0, "aborted"), (0, "done"), (1, "done")]
    assert len(edited) == 1 and sent[1][2] == edited[0]  # the edited event's new imagination ran
