"""Events <-> LeRobot language columns (`language_persistent`, `language_events`).

LeRobot stores language next to frames in two optional list-of-struct columns:

- `language_persistent`: rows of state that stays active until replaced (`subtask`,
  `plan`, `memory`, `motion`, ...). Every frame of an episode carries the episode's full
  list; a row is active at time t when it is the latest row of its style with
  `timestamp <= t`.
- `language_events`: rows that exist only on the frame where they happened
  (`interjection`, `vqa`, ...); they carry no timestamp of their own.

Row fields: role, content, style, timestamp (persistent only), camera, tool_calls.

An event becomes one persistent row per caption track, stamped with the event's first
frame. Three tracks map onto LeRobot core styles (`task` -> `task_aug`, `subtask`,
`segment` -> `motion`); the `action` track has no core counterpart and is the one style this
project adds, declared to an installed LeRobot with `register_lerobot_styles()` as LeRobot
documents for project-local styles. The plan is a `plan` row at t=0 (and a `user` one
whenever an operator edits it), one instruction per line. Operator edits are `interjection`
rows in `language_events`; takeovers are the per-frame `intervention` column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from robot.types import CAPTION_TRACKS, Event

LANGUAGE_PERSISTENT = "language_persistent"
LANGUAGE_EVENTS = "language_events"

# caption track -> LeRobot style. "segment" is a robot-frame motion ("descend 4 cm"), which is
# exactly LeRobot's `motion`; the task track is the whole instruction said by the user, which
# LeRobot keeps as `task_aug` (role user; its `${task}` binding renders it). An action-level
# instruction ("lower the gripper onto the green button") has no core style: `action` is added.
TRACK_STYLES: dict[str, str] = {
    "task": "task_aug",
    "subtask": "subtask",
    "action": "action",
    "segment": "motion",
}
# Persistent styles of ours that LeRobot's core registry lacks.
EXTENDED_STYLES: tuple[str, ...] = ("action",)
TRACK_ROLES: dict[str, str] = {
    "task": "user",
    "subtask": "assistant",
    "action": "assistant",
    "segment": "assistant",
}


def register_lerobot_styles() -> None:
    """Declare `EXTENDED_STYLES` to the installed LeRobot (>= 0.6) so its resolvers accept them.

    LeRobot's resolvers (`active_at(t, style=action)`, recipe bindings) raise "Unknown
    language style" for a style outside its registry. Its documented extension point is to
    add project-local styles at import time to `EXTENDED_STYLES` (the registry) and to
    `PERSISTENT_STYLES` (which column they live in). Idempotent. LeRobot is not a
    dependency of this project; only code that already uses it calls this.
    """
    from lerobot.datasets import language as lerobot_language

    for style in EXTENDED_STYLES:
        lerobot_language.EXTENDED_STYLES.add(style)
        lerobot_language.STYLE_REGISTRY.add(style)  # the union LeRobot computed at import
        lerobot_language.PERSISTENT_STYLES.add(style)


def _row_type(json_type: pa.DataType, timestamp: bool) -> pa.StructType:
    fields = [
        pa.field("role", pa.string(), nullable=False),
        pa.field("content", pa.string()),
        pa.field("style", pa.string()),
        pa.field("timestamp", pa.float32(), nullable=False),
        pa.field("camera", pa.string()),
        pa.field("tool_calls", pa.list_(json_type)),
    ]
    return pa.struct([f for f in fields if timestamp or f.name != "timestamp"])


# LeRobot types tool calls as Arrow JSON (a string extension type). Python rows cannot be
# converted to an extension type directly, so arrays are built on strings, then cast.
_JSON = pa.json_() if hasattr(pa, "json_") else pa.string()
PERSISTENT_TYPE = pa.list_(_row_type(_JSON, timestamp=True))
EVENTS_TYPE = pa.list_(_row_type(_JSON, timestamp=False))
_PERSISTENT_STORAGE = pa.list_(_row_type(pa.string(), timestamp=True))
_EVENTS_STORAGE = pa.list_(_row_type(pa.string(), timestamp=False))


def persistent_array(per_frame: Sequence[Sequence[dict]]) -> pa.Array:
    """A `language_persistent` column from per-frame row lists."""
    return pa.array(per_frame, type=_PERSISTENT_STORAGE).cast(PERSISTENT_TYPE)


def events_array(per_frame: Sequence[Sequence[dict]]) -> pa.Array:
    """A `language_events` column from per-frame row lists."""
    return pa.array(per_frame, type=_EVENTS_STORAGE).cast(EVENTS_TYPE)


@dataclass(frozen=True)
class Interjection:
    """An operator's words at one frame, e.g. an edit of the plan ("skip the green one")."""

    frame: int
    text: str


def _row(role: str, content: str, style: str, timestamp: float) -> dict:
    return {
        "role": role,
        "content": content,
        "style": style,
        "timestamp": float(timestamp),
        "camera": None,
        "tool_calls": None,
    }


def format_plan(plan: Sequence[str]) -> str:
    """The plan as LeRobot `plan` content: one numbered instruction per line."""
    return "\n".join(f"{i + 1}. {step}" for i, step in enumerate(plan))


def parse_plan(content: str) -> list[str]:
    return [
        re.sub(r"^\s*\d+[.)]\s*", "", line).strip() for line in content.splitlines() if line.strip()
    ]


def persistent_rows(
    events: Sequence[Event],
    fps: int,
    plan: Sequence[str] = (),
    plan_updates: Sequence[tuple[int, Sequence[str]]] = (),
) -> list[dict]:
    """The episode's `language_persistent` list (identical on every frame), in time order."""
    rows = []
    if plan:
        rows.append(_row("assistant", format_plan(plan), "plan", 0.0))
    for e in events:
        ts = e.start / fps
        for track in CAPTION_TRACKS:
            rows.append(_row(TRACK_ROLES[track], e.caption(track), TRACK_STYLES[track], ts))
    for frame, new_plan in plan_updates:
        rows.append(_row("user", format_plan(new_plan), "plan", frame / fps))
    rows.sort(key=lambda r: r["timestamp"])  # stable: keeps the track order within an event
    return rows


def event_rows(length: int, interjections: Sequence[Interjection] = ()) -> list[list[dict]]:
    """Per-frame `language_events` lists: interjections on their frame, empty elsewhere."""
    out: list[list[dict]] = [[] for _ in range(length)]
    for item in interjections:
        if not 0 <= item.frame < length:
            raise ValueError(
                f"interjection at frame {item.frame} is outside the episode [0, {length})"
            )
        out[item.frame].append(
            {
                "role": "user",
                "content": item.text,
                "style": "interjection",
                "camera": None,
                "tool_calls": None,
            }
        )
    return out


def events_from_rows(
    rows: Sequence[dict],
    fps: int,
    length: int,
    task: str,
    boundaries: Sequence[str] | None = None,
    track_styles: Mapping[str, str] | None = None,
) -> list[Event]:
    """Rebuild events from persistent rows: one event per `subtask` row.

    An event runs from its subtask row's frame to the next one's (the last to the episode
    end). A track without a row at that time (e.g. a dataset annotated with subtasks only)
    falls back to the subtask text, the task track to the episode's task. `track_styles`
    is the dataset's own track -> style table (info.json `wallwm.caption_styles`), so
    datasets written before a track changed style still read; default `TRACK_STYLES`.
    """
    style_tracks = {v: k for k, v in (track_styles or TRACK_STYLES).items()}
    subtasks = sorted(
        (r for r in rows if r.get("style") == "subtask"), key=lambda r: r["timestamp"]
    )
    if not subtasks:
        return []
    starts = [min(max(round(float(r["timestamp"]) * fps), 0), length - 1) for r in subtasks]
    events = []
    for k, row in enumerate(subtasks):
        end = starts[k + 1] if k + 1 < len(starts) else length
        if end <= starts[k]:
            raise ValueError(f"subtask rows at frames {starts[k]} and {end} do not make an event")
        frame = round(float(row["timestamp"]) * fps)
        same_time = {  # track -> content of the rows stamped on the same frame
            style_tracks[r.get("style")]: r.get("content") or ""
            for r in rows
            if round(float(r["timestamp"]) * fps) == frame and r.get("style") in style_tracks
        }
        sub = row.get("content") or ""
        events.append(
            Event(
                start=starts[k],
                end=end,
                task=same_time.get("task") or task,
                subtask=sub,
                action=same_time.get("action") or sub,
                segment=same_time.get("segment") or sub,
                boundary=boundaries[k] if boundaries is not None and k < len(boundaries) else "",
            )
        )
    return events


def plans_from_rows(rows: Sequence[dict], role: str | None = None) -> list[tuple[float, list[str]]]:
    """Every `plan` row (of `role`, when given) as (timestamp, instructions), in time order."""
    plans = [r for r in rows if r.get("style") == "plan" and role in (None, r.get("role"))]
    return [
        (float(r["timestamp"]), parse_plan(r.get("content") or ""))
        for r in sorted(plans, key=lambda r: r["timestamp"])
    ]


def interjections_from_column(column: Sequence[Sequence[dict] | None]) -> list[Interjection]:
    """Interjections from a per-frame `language_events` column."""
    out = []
    for frame, rows in enumerate(column):
        for r in rows if rows is not None else ():
            if r.get("style") == "interjection":
                out.append(Interjection(frame=frame, text=r.get("content") or ""))
    return out


def intervention_spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) spans of consecutive True flags (operator takeovers)."""
    f = np.asarray(flags, dtype=bool).astype(np.int8)
    edges = np.diff(np.r_[0, f, 0])
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
