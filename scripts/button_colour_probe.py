"""Does the named colour move the target? One button scene, three instructions.

For the first `--scenes` press_buttons_in_order episodes of a dataset, take the observation at
the first "go over / move above the <colour> button" event and ask the checkpoint for that
event three times, once per colour word (the rest of the caption unchanged; action-only path,
seed 0). Where the expert's own "over the <colour> button" events ended is each colour's true
target. Prints, per scene, predicted vs true x, y per colour, then the mean target error and
how far apart the three predictions are against how far apart the buttons are: a policy that
ignores the colour word has a prediction spread of zero whatever the error.

    python scripts/button_colour_probe.py CKPT --dataset DATA [--scenes 10] [--raw]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from backend.data.lerobot import EventDataset
from backend.eval.probe import COLOURS, ask_each_colour, button_events
from backend.model.wam import WorldActionModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--dataset", required=True)
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--track", default="action", help="caption track of the instruction")
    p.add_argument("--raw", action="store_true", help="the raw weights, not the EMA")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(args.checkpoint, use_ema=not args.raw).eval()
    ds = EventDataset(args.dataset)
    errors, spread_pred, spread_true, scenes = [], [], [], 0
    for i in range(ds.num_episodes):
        if scenes == args.scenes:
            break
        if "press" not in ds.task(i):
            continue
        ep = ds.episode(i)
        e, truth = button_events(ep, args.track)
        if set(truth) != set(COLOURS):
            continue  # held-out colours: the probe needs all three words
        scenes += 1
        pred = ask_each_colour(model, ep, e, e.caption(args.track), seed=0)
        print(f"episode {i}: {e.caption(args.track)!r}")
        for c in COLOURS:
            print(f"  {c:5s} predicted {np.round(pred[c], 3)}  true {np.round(truth[c], 3)}")
            errors.append(np.linalg.norm(pred[c] - truth[c]))
        for a, b in itertools.combinations(COLOURS, 2):
            spread_pred.append(np.linalg.norm(pred[a] - pred[b]))
            spread_true.append(np.linalg.norm(truth[a] - truth[b]))
    print(
        f"{scenes} scenes: target error {np.mean(errors):.3f} m; predictions for different "
        f"colours {np.mean(spread_pred):.3f} m apart, the buttons {np.mean(spread_true):.3f} m"
    )


if __name__ == "__main__":
    main()
