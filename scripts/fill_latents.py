"""Fill a run's latent cache with several processes before `wallwm train --precompute-latents`.

`--precompute-latents` encodes in the training process; on a large dataset that is the
longest part of a run, and it uses one core. This encodes every frame of part `I` of `N` of the
episodes (episodes i with i % N == I) into the same cache the trainer reads (same dataset path,
same autoencoder, same cameras, so the same cache key), and with `--pixels` keeps the decoded
frames a keypoint model reads. With `--clips K` it also encodes, for every event sample of the
first K episodes, its clip and its still clip (what `--video-episodes K --video-residual` joint
steps read). Run N of them side by side, one thread each:

    for i in 0 1; do
      python scripts/fill_latents.py --dataset DATA --checkpoint CKPT --cache latents \\
          --part $i/2 --pixels [--clips K] &
    done; wait
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from backend.data.lerobot import EventDataset
from backend.data.samples import EventSamples, frameless
from backend.latents import LatentStore
from backend.model.wam import WorldActionModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True, help="its autoencoder encodes")
    p.add_argument("--cache", type=Path, required=True, help="the run's --latent-cache")
    p.add_argument("--part", default="0/1", help="I/N: episodes i with i %% N == I")
    p.add_argument("--pixels", action="store_true", help="also keep the decoded frames")
    p.add_argument(
        "--clips", type=int, default=0, metavar="K", help="and the clips of the first K episodes"
    )
    args = p.parse_args()
    part, parts = (int(x) for x in args.part.split("/"))
    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(args.checkpoint).eval()
    episodes = frameless(EventDataset(args.dataset))
    cameras = list(episodes.episode(0).cameras)  # as the trainer names them
    store = LatentStore(args.cache, model, str(args.dataset.resolve()), cameras)
    print(f"cache {store.root}")
    mine = range(part, episodes.num_episodes, parts)
    for i in tqdm(mine, desc=f"part {part}/{parts}"):
        store.obs(episodes, i, 0)
        if args.pixels or args.clips:
            store.frames(episodes, i, 0)
    if args.clips:
        mine = [i for i in mine if i < args.clips]
        samples = EventSamples(
            episodes, h_max=model.config.h_max, caption_track="action", episodes=mine
        )
        with tqdm(total=len(mine) + len(samples), desc=f"clips {part}/{parts}") as bar:
            store.fill(samples, episodes, bar.update, stills=True, pixels=True)


if __name__ == "__main__":
    main()
