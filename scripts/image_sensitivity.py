"""Does a checkpoint's action prediction look at the images? Swap them and see.

From the observation of pick_place_bin seed 4 and the caption "go over the blue block", the
predicted end-effector target (x, y at the chunk's last step) is compared with the target
predicted when the images come from other seeds (the block elsewhere), when they are black,
and when the state is moved 3 cm in x. A policy that reads where the block is moves its target
with the block; one that learned a fixed move per caption moves it with the state only.

    python scripts/image_sensitivity.py RUN/checkpoint
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from backend.model.wam import Observation, WorldActionModel
from robot.sim.env import SimEnv

TASK, CAPTION, SEEDS = "pick_place_bin", "go over the blue block", (4, 9, 14, 19)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, default=10, help="denoising steps")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(args.checkpoint).eval()
    scenes = []
    for seed in SEEDS:
        with SimEnv(TASK, seed=seed, cameras=list(model.cameras)) as env:
            env.reset(seed, render=False)
            scenes.append((env.observe(render=True), env.body_pos("block")[:2].copy()))
    (obs, block), state = scenes[0], scenes[0][0]["state"]

    def target(images, s) -> np.ndarray:
        im = model.predict_actions(Observation(images, s), CAPTION, steps=args.steps, seed=0)
        return im.actions[-1, :2]

    base = target(obs["images"], state)
    for seed, (other, where) in zip(SEEDS[1:], scenes[1:]):
        moved = target(other["images"], state) - base
        print(f"images of seed {seed}: block {np.round(where - block, 3)} m away, "
              f"target moved {np.round(moved, 3)} m")  # fmt: skip
    black = {c: np.zeros_like(v) for c, v in obs["images"].items()}
    print(f"black images: target moved {np.round(target(black, state) - base, 3)} m")
    shifted = state.copy()
    shifted[0] += 0.03
    print(
        f"state 3 cm further in x: target moved {np.round(target(obs['images'], shifted) - base, 3)} m"
    )


if __name__ == "__main__":
    main()
