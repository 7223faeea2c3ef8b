"""`wallwm eval table`: the paper's results table, rebuilt in the simulator by one command.

Runs closed loop for every (suite, method) on the sim's test seeds and the imagination metrics
on held-out events, merges everything into OUT/eval.json (the shared results file of
`backend.eval.summary`) and writes the generated part of the results page between markers,
leaving the hand-written reading around it untouched.

Methods and their checkpoints: `event` and `unified` run the event-recipe checkpoint (unified
mode needs its unified stage, i.e. a trained VLM), `fixed` the fixed-recipe baseline, `expert`
and `hold` none. A method that cannot run (no checkpoint given, or a checkpoint without the
stage it needs) is listed under `not_run` with the reason, never silently dropped. Each
(suite, method) keeps its per-episode records; a rerun with the same checkpoint and episode
count reuses finished ones, so an interrupted table resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SUITES = ("diverse", "reasoning", "dexterous", "generalization")
METHODS = ("event", "unified", "fixed", "expert", "hold")
BEGIN, END = "<!-- eval:table:begin -->", "<!-- eval:table:end -->"

# The paper's Task Progress (0-100, real robot). "unified" is its fixed-length unified model
# trained from scratch (U-Scratch); "fixed" the fixed-length base of its event ablation
# (reported for reasoning and generalization only).
PAPER = {
    "event": {"diverse": 75.86, "reasoning": 71.60, "dexterous": 32.00, "generalization": 53.75},
    "unified": {"diverse": 63.00, "reasoning": 59.50, "dexterous": 31.25, "generalization": 18.50},
    "fixed": {"reasoning": 32.6, "generalization": 22.0},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--event", type=Path, help="event-recipe checkpoint (event and unified)")
    p.add_argument("--fixed", type=Path, help="fixed-recipe checkpoint (the fixed baseline)")
    p.add_argument(
        "--episodes", type=int, default=50, help="episodes per suite and method (default 50)"
    )
    p.add_argument(
        "--suite", action="append", choices=SUITES, help="suites to run (default: all four)"
    )
    p.add_argument(
        "--method", action="append", choices=METHODS, help="methods to run (default: all five)"
    )
    p.add_argument("--imagine-dataset", type=Path, help="dataset with held-out episodes")
    p.add_argument(
        "--imagine-events", type=int, default=60, help="held-out events imagined (default 60)"
    )
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument(
        "--out", type=Path, default=Path("docs/results"), help="results directory (eval.json)"
    )
    p.add_argument(
        "--doc", type=Path, default=Path("docs/results.md"), help="page to write the table into"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def _why_not(method: str, args: argparse.Namespace) -> str | None:
    """None when `method` can run, else the reason it cannot."""
    from backend.eval.closed_loop import MODEL_METHODS, check_checkpoint_for
    from backend.model.checkpoint import read_config

    if method not in MODEL_METHODS:
        return None
    path = args.fixed if method == "fixed" else args.event
    if path is None:
        return f"no --{'fixed' if method == 'fixed' else 'event'} checkpoint given"
    try:
        check_checkpoint_for(method, read_config(path), path)
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    return None


def _finished(
    records: Path, episodes: int, checkpoint: str | None, threads: int
) -> list[dict] | None:
    """The records of a suite x method already scored with this checkpoint (and, for a model,
    this many torch threads, when the records say), else None."""
    if not records.is_file():
        return None
    rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    ok = len(rows) == episodes and all(
        r.get("checkpoint") == checkpoint
        and (checkpoint is None or r.get("threads") in (None, threads))
        for r in rows
    )
    return rows if ok else None


def run(args: argparse.Namespace) -> int:
    from backend.eval.cli import _closed_loop, _imagine
    from backend.eval.summary import (
        RESULTS_FILE,
        closed_loop_update,
        merge_results,
        read_results,
    )

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    suites = args.suite or list(SUITES)
    methods = args.method or list(METHODS)
    not_run: dict[str, dict[str, str]] = {}
    for method in methods:
        reason = _why_not(method, args)
        checkpoint = {"fixed": args.fixed, "event": args.event, "unified": args.event}.get(method)
        for suite in suites:
            if reason is not None:
                not_run.setdefault(suite, {})[method] = reason
                continue
            records = args.out / "closed_loop" / f"{suite}-{method}.jsonl"
            done = _finished(
                records, args.episodes, str(checkpoint) if checkpoint else None, args.threads
            )
            if done is not None:  # scored before (this table, or rows copied in): merged again
                print(f"{suite} / {method}: {args.episodes} episodes already scored", flush=True)
                merge_results(args.out / RESULTS_FILE, closed_loop_update(done, suite, method))
                continue
            print(f"{suite} / {method}: {args.episodes} episodes", flush=True)
            _closed_loop(
                argparse.Namespace(
                    suite=suite,
                    task=None,
                    episodes=args.episodes,
                    method=method,
                    checkpoint=checkpoint,
                    out=args.out,
                    steps=args.steps,
                    max_steps=None,
                    threads=args.threads,
                    no_progress=True,
                )
            )
    if args.imagine_dataset is not None and args.event is not None:
        _imagine(
            argparse.Namespace(
                checkpoint=args.event,
                dataset=args.imagine_dataset,
                split="test",
                episodes=None,
                max_events=args.imagine_events,
                steps=args.steps,
                futures=None,  # the checkpoint's own, as the studio imagines
                sheet_events=6,
                out=args.out,
                threads=args.threads,
                no_progress=True,
            )
        )
    results = merge_results(args.out / RESULTS_FILE, {"not_run": not_run})
    command = "wallwm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else None
    write_section(args.doc, render(results, suites, methods, command))
    print(f"results: {args.out / RESULTS_FILE}\ntable: {args.doc}")
    read_results(args.out / RESULTS_FILE)  # the file reads back
    return 0


def _cell(entry: Mapping | None) -> str:
    if entry is None:
        return "–"
    lo, hi = entry["ci95"]
    return f"{entry['task_progress']:.1f} [{lo:.0f}, {hi:.0f}] (n={entry['episodes']})"


def render(
    results: Mapping, suites: Sequence[str], methods: Sequence[str], command: str | None
) -> str:
    """The generated part of the results page: suites x methods, the paper beside, per task."""
    loop = results.get("closed_loop", {})
    not_run = results.get("not_run", {})
    lines = [
        f"Made by `{command}`." if command else "Made by `wallwm eval table`.",
        "",
        "Task Progress (0–100) on test seeds, bootstrap 95 % interval, episodes; "
        "the paper's real-robot figure in the row below each suite.",
        "",
        "| suite | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for suite in suites:
        cells = []
        for m in methods:
            entry = loop.get(suite, {}).get(m)
            cells.append(
                _cell(entry) if entry else ("not run" if m in not_run.get(suite, {}) else "–")
            )
        lines.append(f"| {suite} | " + " | ".join(cells) + " |")
        paper = [f"{PAPER[m][suite]:.2f}" if suite in PAPER.get(m, {}) else "–" for m in methods]
        lines.append("| *paper* | " + " | ".join(f"*{p}*" for p in paper) + " |")
    reasons = {
        (m, r) for per_suite in not_run.values() for m, r in per_suite.items() if m in methods
    }
    if reasons:
        lines += ["", "Not run: " + "; ".join(f"`{m}`: {r}" for m, r in sorted(reasons)) + "."]
    tasks = results.get("closed_loop_tasks", {})
    if tasks:
        lines += [
            "",
            "Per task:",
            "",
            "| task | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for task, per in sorted(tasks.items()):
            lines.append(f"| {task} | " + " | ".join(_cell(per.get(m)) for m in methods) + " |")
    im = results.get("imagine")
    if im:
        lines += [
            "",
            f"Imagination on {im['events']} held-out events (`{im.get('dataset')}`): PSNR "
            f"{im['psnr']:.2f} dB vs {im['psnr_repeat_last']:.2f} dB for repeating the last frame"
            f"{_gain_note(im)}{_futures_note(im)}; "
            f"SSIM {im['ssim']:.3f} vs {im['ssim_repeat_last']:.3f}; end-effector error "
            f"{im['action_l2'] * 100:.1f} cm vs {im['action_l2_hold'] * 100:.1f} cm for holding "
            f"still (action-only path {im['action_l2_action_only'] * 100:.1f} cm).",
        ]
    return "\n".join(lines) + "\n"


def _gain_note(im: dict) -> str:
    """The paired gain over repeat-last and its interval over events, when the file has them."""
    ci = im.get("psnr_gain_ci95")
    if ci is None:
        return ""
    return (
        f", a gain of {im['psnr_gain']:+.2f} dB [{ci[0]:+.2f}, {ci[1]:+.2f}] (95% CI over events)"
    )


def _futures_note(im: dict) -> str:
    """How many futures the imagined video averages, and one future's score, when more than one."""
    k = im.get("futures", 1)
    if k <= 1 or im.get("psnr_single") is None:
        return ""
    return f" (the mean of {k} imagined futures; one future alone {im['psnr_single']:.2f} dB)"


def write_section(doc: Path, body: str) -> None:
    """Replace the generated section of `doc` (or append one), keeping the rest as written."""
    text = doc.read_text() if doc.is_file() else "# Results\n\n"
    block = f"{BEGIN}\n{body}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
