"""Teleop-in-the-loop correction: run the plan, pause, edit, re-imagine, resume or replace the
running chunk, take over and jog, hand back. Plain handler functions over (studio, session).

- **Run plan** imagines the active event from the current observation, sends it, follows it to
  its end and goes on with the next event, until the plan ends or the operator pauses.
- **Pause** stops the plan at once: a running chunk is paused on the robot (it holds) and the
  plan run ends, so the operator can edit or insert the next event and **Imagine** it again.
- **Resume** goes on: with the paused chunk's event imagined again since, the old chunk is
  stopped and the new one sent in its place (recorded as `replace_chunk`); otherwise the robot
  resumes the paused chunk. The plan run then continues with the next events.
- **Replace running chunk** sends the active event's new imagination with `replace: true`:
  the robot swaps it in at the next step boundary, without stopping.
- **Take over** stops the plan and the chunk (the robot holds, ARMED) and shows the jog pad:
  buttons and keys move the end effector through the robot's `jog` request, the same safety
  path as chunks (workspace clip, step caps); every step is flagged `intervention`.
  **Hand back** ends the take-over at the chosen event, which becomes the active one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
import rerun as rr

from app.studio.handlers import LINK_SLOW_S, MAX_START_DRIFT_M, path_moved, track_pose, warn
from app.studio.session import Session
from backend.service import BackendError
from viewers.rerun import stream_recording

JOG_STEP_M = 0.01  # one press: 1 cm (within the robot's per-period cap)
JOG_YAW_RAD = math.radians(5)
# button/key name -> (dxyz, dyaw, gripper)
JOGS: dict[str, tuple[tuple[float, float, float], float, float | None]] = {
    "+x": ((1, 0, 0), 0, None),
    "-x": ((-1, 0, 0), 0, None),
    "+y": ((0, 1, 0), 0, None),
    "-y": ((0, -1, 0), 0, None),
    "+z": ((0, 0, 1), 0, None),
    "-z": ((0, 0, -1), 0, None),
    "yaw+": ((0, 0, 0), 1, None),
    "yaw-": ((0, 0, 0), -1, None),
    "close": ((0, 0, 0), 0, 1.0),
    "open": ((0, 0, 0), 0, 0.0),
}
# Keyboard while the jog pad is shown (not while typing in a text box).
KEYS = {
    "ArrowUp": "+x",
    "ArrowDown": "-x",
    "ArrowLeft": "+y",
    "ArrowRight": "-y",
    "PageUp": "+z",
    "PageDown": "-z",
    "q": "yaw+",
    "e": "yaw-",
    "c": "close",
    "o": "open",
}
KEYBOARD_JS = (
    "() => { const keys = %s; document.addEventListener('keydown', (ev) => {"
    " const t = ev.target; if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA')) return;"
    " const pad = document.getElementById('jog-pad'); if (!pad || pad.offsetParent === null) return;"
    " const name = keys[ev.key]; if (!name) return; ev.preventDefault();"
    " const b = document.getElementById('jog-' + name); if (b) b.click(); }); }"
) % {k: v for k, v in KEYS.items()}

RUN_OUTPUTS = 7  # viewer, status, grid, grid caption, trajectories, plan, mode


def _skip7(status: str) -> tuple:
    s = gr.skip()
    return (s, status, s, s, s, s, s)


def _mode(studio) -> str:
    return studio.mode()


# ------------------------------------------------------------------ plan run


def run_plan(
    studio, session: Session, mode: str, seed: float | None, steps: float | None
) -> Iterator[tuple]:
    """Imagine, send and follow each event from the active one until the plan ends or Pause."""
    rec = studio.recording(session)
    rec.pause_requested.clear()
    rec.running_plan = True
    try:
        yield from _run(studio, session, mode, seed, steps)
    finally:
        if not rec.pause_requested.is_set():
            rec.running_plan = False


def _fresh(studio, session: Session, k: int) -> bool:
    """The event's imagination starts where the robot is now (else imagine it again)."""
    if k not in session.imagined:
        return False
    pose = np.asarray((studio.robot.telemetry or {}).get("ee_pose", session.imagined_from[k]))
    return float(np.linalg.norm(pose[:3] - session.imagined_from[k][:3])) <= MAX_START_DRIFT_M / 2


def _run(studio, session: Session, mode: str, seed, steps) -> Iterator[tuple]:
    rec = studio.recording(session)
    skip = gr.skip()
    while session.plan and session.active < len(session.plan):
        k = session.active
        if rec.pause_requested.is_set():
            yield _skip7(f"Paused before event {k + 1}: edit the plan, Imagine, then Resume.")
            return
        if not _fresh(studio, session, k):
            for item in studio.imagine(session, mode, seed, steps):
                yield (*item, skip)
            if not _fresh(studio, session, k):
                return  # the imagination failed; its status says why
        if rec.pause_requested.is_set():
            yield _skip7(f"Paused before event {k + 1}: edit the plan, Imagine, then Resume.")
            return
        try:
            handle, im = studio._send(session, k)
        except BackendError as e:
            yield _skip7(warn(str(e)))
            return
        rec.handle = handle
        outcome: dict[str, bool] = {}
        yield from _follow(studio, session, handle, k, im.length, outcome)
        if not outcome.get("go_on"):
            return
    rec.running_plan = False
    yield _skip7(f"Plan done: {len(session.plan)} events executed.")


@stream_recording
def _follow(
    studio, session: Session, handle: Any, k: int, length: int, outcome: dict[str, bool]
) -> Iterator[tuple]:
    """Follow a chunk to its end; `outcome["go_on"]` says whether the plan run may continue
    (False: paused, aborted, link lost, or the plan is done)."""
    from viewers.rerun import highlight_event, log_executed

    rec = studio.recording(session)
    skip = gr.skip()
    stream = rr.binary_stream()
    studio._log_context(session)
    text = session.plan[k]
    highlight_event(k, text, "executing")
    path: list[np.ndarray] = session.executed.setdefault(k, [])
    last = 0.0
    shown: np.ndarray | None = None  # where the viewer's executed path ends
    while True:  # the chunk, then any chunk that replaced it (Replace running chunk)
        while not handle.finished.done():
            t = studio.robot.telemetry or {}
            track_pose(path, t, handle.chunk_id)
            if studio.robot.telemetry_age_s > LINK_SLOW_S:
                yield _skip7(
                    warn(f"robot link lost during event {k + 1}; the robot holds on its watchdog")
                )
                outcome["go_on"] = False
                return
            if rec.pause_requested.is_set():
                yield (stream.read(), f"Paused during event {k + 1}: the robot holds. Edit or insert "
                       "the next event, Imagine it, then Resume (or Take over).", skip, skip,
                       studio.figures(session)[0], studio.plan_outputs(session)[0], t.get("mode", skip))  # fmt: skip
                outcome["go_on"] = False
                return
            if time.monotonic() - last >= 0.25:
                last = time.monotonic()
                viewer = skip
                if path_moved(path, shown):
                    shown = path[-1]
                    log_executed(k, np.asarray(path))
                    viewer = stream.read()
                yield (viewer, f"Running the plan: event {k + 1}, step {t.get('step', 0)}/{length}",
                       skip, skip, skip, skip, t.get("mode", skip))  # fmt: skip
            time.sleep(0.02)
        ack = handle.finished.result()
        successor = session.successor(ack)
        if successor is None:
            break
        if path:
            log_executed(k, np.asarray(path))
        highlight_event(k, text, "aborted")
        session.note(f"chunk {handle.chunk_id}: {ack.get('reason')}")
        old, (handle, k) = k, successor
        rec.handle, text, length = handle, session.plan[k], session.imagined[k].length
        highlight_event(k, text, "executing")
        path = session.executed.setdefault(k, [])
        shown = None
        last = time.monotonic()  # the swap stays on the status line a while
        yield (stream.read(), f"Running the plan: event {k + 1} in place of event {old + 1}",
               skip, skip, skip, studio.plan_outputs(session)[0], skip)  # fmt: skip
    rec.handle = None
    if path:
        log_executed(k, np.asarray(path))
    done = ack.get("status") == "done"
    highlight_event(k, text, "done" if done else "aborted")
    session.note(
        f"chunk {handle.chunk_id}: {ack.get('status')}, {ack.get('executed_steps', 0)} steps executed"
    )
    if done and k + 1 <= len(session.plan):
        session.active = min(k + 1, len(session.plan))
    status = (
        f"Event {k + 1} done ({ack.get('executed_steps', 0)} steps)."
        if done
        else warn(f"event {k + 1} {ack.get('status')}: {ack.get('reason') or 'stopped'}")
    ) + studio.chunk_settled(session, handle.chunk_id)
    if session.active >= len(session.plan):
        session.active = len(session.plan) - 1
        rec.running_plan = False
        status += " Plan done." + _disarm(studio)
        yield (stream.read(), status, skip, skip, studio.figures(session)[0],
               studio.plan_outputs(session)[0], studio.mode() or skip)  # fmt: skip
        outcome["go_on"] = False
        return
    yield (stream.read(), status, skip, skip, studio.figures(session)[0],
           studio.plan_outputs(session)[0], studio.mode() or skip)  # fmt: skip
    outcome["go_on"] = done


def _disarm(studio) -> str:
    """At the end of a plan the robot is disarmed: nothing holds it armed for nobody."""
    from robot.client import LinkError, RejectedError

    try:
        if studio.mode() == "ARMED":
            studio.robot.disarm()
            return " The robot is disarmed (IDLE)."
    except (LinkError, RejectedError):
        pass
    return ""


def pause(studio, session: Session) -> str:
    """Stop the plan run at the next event boundary; a running chunk is paused on the robot (it
    holds). Recorded as the operator's `pause_plan` command, whether or not a chunk was running
    (the robot's own pause is recorded beside it as a `pause` command)."""
    rec = studio.recording(session)
    rec.pause_requested.set()
    held = ""
    if studio.mode() == "EXECUTING":
        reply = studio.pause(session)
        held = f" ({reply})" if reply.startswith("⚠") else " The running chunk holds."
    return studio.act(
        session,
        f"Paused: the plan run stops.{held} Edit or insert the next event, Imagine it, then Resume.",
        "command",
        session.active,
        type="pause_plan",
    )


def resume(studio, session: Session, mode: str, seed, steps) -> Iterator[tuple]:
    """Go on after Pause: replace the paused chunk if its event was imagined again, else resume it."""
    rec = studio.recording(session)
    rec.pause_requested.clear()
    k = session.active
    robot_mode = studio.mode()
    handle = rec.handle
    if robot_mode == "PAUSED" and handle is not None:
        paused_event = rec.chunks.get(handle.chunk_id, {}).get("event_index")
        sent_with = rec.chunks.get(handle.chunk_id, {}).get("imagination_id")
        if rec.imagination_ids.get(k) not in (None, sent_with):
            message = studio.stop(session)  # the old chunk ends; the robot holds where it is
            if message.startswith("⚠"):
                yield _skip7(message)
                return
            _wait_until_no_chunk(studio)
            rec.handle = None
            studio.act(
                session,
                "",
                "correction",
                k,
                type="replace_chunk",
                text=f"replace the chunk of event {paused_event + 1} by event {k + 1}",
                old_chunk=handle.chunk_id,
            )
        else:
            message = studio.resume(session)
            if message.startswith("⚠"):
                yield _skip7(message)
                return
            outcome: dict[str, bool] = {}
            length = len(rec.chunks[handle.chunk_id]["actions"])
            yield from _follow(studio, session, handle, int(paused_event), length, outcome)
            if not outcome.get("go_on") or not rec.running_plan:
                return
    elif not rec.running_plan:
        yield _skip7(studio.resume(session))
        return
    yield from run_plan(studio, session, mode, seed, steps)


def _wait_until_no_chunk(studio, timeout_s: float = 2.0) -> None:
    """After Stop: the robot acks at once, its telemetry says so at the next message (<= 20 ms
    at 50 Hz); a chunk sent before that would be refused as the robot still looks busy."""
    from robot.client import LinkError

    with contextlib.suppress(LinkError):  # not in time: the next send says what the robot does
        studio.robot.wait_telemetry(
            lambda t: t.get("mode") not in ("EXECUTING", "PAUSED"), timeout=timeout_s
        )


def replace_chunk(studio, session: Session) -> str:
    """Swap the running chunk for the active event's new imagination at the next step boundary."""
    from robot.client import LinkError, RejectedError

    rec = studio.recording(session)
    k = session.active
    im = session.imagined.get(k)
    if im is None:
        return warn(f"event {k + 1} is not imagined: Imagine it first, then replace")
    if studio.mode() != "EXECUTING":
        return warn(f"nothing to replace: the robot is {studio.mode() or 'not connected'} "
                    "(Replace works while a chunk runs; when paused, use Resume)")  # fmt: skip
    try:
        chunk_id = f"{session.id}-e{k + 1}-r{int(time.time() * 1000) % 10**8}"
        handle = studio.robot.execute_chunk(
            im.actions, chunk_id=chunk_id, event_index=k, replace=True
        )
    except RejectedError as e:
        return warn(f"the robot refused the replacement: {e.reason}")
    except LinkError as e:
        return warn(f"robot not reachable: {e}")
    session.replacements[chunk_id] = (handle, k)  # the page follows it in the old one's place
    rec.handle = handle
    rec.chunk_started(handle, k, im.actions, replace=True)
    return studio.act(
        session,
        f"Replaced the running chunk by event {k + 1} ({im.length} steps).",
        "correction",
        k,
        type="replace_chunk",
        text=f"replace the running chunk by event {k + 1}",
        chunk_id=chunk_id,
    )


# ------------------------------------------------------------------ take over


def take_over(studio, session: Session) -> tuple[str, Any]:
    """Stop the plan and the chunk, arm if needed, show the jog pad. Returns (status, pad)."""
    from robot.client import LinkError, RejectedError

    if studio.robot is None:
        return warn("no robot connected"), gr.skip()
    rec = studio.recording(session)
    rec.pause_requested.set()
    rec.running_plan = False
    try:
        mode = studio.mode()
        if mode in ("EXECUTING", "PAUSED"):
            studio.robot.stop()
        elif mode == "IDLE":
            studio.robot.arm()
        elif mode != "ARMED":
            return warn(f"cannot take over: the robot is {mode or 'not answering'}"), gr.skip()
    except (RejectedError, LinkError) as e:
        return warn(f"cannot take over: {e}"), gr.skip()
    k = session.active
    rec.takeover_event = k
    status = studio.act(
        session,
        f"Taken over at event {k + 1}: jog with the pad or the keys (arrows ±x ±y, PageUp/Down ±z, "
        "q/e yaw, c/o gripper), then Hand back.",
        "correction",
        k,
        type="takeover",
        text=f"take over at event {k + 1}",
    )
    return status, gr.Group(visible=True)


def jog(studio, session: Session, name: str) -> str:
    """One jog step through the robot's safety path; recorded, flagged intervention."""
    from robot.client import LinkError, RejectedError

    rec = getattr(session, "rec", None)
    if rec is None or rec.takeover_event is None:
        return warn("press Take over first")
    if name not in JOGS:
        return warn(f"unknown jog {name!r}")
    direction, yaw, grip = JOGS[name]
    limits = studio.robot_info().get("limits", {})
    step = min(JOG_STEP_M, float(limits.get("max_step_m", JOG_STEP_M)))
    rot = min(JOG_YAW_RAD, float(limits.get("max_rot_step_rad", JOG_YAW_RAD)))
    dxyz = tuple(step * d for d in direction)
    try:
        reply = studio.robot.jog(dxyz=dxyz, drpy=(0.0, 0.0, rot * yaw), gripper=grip)
    except RejectedError as e:
        return warn(f"jog refused by the robot: {e.reason}")
    except LinkError as e:
        return warn(f"robot not reachable: {e}")
    rec.jog_target = np.asarray(reply.get("target"), np.float32)
    clipped = bool(reply.get("clipped"))
    return studio.act(
        session,
        f"Jog {name}" + (" (clipped by the robot's limits)" if clipped else "") + ".",
        "jog",
        rec.takeover_event,
        move=name,
        dxyz=list(dxyz),
        dyaw=rot * yaw,
        gripper=grip,
        target=rec.jog_target,
        clipped=clipped,
    )


def hand_back(studio, session: Session, event: float | None) -> tuple:
    """End the take-over; the plan goes on from the chosen event (1-based on the page)."""
    rec = getattr(session, "rec", None)
    if rec is None or rec.takeover_event is None:
        return (warn("nothing to hand back: press Take over first"), gr.skip(), gr.skip())
    n = len(session.plan)
    if event is None or not 1 <= int(event) <= max(n, 1) or float(event) != int(event):
        return (warn(f"hand back at an event of the plan: 1..{n}"), gr.skip(), gr.skip())
    k = int(event) - 1
    time.sleep(0.15)  # the last jog's control step reaches the recorder as an intervention
    rec.takeover_event = None
    rec.jog_target = None
    session.active = k
    status = studio.act(
        session,
        f"Handed back at event {k + 1}: {session.plan[k] if session.plan else ''}. Imagine it, "
        "or Run plan.",
        "correction",
        k,
        type="handback",
        text=f"hand back at event {k + 1}",
    )
    return status, gr.Group(visible=False), studio.plan_outputs(session)[0]
