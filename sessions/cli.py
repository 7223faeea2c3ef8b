"""`wallwm export SESSION --format {lerobot,rrd,mp4}`, `wallwm sessions`, `wallwm bench sessions`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sessions.store import DEFAULT_ROOT


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a recorded studio session: LeRobot v3.0 dataset, Rerun .rrd, or mp4 per view",
        description="Export SESSION (an id, a unique id prefix, or a session directory). LeRobot "
        "carries the plan versions, operator edits as language_events interjections and "
        "take-overs as intervention=True; train on it with `wallwm train --init CKPT --dataset OUT`.",
    )
    p.add_argument("session", help="session id (or unique prefix) or session directory")
    p.add_argument("--format", required=True, choices=("lerobot", "rrd", "mp4"))
    p.add_argument(
        "--out",
        type=Path,
        help="output: dataset dir (lerobot), .rrd file, or dir for <view>.mp4 "
        "(default runs/exports/<session>[.rrd])",
    )
    p.add_argument("--sessions", type=Path, default=DEFAULT_ROOT, help="session store root")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(func=_export)

    ls = sub.add_parser("sessions", help="list the recorded studio sessions")
    ls.add_argument("--sessions", type=Path, default=DEFAULT_ROOT, help="session store root")
    ls.set_defaults(func=_list)

    from app.bench import DOCS
    from sessions import bench

    b = bench_sub.add_parser("sessions", help="cost of recording telemetry + views per loop step")
    b.add_argument("--docs", type=Path, default=DOCS, help="where to write the results")
    bench.add_arguments(b)
    b.set_defaults(func=_bench)


def _export(args: argparse.Namespace) -> int:
    from sessions.export import export
    from sessions.store import SessionError, resolve

    try:
        reader = resolve(args.session, args.sessions)
    except SessionError as e:
        raise ValueError(str(e)) from None
    with reader:
        out = args.out or Path("runs/exports") / (
            reader.id + (".rrd" if args.format == "rrd" else "")
        )
        try:
            paths = export(reader, args.format, out, overwrite=args.overwrite)
        except (SessionError, FileExistsError) as e:
            raise ValueError(str(e)) from None
    for path in paths:
        print(path)
    return 0


def _list(args: argparse.Namespace) -> int:
    from sessions.store import SessionStore

    rows = SessionStore(args.sessions).list()
    if not rows:
        print(f"no sessions under {args.sessions}")
    for s in rows:
        if s.error:
            print(f"{s.id}  UNREADABLE: {s.error}")
        else:
            print(
                f"{s.id}  {s.task:28s} {s.created}  {s.outcome}  steps {s.steps}  "
                f"imaginations {s.imaginations}  corrections {s.corrections}"
            )
    return 0


def _bench(args: argparse.Namespace) -> int:
    import importlib

    from app.bench import run_bench

    return run_bench(importlib.import_module("sessions.bench"), args)
