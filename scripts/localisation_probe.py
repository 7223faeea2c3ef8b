"""How well can a small network place the first event's target from one observation?

A probe outside the model: for each episode of one task (`pick_place_bin` by default), every other frame of the first event
(e.g. "go over the blue block") is an input and the end effector's x, y at that event's end is
the target. Episodes are split by scene (the first `--train-scenes` for training, the next
`--test-scenes` held out), so a network that memorises scenes scores badly. Inputs are the three
views' raw pixels, or their latents under a checkpoint's VAE (what the denoiser sees). Prints
the held-out error of predicting the mean and of a small CNN, in metres.

    python scripts/localisation_probe.py --dataset DATA --input pixels
    python scripts/localisation_probe.py --dataset DATA --input latents \\
        --checkpoint RUN/checkpoint
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from backend.data.lerobot import EventDataset


def examples(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = EventDataset(args.dataset)
    cams = list(ds.camera_names)
    model = None
    if args.input == "latents":
        from backend.model.wam import WorldActionModel

        model = WorldActionModel.from_checkpoint(args.checkpoint).eval()
        cams = list(model.cameras)
    x, y, scene = [], [], []
    for i in range(ds.num_episodes):
        if args.instruction not in ds.task(i):
            continue
        first = ds.events(i)[0]
        states = ds.states(i)
        frames = np.stack([ds.frames(i, c)[: first.end : 2] for c in cams], 1)  # (t, V, H, W, 3)
        if model is None:
            inputs = frames.transpose(0, 1, 4, 2, 3).reshape(len(frames), -1, *frames.shape[2:4])
            inputs = inputs.astype(np.float32) / 255
        else:
            with torch.no_grad():
                z = model.encode_video(torch.from_numpy(frames[:, :, None].copy()))
            inputs = z[:, :, :, 0].flatten(1, 2).float().numpy()  # (t, V*C, h, w)
        x.append(inputs)
        y.append(np.repeat(states[first.end - 1, :2][None], len(inputs), 0))
        scene.append(np.full(len(inputs), len(set(np.concatenate(scene)) if scene else set())))
        if len(scene) == args.train_scenes + args.test_scenes:
            break
    return np.concatenate(x), np.concatenate(y).astype(np.float32), np.concatenate(scene)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--instruction",
        default="in the bin",
        help="episodes whose task instruction contains this (default: pick_place_bin's)",
    )
    p.add_argument("--input", choices=("pixels", "latents"), default="pixels")
    p.add_argument("--checkpoint", help="its VAE encodes the views (--input latents)")
    p.add_argument("--train-scenes", type=int, default=75)
    p.add_argument("--test-scenes", type=int, default=25)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.input == "latents" and not args.checkpoint:
        p.error("--input latents needs --checkpoint")
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x, y, scene = examples(args)
    train = scene < args.train_scenes
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    xe, ye = torch.from_numpy(x[~train]), torch.from_numpy(y[~train])
    mean = yt.mean(0)
    c, h = x.shape[1], x.shape[2]
    stride = 2 if h > 16 else 1
    net = nn.Sequential(
        nn.Conv2d(
            c, 32 if stride == 2 else 64, 5 if stride == 2 else 3, stride, 2 if stride == 2 else 1
        ),
        nn.GELU(),
        nn.Conv2d(32 if stride == 2 else 64, 64, 3, stride, 1),
        nn.GELU(),
        nn.Conv2d(64, 64, 3, stride, 1),
        nn.GELU(),
        nn.Flatten(),
        nn.LazyLinear(128),
        nn.GELU(),
        nn.Linear(128, 2),
    )
    net(xt[:1])
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(xt)).split(32):
            loss = ((net(xt[idx]) - (yt[idx] - mean)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        test = (net(xe) + mean - ye).norm(dim=1).mean().item()
        fit = (net(xt) + mean - yt).norm(dim=1).mean().item()
    base = (ye - mean).norm(dim=1).mean().item()
    print(
        f"'{args.instruction}' episodes, {args.input}: {args.train_scenes} training scenes, {args.test_scenes} "
        f"held out ({len(xt)} / {len(xe)} frames). Held-out error: mean {base:.3f} m, "
        f"CNN {test:.3f} m (training error {fit:.3f} m)."
    )


if __name__ == "__main__":
    main()
