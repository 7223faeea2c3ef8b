"""`wallwm bench <target>`: run a part's benchmark and write its numbers to docs/.

Each part owns its measurement (`run(args) -> BenchResult`); this module only owns where
results go: `docs/bench/<target>.json` (machine-readable) and a section of
`docs/benchmarks.md` delimited by markers, so targets can be re-run independently.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

# target -> (module, help); the module has `add_arguments(parser)` and `run(args) -> BenchResult`.
TARGETS = {
    "data": ("backend.data.bench", "simulate + render + encode throughput"),
    "model": (
        "backend.model.bench",
        "video tower vs diffusers, sight-cone flex vs dense, action-only",
    ),
    "link": ("robot.bench", "ZeroMQ round trip vs websocket + msgpack, telemetry rate"),
}


@dataclass
class BenchResult:
    target: str
    numbers: dict  # flat, JSON-serialisable; written to docs/bench/<target>.json
    markdown: str  # the body of this target's section in docs/benchmarks.md
    command: str = ""  # the command line that produced it
    extra: dict = field(default_factory=dict)


def machine_summary() -> dict:
    import os

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # what else ran: the run's figures are comparable within it, not across loaded machines
        "load_avg_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(result: BenchResult, docs: Path = DOCS) -> Path:
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    payload = {
        **result.numbers,
        "command": result.command,
        "machine": machine_summary(),
        **result.extra,
    }
    json_path = docs / "bench" / f"{result.target}.json"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    md_path = docs / "benchmarks.md"
    begin, end = f"<!-- bench:{result.target}:begin -->", f"<!-- bench:{result.target}:end -->"
    m = machine_summary()
    section = (
        f"{begin}\n## `{result.target}`\n\n"
        f"Command: `{result.command}` — {m['date']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"{m['platform']}, load average at the end "
        f"{' / '.join(str(x) for x in m['load_avg_1_5_15_min_at_end'])} (1 / 5 / 15 min). Raw numbers: [`bench/{result.target}.json`](bench/{result.target}.json).\n\n"
        f"{result.markdown.strip()}\n{end}"
    )
    text = (
        md_path.read_text()
        if md_path.exists()
        else (
            "# Benchmarks\n\nEvery number here is written by `wallwm bench <target>`; re-run it to "
            "refresh its section.\n"
        )
    )
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    md_path.write_text(text)
    return json_path


def register_benches(bench_sub: argparse._SubParsersAction) -> None:
    for target, (module_name, help_text) in TARGETS.items():
        p = bench_sub.add_parser(target, help=help_text)
        p.add_argument("--docs", type=Path, default=DOCS, help="where to write the results")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            p.set_defaults(func=lambda a, t=target: print(f"bench {t}: not available") or 1)
            continue
        module.add_arguments(p)
        p.set_defaults(func=lambda a, mod=module: run_bench(mod, a))


def run_bench(module, args: argparse.Namespace) -> int:
    """Run `module.run(args)` and write its result to `args.docs` (every bench target's handler)."""
    import sys

    result = module.run(args)
    result.command = result.command or "wallwm " + " ".join(sys.argv[1:])
    path = write_result(result, args.docs)
    print(result.markdown)
    print(f"wrote {path} and {args.docs / 'benchmarks.md'}")
    return 0
