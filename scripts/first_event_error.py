"""Open-loop error of the first event's target on recorded scenes, against the mean move.

For the first `--scenes` pick_place_bin episodes of a dataset, the checkpoint predicts the
first event ("go over the blue block") from the event's first frame (action-only path, seed 0);
the error is the distance between the chunk's last x, y and where the expert's event ended.
The baseline is the error of the best fixed move (the mean over these scenes): a policy that
ignores where the block is scores about that.

    python scripts/first_event_error.py RUN/checkpoint --dataset DATA [--scenes 30] [--raw]
    python scripts/first_event_error.py RUN/checkpoint --dataset DATA --buttons --scenes 10
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from backend.data.lerobot import EventDataset
from backend.model.wam import Observation, WorldActionModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--dataset", required=True)
    p.add_argument("--scenes", type=int, default=30)
    p.add_argument("--track", default="action", help="caption track of the instruction")
    p.add_argument("--raw", action="store_true", help="the raw weights, not the EMA")
    p.add_argument(
        "--buttons",
        action="store_true",
        help="press_buttons_in_order instead: every 'go over / move above the <colour> button' "
        "event of the first --scenes episodes",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    model = WorldActionModel.from_checkpoint(args.checkpoint, use_ema=not args.raw).eval()
    ds = EventDataset(args.dataset)
    errors, moves, scenes = [], [], 0
    for i in range(ds.num_episodes):
        if scenes == args.scenes:
            break
        if ("press" if args.buttons else "in the bin") not in ds.task(i):
            continue
        scenes += 1
        ep = ds.episode(i)
        events = [
            e
            for e in ep.events
            if "button" in e.caption(args.track)
            and any(w in e.caption(args.track) for w in ("over", "above"))
        ]
        for e in events if args.buttons else ep.events[:1]:
            obs = Observation(
                {c: f[e.start] for c, f in ep.frames.items()}, ep.states[e.start], ep.cameras
            )
            im = model.predict_actions(obs, e.caption(args.track), seed=0)
            target = ep.states[e.end - 1, :2]
            errors.append(np.linalg.norm(im.actions[-1, :2] - target))
            moves.append(target - ep.states[e.start, :2])
    moves = np.asarray(moves)
    baseline = np.linalg.norm(moves - moves.mean(0), axis=1).mean()
    print(
        f"{scenes} scenes, {len(errors)} events: target error {np.mean(errors):.3f} m, "
        f"mean move {baseline:.3f} m"
    )


if __name__ == "__main__":
    main()
