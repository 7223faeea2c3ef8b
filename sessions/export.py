"""Export a recorded session: LeRobot v3.0 (what the model trains on), a Rerun .rrd, mp4 per view.

LeRobot (one episode, written by `backend.data.lerobot.DatasetWriter`, read by `EventDataset`):

- frames, `observation.state`: the recorded control steps (executed telemetry, three views);
- `action` at frame t: the target commanded after it (the chunk's next action, the jog
  target), else the next measured pose;
- events: consecutive frames of one plan event, one kind (model chunk or take-over) and one
  instruction, as the subtask: a model chunk's is the text its imagination was asked for (a
  chunk replaced by an edited event's new imagination is a segment of its own), a take-over
  segment's is the text of the event the operator was correcting (boundary `takeover`);
- the plan: plan version 1 as the `plan` row at t=0; every later version as a `user` plan
  row at the frame it was set (`EventDataset.plan_updates`);
- operator edits: `language_events` interjections at the frame they were made;
- take-overs: `intervention=True` on the frames the robot moved under jog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.data.language import Interjection
from robot.types import CameraCalib, Episode, Event
from sessions.frames import Frame
from sessions.store import SessionError, SessionReader

FORMATS = ("lerobot", "rrd", "mp4")


@dataclass
class SessionEpisode(Episode):
    """An Episode whose plan row is the session's first plan, not its executed events."""

    initial_plan: list[str] = field(default_factory=list)

    @property
    def plan(self) -> list[str]:  # type: ignore[override]
        return list(self.initial_plan)


@dataclass
class ExportedEpisode:
    episode: SessionEpisode
    interjections: list[Interjection]
    plan_updates: list[tuple[int, list[str]]]
    intervention: np.ndarray  # (T,) bool


def _frames(reader: SessionReader) -> list[Frame]:
    frames = list(reader.frames)
    if not frames:
        raise SessionError(
            f"session {reader.id} has no executed steps: nothing to export as a dataset or video"
        )
    return frames


def _plan_at(versions: list[dict], frame: int) -> list[str]:
    plan: list[str] = []
    for v in versions:
        if v["frame"] <= frame:
            plan = v["plan"]
    return plan


def session_episode(reader: SessionReader) -> ExportedEpisode:
    """The session as one LeRobot episode with its plan versions, edits and take-overs."""
    frames = _frames(reader)
    T = len(frames)
    versions = reader.plan_versions()
    chunks = {c["chunk_id"]: c for c in reader.chunks()}
    meta = reader.meta
    instruction = str(meta.get("instruction") or meta.get("task") or "")

    states = np.stack([f.state for f in frames]).astype(np.float32)  # (T, 7)
    actions = np.empty_like(states)
    for t, f in enumerate(frames):
        chunk = chunks.get(f.chunk_id or "")
        if f.intervention and f.target is not None:
            actions[t] = f.target
        elif chunk is not None and not f.intervention and f.step < len(chunk["actions"]):
            actions[t] = chunk["actions"][f.step]
        elif f.target is not None:
            actions[t] = f.target
        else:
            actions[t] = states[min(t + 1, T - 1)]
    flags = np.array([f.intervention for f in frames], bool)

    # a model chunk's frames carry the text its imagination was asked for: a chunk replaced by
    # the edited event's new imagination starts a segment of its own, whatever the plan said
    # when the event began
    asked = {im["id"]: im["text"] for im in reader.imaginations()}

    def said(f: Frame) -> str | None:
        chunk = chunks.get(f.chunk_id or "")
        return None if chunk is None or f.intervention else asked.get(chunk["imagination_id"])

    events: list[Event] = []
    start = 0
    for t in range(1, T + 1):
        a, b = frames[t - 1], frames[t] if t < T else None
        if b is not None and (b.event_index, b.intervention, said(b)) == (
            a.event_index,
            a.intervention,
            said(a),
        ):
            continue
        k = a.event_index
        plan = _plan_at(versions, start)
        text = said(a) or (
            plan[k] if k is not None and 0 <= k < len(plan) else instruction or "hold"
        )
        events.append(
            Event(
                start=start,
                end=t,
                task=instruction or text,
                subtask=text,
                action=text,
                segment=text,
                boundary="takeover" if a.intervention else ("end" if b is None else "event"),
            )
        )
        start = t

    interjections = [
        Interjection(min(int(r["frame"]), T - 1), str(r["data"].get("text", "")))
        for r in reader.records("correction")
        if r["data"].get("type") == "plan_edit"
    ]
    plan_updates = [(min(int(v["frame"]), T - 1), list(v["plan"])) for v in versions[1:]]
    progress = []
    last = 0
    for f in frames:
        last = int(f.task_progress) if f.task_progress is not None else last
        progress.append(last)
    cams = {n: CameraCalib.from_dict(n, d) for n, d in (meta.get("cameras") or {}).items()}
    names = list(frames[0].images)
    episode = SessionEpisode(
        task=str(meta.get("task") or "session"),
        family=str(meta.get("family") or ""),
        seed=int(meta.get("seed") or 0),
        fps=int(meta.get("fps") or 10),
        frames={c: np.stack([f.images[c] for f in frames]) for c in names},  # (T, h, w, 3)
        states=states,
        actions=actions,
        events=events,
        cameras={c: cams[c] for c in names if c in cams},
        instruction=instruction,
        progress=np.asarray(progress, np.int64),
        variation={"session": reader.id},
        initial_plan=list(versions[0]["plan"]) if versions else [e.subtask for e in events],
    )
    return ExportedEpisode(episode, interjections, plan_updates, flags)


def export_lerobot(reader: SessionReader, out: str | Path, overwrite: bool = False) -> Path:
    """Write the session as a one-episode LeRobot v3.0 dataset at `out`."""
    from backend.data.lerobot import DatasetWriter

    ex = session_episode(reader)
    with DatasetWriter(
        out,
        ex.episode.fps,
        overwrite=overwrite,
        info_extra={"sessions": [reader.id]},
    ) as writer:
        writer.add_episode(
            ex.episode,
            interjections=ex.interjections,
            plan_updates=ex.plan_updates,
            intervention=ex.intervention,
        )
    return Path(out)


def export_mp4(reader: SessionReader, out: str | Path) -> list[Path]:
    """One mp4 per view of the executed frames: OUT/<view>.mp4."""
    from backend.data.video import VideoWriter

    frames = _frames(reader)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fps = int(reader.meta.get("fps") or 10)
    paths = []
    for cam in frames[0].images:
        video = np.stack([f.images[cam] for f in frames])  # (T, h, w, 3)
        h, w = video.shape[1:3]
        video = video[:, : h - h % 2, : w - w % 2]  # yuv420p needs even sizes
        path = out / f"{cam}.mp4"
        with VideoWriter(path, fps, video.shape[2], video.shape[1]) as writer:
            writer.add_episode(video)
        paths.append(path)
    return paths


def export_rrd(reader: SessionReader, out: str | Path) -> Path:
    """A Rerun recording of the session: the scene, every recorded step's views and pose on the
    `step` timeline, each event's imagination and executed path."""
    import rerun as rr

    from viewers.rerun import blueprint, log_executed, log_imagination, log_observation, log_scene

    frames = _frames(reader)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = rr.RecordingStream("wallwm", recording_id=reader.id)
    rec.save(str(out))
    cams = {n: CameraCalib.from_dict(n, d) for n, d in (reader.meta.get("cameras") or {}).items()}
    names = list(frames[0].images)
    rec.send_blueprint(blueprint(names), make_active=True)
    if cams:
        log_scene(cams, recording=rec)
    for f in frames:
        log_observation(f.images, f.state, f.index, recording=rec)
    for im in reader.imaginations():
        arrays = reader.imagination_arrays(im)
        log_imagination(
            im["event_index"],
            arrays["actions"],
            arrays["validity"],
            arrays["video"] or None,
            im["text"],
            recording=rec,
        )
    paths: dict[int, list[np.ndarray]] = {}
    for f in frames:
        if f.event_index is not None:
            paths.setdefault(int(f.event_index), []).append(f.state)
    for k, path in paths.items():
        log_executed(k, np.stack(path), recording=rec)
    rec.flush()
    rec.disconnect()
    return out


def export(reader: SessionReader, fmt: str, out: str | Path, overwrite: bool = False) -> list[Path]:
    """Export in one of FORMATS; returns the written paths."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "lerobot":
        return [export_lerobot(reader, out, overwrite)]
    if fmt == "mp4":
        return export_mp4(reader, out)
    return [export_rrd(reader, out)]
