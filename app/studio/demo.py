"""Demo mode: a scripted showcase of a reasoning task, with captions, for a stakeholder meeting.

**Demo** (or `wallwm studio --demo`, which starts it when the page opens) walks the loop the
studio exists for, on `press_buttons_in_order`: the task and its plan of next events, the model
imagining event 1, the operator approving it and the robot executing it, a correction (the
operator takes over, jogs the gripper up and hands back at event 2, then edits event 2's
wording), and execution from the corrected event. Each stage shows a caption above the plan.
It is recorded like any session.

**Stop demo** works at any moment: it stops a running chunk on the robot (the robot holds),
disarms it, and ends the showcase at its next step; the showcase's own end does the same, so it
never leaves the robot moving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import gradio as gr

from app.studio import teleop
from app.studio.handlers import warn
from app.studio.session import SOURCES, Session
from backend.service import BackendError

TASK, SEED = "press_buttons_in_order", 3
DEMO_STEPS = 4  # denoising steps: quick enough for a live audience on a CPU
OUTPUTS = 16  # the page's scene outputs (12), grid, grid caption, mode, caption


def caption_html(text: str) -> str:
    return (
        f'<div class="demo-caption" role="note" aria-label="Demo caption">{text}</div>'
        if text
        else ""
    )


def _scene(item: tuple, caption: str) -> tuple:
    s = gr.skip()
    return (*item, s, s, s, caption_html(caption))


def _run(item: tuple, caption: str) -> tuple:
    """A plan-run/imagine item (viewer, status, grid, grid caption, trajectories, plan[, mode])."""
    s = gr.skip()
    viewer, status, grid, grid_caption, traj, plan = item[:6]
    mode = item[6] if len(item) > 6 else s
    return (viewer, plan, s, s, s, s, s, status, traj, s, s, s, grid, grid_caption, mode,
            caption_html(caption))  # fmt: skip


def _status(status: str, caption: str) -> tuple:
    s = gr.skip()
    return (s, s, s, s, s, s, s, status, s, s, s, s, s, s, s, caption_html(caption))


def demo(studio, session: Session) -> Iterator[tuple]:
    """What **Demo** runs: the showcase, ended at its next step once Stop demo is pressed.

    Stop demo does not cancel this handler through Gradio: a cancelled handler's last message can
    still reach the page after Stop demo's own, and the page would show a stale "Imagining…"
    over "Demo stopped". Instead the showcase is closed here (its `finally` leaves the robot
    still) and the last message the page gets from the demo is the stopped status.
    """
    session.demo_stop.clear()
    showcase = run_demo(studio, session)
    try:
        for item in showcase:
            if session.demo_stop.is_set():
                break
            yield item
    finally:
        showcase.close()
    if session.demo_stop.is_set():
        yield _status(_stopped(studio), "")


def run_demo(studio, session: Session) -> Iterator[tuple]:
    """The showcase, stage by stage; stops at the next stage boundary after Stop demo."""
    stop = session.demo_stop
    try:
        studio.end_recording(session)
        cap = "1/6 · The task: a reasoning task — press the buttons in the order the instruction gives."
        yield _status("Demo: resetting the scene…", cap)
        try:
            scene = studio.reset_scene(TASK, SEED)
        except BackendError as e:
            yield _status(warn(f"demo: {e}"), "")
            return
        session.source = SOURCES[0]
        session.task, session.seed, session.task_text = scene.task, scene.seed, scene.instruction
        session.set_plan(scene.plan)
        session.executed.clear()
        studio._observe(session)
        rec = studio.recording(session)
        cap = f"1/6 · Task: “{scene.instruction}”. The robot's three cameras are in the viewer."
        for item in studio._stream_context(session, f"Demo: {scene.instruction}"):
            yield _scene(item, cap)
        _pause(2.0, stop)

        if stop.is_set():
            return
        cap = (f"2/6 · Plan proposal: {len(session.plan)} next events, one short instruction each. "
               "The operator can edit, insert or reorder them.")  # fmt: skip
        yield _status(f"Demo: the plan has {len(session.plan)} events.", cap)
        _pause(2.5, stop)

        if stop.is_set():
            return
        cap = "3/6 · Imagination: the model imagines event 1 — video for every view and the gripper path."
        for item in studio.imagine(session, "event", 0, DEMO_STEPS):
            yield _run(item, cap)
        if 0 not in session.imagined or stop.is_set():
            return

        cap = "4/6 · Approval: the operator approves; the chunk streams to the robot and executes."
        rec.pause_requested.clear()
        try:
            handle, im = studio._send(session, 0)
        except BackendError as e:
            yield _status(warn(f"demo: {e}"), "")
            return
        outcome: dict[str, bool] = {}
        for item in teleop._follow(studio, session, handle, 0, im.length, outcome):
            yield _run(item, cap)
            if stop.is_set():
                return

        cap = ("5/6 · A correction: the operator takes over, jogs the gripper up by hand "
               "(recorded as an intervention) and hands back at event 2.")  # fmt: skip
        status, _ = teleop.take_over(studio, session)
        yield _status(status, cap)
        for _ in range(3):
            if stop.is_set():
                return
            yield _status(teleop.jog(studio, session, "+z"), cap)
            time.sleep(0.3)
        teleop.hand_back(studio, session, min(2, len(session.plan)))
        k = session.active
        new = f"{session.plan[k]} now"
        out = studio._edit(session, lambda: session.edit_event(k, new) or f"Event {k + 1} edited.")
        cap = (f"5/6 · …and rewords event {k + 1} to “{new}”: the edit is saved as a plan "
               "version and, on export, a language interjection.")  # fmt: skip
        yield (gr.skip(), out[0], out[1], out[2], *(gr.skip(),) * 3, out[3],
               *(gr.skip(),) * 7, caption_html(cap))  # fmt: skip
        _pause(2.0, stop)

        if stop.is_set():
            return
        cap = f"6/6 · Execution goes on from event {k + 1}, imagined again from where the robot is now."
        for item in teleop.run_plan(studio, session, "event", 0, DEMO_STEPS):
            yield _run(item, cap)
            if stop.is_set() or session.active > k:
                break
        rec.pause_requested.set()
        yield _status(
            "Demo finished: every step is recorded. Open the Sessions tab to replay, compare and "
            "export it as a LeRobot dataset.",
            "Demo finished · Sessions tab: replay, compare, export to LeRobot v3.0.",
        )
    finally:
        _halt(studio)


def _pause(seconds: float, stop) -> None:
    """Let the audience read, but wake at once on Stop demo."""
    stop.wait(seconds)


def _halt(studio) -> None:
    """Leave the robot still: stop a chunk (it holds), then disarm."""
    from robot.client import LinkError, RejectedError

    if studio.robot is None:
        return
    try:
        mode = studio.mode()
        if mode in ("EXECUTING", "PAUSED"):
            studio.robot.stop()
            mode = "ARMED"
        if mode == "ARMED":
            studio.robot.disarm()
    except (LinkError, RejectedError):
        pass


def stop_demo(studio, session: Session) -> tuple[str, str]:
    """Stop the showcase now; the robot is left holding and disarmed."""
    session.demo_stop.set()
    rec = getattr(session, "rec", None)
    if rec is not None:
        rec.pause_requested.set()
        rec.takeover_event = None
    _halt(studio)
    return _stopped(studio), ""


def _stopped(studio) -> str:
    return f"Demo stopped: the robot holds, disarmed ({studio.mode() or 'no robot'})."
