"""Every studio tab records its session into the session store (sessions/), as it happens.

`RecordingStudio` is the studio with recording: it wraps the handlers that change something
(plan edits, imagination, approval and chunks, robot commands, faults) and writes each act
before the page says it happened ("Saved ..." in the status line; the top bar's Session box
counts what is durable). A tab's session starts at its first recorded act (an opened page that
does nothing leaves nothing behind) and ends when the scene is reset to another episode or the
studio stops.

`Recording` is one tab's recorded side: its `SessionWriter` and a thread that records the
executed telemetry, one frame (state, three views, Task Progress, chunk and step) per control
step while one of this tab's chunks runs or the operator has taken over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np

from app.studio.handlers import Studio, warn
from app.studio.session import Session
from sessions.divergence import event_divergence
from sessions.frames import Frame
from sessions.store import DEFAULT_ROOT, SessionError, SessionStore, checkpoint_hash

log = logging.getLogger("wallwm.studio")

POLL_S = 0.02  # telemetry poll of the step recorder (control runs at 10 Hz, telemetry at 50 Hz)
SETTLE_TIMEOUT_S = 5.0  # how long a chunk's end may take to reach the store before the page says so
KEEP_RECENT_CHUNKS = (
    4  # the latest chunks whose imaginations keep their video (Recording.keep_video)
)


def describe_change(before: list[str], after: list[str]) -> str:
    """A plan edit in words (the interjection text of the exported dataset)."""
    if len(after) == len(before) + 1:
        i = next((j for j in range(len(before)) if before[j] != after[j]), len(before))
        return f"insert event {i + 1}: {after[i]!r}"
    if len(after) == len(before) - 1:
        i = next((j for j in range(len(after)) if before[j] != after[j]), len(after))
        return f"delete event {i + 1}: {before[i]!r}"
    if len(after) == len(before):
        changed = [j for j in range(len(after)) if before[j] != after[j]]
        if len(changed) == 1:
            j = changed[0]
            return f"edit event {j + 1}: {before[j]!r} -> {after[j]!r}"
        if len(changed) == 2 and sorted(before) == sorted(after):
            return f"swap events {changed[0] + 1} and {changed[1] + 1}"
    return "replace the plan: " + " | ".join(after)


class Recording:
    """One tab's session in the store, and the thread that records its executed steps."""

    def __init__(self, writer: Any, robot: Any) -> None:
        self.writer = writer
        self.robot = robot
        self.imagination_ids: dict[int, int] = {}  # event index -> its latest imagination
        self.chunks: dict[
            str, dict
        ] = {}  # this tab's chunks: id -> {event_index, imagination_id, actions}
        self.takeover_event: int | None = None  # the event the operator is correcting by hand
        self.jog_target: np.ndarray | None = None
        self.pause_requested = threading.Event()  # a running plan stops at the next boundary
        self.handle: Any | None = None  # the chunk a plan run follows (kept across Pause)
        self.running_plan = False
        self.last_error = ""
        # imagination id -> its video, for the divergence of the chunk sent from it (`keep_video`)
        self.videos: dict[int, dict[str, np.ndarray]] = {}
        self._frames: dict[str, list[Frame]] = {}
        self._ended: queue.SimpleQueue = queue.SimpleQueue()
        self._settled: dict[str, threading.Event] = {}  # chunk id -> its end is in the store
        self._stop = threading.Event()
        self._last_control = None
        self._last_score: int | None = None
        self._thread = threading.Thread(target=self._run, name="session-steps", daemon=True)
        self._thread.start()

    # -- chunks ----------------------------------------------------------------------------

    def keep_video(self, event_index: int, imagination_id: int, video: dict) -> None:
        """Hold an imagination's video until a chunk sent from it can be compared with what the
        robot did. Only each event's latest imagination can be sent, plus one that a running
        chunk came from, so the videos of the others are let go (they are in the store): a
        long session's memory stays flat."""
        self.imagination_ids[event_index] = imagination_id
        self.videos[imagination_id] = video
        running = {c["imagination_id"] for c in list(self.chunks.values())[-KEEP_RECENT_CHUNKS:]}
        keep = set(self.imagination_ids.values()) | running
        for iid in [i for i in self.videos if i not in keep]:
            del self.videos[iid]

    def chunk_started(
        self, handle: Any, event_index: int, actions: np.ndarray, replace: bool = False
    ) -> None:
        iid = self.imagination_ids.get(event_index)
        self.chunks[handle.chunk_id] = {
            "event_index": event_index,
            "imagination_id": iid,
            "actions": np.asarray(actions, np.float32),
        }
        self.writer.chunk_sent(
            handle.chunk_id, event_index, iid, actions, handle.accepted, replace=replace
        )
        self._settled[handle.chunk_id] = threading.Event()
        handle.finished.add_done_callback(lambda f, cid=handle.chunk_id: self._ended.put((cid, f)))

    def wait_settled(self, chunk_id: str, timeout: float) -> bool:
        """Wait until the recorder has written the end of chunk `chunk_id` (its ack, its last
        steps and its divergence); False if that did not happen within `timeout` seconds."""
        done = self._settled.get(chunk_id)
        return done is not None and done.wait(timeout)

    # -- the step recorder -----------------------------------------------------------------

    def close(self, outcome: str | None = None) -> None:
        self._stop.set()
        self._thread.join(5)
        self.writer.close(outcome)

    def outcome(self) -> str:
        if self._last_score is None:
            return "no executed steps" if self.writer.frame == 0 else "ended"
        return "success" if self._last_score >= 10 else f"Task Progress {10 * self._last_score} %"

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._poll()
                self._finish_chunks()
            except SessionError as e:
                self.last_error = str(e)
            except Exception as e:  # the link went away mid-call: keep recording what comes
                log.debug("step recorder: %s", e)

    def _poll(self) -> None:
        t = self.robot.telemetry if self.robot is not None else None
        if not t or t.get("control_step") == self._last_control:
            return
        ours = t.get("chunk_id") in self.chunks
        if not ours and self.takeover_event is None:
            self._last_control = t.get("control_step")
            return
        obs = self.robot.get_observation(timeout=2.0)
        self._last_control = obs.get("control_step", t.get("control_step"))
        t = self.robot.telemetry or t
        intervention = bool(t.get("intervention")) or self.takeover_event is not None
        chunk_id = t.get("chunk_id") if ours else None
        event = t.get("event_index") if ours and not intervention else self.takeover_event
        score = obs.get("task_progress")
        frame_tags = {
            "control_step": int(self._last_control or 0),
            "mode": str(obs.get("mode", "")),
            "chunk_id": chunk_id,
            "step": int(t.get("step") or 0) if chunk_id else 0,
            "event_index": event,
            "intervention": intervention,
            "task_progress": score,
        }
        target = self.jog_target if intervention else None
        index = self.writer.step(obs["state"], obs["images"], target=target, **frame_tags)
        if chunk_id is not None:
            self._frames.setdefault(chunk_id, []).append(
                Frame(index, int(obs.get("t_ns", 0)), np.asarray(obs["state"]), obs["images"],
                      **{k: v for k, v in frame_tags.items() if k != "control_step"})
            )  # fmt: skip
        if isinstance(score, int) and score != self._last_score:
            self._last_score = score
            self.writer.progress(score, obs.get("stages") or [])

    def _finish_chunks(self) -> None:
        while True:
            try:
                chunk_id, future = self._ended.get_nowait()
            except queue.Empty:
                return
            time.sleep(2 * POLL_S)  # the chunk's last step reaches telemetry, then us
            self._poll()
            try:
                ack = future.result()
            except Exception as e:  # link lost: the chunk's end is unknown
                ack = {"status": "unknown", "reason": str(e)}
            try:
                self._chunk_ended(chunk_id, ack)
            finally:
                self._settled.setdefault(chunk_id, threading.Event()).set()

    def _chunk_ended(self, chunk_id: str, ack: dict) -> None:
        self.writer.chunk_ended(chunk_id, ack)
        info = self.chunks.get(chunk_id, {})
        frames = self._frames.pop(chunk_id, [])
        iid = info.get("imagination_id")
        if iid is None or not frames:
            return
        d = event_divergence(info["actions"], self.videos.get(iid), frames)
        if d is not None:
            self.writer.divergence(
                {**d, "chunk_id": chunk_id, "event_index": info["event_index"],
                 "imagination_id": iid}
            )  # fmt: skip


class RecordingStudio(Studio):
    """The studio, recording every tab's session into a `SessionStore`."""

    def __init__(self, *args: Any, sessions: str | Any = DEFAULT_ROOT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = SessionStore(sessions)
        self._recordings: weakref.WeakSet[Recording] = weakref.WeakSet()
        self._checkpoint_hash: str | None = None
        self.autodemo = False  # wallwm studio --demo: the showcase starts when the page opens

    # -- the recording of a tab ------------------------------------------------------------

    def recording(self, session: Session, initial_plan: list[str] | None = None) -> Recording:
        """The tab's recording, started at its first recorded act with the plan as version 1."""
        rec = getattr(session, "rec", None)
        if rec is not None:
            return rec
        info = self.backend.info()
        robot_info = self.robot_info()
        if self._checkpoint_hash is None:
            self._checkpoint_hash = checkpoint_hash(info.get("checkpoint"))
        writer = self.store.create(
            {
                "task": session.task,
                "seed": session.seed,
                "instruction": session.task_text,
                "source": session.source,
                "tab": session.id,
                "fps": robot_info.get("fps", 10),
                "robot": robot_info.get("robot", ""),
                "cameras": robot_info.get("cameras", {}),
                "model": f"{info.get('preset')}/{info.get('recipe')}",
                "checkpoint": info.get("checkpoint") or "",
                "checkpoint_hash": self._checkpoint_hash,
            }
        )
        rec = Recording(writer, self.robot)
        writer.plan(
            initial_plan if initial_plan is not None else session.plan, "scene", "the page's plan"
        )
        session.rec = rec
        self._recordings.add(rec)
        return rec

    def end_recording(self, session: Session) -> None:
        rec = getattr(session, "rec", None)
        if rec is not None:
            session.rec = None
            rec.close(rec.outcome())

    def close_all(self) -> None:
        """At shutdown: every open session gets its outcome and end time."""
        for rec in list(self._recordings):
            if not rec.writer.closed:
                rec.close(rec.outcome())

    def saved_text(self, session: Session) -> str:
        rec = getattr(session, "rec", None)
        if rec is None:
            return "not recording yet (starts at the first act)"
        w = rec.writer
        text = f"{w.id} · {w.saved} records · {w.frames.flushed} steps saved"
        return text + (f" · {warn(rec.last_error)}" if rec.last_error else "")

    def _recorded(self, session: Session, message: str, write) -> str:
        """Run a store write; the message says it is saved only once the write returned."""
        try:
            what = write(self.recording(session))
        except SessionError as e:
            return f"{message} {warn(f'not recorded: {e}')}"
        return f"{message} Saved{f' ({what})' if what else ''}."

    def act(
        self, session: Session, message: str, kind: str, event_index: int | None, **data: Any
    ) -> str:
        """Record an operator's act (`records` row of `kind`); the message says it is saved."""

        def write(rec: Recording) -> str:
            rec.writer.record(kind, "operator", event_index, **data)
            return ""

        return self._recorded(session, message, write)

    # -- wrapped handlers ------------------------------------------------------------------

    def _edit(self, session: Session, change) -> tuple:
        before = list(session.plan)
        out = super()._edit(session, change)
        if session.plan == before:
            return out
        change_text = describe_change(before, session.plan)
        first = getattr(session, "rec", None) is None

        def write(rec: Recording) -> str:
            v = rec.writer.plan(
                session.plan, "operator", change_text, correction=True, event_index=session.active
            )
            return f"plan v{v}"

        if first:
            self.recording(session, initial_plan=before)
        return (*out[:-1], self._recorded(session, out[-1], write))

    def pick_task(self, session: Session, task: str, seed: float | None) -> Iterator[tuple]:
        self.end_recording(session)  # a reset starts a new episode: a new session
        yield from super().pick_task(session, task, seed)

    def imagine(
        self,
        session: Session,
        mode: str,
        seed: float | None,
        steps: float | None,
        request: gr.Request | None = None,
    ) -> Iterator[tuple]:
        seen = dict(session.imagined)
        for item in super().imagine(session, mode, seed, steps, request):
            new = [k for k, im in session.imagined.items() if seen.get(k) is not im]
            if new:
                k = new[0]
                seen[k] = session.imagined[k]
                status = self._recorded(
                    session,
                    item[1],
                    lambda rec, k=k: self._write_imagination(rec, session, k, mode, seed, steps),
                )
                item = (item[0], status, *item[2:])
            yield item

    def _write_imagination(
        self, rec: Recording, session: Session, k: int, mode, seed, steps
    ) -> str:
        im = session.imagined[k]
        info = self.backend.info()
        iid = rec.writer.imagination(
            k,
            session.plan[k],
            im.chunk,
            im.validity,
            im.video,
            length=im.length,
            model=f"{info.get('preset')}/{info.get('recipe')}",
            checkpoint=info.get("checkpoint") or "",
            checkpoint_hash=self._checkpoint_hash or "",
            seed=int(seed),
            steps=int(steps),
            mode=mode,
            timings={**im.timings, **self.backend.last_timings},
            start_state=session.imagined_from[k],
        )
        rec.keep_video(k, iid, im.video or {})
        return f"imagination #{iid}"

    def chunk_settled(self, session: Session, chunk_id: str) -> str:
        rec = getattr(session, "rec", None)
        if rec is None or chunk_id not in rec.chunks:
            return ""
        if rec.wait_settled(chunk_id, SETTLE_TIMEOUT_S):
            return " Saved."
        return " " + warn(f"chunk {chunk_id}'s end is not in the session store yet")

    def _send(self, session: Session, k: int) -> tuple[Any, Any]:
        handle, im = super()._send(session, k)
        rec = self.recording(session)
        try:
            rec.writer.record("approval", "operator", k, text=session.plan[k])
            rec.chunk_started(handle, k, im.actions)
        except SessionError as e:
            rec.last_error = str(e)
        return handle, im

    def _robot_command(self, session: Session, name: str, done: str) -> str:
        message = super()._robot_command(session, name, done)
        ok = not message.startswith("⚠")

        def write(rec: Recording) -> str:
            rec.writer.record(
                "command", "operator", session.active, type=name, ok=ok, reply=message
            )
            return ""

        return self._recorded(session, message, write)

    def tick(self, session: Session) -> tuple:
        before = session.last_mode
        out = super().tick(session)
        rec = getattr(session, "rec", None)
        if (
            rec is not None
            and session.last_mode != before
            and session.last_mode in ("FAULT", "ESTOP")
        ):
            t = self.robot.telemetry or {}
            try:
                rec.writer.record(
                    "fault", "robot", session.active, mode=session.last_mode,
                    faults=list(t.get("faults") or []),
                )  # fmt: skip
            except SessionError as e:
                rec.last_error = str(e)
        return (*out, self.saved_text(session))
