"""`wallwm eval closed-loop`, `imagine`, `curve` and `table` (heavy imports inside handlers).

Both write into one results directory (default runs/eval):

    eval.json                         closed_loop[suite][method], closed_loop_tasks[task][method], imagine
    closed_loop/<suite|task>-<method>.jsonl   one JSON record per episode
    imagine/events.jsonl              one JSON record per imagined event
    imagine/contact_sheet.png         imagined next to real futures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = Path("runs/eval")


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="closed-loop Task Progress in the sim and open-loop imagination metrics"
    )
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="ACTION", required=True)

    p = ev_sub.add_parser(
        "closed-loop",
        help="run a method on the sim's test seeds and score Task Progress (docs/eval.md)",
        description="Episodes are the first test seeds of each task (seed % 5 == 4), spread over the "
        "suite's tasks. Writes per-episode records and merges the scores into OUT/eval.json.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="diverse, reasoning, dexterous, generalization or all")
    which.add_argument("--task", help="one task by name")
    p.add_argument(
        "--episodes", type=int, required=True, help="episodes in all, spread over the suite's tasks"
    )
    p.add_argument(
        "--method", default="event", help="event (default), unified, fixed, expert or hold"
    )
    p.add_argument(
        "--checkpoint", type=Path, help="checkpoint directory (needed by event, unified, fixed)"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})"
    )
    p.add_argument("--steps", type=int, help="denoising steps per chunk (default: the preset's)")
    p.add_argument(
        "--max-steps", type=int, help="episode step limit (default: 1.5x the expert's length)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_closed_loop)

    p = ev_sub.add_parser(
        "imagine",
        help="imagined video PSNR/SSIM and action error on held-out events, with a contact sheet",
        description="Imagine every held-out event of a dataset from its first frame and caption; compare "
        "with the recorded future and with 'repeat the last frame' / 'hold position' baselines.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--dataset", type=Path, required=True, help="LeRobot v3 dataset directory")
    p.add_argument("--split", default="test", help="episodes to use: test (default), train or all")
    p.add_argument(
        "--episodes", type=int, help="use the first N episodes of the split (default: all)"
    )
    p.add_argument(
        "--max-events", type=int, help="at most this many events, spread over the episodes"
    )
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument(
        "--futures",
        type=int,
        help="imagined futures per event, scored as their mean (default: the checkpoint's "
        "imagine_futures, what the studio shows)",
    )
    p.add_argument(
        "--sheet-events", type=int, default=6, help="events drawn on the contact sheet (default 6)"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_imagine)

    p = ev_sub.add_parser(
        "curve",
        help="learning curve of a run: training loss, open-loop error and closed-loop Task "
        "Progress vs training hours",
        description="Scores every step-numbered checkpoint of a run (train with --keep-every K): "
        "action-only error on held-out events of --dataset next to holding still, and closed-loop "
        "Task Progress on test seeds of each --task (event mode, or the fixed closed loop for a "
        "fixed-recipe run). Writes OUT/curve.json and OUT/curve.png, with the run's logged "
        "training loss beside them.",
    )
    p.add_argument(
        "--run", type=Path, required=True, help="training run directory (OUT of wallwm train)"
    )
    p.add_argument(
        "--dataset", type=Path, required=True, help="dataset with held-out (test) episodes"
    )
    p.add_argument(
        "--task", action="append", required=True, help="task for closed loop (repeatable)"
    )
    p.add_argument(
        "--episodes", type=int, default=10, help="closed-loop test seeds per task (default 10)"
    )
    p.add_argument(
        "--max-events", type=int, default=40, help="held-out events for open loop (default 40)"
    )
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument(
        "--guidance", type=float, help="classifier-free guidance (default: each checkpoint's)"
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=_curve)

    from backend.eval import table

    p = ev_sub.add_parser(
        "table",
        help="the paper's table in the sim: every suite x method, imagination metrics, docs/results.md",
        description=table.__doc__.split("\n\n")[1].replace("\n", " "),
    )
    table.add_arguments(p)
    p.set_defaults(func=table.run)


def _load(checkpoint: Path, threads: int):
    """(model, its config.json) with torch limited to `threads` CPU threads."""
    import torch

    from backend.model.checkpoint import read_config
    from backend.model.wam import WorldActionModel

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint} does not exist")
    return WorldActionModel.from_checkpoint(checkpoint), read_config(checkpoint)


def _closed_loop(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.eval.closed_loop import (
        MODEL_METHODS,
        ClosedLoop,
        caption_track_of,
        check_checkpoint_for,
        check_method,
        episode_specs,
    )
    from backend.eval.summary import RESULTS_FILE, closed_loop_update, merge_results

    method = check_method(args.method)
    specs = episode_specs(args.suite, args.task, args.episodes)  # validates suite/task/episodes
    model, track, checkpoint = None, "subtask", None
    if method in MODEL_METHODS:
        if args.checkpoint is None:
            raise ValueError(f"--method {method} needs --checkpoint")
        from backend.model.checkpoint import read_config

        if not args.checkpoint.is_dir():
            raise FileNotFoundError(f"checkpoint directory {args.checkpoint} does not exist")
        check_checkpoint_for(method, read_config(args.checkpoint), args.checkpoint)
        model, config = _load(args.checkpoint, args.threads)
        track, checkpoint = caption_track_of(config), str(args.checkpoint)
    scope = args.suite or args.task
    records_path = args.out / "closed_loop" / f"{scope}-{method}.jsonl"
    records_path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    with (
        ClosedLoop(method, model, track, args.steps, args.max_steps, checkpoint) as loop,
        records_path.open("w") as f,
        tqdm(
            total=len(specs), desc=f"{method} on {scope}", unit="ep", disable=args.no_progress
        ) as bar,
    ):
        for task, seed in specs:
            rec = loop.run(task, seed).to_json()
            f.write(json.dumps(rec) + "\n")
            f.flush()  # a stopped run keeps the episodes it finished
            records.append(rec)
            tp = sum(r["task_progress"] for r in records) / len(records)
            bar.set_postfix_str(f"{task} seed {seed}: {rec['task_progress']:.0f}, mean {tp:.1f}")
            bar.update()
    update = closed_loop_update(records, args.suite, method)
    merge_results(args.out / RESULTS_FILE, update)
    rows = [(t, v[method]) for t, v in update["closed_loop_tasks"].items()]
    rows += [(f"suite {s}", v[method]) for s, v in update.get("closed_loop", {}).items()]
    print(f"{'':32s} {'Task Progress':>14s} {'95% CI':>16s} {'success':>8s} {'episodes':>9s}")
    for name, e in rows:
        ci = f"[{e['ci95'][0]:.1f}, {e['ci95'][1]:.1f}]"
        print(
            f"{name:32s} {e['task_progress']:14.1f} {ci:>16s} {e['success']:8.2f} {e['episodes']:9d}"
        )
    print(f"episodes: {records_path}")
    print(f"results: {args.out / RESULTS_FILE}")
    return 0


def _imagine(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.data.lerobot import EventDataset
    from backend.eval.closed_loop import caption_track_of
    from backend.eval.imagination import (
        contact_sheet,
        evaluate_imagination,
        summarise,
        write_events,
    )
    from backend.eval.summary import RESULTS_FILE, merge_results

    if args.sheet_events < 0:
        raise ValueError(f"--sheet-events must be >= 0, got {args.sheet_events}")
    if not args.dataset.is_dir():
        raise FileNotFoundError(f"dataset directory {args.dataset} does not exist")
    dataset = EventDataset(args.dataset)
    model, config = _load(args.checkpoint, args.threads)
    track = caption_track_of(config)
    with tqdm(desc="imagine", unit="event", disable=args.no_progress) as bar:
        scores, sheet = evaluate_imagination(
            model,
            dataset,
            caption_track=track,
            split=args.split,
            episodes=args.episodes,
            max_events=args.max_events,
            steps=args.steps,
            sheet_events=args.sheet_events,
            progress=lambda s: bar.update(),
            futures=args.futures,
        )
    out = args.out / "imagine"
    out.mkdir(parents=True, exist_ok=True)
    write_events(out / "events.jsonl", scores)
    summary = summarise(scores)
    summary |= {
        "checkpoint": str(args.checkpoint),
        "dataset": str(args.dataset),
        "split": args.split,
        "caption_track": track if model.recipe == "event" else "task",
    }
    if sheet:
        contact_sheet(sheet).save(out / "contact_sheet.png", optimize=True)
        summary["contact_sheet"] = str(out / "contact_sheet.png")
    merge_results(args.out / RESULTS_FILE, {"imagine": summary})
    print(
        f"{summary['events']} events of {summary['episodes']} {args.split} episodes, "
        f"{summary['futures']} imagined future(s) each"
    )
    for key, base in (
        ("psnr", "psnr_repeat_last"),
        ("psnr_single", "psnr_repeat_last"),
        ("ssim", "ssim_repeat_last"),
        ("action_l2", "action_l2_hold"),
        ("gripper_error", "gripper_error_hold"),
    ):
        if summary[key] is not None:
            print(f"{key:22s} {summary[key]:9.4f}   baseline {base}: {summary[base]:.4f}")
    print(f"{'action_l2_action_only':22s} {summary['action_l2_action_only']:9.4f}")
    if "contact_sheet" in summary:
        print(f"contact sheet: {summary['contact_sheet']}")
    print(f"events: {out / 'events.jsonl'}")
    print(f"results: {args.out / RESULTS_FILE}")
    return 0


def _curve(args: argparse.Namespace) -> int:
    import torch

    from backend.eval.curve import learning_curve, write_curve

    torch.set_num_threads(args.threads)

    def show(row: dict) -> None:
        tp = ", ".join(
            f"{k.split('/', 1)[1]} {v:.1f}"
            for k, v in row.items()
            if k.startswith("task_progress/")
        )
        print(
            f"step {row['step']} ({row['hours'] or 0:.2f} h): open-loop {row['action_l2'] * 100:.1f} cm "
            f"(hold {row['action_l2_hold'] * 100:.1f} cm); Task Progress {tp}",
            flush=True,
        )

    previous = Path(args.out) / "curve.json"
    done = json.loads(previous.read_text()) if previous.is_file() else []
    rows = learning_curve(
        args.run,
        args.dataset,
        args.task,
        args.episodes,
        args.max_events,
        args.steps,
        show,
        done,
        args.guidance,
    )
    print(f"wrote {write_curve(rows, args.out, args.run)}")
    return 0
