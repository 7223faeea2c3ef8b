"""Can the keypoint encoder localise, told directly? A probe outside the denoiser.

`SpatialKeypoints` (fresh) and the end-effector x, y regress the first event's remaining move
(where "go over the blue block" ends, minus where the hand is) from the frames of that event,
every other frame, on the first `--train-scenes` pick_place_bin scenes of a dataset whose
decoded frames are in a latent cache (`scripts/fill_latents.py --pixels`); the next
`--test-scenes` are held out. Prints the held-out error every 100 steps against predicting the
mean move.

    python scripts/keypoint_probe.py --dataset DATA --pixels latents/<key>/pixels
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.data.lerobot import EventDataset
from backend.model.keypoints import SpatialKeypoints


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--pixels", type=Path, required=True, help="a cache's pixels/ directory")
    p.add_argument("--train-scenes", type=int, default=800)
    p.add_argument("--test-scenes", type=int, default=200)
    p.add_argument("--steps", type=int, default=600)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = EventDataset(args.dataset)
    frames, hands, moves, scene = [], [], [], []
    for i in range(ds.num_episodes):
        n = len(set(scene))
        if n == args.train_scenes + args.test_scenes:
            break
        if "in the bin" not in ds.task(i):
            continue
        e, states = ds.events(i)[0], ds.states(i)
        pixels = np.load(args.pixels / f"{i:06d}.npy", mmap_mode="r")
        for t in range(e.start, e.end, 2):
            frames.append(np.asarray(pixels[t]))
            hands.append(states[t, :2])
            moves.append(states[e.end - 1, :2] - states[t, :2])
            scene.append(n)
    x = torch.from_numpy(np.stack(frames))
    s = torch.tensor(np.stack(hands))
    y = torch.tensor(np.stack(moves))
    train = torch.from_numpy(np.asarray(scene) < args.train_scenes)
    test = torch.nonzero(~train).flatten()
    fit = torch.nonzero(train).flatten()
    print(
        f"{len(fit)} training / {len(test)} held-out frames; mean move misses by "
        f"{(y[test] - y[fit].mean(0)).norm(dim=1).mean():.4f} m"
    )
    encoder = SpatialKeypoints(32, 64, x.shape[1], state_dim=2)
    head = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 2))
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], 1e-3)

    def predict(idx: torch.Tensor) -> torch.Tensor:
        return head(encoder.embed(encoder.points(x[idx]), s[idx] * 5)) / 5

    for step in range(1, args.steps + 1):
        idx = fit[torch.randint(len(fit), (32,))]
        loss = ((predict(idx) - y[idx]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                err = (predict(test) - y[test]).norm(dim=1).mean()
            print(f"step {step}: held-out error {err:.4f} m")


if __name__ == "__main__":
    main()
