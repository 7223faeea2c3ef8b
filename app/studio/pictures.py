"""The video grid: per view, rows observed | imagined | difference (| ground truth), frames across.

One labelled image per camera, so the grid reads like a contact sheet: each column is one
frame of the event (every `stride`-th control step, frame 0 being the observation the
imagination started from). With a dataset source, the real future frames are known: the
"ground truth" row shows them, "difference" is |imagined - ground truth|, and PSNR/SSIM are
computed on the frames shown. With the live robot the future is not known yet: "observed" is
the observation the imagination starts from and "difference" is |imagined - observed|, i.e.
what the model expects to change.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 88  # px per frame tile: 64 px images drawn at a readable size
LABEL_W = 118
HEADER_H = 22
BG, FG = (250, 250, 250), (30, 30, 30)


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def _tile(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(img, np.uint8)).resize((TILE, TILE), Image.NEAREST)


def frame_indices(length: int, stride: int = 4, most: int = 9) -> list[int]:
    """Frames 0, stride, 2*stride, ... up to `length`, the last always included, at most `most`."""
    idx = list(range(0, length + 1, max(1, stride)))
    if idx[-1] != length:
        idx.append(length)
    while len(idx) > most:
        idx = idx[::2] if idx[-1] in idx[::2] else [*idx[::2], length]
    return idx


def view_grid(
    name: str,
    imagined: np.ndarray,
    observed: np.ndarray,
    ground_truth: np.ndarray | None = None,
    stride: int = 4,
) -> tuple[np.ndarray, dict[str, float]]:
    """The grid of one view and its metrics.

    imagined (T, H, W, 3) uint8 with frame 0 the observation; observed (H, W, 3); ground_truth
    (T', H, W, 3) real frames from the same start, or None. Returns an RGB image and
    {"psnr", "ssim"} over the imagined frames 1.. that have ground truth (empty without it).
    """
    from backend.eval.imagination import psnr, ssim

    t = len(imagined) - 1
    cols = frame_indices(t, stride)
    rows: list[tuple[str, list[np.ndarray]]] = [
        ("observed", [observed] * len(cols)),
        ("imagined", [imagined[i] for i in cols]),
    ]
    metrics: dict[str, float] = {}
    if ground_truth is not None and len(ground_truth):
        gt = [ground_truth[min(i, len(ground_truth) - 1)] for i in cols]
        rows = [("ground truth", gt), rows[1]]
        rows.append(("|difference|", [_diff(imagined[i], g) for i, g in zip(cols, gt)]))
        n = min(t, len(ground_truth) - 1)
        if n >= 1:
            pred, real = imagined[1 : n + 1], np.asarray(ground_truth[1 : n + 1])
            if pred.shape == real.shape:
                metrics = {"psnr": psnr(pred, real), "ssim": ssim(pred, real)}
    else:
        rows.append(("|difference|", [_diff(imagined[i], observed) for i in cols]))

    canvas = Image.new("RGB", (LABEL_W + TILE * len(cols), HEADER_H * 2 + TILE * len(rows)), BG)
    draw = ImageDraw.Draw(canvas)
    font, bold = _font(13), _font(15)
    title = f"{name}" + (
        f"   PSNR {metrics['psnr']:.1f} dB · SSIM {metrics['ssim']:.3f}" if metrics else ""
    )
    draw.text((6, 3), title, fill=FG, font=bold)
    for c, i in enumerate(cols):
        draw.text((LABEL_W + c * TILE + 4, HEADER_H + 3), f"t = {i}", fill=FG, font=font)
    for r, (label, images) in enumerate(rows):
        y = HEADER_H * 2 + r * TILE
        draw.text((6, y + TILE // 2 - 8), label, fill=FG, font=font)
        for c, img in enumerate(images):
            canvas.paste(_tile(img), (LABEL_W + c * TILE, y))
    return np.asarray(canvas), metrics


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.int16)
    b = np.asarray(b, np.int16)
    if a.shape != b.shape:
        return np.zeros_like(a, dtype=np.uint8)
    return np.clip(np.abs(a - b) * 2, 0, 255).astype(np.uint8)  # x2: small errors stay visible


def video_grid(
    video: Mapping[str, np.ndarray],
    observed: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, np.ndarray] | None = None,
    stride: int = 4,
) -> tuple[np.ndarray, str]:
    """One image with every view's grid stacked, in the video's camera order, and its caption."""
    grids, captions = [], []
    for cam, frames in video.items():
        gt = ground_truth.get(cam) if ground_truth else None
        img, m = view_grid(cam, frames, observed[cam], gt, stride)
        n = len(frames) - 1
        extra = f", PSNR {m['psnr']:.1f} dB, SSIM {m['ssim']:.3f}" if m else ""
        grids.append(img)
        captions.append(f"{cam}: {n} imagined step{'s' if n != 1 else ''}{extra}")
    width = max(g.shape[1] for g in grids)
    padded = [
        np.pad(g, ((0, 8), (0, width - g.shape[1]), (0, 0)), constant_values=BG[0]) for g in grids
    ]
    return np.concatenate(padded, axis=0), " · ".join(captions)
