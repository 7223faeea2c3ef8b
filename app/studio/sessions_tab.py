"""The Sessions tab: browse recorded sessions, replay one, compare two, export.

- **Browse**: task, date, outcome, executed steps, imaginations and corrections per session;
  a session whose file is damaged is listed with the reason and does not hide the others.
- **Replay**: the session into the Rerun viewer (scene, every recorded step's views and pose on
  the `step` timeline, each imagination and executed path), the video grid (per event and
  view: imagined over executed frames), the timeline of everything recorded, and the
  imagined-vs-executed divergence per event, the worst marked.
- **Compare**: Task Progress over the steps of both, divergence per event side by side, and
  the first step where the two executed paths parted (> 2 cm).
- **Export**: LeRobot v3.0, .rrd or mp4 per view, as `wallwm export` does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import rerun as rr
from PIL import Image, ImageDraw

from app.studio.handlers import warn
from sessions.divergence import DIVERGED_M
from sessions.store import SessionError, SessionReader
from viewers.rerun import stream_recording

EXPORTS = Path("runs/exports")
LIST_HEADERS = [
    "Session",
    "Task",
    "Date",
    "Outcome",
    "Steps",
    "Imaginations",
    "Corrections",
    "Problem",
]
DIV_HEADERS = [
    "Event",
    "Chunk",
    "Steps",
    "Path mean (cm)",
    "Path max (cm)",
    "Video MAE",
    "Diverged at step",
    "",
]


def browse(studio) -> tuple:
    """The list of sessions and the two pickers."""
    rows = studio.store.list()
    table = [
        [s.id, s.task, s.created.replace("T", " ")[:19], s.outcome, s.steps, s.imaginations,
         s.corrections, s.error]
        for s in rows
    ]  # fmt: skip
    ids = [s.id for s in rows if not s.error]
    broken = [s for s in rows if s.error]
    message = f"{len(rows)} sessions in {studio.store.root}." + (
        " " + warn(f"{len(broken)} unreadable: " + "; ".join(s.error for s in broken))
        if broken
        else ""
    )
    return (
        gr.Dataframe(value=table, headers=LIST_HEADERS),
        gr.Dropdown(choices=ids, value=ids[0] if ids else None),
        gr.Dropdown(choices=ids, value=None),
        message,
    )


def divergence_rows(reader: SessionReader) -> list[list[Any]]:
    rows = reader.divergence()
    worst = max(rows, key=lambda d: d["path_mean_m"], default=None)
    return [
        [
            d["event_index"] + 1,
            d["chunk_id"],
            d["steps"],
            round(100 * d["path_mean_m"], 2),
            round(100 * d["path_max_m"], 2),
            None if d["video_mae"] is None else round(d["video_mae"], 3),
            d["diverged_step"],
            "⚠ worst" if d is worst and d["path_max_m"] > DIVERGED_M else "",
        ]
        for d in rows
    ]


def _label(img: np.ndarray, text: str) -> np.ndarray:
    pil = Image.fromarray(img)
    canvas = Image.new("RGB", (pil.width, pil.height + 14), "white")
    canvas.paste(pil, (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def replay_grid(
    reader: SessionReader, most: int = 6, scale: int = 2
) -> tuple[np.ndarray | None, str]:
    """One row per executed event (the `most` farthest from their imagination), one block per
    view: imagined frames (top) over the executed frames at the same steps (bottom)."""
    frames_by_chunk: dict[str, list] = {}
    for i in range(len(reader.frames)):
        m = reader.frames.meta(i)
        if m.get("chunk_id"):
            frames_by_chunk.setdefault(m["chunk_id"], []).append(i)
    imaginations = {im["id"]: im for im in reader.imaginations()}
    chunks = {c["chunk_id"]: c for c in reader.chunks()}
    ranked = sorted(reader.divergence(), key=lambda d: -d["path_mean_m"])[:most]
    rows, captions = [], []
    for d in sorted(ranked, key=lambda d: d["t_ns"]):
        c, im = chunks.get(d["chunk_id"]), imaginations.get(d["imagination_id"])
        idx = frames_by_chunk.get(d["chunk_id"])
        if c is None or im is None or not idx:
            continue
        video = reader.imagination_arrays(im)["video"]
        executed = {reader.frames.meta(i).get("step", 0): reader.frames.frame(i) for i in idx}
        blocks = []
        for cam, imagined in video.items():
            steps = [s for s in sorted(executed) if 1 <= s < len(imagined)][-4:]
            if not steps:
                continue
            top = np.concatenate([imagined[s] for s in steps], axis=1)
            bottom = np.concatenate(
                [_fit(executed[s].images[cam], imagined.shape[1:3]) for s in steps], axis=1
            )
            block = np.concatenate([top, bottom], axis=0).repeat(scale, 0).repeat(scale, 1)
            blocks.append(np.pad(block, ((0, 0), (0, 6), (0, 0)), constant_values=255))
        if blocks:
            label = (f"event {c['event_index'] + 1} · {', '.join(video)} · imagined (top) / "
                     f"executed (bottom) · path {100 * d['path_mean_m']:.1f} cm")  # fmt: skip
            rows.append(_label(np.concatenate(blocks, axis=1), label))
            captions.append(f"event {c['event_index'] + 1}")
    if not rows:
        return None, "no executed event with an imagination to show"
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    caption = (f"Imagined (top) over executed (bottom) per view, the {len(rows)} events farthest "
               f"from their imagination: {', '.join(captions)}")  # fmt: skip
    return np.concatenate(padded, axis=0), caption


def _fit(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ys = (np.arange(shape[0]) * img.shape[0] / shape[0]).astype(int)
    xs = (np.arange(shape[1]) * img.shape[1] / shape[1]).astype(int)
    return img[ys][:, xs]


def replay(studio, session_id: str | None) -> Iterator[tuple]:
    """Viewer, grid, grid caption, timeline, divergence table, status."""
    yield from _replay(studio, session_id)


@stream_recording
def _replay(studio, session_id: str | None) -> Iterator[tuple]:
    from robot.types import CameraCalib
    from viewers.rerun import (
        log_executed,
        log_imagination,
        log_observation,
        log_scene,
        send_blueprint,
    )

    skip = gr.skip()
    try:
        reader = studio.store.open(session_id or "")
    except SessionError as e:
        yield skip, skip, skip, skip, skip, warn(str(e))
        return
    with reader:
        stream = rr.binary_stream()
        names = list(reader.meta.get("cameras") or {}) or ["front"]
        send_blueprint(names)
        cams = {
            n: CameraCalib.from_dict(n, d) for n, d in (reader.meta.get("cameras") or {}).items()
        }
        if cams:
            log_scene(cams)
        paths: dict[int, list[np.ndarray]] = {}
        for f in reader.frames:
            log_observation(f.images, f.state, f.index)
            if f.event_index is not None:
                paths.setdefault(int(f.event_index), []).append(f.state)
        for im in reader.imaginations():
            a = reader.imagination_arrays(im)
            log_imagination(
                im["event_index"], a["actions"], a["validity"], a["video"] or None, im["text"]
            )
        for k, p in paths.items():
            log_executed(k, np.stack(p))
        grid, caption = replay_grid(reader)
        timeline = "\n".join(
            f"frame {t['frame']:>5}  {t['what']}: {t['detail']}" for t in reader.timeline()
        )
        s = reader.summary()
        dropped = reader.frames.dropped_bytes
        status = (
            f"Replaying session {reader.id}: {s.task}, {s.steps} steps, {s.imaginations} "
            f"imaginations, {s.corrections} corrections, outcome {s.outcome}."
            + (f" {warn(f'{dropped} bytes of a torn last frame skipped')}" if dropped else "")
        )
        yield (stream.read(), grid, caption, timeline,
               gr.Dataframe(value=divergence_rows(reader), headers=DIV_HEADERS), status)  # fmt: skip


def _executed(reader: SessionReader) -> np.ndarray:
    return reader.frames.states()


SIDE_BY_SIDE = ["Event", "A path mean (cm)", "A video MAE", "B path mean (cm)", "B video MAE"]


def compare(studio, a: str | None, b: str | None) -> tuple:
    """Task Progress over steps (plot), divergence per event side by side, where paths parted."""
    import plotly.graph_objects as go

    if not a or not b:
        return gr.skip(), gr.skip(), warn("pick two sessions to compare")
    try:
        ra, rb = studio.store.open(a), studio.store.open(b)
    except SessionError as e:
        return gr.skip(), gr.skip(), warn(str(e))
    with ra, rb:
        fig = go.Figure()
        for r, name in ((ra, "A"), (rb, "B")):
            scores = [
                10 * int(r.frames.meta(i).get("task_progress") or 0) for i in range(len(r.frames))
            ]
            fig.add_trace(go.Scatter(y=scores, mode="lines", name=f"{name}: {r.id}"))
        fig.update_layout(
            title="Task Progress over executed steps",
            xaxis_title="recorded step",
            yaxis_title="Task Progress (%)",
            yaxis_range=[0, 100],
            height=320,
        )
        da = {d["event_index"]: d for d in ra.divergence()}
        db = {d["event_index"]: d for d in rb.divergence()}
        rows = []
        for k in sorted(set(da) | set(db)):
            row = [k + 1]
            for d in (da.get(k), db.get(k)):
                row += [None, None] if d is None else [round(100 * d["path_mean_m"], 2),
                                                       None if d["video_mae"] is None else round(d["video_mae"], 3)]  # fmt: skip
            rows.append(row)
        pa, pb = _executed(ra), _executed(rb)
        n = min(len(pa), len(pb))
        gap = np.linalg.norm(pa[:n, :3] - pb[:n, :3], axis=1) if n else np.zeros(0)
        apart = np.flatnonzero(gap > DIVERGED_M)
        where = (
            f"the executed paths parted at step {int(apart[0])} ({100 * gap[apart[0]]:.1f} cm apart)"
            if len(apart)
            else f"the executed paths stayed within {100 * DIVERGED_M:.0f} cm over {n} common steps"
        )
        table = gr.Dataframe(value=rows, headers=SIDE_BY_SIDE)
        return fig, table, f"A {ra.id} vs B {rb.id}: {where}."


def export(studio, session_id: str | None, fmt: str) -> str:
    from sessions.export import export as do_export

    try:
        reader = studio.store.open(session_id or "")
    except SessionError as e:
        return warn(str(e))
    with reader:
        out = EXPORTS / (reader.id + ("-" + fmt if fmt != "rrd" else ".rrd"))
        try:
            paths = do_export(reader, fmt, out, overwrite=True)
        except (SessionError, ValueError, OSError) as e:
            return warn(f"export failed: {e}")
    return f"Exported {reader.id} as {fmt}: " + ", ".join(str(p.resolve()) for p in paths)


def build() -> dict[str, Any]:
    """The tab's widgets (inside a `gr.Tab`); `wire` connects them."""
    c: dict[str, Any] = {}
    with gr.Row():
        c["refresh"] = gr.Button("Refresh sessions", size="sm", scale=0, min_width=140)
        c["message"] = gr.Textbox(label="Sessions", interactive=False, scale=4)
    c["table"] = gr.Dataframe(headers=LIST_HEADERS, label="Recorded sessions", interactive=False)
    with gr.Row():
        c["pick"] = gr.Dropdown([], label="Session to open", scale=2)
        c["replay"] = gr.Button("Replay", size="sm", scale=0, min_width=90)
        c["other"] = gr.Dropdown([], label="Compare with", scale=2)
        c["compare"] = gr.Button("Compare", size="sm", scale=0, min_width=90)
    with gr.Row():
        c["format"] = gr.Radio(
            ["lerobot", "rrd", "mp4"], value="lerobot", label="Export format", scale=2
        )
        c["export"] = gr.Button("Export", size="sm", scale=0, min_width=90)
        c["exported"] = gr.Textbox(label="Export", interactive=False, scale=4)
    c["divergence"] = gr.Dataframe(
        headers=DIV_HEADERS, label="Imagined vs executed per event", interactive=False
    )
    c["grid"] = gr.Image(label="Replay grid", interactive=False)
    c["grid_caption"] = gr.Markdown()
    c["timeline"] = gr.Textbox(label="Session timeline", lines=14, max_lines=14, interactive=False)
    with gr.Row():
        c["progress"] = gr.Plot(label="Task Progress over time (pick two sessions, then Compare)")
        c["side_by_side"] = gr.Dataframe(
            headers=SIDE_BY_SIDE, label="Divergence side by side", interactive=False
        )
    c["compared"] = gr.Textbox(label="Comparison", interactive=False)
    return c


def wire(studio, c: dict[str, Any], viewer: Any) -> None:
    outs = [c["table"], c["pick"], c["other"], c["message"]]
    c["refresh"].click(functools.partial(browse, studio), None, outs, queue=False)
    c["replay"].click(
        functools.partial(replay, studio),
        [c["pick"]],
        [viewer, c["grid"], c["grid_caption"], c["timeline"], c["divergence"], c["message"]],
        concurrency_id="sessions",
    )
    c["compare"].click(
        functools.partial(compare, studio),
        [c["pick"], c["other"]],
        [c["progress"], c["side_by_side"], c["compared"]],
        concurrency_id="sessions",
    )
    c["export"].click(
        functools.partial(export, studio),
        [c["pick"], c["format"]],
        [c["exported"]],
        concurrency_id="sessions",
    )
