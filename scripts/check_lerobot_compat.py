"""Open a dataset this project wrote with the real LeRobot (0.6.x) and check what it reads.

Not part of the test suite: LeRobot with torch is a ~5 GB environment, kept outside the
repository. Run it with that environment's python (see scripts/make_lerobot_fixtures.py for
how it is made; LeRobot 0.6 needs Python 3.12 and its `dataset` extra):

    .venv/bin/wallwm data generate --suite reasoning --episodes 2 --out /work/runs/lr/ours
    /work/venvs/lerobot061/bin/python scripts/check_lerobot_compat.py /work/runs/lr/ours

What it does, with LeRobot's own code:

1. `LeRobotDataset(root=...)` opens the dataset and every frame is read through
   `__getitem__` (videos decoded by LeRobot, PyAV backend).
2. Each frame's language columns go through LeRobot's resolvers (`active_at`,
   `emitted_at`) and its recipe renderer (`render_sample`), once per caption track:
   `subtask`, `task_aug` (our task track), `motion` (our segment track) and `action`,
   the one style we add. It first shows that LeRobot refuses `action` before
   `register_lerobot_styles()` declares it the way LeRobot documents.
3. Everything LeRobot resolved or decoded is compared with this project's own reader
   (`EventDataset`): the caption of every track at every frame, the plan, and the pixels.

It prints a summary and exits non-zero on any disagreement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local dataset: never ask the hub
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from backend.data import language
from backend.data.lerobot import EventDataset

# binding name -> (LeRobot resolver expression, our caption track)
TRACK_BINDINGS = {
    "subtask": ("active_at(t, style=subtask)", "subtask"),
    "task_aug": ("active_at(t, style=task_aug)", "task"),
    "motion": ("active_at(t, style=motion)", "segment"),
    "action": ("active_at(t, style=action)", "action"),
}


def _recipe():
    """A hierarchical-policy recipe over our tracks: task -> plan -> subtask -> action, motion."""
    from lerobot.configs.recipe import MessageTurn, TrainingRecipe

    return TrainingRecipe(
        bindings={name: expr for name, (expr, _) in TRACK_BINDINGS.items() if name != "subtask"},
        messages=[
            MessageTurn(role="user", content="${task}", stream="high_level"),
            MessageTurn(
                role="assistant", content="${plan}", stream="high_level", if_present="plan"
            ),
            MessageTurn(role="assistant", content="${subtask}", stream="high_level", target=True),
            MessageTurn(role="assistant", content="${action}", stream="low_level", target=True),
            MessageTurn(role="assistant", content="${motion}", stream="low_level", target=True),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a dataset written by `wallwm data generate`")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    args = parser.parse_args()

    from importlib.metadata import version

    from lerobot.datasets import language as lr_language
    from lerobot.datasets.language_render import active_at, render_sample
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ours = EventDataset(args.root)
    t0 = time.perf_counter()
    ds = LeRobotDataset(repo_id=f"local/{args.root.name}", root=args.root, video_backend="pyav")
    print(
        f"LeRobot {version('lerobot')} opened {args.root}: {ds.num_episodes} episodes, {ds.num_frames} frames, fps {ds.fps}"
    )
    print(
        f"  cameras {ds.meta.video_keys}, features {sorted(k for k in ds.features if not k.startswith('observation.images'))}"
    )

    rows0 = ds[0][lr_language.LANGUAGE_PERSISTENT]
    try:
        active_at(0.0, persistent=rows0, style="action")
        print("  before registration: LeRobot already knows style 'action'")
    except ValueError as err:
        print(f"  before registration: LeRobot refuses our action track: {err}")
    language.register_lerobot_styles()
    print(
        f"  registered {list(language.EXTENDED_STYLES)}; LeRobot persistent styles now {sorted(lr_language.PERSISTENT_STYLES)}"
    )

    recipe = _recipe()
    styles: Counter[str] = Counter(f"{r['style']}/{r['role']}" for r in rows0)
    resolved: Counter[str] = Counter()
    mismatches: list[str] = []
    pixel_err = 0.0
    examples = {}
    n = len(ds) if args.max_frames <= 0 else min(args.max_frames, len(ds))
    for idx in range(n):
        item = ds[idx]
        ep, f = int(item["episode_index"]), int(item["frame_index"])
        t = float(item["timestamp"])
        rows = item[lr_language.LANGUAGE_PERSISTENT]
        event = next(e for e in ours.events(ep) if e.start <= f < e.end)
        for name, (_, track) in TRACK_BINDINGS.items():
            row = active_at(t, persistent=rows, style=name)
            got = None if row is None else row["content"]
            resolved[name] += got is not None
            if got != event.caption(track):
                mismatches.append(
                    f"ep {ep} frame {f} {name}: LeRobot {got!r}, ours {event.caption(track)!r}"
                )
        plan = active_at(t, persistent=rows, style="plan")
        if plan is None or language.parse_plan(plan["content"]) != ours.plan(ep):
            mismatches.append(f"ep {ep} frame {f}: plan differs")
        rendered = render_sample(
            recipe=recipe,
            persistent=rows,
            events=item[lr_language.LANGUAGE_EVENTS],
            t=t,
            sample_idx=idx,
            task=item["task"],
        )
        if rendered is None:
            mismatches.append(f"ep {ep} frame {f}: the recipe rendered nothing")
        elif ep == 0 and event.start == f and len(examples) < 2:
            examples[f] = rendered["messages"]
        for cam in ours.camera_names:
            img = item[f"observation.images.{cam}"].numpy().transpose(1, 2, 0) * 255.0  # (H, W, 3)
            pixel_err = max(pixel_err, float(np.abs(img - ours.episode(ep).frames[cam][f]).mean()))
    elapsed = time.perf_counter() - t0

    print(f"  iterated {n} frames through LeRobotDataset.__getitem__ in {elapsed:.1f} s")
    print(
        f"  language_persistent rows per frame (episode 0): {sum(styles.values())}, style/role counts {dict(styles)}"
    )
    for name, (expr, track) in TRACK_BINDINGS.items():
        print(f"  {expr:32s} (our {track:8s} track): resolved on {resolved[name]}/{n} frames")
    for f, messages in examples.items():
        print(f"  rendered recipe, episode 0 frame {f}:")
        for m in messages:
            text = str(m.get("content", "")).replace("\n", " | ")
            print(f"    {m['role']:9s} {text[:110]}")
    print(f"  pixels: largest per-frame mean |LeRobot - ours| = {pixel_err:.3f} (uint8 levels)")
    print(f"  disagreements with EventDataset: {len(mismatches)}")
    for line in mismatches[:10]:
        print(f"    {line}")
    return 1 if mismatches or pixel_err > 0.5 else 0


if __name__ == "__main__":
    sys.exit(main())
