"""`wallwm data show`: a contact sheet of one episode's events and a dataset summary.

One row per event: its span and boundary, every view at the event's first frame (the
observation the model conditions on), and the four captions. Frames are upscaled with
nearest-neighbour so 64x64 renders stay crisp. Datasets without events (written by
LeRobot) get one row per 16-step window with the task caption.
"""

from __future__ import annotations

import textwrap
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from backend.data.lerobot import EventDataset
from robot.types import CAPTION_TRACKS, Event

BG = (250, 250, 248)
ROW_ALT = (238, 240, 244)
INK = (30, 30, 35)
MUTED = (110, 110, 120)
TRACK_COLOURS = {
    "task": (120, 60, 150),
    "subtask": (20, 110, 60),
    "action": (30, 80, 170),
    "segment": (170, 90, 20),
}
PAD = 8
LABEL_W = 86
TEXT_W = 470


def _font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to a pixel width."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=font) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def _rows(ds: EventDataset, i: int) -> tuple[list[Event], bool]:
    events = ds.events(i)
    if events:
        return events, True
    T, task = ds.length(i), ds.task(i)
    return [
        Event(s, min(s + 16, T), task, task, task, task, "window") for s in range(0, T, 16)
    ], False


def contact_sheet(ds: EventDataset, episode: int = 0, scale: int = 2) -> Image.Image:
    """The contact sheet of one episode as a PIL image."""
    if not 1 <= scale <= 4:
        raise ValueError(f"scale must be in 1..4, got {scale}")
    ep = ds.episode(episode)
    rows, has_events = _rows(ds, episode)
    cams = list(ep.frames)
    h, w = ep.frames[cams[0]].shape[1:3]
    tile_h, tile_w = h * scale, w * scale
    f_body, f_bold, f_small, f_title = (
        _font(13),
        _font(13, bold=True),
        _font(11),
        _font(16, bold=True),
    )
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = 17

    # Lay the caption text out first: a row is as tall as its frames or its text.
    texts, heights = [], []
    for e in rows:
        lines: list[tuple[str, str]] = []
        tracks = CAPTION_TRACKS if has_events else ("task",)
        for track in tracks:
            wrapped = _wrap(probe, e.caption(track), f_body, TEXT_W - 70)
            lines += [(track if j == 0 else "", s) for j, s in enumerate(wrapped)]
        texts.append(lines)
        heights.append(max(tile_h, len(lines) * line_h) + 2 * PAD)

    width = LABEL_W + len(cams) * (tile_w + PAD) + TEXT_W + PAD
    header_h = 66
    col_h = 22
    height = header_h + col_h + sum(heights) + PAD
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)

    meta = ds.meta(episode)
    split = ds.split(episode)
    d.text((PAD, PAD), f"{ep.task}  ·  {ep.family or 'LeRobot dataset'}", font=f_title, fill=INK)
    seed = f"seed {ep.seed} ({split})" if ep.seed >= 0 else f"split {split}"
    d.text(
        (PAD, PAD + 24),
        f"episode {episode} of {ds.num_episodes}  ·  {seed}  ·  {ep.length} steps at {ds.fps} Hz  ·  "
        f"{len(rows)} {'events' if has_events else 'windows (no events in this dataset)'}",
        font=f_small,
        fill=MUTED,
    )
    d.text((PAD, PAD + 40), f"instruction: {ep.instruction}", font=f_small, fill=MUTED)
    if meta.get("variation") and ep.variation:
        knobs = {
            k: v
            for k, v in ep.variation.items()
            if k in ("unseen", "distractors", "lighting", "camera_jitter") and v
        }
        if knobs:
            d.text(
                (width - TEXT_W, PAD + 40),
                "variation: " + ", ".join(f"{k}={v}" for k, v in knobs.items()),
                font=f_small,
                fill=MUTED,
            )

    y = header_h
    d.text((PAD, y + 4), "event", font=f_bold, fill=INK)
    for v, cam in enumerate(cams):
        d.text((LABEL_W + v * (tile_w + PAD), y + 4), cam, font=f_bold, fill=INK)
    d.text(
        (LABEL_W + len(cams) * (tile_w + PAD), y + 4),
        "captions (the event's four tracks)",
        font=f_bold,
        fill=INK,
    )
    y += col_h
    for k, (e, lines, row_h) in enumerate(zip(rows, texts, heights)):
        if k % 2:
            d.rectangle([0, y, width, y + row_h], fill=ROW_ALT)
        d.text((PAD, y + PAD), f"#{k}", font=f_bold, fill=INK)
        d.text((PAD, y + PAD + 18), f"t {e.start}–{e.end}", font=f_small, fill=MUTED)
        d.text((PAD, y + PAD + 32), f"{e.length} steps", font=f_small, fill=MUTED)
        if e.boundary:
            d.text((PAD, y + PAD + 46), f"→ {e.boundary}", font=f_small, fill=MUTED)
        for v, cam in enumerate(cams):
            frame = Image.fromarray(ep.frames[cam][e.start]).resize((tile_w, tile_h), Image.NEAREST)
            img.paste(frame, (LABEL_W + v * (tile_w + PAD), y + PAD))
        x = LABEL_W + len(cams) * (tile_w + PAD)
        for j, (track, text) in enumerate(lines):
            if track:
                d.text((x, y + PAD + j * line_h), track, font=f_bold, fill=TRACK_COLOURS[track])
            d.text((x + 70, y + PAD + j * line_h), text, font=f_body, fill=INK)
        y += row_h
    return img


def summary(ds: EventDataset, examples: int = 3) -> str:
    """Episodes, events, mean event length and caption examples per track."""
    n = ds.num_episodes
    sizes = sorted({tuple(ds.features[k]["shape"][:2]) for k in ds.camera_keys})
    splits = Counter(ds.split(i) for i in range(n))
    tasks = Counter(str(ds.meta(i).get("task_name") or ds.task(i)) for i in range(n))
    lines = [
        f"dataset: {ds.root}  (LeRobot {ds.info['codebase_version']}, {ds.fps} Hz, cameras "
        f"{', '.join(ds.camera_names)} at {' / '.join(f'{h}x{w}' for h, w in sizes)})",
        f"episodes: {n} ({', '.join(f'{k} {v}' for k, v in splits.items())}), frames: {ds.num_frames}",
        "tasks: " + ", ".join(f"{t} x{c}" for t, c in tasks.items()),
    ]
    if not ds.has_events:
        lines.append("events: none (no subtask rows in language_persistent): fixed windows only")
        return "\n".join(lines)
    events = [e for i in range(n) for e in ds.events(i)]
    lengths = np.array([e.length for e in events])
    lines.append(
        f"events: {len(events)} ({len(events) / n:.1f} per episode), length mean {lengths.mean():.1f} "
        f"steps (min {lengths.min()}, max {lengths.max()})"
    )
    boundaries = Counter(e.boundary for e in events)
    lines.append("boundaries: " + ", ".join(f"{b or '-'} {c}" for b, c in boundaries.most_common()))
    lines.append("caption examples:")
    for track in CAPTION_TRACKS:
        unique = list(dict.fromkeys(e.caption(track) for e in events))
        shown = " | ".join(textwrap.shorten(c, 60) for c in unique[:examples])
        lines.append(f"  {track:<8} ({len(unique)} distinct): {shown}")
    return "\n".join(lines)
