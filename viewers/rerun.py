"""Rerun recordings of the workbench: one blueprint and the functions that fill it.

Entity paths (docs/viewers.md has the full table):

    /world                          right-handed, z up, metres (the robot base frame)
    /world/workspace                the workspace box the robot clips targets to
    /world/cameras/<cam>            Transform3D (camera -> world) + Pinhole (OpenCV axes)
    /world/cones/<cam>              the camera's sight cone clipped to the workspace
    /world/ee                       the current end-effector pose (axes + gripper-coloured point)
    /world/plan/e<k>/ee_path        imagined end-effector path of plan event k
    /world/executed/e<k>/ee_path    executed end-effector path of event k
    /observed/<cam>                 the robot's current image per camera
    /imagined/<cam>                 imagined frames per camera
    /plots/actions/<name>           the 7 imagined action dims over the event's steps
    /plots/validity                 the validity channel (the chunk ends where it drops below 0)
    /plan/status, /plan/log         which plan event is active, and the history of that

Timelines. Rerun shows data only on the timelines it was logged on, so every temporal log here
carries all three of ours, with 0 where a timeline does not index it; that keeps the current
observation, the paths and the imagination visible together whichever timeline is selected:

    step            the robot's control step of an observation (10 Hz)
    imagined_step   the step inside the imagined event: frame t, action t
    denoise_step    the denoising step of a preview (1..steps); the final result sits at `steps`

These functions own those timelines: each starts by resetting the recording's time context.
All of them log into the current recording (e.g. inside `@rr.thread_local_stream`), or into
``recording`` when given.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from backend.model.wam import chunk_length
from robot.geometry import rpy_to_quat
from robot.types import ACTION_DIM, ACTION_NAMES, CameraCalib
from viewers.cones import (
    D_MAX,
    D_MIN,
    WORKSPACE_MAX,
    WORKSPACE_MIN,
    box_corners,
    camera_colour,
    frustum_depth,
    hex_to_rgb,
    log_cones,
)
from viewers.trajectories import GRIPPER_CLOSED, check_path

APP_ID = "wallwm"
TIMELINES: tuple[str, ...] = ("step", "imagined_step", "denoise_step")
# Status words of a plan event, in the order an event goes through them.
STATUSES: tuple[str, ...] = ("imagining", "imagined", "executing", "done", "aborted")

# Path colours (RGB): hue says imagined vs executed, shade says gripper open vs closed.
IMAGINED_OPEN, IMAGINED_CLOSED = (46, 134, 171), (241, 143, 1)
EXECUTED_OPEN, EXECUTED_CLOSED = (59, 178, 115), (192, 57, 43)
INVALID = (160, 160, 160)  # imagined steps after the validity channel ends the chunk
# Line widths in UI points (Rerun reads negative radii as screen-space), so paths stay visible
# at any zoom; previews are thinner than the final path that replaces them.
PATH_RADIUS, PREVIEW_RADIUS = -2.5, -1.0
SERIES_COLOURS = {
    "x": (228, 87, 46),
    "y": (59, 178, 115),
    "z": (46, 134, 171),
    "roll": (228, 87, 46),
    "pitch": (59, 178, 115),
    "yaw": (46, 134, 171),
    "gripper": (90, 90, 90),
    "validity": (155, 93, 229),
}


def send_blueprint(names: Sequence[str], recording=None) -> None:
    """Send `blueprint(names)` to the current recording (or `recording`), made active.

    What `rr.send_blueprint` does, except that the blueprint's own stream is disconnected once
    its contents are sent: rerun-sdk 0.39 never frees a blueprint stream otherwise (two batching
    threads and its data per call, which no sweep reclaims), and the studio sends the blueprint
    with every streamed event.
    """
    import rerun_bindings
    from rerun.recording_stream import RecordingStream, get_application_id

    app_id = get_application_id(recording=recording) or APP_ID
    stream = RecordingStream._from_native(
        rerun_bindings.new_blueprint(
            application_id=app_id, make_default=False, make_thread_default=False
        )
    )
    try:
        stream.set_time("blueprint", sequence=0)
        blueprint(names)._log_to_stream(stream)
        memory = stream.memory_recording()
        rerun_bindings.send_blueprint(
            memory.storage,
            True,  # make_active
            True,  # make_default
            recording=recording.to_native() if recording is not None else None,
        )
    finally:
        stream.disconnect()


def release_finished_recordings() -> None:
    """Free what rerun-sdk still holds for recordings Python no longer references.

    rerun-sdk 0.39 drops a recording's native side (its batcher threads and the chunks logged
    into it) only in an explicit sweep: a `@rr.thread_local_stream` generator leaves ~2 MB and
    two threads per call otherwise, for the life of the process. The sweep flushes every
    recording first, and flushing a live binary stream waits for its reader, so call it only
    when no stream is live; `stream_recording` does that.
    """
    import rerun_bindings

    rerun_bindings.flush_and_cleanup_orphaned_recordings()


_live_streams = 0
_live_lock = threading.Lock()


def stream_recording(func: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """`@rr.thread_local_stream(APP_ID)` for a generator that streams one recording to a page,
    with the memory of finished ones given back.

    Each call gets its own recording (as with rerun's decorator); a call that starts while no
    other such generator is running first sweeps the recordings of the finished ones
    (`release_finished_recordings`). While one is running (a chunk being followed for a minute)
    the sweep waits for the next idle moment: flushing its stream would block until it reads.
    """
    inner = rr.thread_local_stream(APP_ID)(func)

    @functools.wraps(func)
    def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
        global _live_streams
        with _live_lock:
            if _live_streams == 0:
                release_finished_recordings()
            _live_streams += 1
        try:
            yield from inner(*args, **kwargs)
        finally:
            with _live_lock:
                _live_streams -= 1

    return generator


# ---------------------------------------------------------------------------------- blueprint


def blueprint(
    camera_names: Sequence[str],
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
) -> rrb.Blueprint:
    """The workbench layout: observed and imagined views (left), the 3D world and the action
    and validity plots (right), the active plan event under the images.

    The 3D area has two tabs on ``/world``: "world" (cameras, paths, end effector; the cones
    left out so the paths read) and "sight cones" (everything); the workspace box aims the eye.

    The time panel starts on ``imagined_step``, collapsed to its play bar, so the imagined
    video plays in step with the action plots; the side panels start collapsed to leave the
    room to the views.
    """
    names = [str(c) for c in camera_names]
    if not names:
        raise ValueError("blueprint needs at least one camera name")
    observed = rrb.Horizontal(
        *[rrb.Spatial2DView(origin=f"/observed/{c}", name=f"observed · {c}") for c in names],
        name="observed",
    )
    imagined = rrb.Horizontal(
        *[rrb.Spatial2DView(origin=f"/imagined/{c}", name=f"imagined · {c}") for c in names],
        name="imagined",
    )

    def series(title: str, names: Sequence[str]) -> rrb.TimeSeriesView:
        paths = {n: f"/plots/actions/{n}" if n in ACTION_NAMES else f"/plots/{n}" for n in names}
        return rrb.TimeSeriesView(
            origin="/plots",
            contents=list(paths.values()),
            name=title,
            overrides={
                p: rr.SeriesLines(names=n, colors=[SERIES_COLOURS[n]]) for n, p in paths.items()
            },
            plot_legend=rrb.Corner2D.RightTop,
        )

    plots = rrb.Horizontal(
        series("position (m)", ["x", "y", "z"]),
        series("orientation (rad)", ["roll", "pitch", "yaw"]),
        series("gripper & validity", ["gripper", "validity"]),
    )
    lo, hi = np.asarray(workspace_min, np.float64), np.asarray(workspace_max, np.float64)
    centre = (lo + hi) / 2
    # An orbit eye outside the camera rig, looking at the workspace from the front-right.
    eye = rrb.EyeControls3D(
        position=centre + np.array([1.0, -0.9, 0.7]) * 1.4 * float(np.max(hi - lo)),
        look_target=centre,
        eye_up=[0.0, 0.0, 1.0],
    )
    world = rrb.Tabs(
        rrb.Spatial3DView(
            origin="/world",
            contents=["+ $origin/**", "- /world/cones/**"],  # paths unclouded by the cones
            name="world",
            eye_controls=eye,
        ),
        rrb.Spatial3DView(origin="/world", name="sight cones", eye_controls=eye),
        active_tab=0,
    )
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                observed,
                imagined,
                rrb.TextDocumentView(origin="/plan/status", name="active event"),
                row_shares=[3, 3, 1],
            ),
            rrb.Vertical(world, plots, row_shares=[3, 2]),
            column_shares=[1, 1],
        ),
        rrb.TimePanel(timeline="imagined_step", state="collapsed", play_state="following"),
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
    )


# ---------------------------------------------------------------------------------- helpers


def _at(recording, step: int = 0, imagined_step: int = 0, denoise_step: int = 0) -> None:
    """Stamp the following logs with all three timelines (see the module docstring)."""
    rr.reset_time(recording=recording)
    rr.set_time("step", sequence=int(step), recording=recording)
    rr.set_time("imagined_step", sequence=int(imagined_step), recording=recording)
    rr.set_time("denoise_step", sequence=int(denoise_step), recording=recording)


def _check_index(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


def _check_image(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"{what}: expected a uint8 (H, W, 3) image, got {a.dtype} {a.shape}")
    return a


def _check_video(video: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    out = {}
    for cam, frames in (video or {}).items():
        f = np.asarray(frames)
        if f.ndim != 4 or f.shape[3] != 3 or f.dtype != np.uint8 or 0 in f.shape:
            raise ValueError(
                f"video[{cam!r}]: expected uint8 (T, H, W, 3) frames, got {f.dtype} {f.shape}"
            )
        out[str(cam)] = f
    return out


def _check_chunk(actions: np.ndarray, validity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = check_path(actions, "actions")
    v = np.asarray(validity, dtype=np.float64).reshape(-1)
    if len(v) < len(a):
        raise ValueError(f"validity has {len(v)} steps, fewer than the {len(a)} action steps")
    if not np.all(np.isfinite(v)):
        raise ValueError("validity contains non-finite values")
    return a, v


def _gripper_strips(
    path: np.ndarray, open_rgb: tuple[int, int, int], closed_rgb: tuple[int, int, int]
) -> tuple[list[np.ndarray], list[tuple[int, int, int]]]:
    """Split a (N, 7) path into runs of constant gripper state, each one line strip.

    A run ends on the first point of the next run so the drawn path has no gaps.
    """
    xyz = path[:, :3]
    closed = path[:, 6] > GRIPPER_CLOSED
    cuts = np.flatnonzero(closed[1:] != closed[:-1]) + 1
    starts = np.r_[0, cuts]
    ends = np.r_[cuts, len(path)]
    strips, colours = [], []
    for s, e in zip(starts, ends):
        strip = xyz[s : min(e + 1, len(path))]
        if len(strip) == 1:  # a one-step path: draw a dot-sized strip
            strip = np.vstack([strip, strip])
        strips.append(strip)
        colours.append(closed_rgb if closed[s] else open_rgb)
    return strips, colours


def _log_plan_path(
    event_index: int,
    actions: np.ndarray,
    validity: np.ndarray,
    radius: float,
    label: str,
    recording,
) -> None:
    """The imagined path: the executable prefix coloured by gripper, the padded tail grey."""
    n = min(chunk_length(validity), len(actions))
    strips, colours = _gripper_strips(actions[:n], IMAGINED_OPEN, IMAGINED_CLOSED)
    radii = [radius] * len(strips)
    if n < len(actions):
        strips.append(actions[n - 1 :, :3])  # from the last executed step on
        colours.append(INVALID)
        radii.append(radius / 2)
    labels = [label] * len(strips)  # shown on hover: drawn labels would cover the paths
    rr.log(
        f"world/plan/e{event_index}/ee_path",
        rr.LineStrips3D(strips, colors=colours, radii=radii, labels=labels, show_labels=False),
        recording=recording,
    )


def _log_frames(video: dict[str, np.ndarray], denoise_step: int, recording) -> None:
    """Frame t of each camera on ``imagined_step`` t (frame 0 is the observation it starts from)."""
    for cam, frames in video.items():
        for t, frame in enumerate(frames):
            _at(recording, imagined_step=t, denoise_step=denoise_step)
            rr.log(f"imagined/{cam}", rr.Image(frame), recording=recording)


# ---------------------------------------------------------------------------------- logging


def log_scene(
    cameras: Mapping[str, CameraCalib],
    workspace_min: Sequence[float] = WORKSPACE_MIN,
    workspace_max: Sequence[float] = WORKSPACE_MAX,
    recording=None,
    d_min: float = D_MIN,
    d_max: float = D_MAX,
) -> None:
    """Static scene: world axes, the workspace box, camera frustums and sight cones.

    Log it once per recording (static data logged twice shows a warning in the viewer).
    ``d_min``/``d_max`` set the cones' depth range (the model's by default).
    """
    lo, hi = np.asarray(workspace_min, np.float64), np.asarray(workspace_max, np.float64)
    box_corners(lo, hi)  # validates the box
    rr.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True, recording=recording)
    rr.log(
        "world/workspace",
        rr.Boxes3D(
            fill_mode=rr.components.FillMode.MajorWireframe,
            mins=[lo],
            sizes=[hi - lo],
            colors=[(90, 90, 90)],
            radii=0.001,
            labels=["workspace"],
            show_labels=False,
        ),
        static=True,
        recording=recording,
    )
    for i, (name, cam) in enumerate(cameras.items()):
        if not isinstance(cam, CameraCalib):
            raise TypeError(f"camera {name!r}: expected a CameraCalib, got {type(cam).__name__}")
        rr.log(
            f"world/cameras/{name}",
            rr.Transform3D(translation=cam.T_world_cam[:3, 3], mat3x3=cam.T_world_cam[:3, :3]),
            rr.TransformAxes3D(0.03),  # short axes: the frustum already shows the pose
            rr.Pinhole(
                image_from_camera=cam.K,
                resolution=[cam.width, cam.height],
                camera_xyz=rr.ViewCoordinates.RDF,  # OpenCV: x right, y down, z forward
                image_plane_distance=frustum_depth(cam, lo, hi, d_max),
                color=hex_to_rgb(camera_colour(i)),
            ),
            static=True,
            recording=recording,
        )
    log_cones(cameras, d_min, d_max, lo, hi, recording=recording)


def log_observation(
    images: Mapping[str, np.ndarray],
    state: np.ndarray,
    step: int | None = None,
    recording=None,
) -> None:
    """The robot's current images (uint8 (H, W, 3) per camera) and end-effector pose (7,).

    ``step`` is the robot's control step (0 when unknown); on the imagination timelines the
    observation sits at 0, so it stays visible next to every imagined step.
    """
    s = np.asarray(state, dtype=np.float64).reshape(-1)
    if s.shape != (ACTION_DIM,) or not np.all(np.isfinite(s)):
        raise ValueError(
            f"state must be {ACTION_DIM} finite floats (ee_pose_abs), got {np.shape(state)}"
        )
    checked = {str(c): _check_image(img, f"images[{c!r}]") for c, img in images.items()}
    _at(recording, step=0 if step is None else _check_index(step, "step"))
    for cam, img in checked.items():
        rr.log(f"observed/{cam}", rr.Image(img), recording=recording)
    w, x, y, z = rpy_to_quat(s[3:6])
    closed = s[6] > GRIPPER_CLOSED
    rr.log(
        "world/ee",
        rr.Transform3D(translation=s[:3], quaternion=rr.Quaternion(xyzw=[x, y, z, w])),
        rr.TransformAxes3D(0.05),
        rr.Points3D(
            [[0.0, 0.0, 0.0]],
            radii=0.008,
            colors=[EXECUTED_CLOSED if closed else EXECUTED_OPEN],
            labels=[f"ee (gripper {s[6]:.2f})"],
        ),
        recording=recording,
    )


def log_preview(
    event_index: int,
    step: int,
    steps: int,
    actions: np.ndarray,
    validity: np.ndarray,
    video: Mapping[str, np.ndarray] | None = None,
    recording=None,
) -> None:
    """A denoising preview of event ``event_index`` at denoising step ``step`` of ``steps``.

    Draws the path of the current clean estimate ``actions`` (H, 7) thin (the final path
    replaces it) and, when given, the preview frames (cam -> (T, H, W, 3) uint8) on
    ``/imagined/<cam>``, all at ``denoise_step = step``.
    """
    k = _check_index(event_index, "event_index")
    step, steps = _check_index(step, "step"), _check_index(steps, "steps")
    if step > steps:
        raise ValueError(f"preview step {step} is past the {steps} denoising steps")
    a, v = _check_chunk(actions, validity)
    frames = _check_video(video)
    _at(recording, denoise_step=step)
    _log_plan_path(k, a, v, PREVIEW_RADIUS, "", recording)
    _log_frames(frames, step, recording)


def log_imagination(
    event_index: int,
    actions: np.ndarray,
    validity: np.ndarray,
    video: Mapping[str, np.ndarray] | None,
    instruction: str = "",
    recording=None,
    denoise_steps: int = 0,
) -> None:
    """The final imagined event: video, end-effector path and action/validity series.

    ``actions`` (H, 7) ee_pose_abs, every denoised step (pass the whole chunk to see what was
    imagined past the event's end, drawn grey); ``validity`` (H,); ``video`` cam ->
    (T, H, W, 3) uint8 with frame 0 the observation, frame t on ``imagined_step`` t.
    ``denoise_steps`` places the result at the end of the denoise timeline (after the last
    preview); leave 0 when there were no previews.
    """
    k = _check_index(event_index, "event_index")
    d = _check_index(denoise_steps, "denoise_steps")
    a, v = _check_chunk(actions, validity)
    frames = _check_video(video)
    label = f"e{k}: {instruction.strip()[:60]}" if instruction.strip() else f"e{k}"
    _at(recording, denoise_step=d)
    _log_plan_path(k, a, v, PATH_RADIUS, label, recording)
    _log_frames(frames, d, recording)
    h = len(v)
    indexes = [
        rr.TimeColumn("step", sequence=np.zeros(h, dtype=np.int64)),
        rr.TimeColumn("imagined_step", sequence=np.arange(h)),
        rr.TimeColumn("denoise_step", sequence=np.full(h, d, dtype=np.int64)),
    ]
    padded = np.full((h, ACTION_DIM), np.nan)  # steps past a shorter `actions` show as gaps
    padded[: len(a)] = a
    for j, name in enumerate(ACTION_NAMES):
        column = rr.Scalars.columns(scalars=padded[:, j])
        rr.send_columns(
            f"plots/actions/{name}", indexes=indexes, columns=column, recording=recording
        )
    rr.send_columns(
        "plots/validity",
        indexes=indexes,
        columns=rr.Scalars.columns(scalars=v),
        recording=recording,
    )


def log_executed(event_index: int, ee_path: np.ndarray, recording=None) -> None:
    """The executed end-effector path of event ``event_index``, (N, 7) states, coloured by gripper.

    Log it again as the event runs: the newest path replaces the previous one.
    """
    k = _check_index(event_index, "event_index")
    p = check_path(ee_path, "ee_path")
    strips, colours = _gripper_strips(p, EXECUTED_OPEN, EXECUTED_CLOSED)
    _at(recording)
    rr.log(
        f"world/executed/e{k}/ee_path",
        rr.LineStrips3D(strips, colors=colours, radii=PATH_RADIUS),
        recording=recording,
    )


def highlight_event(event_index: int, instruction: str, status: str, recording=None) -> None:
    """Say which plan event is active and what it is doing (one of `STATUSES`).

    ``/plan/status`` holds the current line (a markdown document the blueprint shows under
    the images); ``/plan/log`` keeps every change as a text log. Both number events from 1, as
    the page does (entity paths keep the 0-based index: ``e0`` is "Event 1").
    """
    k = _check_index(event_index, "event_index")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    text = " ".join(str(instruction).split())
    _at(recording)
    rr.log(
        "plan/status",
        rr.TextDocument(
            f"**Event {k + 1}** · {status}  \n{text}", media_type=rr.MediaType.MARKDOWN
        ),
        recording=recording,
    )
    level = rr.TextLogLevel.WARN if status == "aborted" else rr.TextLogLevel.INFO
    rr.log(
        "plan/log", rr.TextLog(f"event {k + 1} {status}: {text}", level=level), recording=recording
    )
