"""`wallwm data generate` and `wallwm data show` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="record and inspect event-annotated LeRobot v3.0 datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    gen = data_sub.add_parser("generate", help="record expert demonstrations from the sim")
    which = gen.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--suite", choices=["diverse", "reasoning", "dexterous", "generalization", "all"]
    )
    which.add_argument(
        "--task",
        help="a task by name instead of a suite, or several separated by commas (docs/sim.md)",
    )
    gen.add_argument(
        "--episodes", type=int, required=True, help="episodes in all, spread over the suite's tasks"
    )
    gen.add_argument(
        "--out",
        type=Path,
        required=True,
        help="dataset directory (must be empty unless --overwrite)",
    )
    gen.add_argument(
        "--resolution", type=int, default=64, help="square frame size in pixels (default 64)"
    )
    gen.add_argument("--seed", type=int, default=0, help="first seed tried per task (default 0)")
    gen.add_argument("--wrist", action="store_true", help="also record the wrist camera")
    gen.add_argument(
        "--split",
        choices=["train", "test", "all"],
        default="train",
        help="which seeds of the sim's fixed train/test split to record (default: train)",
    )
    gen.add_argument(
        "--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)"
    )
    gen.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset at --out"
    )
    gen.set_defaults(func=_generate)

    show = data_sub.add_parser("show", help="print a summary and write a contact sheet PNG")
    show.add_argument("dir", type=Path, help="dataset directory")
    show.add_argument(
        "--out", type=Path, default=None, help="PNG path (default DIR/contact_sheet.png)"
    )
    show.add_argument("--episode", type=int, default=0, help="episode to draw (default 0)")
    show.add_argument("--scale", type=int, default=2, help="frame upscaling factor (default 2)")
    show.set_defaults(func=_show)


def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.data.generate import generate, plan_episodes
    from backend.data.lerobot import EventDataset
    from backend.data.show import summary

    total = len(plan_episodes(args.suite, args.episodes, args.seed, args.split, task=args.task))
    with tqdm(total=total, desc=f"recording {args.suite or args.task}", unit="ep") as bar:

        def tick(spec) -> None:
            bar.set_postfix_str(f"{spec.task} seed {spec.seed}")
            bar.update()

        try:
            root = generate(
                args.suite,
                args.episodes,
                args.out,
                resolution=args.resolution,
                seed=args.seed,
                wrist=args.wrist,
                split=args.split,
                crf=args.crf,
                overwrite=args.overwrite,
                progress=tick,
                task=args.task,
            )
        except FileExistsError as e:
            raise ValueError(f"{e} (add --overwrite)") from e
    print(summary(EventDataset(root)))
    return 0


def _show(args: argparse.Namespace) -> int:
    from backend.data.lerobot import EventDataset
    from backend.data.show import contact_sheet, summary

    ds = EventDataset(args.dir)
    if not 0 <= args.episode < ds.num_episodes:
        raise ValueError(
            f"--episode {args.episode} out of range: the dataset has {ds.num_episodes} episodes"
        )
    print(summary(ds))
    out = args.out or args.dir / "contact_sheet.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(ds, args.episode, scale=args.scale).save(out, optimize=True)
    print(f"contact sheet: {out}")
    return 0
