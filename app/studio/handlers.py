"""The studio's event handlers: small plain functions and generators over a per-tab `Session`.

`Studio` holds what all tabs share: the backend (one model), the robot link (one robot) and
the scene the robot was last reset to. Handlers read and write only their tab's `Session`;
they never raise into Gradio: a bad request becomes a message in the status box and the
studio stays up.

Rerun: every handler that changes what the viewer shows is a generator running inside its
own recording (`viewers.rerun.stream_recording`: rerun's `@rr.thread_local_stream`, plus a sweep
that gives back what rerun-sdk keeps of finished ones), which it fills with the blueprint, the
scene, the observation and the plan's paths, then streams (`rr.binary_stream().read()`) as it
goes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import rerun as rr

from app.studio import pictures
from app.studio.session import SOURCES, PlanError, Session, label_index, parse_plan
from backend.service import Backend, BackendError
from robot.types import CameraCalib
from viewers.rerun import stream_recording

log = logging.getLogger("wallwm.studio")

LINK_OK_S, LINK_SLOW_S = 0.5, 2.0  # telemetry age: green below, amber below, red above
MAX_START_DRIFT_M = 0.02  # the robot moved more than this since the imagination: imagine again
PREVIEW_VIDEOS = 5  # preview frames reach the page at most this many times per imagination
RERUN_EVERY_S = 2.0  # while imagining, the viewer gets its data at most this often
KEEP_STREAMS = (
    4  # finished viewer streams a tab keeps in the studio's memory (Studio.prune_streams)
)
EXEC_REFRESH_S = 1.0  # the status line's refresh while a chunk runs
PATH_PUSH_M = 0.005  # the viewer gets the executed path again once it moved this far (a repaint)
WORKSPACE_DEFAULT = ((-0.22, -0.22, 0.0), (0.22, 0.22, 0.30))


def warn(text: str) -> str:
    return f"⚠ {text}"


def track_pose(path: list[np.ndarray], telemetry: dict, chunk_id: str) -> None:
    """Append the end-effector pose of `telemetry` to the executed `path` of chunk `chunk_id`
    (skipped when telemetry is about another chunk or the pose has not moved)."""
    if telemetry.get("chunk_id") == chunk_id and "ee_pose" in telemetry:
        pose = np.asarray(telemetry["ee_pose"], np.float32)
        if not path or not np.allclose(path[-1], pose):
            path.append(pose)


def path_moved(path: list[np.ndarray], shown: np.ndarray | None) -> bool:
    """Whether the executed `path` moved PATH_PUSH_M since the viewer last showed it (`shown`, the
    pose it ended at). Every push repaints the viewer (~1 s of the page's main thread without a
    GPU), so a slow or holding robot is not redrawn every refresh: the page stays responsive."""
    if not path:
        return False
    return shown is None or float(np.linalg.norm(path[-1][:3] - shown[:3])) >= PATH_PUSH_M


def trace(mark: str, **fields: Any) -> None:
    """Append a wall-clock timing mark to the file named by $WALLWM_TRACE (off when unset).

    `wallwm bench studio` sets it to split click-to-pixels into the page's and the server's
    shares; one JSON line per mark: {"mark", "t" (epoch seconds), **fields}.
    """
    path = os.environ.get("WALLWM_TRACE")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"mark": mark, "t": time.time(), **fields}) + "\n")


@dataclass
class Scene:
    """What the robot was last reset to (shared by every tab: there is one robot)."""

    task: str = ""
    seed: int = 0
    instruction: str = ""
    plan: list[str] = field(default_factory=list)


class Studio:
    """Shared resources and the handlers; the UI (app.studio.ui) wires them to widgets."""

    def __init__(
        self,
        backend: Backend,
        robot: Any | None,
        tasks: dict[str, str],
        dataset: str = "",
    ) -> None:
        self.backend = backend
        self.robot = robot  # robot.client.RobotClient (connected) or None
        self.tasks = tasks  # task name -> description
        self.dataset = dataset
        self.scene = Scene()
        self._scene_lock = threading.Lock()  # one reset at a time
        self._datasets: dict[str, Any] = {}
        self._cones: dict[bytes, tuple[Any, Any, Any]] = {}

    # ================================================================ robot helpers

    def robot_info(self) -> dict[str, Any]:
        """The robot's hello (cameras, limits); {} while it does not answer."""
        from robot.client import LinkError, RejectedError

        if self.robot is None:
            return {}
        if self.robot.info is None:
            try:
                self.robot.hello()
            except (LinkError, RejectedError):
                return {}
        return self.robot.info

    def cameras(self) -> dict[str, CameraCalib]:
        cams = self.robot_info().get("cameras", {})
        return {n: CameraCalib.from_dict(n, d) for n, d in cams.items()}

    def workspace(self) -> tuple[np.ndarray, np.ndarray]:
        limits = self.robot_info().get("limits", {}) if self.robot is not None else {}
        lo = limits.get("workspace_min", WORKSPACE_DEFAULT[0])
        hi = limits.get("workspace_max", WORKSPACE_DEFAULT[1])
        return np.asarray(lo, np.float64), np.asarray(hi, np.float64)

    def mode(self) -> str:
        t = self.robot.telemetry if self.robot is not None else None
        return str(t.get("mode", "")) if t else ""

    def reset_scene(self, task: str, seed: int) -> Scene:
        """Reset the (simulated) robot to `task` and `seed` and remember its plan.

        The robot must be disarmed to move the scene: a held robot is stopped and disarmed
        first; ESTOP and FAULT need the operator (Reset fault) and are refused here.
        """
        from robot.client import LinkError, RejectedError

        if task not in self.tasks:
            raise BackendError(f"unknown task {task!r}; pick one of the list")
        if self.robot is None:
            raise BackendError("no robot connected: the task picker resets the simulated robot")
        with self._scene_lock:
            try:
                mode = self.mode()
                if mode in ("ESTOP", "FAULT"):
                    raise BackendError(
                        f"the robot is in {mode}: press Reset fault, then pick the task again"
                    )
                if mode in ("EXECUTING", "PAUSED"):
                    self.robot.stop()
                if mode in ("ARMED", "EXECUTING", "PAUSED"):
                    self.robot.disarm()
                reply = self.robot.reset(task=task, seed=int(seed))  # also updates the calibration
            except RejectedError as e:
                raise BackendError(f"the robot refused the reset: {e.reason}") from None
            except LinkError as e:
                raise BackendError(f"robot not reachable: {e}") from None
            instruction = str(reply.get("instruction") or self.tasks[task])
            track = self.backend.caption_track
            plan = [_event_text(e, track) for e in reply.get("expert_plan") or []]
            self.scene = Scene(
                task, int(seed), instruction, [p for p in plan if p] or [instruction]
            )
            return self.scene

    # ================================================================ rerun helpers

    def _log_context(self, session: Session, status: str | None = None) -> None:
        """Blueprint, scene, observation, and every path of the plan so far, into the current recording."""
        from viewers.rerun import (
            highlight_event,
            log_executed,
            log_observation,
            log_preview,
            log_scene,
            send_blueprint,
        )

        cams = _obs_cameras(session) or self.cameras()
        if not cams:
            return
        send_blueprint(list(cams))
        lo, hi = self.workspace()
        log_scene(cams, lo, hi)
        if session.obs is not None:
            log_observation(session.obs.images, session.obs.state, session.obs_step)
        for k, im in session.imagined.items():
            if k != session.active:
                log_preview(k, 1, 1, im.chunk, im.validity)
        for k, path in session.executed.items():
            if len(path):
                log_executed(k, np.asarray(path))
        if status and session.plan:
            highlight_event(session.active, session.plan[session.active], status)

    # ================================================================ figures

    def figures(self, session: Session) -> tuple[Any, Any, Any, Any]:
        """3D trajectories, and the sight-cone figures for the session's cameras (cached)."""
        from viewers.cones import cones_figure, overlap_figure, token_mask_figure
        from viewers.trajectories import trajectory_figure

        events = []
        for k, text in enumerate(session.plan):
            e: dict[str, Any] = {"label": f"{k + 1}. {text[:40]}"}
            if k in session.imagined:
                e["imagined"] = session.imagined[k].actions
            if len(session.executed.get(k, [])):
                e["executed"] = np.asarray(session.executed[k])
            if k == session.active and session.ground_truth is not None and k in session.imagined:
                e["ground_truth"] = session.ground_truth["actions"][
                    : len(session.imagined[k].actions)
                ]
            if len(e) > 1:
                events.append(e)
        traj = trajectory_figure(events)
        cams = _obs_cameras(session) or self.cameras()
        if not cams:
            return traj, None, None, None
        key = b"".join(
            np.asarray(c.T_world_cam).tobytes() + np.asarray(c.K).tobytes() for c in cams.values()
        )
        if key not in self._cones:
            lo, hi = self.workspace()
            overlap = self.backend.cone_overlap(cams)
            self._cones[key] = (
                cones_figure(cams, workspace_min=lo, workspace_max=hi),
                overlap_figure(overlap["overlap"], overlap["names"]),
                token_mask_figure(overlap["patch_mask"], overlap["names"]),
            )
        return (traj, *self._cones[key])

    # ================================================================ page load

    def on_load(self, session: Session) -> Iterator[tuple]:
        """A new tab: the robot's current task, its default plan, the live observation, the scene.

        Also yields the session itself, last, as the tab's state: Gradio creates a tab's state
        on first use without a lock, so an event racing the page load can leave the tab holding
        a second, empty Session; writing this one back makes the loaded plan the one that stays.
        """
        scene = self.scene
        session.task, session.seed, session.task_text = scene.task, scene.seed, scene.instruction
        session.set_plan(scene.plan)
        session.dataset = self.dataset
        info = self.backend.info()
        message = _model_line(info)
        try:
            self._observe(session)
        except BackendError as e:
            message = warn(str(e)) + "\n" + message
        session.message = message
        for outputs in self._stream_context(session, message):
            yield (*outputs, session)

    @stream_recording
    def _stream_context(self, session: Session, message: str) -> Iterator[tuple]:
        stream = rr.binary_stream()
        self._log_context(session)
        yield (
            stream.read(),
            *self.plan_outputs(session),
            *self.task_outputs(session),
            message,
            *self.figures(session),
        )

    def _observe(self, session: Session) -> None:
        if session.source != SOURCES[0]:
            return
        obs, reply = self.backend.observe()
        session.obs = obs
        t = self.robot.telemetry if self.robot is not None else None
        session.obs_step = int((t or {}).get("step", 0) or 0)
        session.ground_truth = None
        return reply

    # ================================================================ outputs shared by handlers

    def plan_outputs(self, session: Session) -> tuple:
        """Plan radio, event text box, plan-as-text box."""
        return (
            gr.Radio(choices=session.choices(), value=session.active_label()),
            session.plan[session.active] if session.plan else "",
            "\n".join(session.plan),
        )

    def task_outputs(self, session: Session) -> tuple:
        return (
            gr.Dropdown(value=session.task or None),
            session.seed,
            session.task_text,
        )

    # ================================================================ top bar

    def tick(self, session: Session) -> tuple:
        """Telemetry -> link light, mode, Task Progress, model latency, log (unchanged: skipped)."""
        t = self.robot.telemetry if self.robot is not None else None
        age = self.robot.telemetry_age_s if self.robot is not None else float("inf")
        mode = str(t.get("mode", "")) if t else "no robot"
        if age > LINK_SLOW_S:
            mode = f"{mode} (stale)" if t else "NO LINK"
        if t and mode != session.last_mode:
            session.note(f"robot mode {session.last_mode or '?'} → {mode}")
            if t.get("faults"):
                session.note("faults: " + "; ".join(map(str, t["faults"])))
            session.last_mode = mode
        return (
            link_html(age, self.robot is not None),
            mode,
            progress_html(t),
            latency_text(self.backend.last_timings),
            session.log_text(),
        )

    def estop(self) -> str:
        """E-STOP: straight to the robot, never behind model work (no queue, own group)."""
        from robot.client import LinkError, RejectedError

        if self.robot is None:
            return warn("E-STOP: no robot connected")
        try:
            self.robot.estop()
        except (LinkError, RejectedError) as e:
            return warn(f"E-STOP not confirmed by the robot: {e}. Cut its power if it moves.")
        return "E-STOP sent: the robot is latched in ESTOP. Press Reset fault when it is safe."

    def reset_fault(self, session: Session) -> str:
        return self._robot_command(
            session, "reset_fault", "fault reset: the robot is IDLE (disarmed)"
        )

    # ================================================================ task and source

    def pick_task(self, session: Session, task: str, seed: float | None) -> Iterator[tuple]:
        """Reset the sim to the task and seed; load its observation and default plan."""
        try:
            seed = _int(seed, "task seed", 0, 10**6)
            scene = self.reset_scene(task, seed)
            session.source = SOURCES[0]
            session.task, session.seed, session.task_text = (
                scene.task,
                scene.seed,
                scene.instruction,
            )
            session.set_plan(scene.plan)
            session.executed.clear()
            self._observe(session)
            session.note(f"scene reset: {scene.task} seed {scene.seed}")
            message = f"Task {scene.task} (seed {scene.seed}): {scene.instruction}. Plan of {len(scene.plan)} events loaded."
        except (BackendError, PlanError) as e:
            message = warn(str(e))
        yield from self._stream_context(session, message)

    def load_dataset(
        self, session: Session, path: str, episode: float | None, frame: float | None
    ) -> Iterator[tuple]:
        """Dataset source: the observation at a frame, its real future and the episode's plan."""
        from backend.model.wam import Observation

        try:
            ds = self._dataset(path)
            ep_i = _int(episode, "episode", 0, ds.num_episodes - 1)
            ep = ds.episode(ep_i)
            fr = _int(frame, "frame", 0, ep.length - 1)
            h = (self.backend.info().get("h_max") or 32) + 1
            session.source, session.dataset, session.episode, session.frame = (
                SOURCES[1],
                str(path),
                ep_i,
                fr,
            )
            session.obs = Observation(
                {c: f[fr] for c, f in ep.frames.items()}, ep.states[fr], ep.cameras
            )
            session.obs_step = fr
            session.ground_truth = {
                "frames": {c: f[fr : fr + h] for c, f in ep.frames.items()},
                "actions": ep.actions[fr : fr + h - 1],
            }
            session.task, session.seed, session.task_text = ep.task, ep.seed, ep.instruction
            session.set_plan(ep.plan or [ep.instruction])
            session.active = next((i for i, e in enumerate(ep.events) if e.start <= fr < e.end), 0)
            session.executed.clear()
            message = (
                f"Dataset {Path(path).name}, episode {ep_i} ({ep.task}), frame {fr} of {ep.length}: "
                f"imagine from here; the real future is the ground truth in the video grid."
            )
        except (BackendError, PlanError, ValueError, FileNotFoundError, KeyError, IndexError) as e:
            message = warn(f"cannot load the dataset frame: {e}")
        yield from self._stream_context(session, message)

    def _dataset(self, path: str) -> Any:
        from backend.data.lerobot import EventDataset

        path = str(path or "").strip()
        if not path:
            raise BackendError(
                "no dataset path: give a LeRobot v3 dataset directory (e.g. runs/demo)"
            )
        if path not in self._datasets:
            if not (Path(path) / "meta" / "info.json").is_file():
                raise BackendError(f"{path} is not a LeRobot v3 dataset (no meta/info.json)")
            self._datasets[path] = EventDataset(path)
        return self._datasets[path]

    def choose_source(self, session: Session, source: str) -> Iterator[tuple]:
        """Live robot: back to the robot's scene. Dataset: wait for a frame to be loaded."""
        if source == SOURCES[0]:
            yield from self._use_live(session)
            return
        skip = gr.skip()
        yield (
            *(skip,) * 7,
            "Dataset source: give a dataset path, an episode and a frame, then Load frame.",
            *(skip,) * 4,
        )

    def _use_live(self, session: Session) -> Iterator[tuple]:
        session.source = SOURCES[0]
        session.ground_truth = None
        scene = self.scene
        session.task, session.seed, session.task_text = scene.task, scene.seed, scene.instruction
        session.set_plan(scene.plan)
        try:
            self._observe(session)
            message = f"Live robot: {scene.task} (seed {scene.seed})."
        except BackendError as e:
            message = warn(str(e))
        yield from self._stream_context(session, message)

    # ================================================================ plan editor

    def _edit(self, session: Session, change: Callable[[], str]) -> tuple:
        try:
            message = change()
        except PlanError as e:
            message = warn(str(e))
        return (*self.plan_outputs(session), message)

    def select_event(self, session: Session, label: str | None) -> tuple:
        trace("select_event", session=session.id, label=str(label))

        def change() -> str:
            k = label_index(label)
            if k is None or not 0 <= k < len(session.plan):
                return session.message
            session.active = k
            return f"Event {k + 1} selected: {session.plan[k]}"

        return self._edit(session, change)

    def add_event(self, session: Session, text: str) -> tuple:
        def change() -> str:
            session.add_event(text)
            return f"Event {session.active + 1} added."

        return self._edit(session, change)

    def save_event(self, session: Session, text: str) -> tuple:
        def change() -> str:
            session.edit_event(session.active, text)
            return f"Event {session.active + 1} saved."

        return self._edit(session, change)

    def move_event(self, session: Session, offset: int) -> tuple:
        def change() -> str:
            session.move_event(session.active, offset)
            return f"Event moved to position {session.active + 1}."

        return self._edit(session, change)

    def delete_event(self, session: Session) -> tuple:
        def change() -> str:
            k = session.active
            session.delete_event(k)
            return f"Event {k + 1} deleted; the plan has {len(session.plan)} events."

        return self._edit(session, change)

    def replace_plan(self, session: Session, text: str) -> tuple:
        def change() -> str:
            session.set_plan(parse_plan(text))
            return f"Plan replaced: {len(session.plan)} events."

        return self._edit(session, change)

    def propose(self, session: Session, task_text: str) -> tuple:
        """Unified mode's VLM proposes the next event; it is inserted at the active position."""

        def change() -> str:
            try:
                if session.source == SOURCES[0]:
                    self._observe(session)
                if session.obs is None:
                    raise BackendError(
                        "no observation: the robot is not reachable and no dataset frame is loaded"
                    )
                events = self.backend.propose_plan(session.obs, task_text)
            except BackendError as e:
                return warn(str(e))
            session.task_text = str(task_text).strip()
            session.insert_event(session.active, events[0][:500])
            return f"The VLM (unified mode) proposes event {session.active + 1}: {events[0]!r}. Edit it if needed."

        return self._edit(session, change)

    # ================================================================ imagine

    def imagine(
        self,
        session: Session,
        mode: str,
        seed: float | None,
        steps: float | None,
        request: gr.Request | None = None,
    ) -> Iterator[tuple]:
        """Stream the imagination of the active event: previews, then the final result."""
        trace("imagine_request", session=session.id)
        self.prune_streams(request)
        yield from self._imagine(session, mode, seed, steps)

    def prune_streams(self, request: gr.Request | None, keep: int = KEEP_STREAMS) -> None:
        """Forget the viewer streams of this tab's finished events but the last `keep`.

        Gradio keeps every chunk a streaming output ever yielded in memory until the tab closes
        (the page may fetch a playlist after its event ends), so without this each imagination
        left ~1 MB of viewer data in the studio for good. The page holds what it was sent;
        only finished runs are dropped, the newest ones kept for a late fetch.
        """
        blocks = getattr(self, "blocks", None)
        session_hash = getattr(request, "session_hash", None)
        runs = getattr(blocks, "pending_streams", {}).get(session_hash) if session_hash else None
        if not runs:
            return
        ended = [
            run
            for run, streams in list(runs.items())
            if all(getattr(s, "ended", False) for s in streams.values())
        ]
        for run in ended[: max(0, len(ended) - keep)]:
            runs.pop(run, None)

    @stream_recording
    def _imagine(
        self, session: Session, mode: str, seed: float | None, steps: float | None
    ) -> Iterator[tuple]:
        from viewers.rerun import highlight_event, log_imagination, log_preview

        trace("imagine_start", session=session.id)
        skip = gr.skip()
        stream = rr.binary_stream()
        try:
            seed = _int(seed, "imagination seed", 0, 2**31 - 1)
            steps = _int(steps, "denoising steps", 1, 100)
            if session.source == SOURCES[0]:
                self._observe(session)
            if session.obs is None:
                raise BackendError(
                    "no observation: the robot is not reachable and no dataset frame is loaded"
                )
            k = session.active
            stream_iter = self.backend.imagine(session.obs, session.plan, k, mode, seed, steps)
        except BackendError as e:
            yield skip, warn(str(e)), skip, skip, skip, skip
            return
        text = session.plan[k]
        self._log_context(session)
        highlight_event(k, text, "imagining")
        trace("imagine_context", session=session.id)
        # The viewer gets its data in batches (RERUN_EVERY_S) and none before the first preview
        # is on its way: without a GPU every batch costs the page a full repaint of the viewer
        # (~1 s of the browser's main thread in software GL), and the preview waits behind it.
        pushed = None  # when the viewer last got data; None: not yet this imagination

        def viewer_data(final: bool = False) -> Any:
            nonlocal pushed
            now = time.monotonic()
            if pushed is None and not final:  # the first preview goes alone
                pushed = now - RERUN_EVERY_S / 2
                return skip
            if not final and now - pushed < RERUN_EVERY_S:
                return skip
            pushed = now
            return stream.read()

        yield skip, f"Imagining event {k + 1}: {text}", skip, skip, skip, skip
        longest = 0
        session.imagining = k  # Approve waits for this final, not the event's older imagination
        try:
            for msg in stream_iter:
                if msg["type"] == "preview":
                    # Paths and curves every step; frames at most PREVIEW_VIDEOS times, so a
                    # browser without a GPU keeps up with the stream.
                    step, every = msg["step"], max(1, msg["steps"] // PREVIEW_VIDEOS)
                    video = msg["video"] if step == 1 or step % every == 0 else None
                    if video is not None:
                        longest = max(longest, *(len(v) for v in video.values()))
                    log_preview(k, step, msg["steps"], msg["actions"], msg["validity"], video)
                    status = (
                        f"Imagining event {k + 1}: preview step {step}/{msg['steps']} "
                        f"({msg['elapsed_s']:.2f} s)"
                    )
                    grid = self._grid(session, video) if video is not None else (skip, skip)
                    chunk = viewer_data()
                    trace(
                        "imagine_preview",
                        session=session.id,
                        step=step,
                        video=video is not None,
                        bytes=0 if chunk is skip else len(chunk or b""),
                    )
                    yield chunk, status, *grid, skip, skip
                else:
                    result = msg["result"]
                    session.imagined[k] = result
                    session.imagining = None
                    session.imagined_from[k] = np.asarray(session.obs.state, np.float32).copy()
                    video = _pad_video(result.video, longest)
                    log_imagination(
                        k, result.chunk, result.validity, video, text, denoise_steps=steps
                    )
                    highlight_event(k, text, "imagined")
                    status = (
                        f"Imagined event {k + 1} (final): {result.length} steps in {msg['elapsed_s']:.2f} s. "
                        + (
                            "Approve & send to execute it."
                            if session.source == SOURCES[0]
                            else "Dataset source: compare with the ground truth in the video grid."
                        )
                    )
                    # The result in words and pictures first, then the viewer and the 3D
                    # figure: their repaints (~1 s each without a GPU) come after it, not before.
                    # The second message leaves the status line alone (an Approve may have
                    # started in between: Approve waits only for `session.imagining`).
                    trace("imagine_final", session=session.id)
                    yield (
                        skip,
                        status,
                        *self._grid(session, result.video),
                        skip,
                        self.plan_outputs(session)[0],
                    )
                    chunk = viewer_data(final=True)
                    trace("imagine_viewer", session=session.id, bytes=len(chunk or b""))
                    yield chunk, skip, skip, skip, self.figures(session)[0], skip
        except BackendError as e:
            yield stream.read(), warn(str(e)), skip, skip, skip, skip
        finally:
            if session.imagining == k:
                session.imagining = None

    def _grid(self, session: Session, video: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
        gt = session.ground_truth["frames"] if session.ground_truth is not None else None
        return pictures.video_grid(video, session.obs.images, gt)

    # ================================================================ execute

    def approve(self, session: Session) -> Iterator[tuple]:
        """Send the active event's imagined chunk to the robot and follow it until it ends."""
        trace("approve_start", session=session.id)
        yield from self._approve(session)
        trace("approve_end", session=session.id)

    @stream_recording
    def _approve(self, session: Session) -> Iterator[tuple]:
        from robot.client import LinkError, RejectedError
        from viewers.rerun import highlight_event, log_executed, log_imagination, log_observation

        skip = gr.skip()
        k = session.active
        try:
            handle, im = self._send(session, k)
        except BackendError as e:
            yield skip, warn(str(e)), skip, skip, skip
            return
        stream = rr.binary_stream()
        text = session.plan[k]
        self._log_context(session)
        log_imagination(k, im.chunk, im.validity, im.video, text)
        highlight_event(k, text, "executing")
        path: list[np.ndarray] = []
        session.executed[k] = path
        try:  # the mode at once, not at the next tick: a short chunk may end before it
            mode = self.robot.wait_telemetry(lambda t: t.get("chunk_id") == handle.chunk_id, 0.5)[
                "mode"
            ]
        except LinkError:
            mode = skip
        if not handle.finished.done():  # accepted and not finished: the robot is executing it
            mode = "EXECUTING"
        yield (
            stream.read(),
            f"Executing event {k + 1}: {text} ({im.length} steps)",
            skip,
            skip,
            mode,
        )
        started = time.monotonic()
        last_yield = 0.0
        shown: np.ndarray | None = None  # where the viewer's executed path ends
        status = ""
        while not status:  # the chunk, then any chunk that replaced it (Replace running chunk)
            while not handle.finished.done():
                t = self.robot.telemetry or {}
                track_pose(path, t, handle.chunk_id)
                if self.robot.telemetry_age_s > LINK_SLOW_S:
                    status = warn(
                        f"robot link lost during event {k + 1}: no telemetry for "
                        f"{self.robot.telemetry_age_s:.1f} s. The robot holds on its own watchdog."
                    )
                    session.note(f"chunk {handle.chunk_id}: link lost mid-chunk")
                    break
                if time.monotonic() - last_yield >= EXEC_REFRESH_S and path:
                    last_yield = time.monotonic()
                    viewer = skip
                    if path_moved(path, shown):
                        shown = path[-1]
                        log_executed(k, np.asarray(path))
                        viewer = stream.read()
                    yield (
                        viewer,
                        f"Executing event {k + 1}: step {t.get('step', 0)}/{im.length} "
                        f"({last_yield - started:.1f} s)",
                        skip,
                        skip,
                        t.get("mode", skip),
                    )
                time.sleep(0.02)
            if status:
                break
            ack = handle.finished.result()
            executed, clipped = ack.get("executed_steps", 0), ack.get("clipped_steps", 0)
            final = ack.get("status")
            session.note(
                f"chunk {handle.chunk_id}: {final}, {executed} steps executed, {clipped} clipped"
                + (f" ({ack.get('reason')})" if ack.get("reason") else "")
            )
            successor = session.successor(ack)
            if successor is not None:  # follow the replacement as its own event
                if path:
                    log_executed(k, np.asarray(path))
                highlight_event(k, text, "aborted")
                old, (handle, k) = k, successor
                im, text = session.imagined[k], session.plan[k]
                path = session.executed[k] = []
                shown = None
                log_imagination(k, im.chunk, im.validity, im.video, text)
                highlight_event(k, text, "executing")
                last_yield = time.monotonic()  # the swap stays on the status line a while
                yield (
                    stream.read(),
                    f"Executing event {k + 1} in place of event {old + 1}: {text} "
                    f"({im.length} steps)",
                    skip,
                    self.plan_outputs(session)[0],
                    skip,
                )
            elif final == "done":
                status = f"Event {k + 1} done: {executed} steps executed, {clipped} clipped."
                if k + 1 < len(session.plan):
                    session.active = k + 1
                    status += f" Next: event {k + 2}, imagine it."
                status += self.chunk_settled(session, handle.chunk_id)
            else:
                status = warn(
                    f"event {k + 1} {final} after {executed} steps: {ack.get('reason') or 'stopped'}"
                ) + self.chunk_settled(session, handle.chunk_id)
        if path:
            log_executed(k, np.asarray(path))
        highlight_event(k, text, "done" if status.startswith("Event") else "aborted")
        if (
            self.robot.telemetry_age_s <= LINK_SLOW_S
        ):  # the robot answers: show where the event left it
            try:
                self._observe(session)
                log_observation(session.obs.images, session.obs.state, session.obs_step)
            except (BackendError, LinkError, RejectedError):
                pass
        yield stream.read(), status, self.figures(session)[0], self.plan_outputs(session)[0], skip

    def chunk_settled(self, session: Session, chunk_id: str) -> str:
        """Called when a chunk has ended, before the page says so; what to add to that status
        (the recording studio waits until the chunk's end is in the session store)."""
        return ""

    def _send(self, session: Session, k: int) -> tuple[Any, Any]:
        from robot.client import LinkError, RejectedError

        if session.source != SOURCES[0]:
            raise BackendError(
                "the source is a dataset frame: there is nothing to send. Switch to Live robot."
            )
        if self.robot is None:
            raise BackendError("no robot connected")
        if not session.plan:
            raise BackendError("the plan is empty: add an event and imagine it first")
        if session.imagining == k:
            raise BackendError(
                f"event {k + 1} is being imagined again: approve it once the final is in"
            )
        im = session.imagined.get(k)
        if im is None:
            raise BackendError(
                f"event {k + 1} is not imagined yet: press Imagine first, then approve"
            )
        mode = self.mode()
        if self.robot.telemetry_age_s > LINK_SLOW_S:
            raise BackendError(
                f"robot not reachable at {self.robot.cmd_endpoint}: no telemetry for "
                f"{self.robot.telemetry_age_s:.1f} s"
            )
        if mode in ("ESTOP", "FAULT"):
            raise BackendError(f"the robot is in {mode}: press Reset fault when it is safe")
        if mode in ("EXECUTING", "PAUSED"):
            raise BackendError(f"the robot is {mode} another chunk: wait, or Stop it first")
        pose = np.asarray(
            (self.robot.telemetry or {}).get("ee_pose", session.imagined_from[k]), np.float32
        )
        drift = float(np.linalg.norm(pose[:3] - session.imagined_from[k][:3]))
        if drift > MAX_START_DRIFT_M:
            raise BackendError(
                f"the robot moved {drift * 100:.1f} cm since event {k + 1} was imagined: imagine it again"
            )
        try:
            if mode == "IDLE":
                self.robot.arm()
                session.note("armed")
            chunk_id = f"{session.id}-e{k + 1}-{int(time.time() * 1000) % 10**8}"
            handle = self.robot.execute_chunk(im.actions, chunk_id=chunk_id, event_index=k)
        except RejectedError as e:
            session.note(f"chunk for event {k + 1} rejected: {e.reason}")
            raise BackendError(f"the robot rejected the chunk: {e.reason}") from None
        except LinkError as e:
            raise BackendError(f"robot not reachable: {e}") from None
        session.note(
            f"sent chunk {chunk_id}: event {k + 1} '{session.plan[k]}', {len(im.actions)} steps; accepted"
        )
        return handle, im

    # ================================================================ robot commands

    def _robot_command(self, session: Session, name: str, done: str) -> str:
        from robot.client import LinkError, RejectedError

        if self.robot is None:
            return warn("no robot connected")
        try:
            getattr(self.robot, name)()
        except RejectedError as e:
            return warn(f"{name.replace('_', ' ')} refused by the robot: {e.reason}")
        except LinkError as e:
            return warn(f"robot not reachable: {e}")
        session.note(name.replace("_", " "))
        return done

    def pause(self, session: Session) -> str:
        return self._robot_command(
            session, "pause", "paused: the robot holds; Resume continues the chunk"
        )

    def resume(self, session: Session) -> str:
        return self._robot_command(session, "resume", "resumed")

    def stop(self, session: Session) -> str:
        return self._robot_command(
            session, "stop", "stopped: the chunk is aborted and the robot holds (ARMED)"
        )


# ==================================================================== small pure helpers


def _event_text(event: Any, track: str = "subtask") -> str:
    """An expert-plan entry (a caption dict or a string) -> the next-event text, in the caption
    track the checkpoint was trained on."""
    if isinstance(event, dict):
        return str(event.get(track) or event.get("subtask") or "").strip()
    return str(event or "").strip()


def _obs_cameras(session: Session) -> dict[str, CameraCalib]:
    obs = session.obs
    return dict(obs.cameras) if obs is not None and obs.cameras else {}


def _int(value: float | None, what: str, lo: int, hi: int) -> int:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        raise BackendError(f"{what} is empty: give a whole number in [{lo}, {hi}]")
    if float(value) != int(value) or not lo <= int(value) <= hi:
        raise BackendError(f"{what} must be a whole number in [{lo}, {hi}], got {value}")
    return int(value)


def _pad_video(video: dict[str, np.ndarray] | None, length: int) -> dict[str, np.ndarray] | None:
    """Repeat the last frame up to `length` frames, so no longer preview outlives the final video."""
    if not video:
        return video
    out = {}
    for cam, frames in video.items():
        extra = max(0, length - len(frames))
        out[cam] = (
            np.concatenate([frames, np.repeat(frames[-1:], extra, axis=0)]) if extra else frames
        )
    return out


def _model_line(info: dict) -> str:
    if info["loaded"]:
        return (
            f"Model {info['preset']} ({info['recipe']} recipe) from {info['checkpoint']} "
            f"({info['checkpoint_reason']})."
        )
    if info["loading"]:
        return f"Model loading from {info['checkpoint']}…"
    return warn(f"No model: {info['error']}. Imagine is unavailable; the robot controls work.")


def link_html(age: float, connected: bool) -> str:
    if not connected:
        colour, text = "#9e9e9e", "no robot"
    elif age <= LINK_OK_S:
        colour, text = "#2e7d32", f"link ok · {age * 1000:.0f} ms"
    elif age <= LINK_SLOW_S:
        colour, text = "#f9a825", f"link slow · {age:.1f} s"
    else:
        colour, text = "#c62828", "link down" if age == float("inf") else f"link down · {age:.0f} s"
    return (
        f'<div class="link" role="status" aria-label="Robot link"><span class="light" '
        f'style="background:{colour}"></span>{text}</div>'
    )


def progress_html(t: dict | None) -> str:
    """Task Progress bar (0..100 %) with the rubric's stages when the robot reports them."""
    score = (t or {}).get("task_progress")
    pct = 10 * int(score) if isinstance(score, int | np.integer) else None
    stages = (t or {}).get("stages") or []
    chips = "".join(
        f'<span class="stage{" done" if s.get("done") else ""}">{"✓ " if s.get("done") else ""}'
        f"{s.get('name', '')} ({s.get('weight', '')})</span>"
        for s in stages
        if isinstance(s, dict)
    )
    value = "–" if pct is None else f"{pct} %"
    now = 0 if pct is None else pct
    return (
        f'<div class="progress"><div class="ptitle">Task Progress <b>{value}</b></div>'
        f'<div class="bar" role="progressbar" aria-label="Task Progress" aria-valuemin="0" '
        f'aria-valuemax="100" aria-valuenow="{now}"><div class="fill" style="width:{now}%"></div></div>'
        f'<div class="stages">{chips}</div></div>'
    )


def latency_text(timings: dict[str, float]) -> str:
    if not timings:
        return "no imagination yet"
    parts = [f"total {timings.get('total_s', 0):.2f} s"]
    for key, name in (("denoise_s", "denoise"), ("decode_s", "decode"), ("vlm_s", "VLM")):
        if key in timings:
            parts.append(f"{name} {timings[key]:.2f} s")
    return " · ".join(parts)
