"""The `wallwm` command line: one entry point, one subcommand per part of the system.

Each part registers its own subcommands (and its `bench` targets) through a `register`
function in a light module that imports heavy dependencies only inside its handlers, so
`wallwm --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from app.bench import register_benches

# Offline by default: nothing loads weights or data from a hub at run time.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MUJOCO_GL": "egl",
    "PYOPENGL_PLATFORM": "egl",
}

# Modules exposing `register(sub, bench_sub)`.
REGISTRARS = (
    "backend.data.cli",
    "robot.cli",
    "backend.cli",
    "backend.eval.cli",
    "app.studio_cli",
    "sessions.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallwm", description="WALL-WM Studio: event-grounded world action model workbench"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench = sub.add_parser(
        "bench", help="measure speed; writes docs/benchmarks.md and docs/bench/*.json"
    )
    bench_sub = bench.add_subparsers(dest="bench_target", metavar="TARGET", required=True)
    register_benches(bench_sub)
    for name in REGISTRARS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency, not an absent part
                raise
            continue
        module.register(sub, bench_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as e:
        # Bad input gets one clear line, not a traceback.
        print(f"wallwm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
