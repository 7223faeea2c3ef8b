"""Encode and decode 9-frame clips of held-out episodes with a checkpoint's VAE; write a PNG.

Each pair of rows is one view: the real frames 0, 2, 4, 6, 8 on top, their reconstruction
below. Frame 0 is encoded alone (the causal first latent frame, what the policy sees).

    python scripts/vae_recon.py RUN/vae/checkpoint recon.png --dataset runs/data/two_test
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from backend.data.lerobot import EventDataset
from backend.model.vae import frames_to_video, video_to_frames
from backend.model.wam import WorldActionModel

CLIP = 9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--dataset", required=True, help="dataset with test-split episodes")
    p.add_argument("--episodes", type=int, default=2, help="test episodes to show")
    p.add_argument("--start", type=int, default=10, help="first frame of each clip")
    p.add_argument("--scale", type=int, default=3, help="pixel zoom of the PNG")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(args.checkpoint).eval()
    data = EventDataset(args.dataset)
    rows = []
    for ep in data.episodes_in_split("test")[: args.episodes]:
        for cam in data.cameras(ep):
            real = model._resize(torch.from_numpy(data.frames(ep, cam)[args.start :][:CLIP]))
            with torch.no_grad():
                rec = video_to_frames(
                    model.vae.decode(model.vae.encode(frames_to_video(real)[None]))
                )
            rows.append(
                np.concatenate(
                    [np.concatenate(list(x[::2]), 1) for x in (real.numpy(), rec[0].numpy())], 0
                )
            )
    grid = Image.fromarray(np.concatenate(rows, 0))
    grid.resize((grid.width * args.scale, grid.height * args.scale), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
