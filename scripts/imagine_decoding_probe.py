"""Where the imagined video loses to "repeat the last frame": the decoder or the video tower?

For held-out events of a dataset, prints the mean PSNR (dB, frames after the observation,
every view) of:

- `plain`:  the model's imagined video (a residual-video model's is already composited);
- `resid`:  the observation plus the imagined change in pixels
            (observation + decode(prediction) - decode(still clip of the observation));
            for a model without residual video;
- `repeat`: repeating the observed frame;
- `vae`:    the autoencoder alone on the true future (encode, decode): the decoder's ceiling;
- `vae_resid`: the observation plus the true future's decoded change: the composite's ceiling.

and the squared error per pixel of `plain` and `repeat`, split into pixels that move (differ
from the observation by more than 8 levels in some channel) and pixels that do not.

    python scripts/imagine_decoding_probe.py CHECKPOINT DATASET --events 20 [--steps N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from backend.data.lerobot import EventDataset
from backend.data.samples import EventSamples
from backend.eval.imagination import held_out_episodes, psnr, resize_frames
from backend.model.vae import video_to_frames
from backend.model.wam import Observation, WorldActionModel


def _clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, 3, T', H, W) in [-1, 1], padded to 1 + 4k frames."""
    t = len(frames)
    padded = 1 + 4 * int(np.ceil((t - 1) / 4))
    if padded > t:
        frames = np.concatenate([frames, np.repeat(frames[-1:], padded - t, 0)])
    return torch.from_numpy(frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]


def _roundtrip(model: WorldActionModel, frames: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model.vae.decode(model.vae.encode(_clip_tensor(frames)))
    return video_to_frames(out).cpu().numpy()[0][: len(frames)]


def _composite(observed: np.ndarray, video: np.ndarray, still: np.ndarray) -> np.ndarray:
    """observed + (video - still), per frame, in uint8."""
    change = video.astype(np.int16) - still.astype(np.int16)
    return np.clip(observed.astype(np.int16) + change, 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("dataset")
    p.add_argument("--events", type=int, default=20, help="held-out events (default 20)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (preset's)")
    args = p.parse_args()
    torch.set_num_threads(1)

    model = WorldActionModel.from_checkpoint(args.checkpoint)
    ds = EventDataset(args.dataset)
    samples = EventSamples(
        ds,
        h_max=model.config.h_max,
        caption_track="action",
        cameras=list(model.cameras) or None,
        episodes=held_out_episodes(ds, "test", None),
    )
    chosen = np.unique(np.linspace(0, len(samples) - 1, args.events).round().astype(int))
    size = model.config.image_size
    scores: dict[str, list[float]] = {
        "plain": [],
        "resid": [],
        "repeat": [],
        "vae": [],
        "vae_resid": [],
    }
    if model.config.video_residual:
        del scores["resid"]
    err = {"plain static": 0.0, "plain moving": 0.0, "repeat moving": 0.0, "pixels": 0}
    for i in chosen.tolist():
        s = samples[i]
        names = list(s["cameras"])
        obs = Observation(
            {c: s["video"][v, 0] for v, c in enumerate(names)}, s["state"], s["cameras"]
        )
        im = model.imagine(
            obs, s["caption"], mode="event", steps=args.steps, seed=i, full_video=True
        )
        n = min(int(s["video_valid"].sum()) - 1, int(s["length"]), len(im.chunk))
        if n <= 0:
            continue
        for v, c in enumerate(names):
            truth = resize_frames(s["video"][v, : n + 1], size)
            pred = im.video[c][: n + 1]
            still = _roundtrip(model, np.repeat(truth[:1], n + 1, 0))
            rep = np.repeat(truth[:1], n, 0)
            scores["plain"].append(psnr(pred[1:], truth[1:]))
            if "resid" in scores:
                scores["resid"].append(psnr(_composite(truth[0], pred, still)[1:], truth[1:]))
            scores["repeat"].append(psnr(rep, truth[1:]))
            true = _roundtrip(model, truth)
            scores["vae"].append(psnr(true[1:], truth[1:]))
            scores["vae_resid"].append(psnr(_composite(truth[0], true, still)[1:], truth[1:]))
            real = truth[1:].astype(float)
            moving = np.abs(real - rep).max(-1) > 8
            e_plain = ((pred[1:].astype(float) - real) ** 2).mean(-1)
            e_rep = ((rep.astype(float) - real) ** 2).mean(-1)
            err["plain static"] += e_plain[~moving].sum()
            err["plain moving"] += e_plain[moving].sum()
            err["repeat moving"] += e_rep[moving].sum()
            err["pixels"] += moving.size
            err["moving pixels"] = err.get("moving pixels", 0) + int(moving.sum())
    for name, values in scores.items():
        print(f"{name:9s} {np.mean(values):6.2f} dB  ({len(values)} view-clips)")
    pixels = max(err["pixels"], 1)
    print(
        f"moving pixels {100 * err.get('moving pixels', 0) / pixels:.1f} %; squared error per pixel:"
    )
    for name in ("plain static", "plain moving", "repeat moving"):
        print(f"  {name:14s} {err[name] / pixels:8.1f}")


if __name__ == "__main__":
    main()
