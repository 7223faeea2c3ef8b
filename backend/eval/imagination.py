"""Open-loop imagination metrics on held-out events of a dataset.

For every event of the chosen split (by default the test episodes: seeds the model never
trained on), the model imagines the event from its first observation and its caption (the
checkpoint's caption track; the task for a fixed-recipe checkpoint):

- video: PSNR and SSIM of the imagined frames 1..n against the real ones, per view, where n is
  the event's true length (capped by the horizon and the episode's end); baseline "repeat the
  last frame": the observation itself held for n frames. PSNR is computed from the clip's
  pooled MSE and capped at 60 dB (identical clips), SSIM is Wang et al.'s (Gaussian window
  11, sigma 1.5, K1 0.01, K2 0.03) averaged over frames and colour channels.
- actions: mean end-effector position error (m) of the first n steps of the chunk against the
  recorded actions, from the joint imagination (`action_l2`) and from the action-only path that
  closed loop executes (`action_l2_action_only`); baseline "hold position": the current state
  repeated. Gripper: mean absolute error of the 0..1 command, same baseline. `length_error`:
  mean |predicted chunk length - true length| (validity channel).
- everything again per event-length bucket (1-4, 5-8, ... steps: one latent frame each).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.eval.summary import bootstrap_ci

if TYPE_CHECKING:
    from PIL import Image

    from backend.data.lerobot import EventDataset
    from backend.model.wam import WorldActionModel

PSNR_CAP_DB = 60.0
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # 11-tap Gaussian window
BUCKET_STEPS = 4  # one latent frame


def psnr(pred: np.ndarray, real: np.ndarray) -> float:
    """PSNR (dB) of uint8 images of equal shape, from their pooled MSE, capped at 60 dB."""
    if pred.shape != real.shape:
        raise ValueError(f"psnr needs equal shapes, got {pred.shape} and {real.shape}")
    mse = float(np.mean((pred.astype(np.float64) - real.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def ssim(pred: np.ndarray, real: np.ndarray) -> float:
    """Mean SSIM of uint8 images (..., H, W, 3) of equal shape (valid-window, per channel)."""
    import torch
    import torch.nn.functional as F

    if pred.shape != real.shape:
        raise ValueError(f"ssim needs equal shapes, got {pred.shape} and {real.shape}")
    h, w = pred.shape[-3:-1]
    r = min(SSIM_RADIUS, (min(h, w) - 1) // 2)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / SSIM_SIGMA) ** 2)
    g = g / g.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W) -> (N, 1, H-2r, W-2r)
        x = F.conv2d(x, g.view(1, 1, -1, 1))
        return F.conv2d(x, g.view(1, 1, 1, -1))

    def planes(a: np.ndarray) -> torch.Tensor:  # (..., H, W, 3) -> (N*3, 1, H, W)
        t = torch.from_numpy(np.ascontiguousarray(a).reshape(-1, h, w, 3)).double()
        return t.permute(0, 3, 1, 2).reshape(-1, 1, h, w)

    x, y = planes(pred), planes(real)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3), area filter when shrinking (as the model does)."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1:3] == (size, size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    mode = "area" if min(frames.shape[1:3]) >= size else "bilinear"
    x = F.interpolate(x, size=(size, size), mode=mode)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def bucket_of(length: int) -> str:
    b = (length - 1) // BUCKET_STEPS
    return f"{BUCKET_STEPS * b + 1}-{BUCKET_STEPS * b + BUCKET_STEPS}"


@dataclass
class EventScore:
    """Metrics of one imagined event; one JSON line of events.jsonl."""

    episode: int
    event_index: int
    start: int
    length: int  # true event (piece) length, steps
    predicted_length: int
    text: str
    frames: int  # future frames compared (0: the episode ended with the event)
    psnr: dict[str, float]  # per view
    psnr_repeat_last: dict[str, float]
    ssim: dict[str, float]
    ssim_repeat_last: dict[str, float]
    # the first of the imagined futures alone (= psnr, ssim when the model imagines one)
    psnr_single: dict[str, float]
    ssim_single: dict[str, float]
    futures: int  # futures the imagined video averages (ModelConfig.imagine_futures)
    action_l2: float  # m, joint imagination
    action_l2_action_only: float  # m, the closed-loop path
    action_l2_hold: float  # m, current state repeated
    gripper_error: float
    gripper_error_hold: float
    wall_s: float


@dataclass
class SheetItem:
    """What the contact sheet draws for one event."""

    title: str
    real: dict[str, np.ndarray]  # cam -> (n + 1, s, s, 3), frame 0 = the observation
    imagined: dict[str, np.ndarray]  # cam -> (n + 1, s, s, 3)


def held_out_episodes(dataset: EventDataset, split: str, episodes: int | None) -> list[int]:
    """The dataset's episodes of `split` ("test", "train" or "all"), the first `episodes` of them."""
    if split not in ("test", "train", "all"):
        raise ValueError(f"--split must be test, train or all, got {split!r}")
    eps = list(range(dataset.num_episodes)) if split == "all" else dataset.episodes_in_split(split)
    if not eps:
        raise ValueError(
            f"{dataset.root} has no {split} episodes; record held-out ones with "
            "`wallwm data generate ... --split test` (or pass --split train)"
        )
    if episodes is not None:
        if episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {episodes}")
        eps = eps[:episodes]
    return eps


def _position_error(chunk: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(chunk[:, :3] - target[:, :3], axis=-1).mean())


def evaluate_imagination(
    model: WorldActionModel,
    dataset: EventDataset,
    caption_track: str = "subtask",
    split: str = "test",
    episodes: int | None = None,
    max_events: int | None = None,
    steps: int | None = None,
    sheet_events: int = 6,
    progress: Callable[[EventScore], None] | None = None,
    futures: int | None = None,
) -> tuple[list[EventScore], list[SheetItem]]:
    """Imagine every selected held-out event; returns per-event scores and contact-sheet items.

    `futures`: futures per event (default: the model's `imagine_futures`, what the studio
    shows); the scores are of their mean, and of the first alone (`psnr_single`)."""
    from backend.data.samples import EventSamples
    from backend.model.wam import Observation

    eps = held_out_episodes(dataset, split, episodes)
    cams = list(model.cameras) or None
    samples = EventSamples(
        dataset, h_max=model.config.h_max, caption_track=caption_track, cameras=cams, episodes=eps
    )
    if len(samples) == 0:
        raise ValueError(f"{dataset.root}: the selected episodes have no events")
    if max_events is not None and max_events < 1:
        raise ValueError(f"--max-events must be >= 1, got {max_events}")
    count = len(samples) if max_events is None else min(max_events, len(samples))
    chosen = np.unique(
        np.linspace(0, len(samples) - 1, count).round().astype(int)
    )  # spread over episodes
    sheet_at = set(
        chosen[
            np.unique(
                np.linspace(0, len(chosen) - 1, min(sheet_events, len(chosen))).round().astype(int)
            )
        ]
    )
    size = model.config.image_size
    scores, sheet = [], []
    for i in chosen.tolist():
        t0 = time.perf_counter()
        try:
            s = samples[i]
        except KeyError as e:  # the dataset lacks a view the model was trained on
            raise ValueError(f"{dataset.root}: {e.args[0]}") from e
        names = list(s["cameras"]) or [f"view{v}" for v in range(len(s["video"]))]
        text = s["caption"] if model.recipe == "event" else dataset.task(s["episode_index"])
        obs = Observation(
            {c: s["video"][v, 0] for v, c in enumerate(names)}, s["state"], s["cameras"]
        )
        im = model.imagine(
            obs, text, mode="event", steps=steps, seed=i, full_video=True, futures=futures
        )
        fast = model.predict_actions(obs, text, mode="event", steps=steps, seed=i)
        L = int(s["length"])
        n = min(int(s["video_valid"].sum()) - 1, L, len(im.chunk))  # future frames to compare
        ps, pr, ss, sr, p1, s1, real, imagined = {}, {}, {}, {}, {}, {}, {}, {}
        for v, c in enumerate(names):
            truth = resize_frames(s["video"][v, : n + 1], size)  # (n + 1, s, s, 3)
            key = c if c in im.video else list(im.video)[v]
            pred = im.video[key][: n + 1]
            first = im.video_futures[key][0, : n + 1] if im.video_futures else pred
            real[c], imagined[c] = truth, pred
            if n > 0:
                last = np.repeat(truth[:1], n, axis=0)  # the observation held still
                ps[c], pr[c] = psnr(pred[1:], truth[1:]), psnr(last, truth[1:])
                ss[c], sr[c] = ssim(pred[1:], truth[1:]), ssim(last, truth[1:])
                p1[c], s1[c] = psnr(first[1:], truth[1:]), ssim(first[1:], truth[1:])
        na = min(L, len(im.chunk))
        gt = s["actions"][:na]  # (na, 7)
        hold = np.repeat(s["state"][None], na, axis=0)
        score = EventScore(
            episode=int(s["episode_index"]),
            event_index=int(s["event_index"]),
            start=int(s["start"]),
            length=L,
            predicted_length=int(im.length),
            text=text,
            frames=n,
            psnr=ps,
            psnr_repeat_last=pr,
            ssim=ss,
            ssim_repeat_last=sr,
            psnr_single=p1,
            ssim_single=s1,
            futures=len(next(iter(im.video_futures.values()))) if im.video_futures else 1,
            action_l2=_position_error(im.chunk[:na], gt),
            action_l2_action_only=_position_error(fast.chunk[:na], gt),
            action_l2_hold=_position_error(hold, gt),
            gripper_error=float(np.abs(im.chunk[:na, 6] - gt[:, 6]).mean()),
            gripper_error_hold=float(np.abs(hold[:, 6] - gt[:, 6]).mean()),
            wall_s=round(time.perf_counter() - t0, 3),
        )
        scores.append(score)
        if i in sheet_at and n > 0:
            title = f"episode {score.episode}, step {score.start}: {text!r} ({L} steps, predicted {im.length})"
            sheet.append(SheetItem(title, real, imagined))
        if progress is not None:
            progress(score)
    return scores, sheet


# Per-view video metrics, and per-event action ones, averaged by `summarise`.
VIDEO_METRICS = (
    "psnr",
    "psnr_repeat_last",
    "ssim",
    "ssim_repeat_last",
    "psnr_single",
    "ssim_single",
)
ACTION_METRICS = (
    "action_l2",
    "action_l2_action_only",
    "action_l2_hold",
    "gripper_error",
    "gripper_error_hold",
)


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def summarise(scores: Sequence[EventScore]) -> dict[str, Any]:
    """The `imagine` section of the results file: overall, per view and per length bucket."""
    if not scores:
        raise ValueError("no imagined events to summarise")

    def block(rows: Sequence[EventScore]) -> dict[str, Any]:
        video = [r for r in rows if r.frames > 0]
        out: dict[str, Any] = {
            key: _mean([np.mean(list(getattr(r, key).values())) for r in video])
            for key in VIDEO_METRICS
        }
        for key in ACTION_METRICS:
            out[key] = _mean([getattr(r, key) for r in rows])
        out["futures"] = max((r.futures for r in rows), default=1)
        out["length_error"] = _mean([abs(r.predicted_length - r.length) for r in rows])
        out["events"] = len(rows)
        return out

    views = list(dict.fromkeys(c for r in scores for c in r.psnr))
    summary = block(scores)
    video = [r for r in scores if r.frames > 0]
    for key in ("psnr", "psnr_single"):  # paired over events: does imagining beat holding still?
        gain = [
            np.mean(list(getattr(r, key).values())) - np.mean(list(r.psnr_repeat_last.values()))
            for r in video
        ]
        if gain:
            lo, hi = bootstrap_ci(gain)
            summary[f"{key}_gain"] = _mean(gain)
            summary[f"{key}_gain_ci95"] = [round(lo, 4), round(hi, 4)]
    summary["per_view"] = {
        c: {
            key: _mean([getattr(r, key)[c] for r in scores if c in getattr(r, key)])
            for key in VIDEO_METRICS
        }
        for c in views
    }
    buckets = sorted({bucket_of(r.length) for r in scores}, key=lambda b: int(b.split("-")[0]))
    summary["buckets"] = {
        b: block([r for r in scores if bucket_of(r.length) == b]) for b in buckets
    }
    summary["episodes"] = len({r.episode for r in scores})
    return summary


def event_json(score: EventScore) -> dict[str, Any]:
    return asdict(score)


def contact_sheet(items: Sequence[SheetItem], columns: int = 9, scale: int = 2) -> Image.Image:
    """Per event: a title and the steps shown, then per view real frames above imagined ones.

    Column t=0 is the observation (imagined: its autoencoder reconstruction); the last column
    is the event's last frame, the ones between evenly spaced.
    """
    from PIL import Image, ImageDraw

    from backend.data.show import BG, INK, MUTED, PAD, _font

    if not items:
        raise ValueError("no events with future frames to draw")
    label_w, title_h, step_h = 110, 22, 16
    size = next(iter(items[0].real.values())).shape[1] * scale
    cols = min(columns, max(len(f) for it in items for f in it.real.values()))
    width = label_w + cols * (size + 2) + 2 * PAD
    rows = sum(2 * len(it.real) for it in items)
    height = PAD + len(items) * (title_h + step_h + PAD) + rows * (size + 2) + PAD
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    font, small = _font(13, bold=True), _font(12)
    y = PAD
    for it in items:
        draw.text((PAD, y + 3), it.title, fill=INK, font=font)
        y += title_h
        n = len(next(iter(it.real.values())))
        picks = np.unique(np.linspace(0, n - 1, min(cols, n)).round().astype(int))  # frames shown
        for k, f in enumerate(picks):
            draw.text((PAD + label_w + k * (size + 2) + 2, y), f"t={f}", fill=MUTED, font=small)
        y += step_h
        for cam in it.real:
            for kind, frames in (("real", it.real[cam]), ("imagined", it.imagined[cam])):
                colour = MUTED if kind == "real" else INK
                draw.text((PAD, y + size // 2 - 7), f"{kind} {cam}", fill=colour, font=small)
                for k, f in enumerate(picks):
                    tile = Image.fromarray(frames[f]).resize((size, size), Image.NEAREST)
                    sheet.paste(tile, (PAD + label_w + k * (size + 2), y))
                y += size + 2
        y += PAD
    return sheet


def write_events(path: str | Path, scores: Sequence[EventScore]) -> None:
    import json

    Path(path).write_text("".join(json.dumps(event_json(s)) + "\n" for s in scores))
