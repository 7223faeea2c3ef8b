"""Does the predicted target follow the block? `backend.eval.probe.target_follow` over seeds.

For each test seed the block is slid 4 cm in x, then (from the same start) 5 cm in y, before
the first event ("go over the blue block"); the printed ratio is how much of the block's shift
the predicted end-effector target (the chunk's last step) followed: 1 = follows, 0 = ignores.

    python scripts/target_follow.py RUN/checkpoint [--seeds 4 9 14]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from backend.eval.probe import target_follow
from backend.model.wam import WorldActionModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--seeds", type=int, nargs="+", default=[4, 9, 14])
    p.add_argument("--caption-track", default="action")
    p.add_argument("--steps", type=int, help="denoising steps (default: the checkpoint's)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(args.checkpoint).eval()
    ratios = []
    for seed in args.seeds:
        for shift in ((0.04, 0.0), (0.0, 0.05)):
            r = target_follow(
                model, seed, shift, caption_track=args.caption_track, steps=args.steps
            )
            ratios.append(r["follow_ratio"])
            print(
                f"seed {seed}, block moved {np.round(r['object_shift'], 3)} m: target moved "
                f"{np.round(r['target_shift'], 3)} m, ratio {r['follow_ratio']:.2f}"
            )
    print(f"mean follow ratio {np.mean(ratios):.2f} over {len(ratios)} shifts")


if __name__ == "__main__":
    main()
