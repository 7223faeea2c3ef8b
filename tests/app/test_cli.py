import json
import subprocess
import sys

from app.bench import BenchResult, write_result
from app.cli import build_parser


def test_every_documented_subcommand_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("data", "sim-robot", "train", "imagine", "bench"):
        assert name in sub.choices, f"wallwm {name} is missing"
    bench = sub.choices["bench"]
    targets = next(a for a in bench._actions if a.dest == "bench_target")
    assert {"data", "model", "link"} <= set(targets.choices)


def test_help_runs_as_a_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "sim-robot" in out.stdout and "imagine" in out.stdout


def test_bench_results_replace_their_own_section_only(tmp_path):
    write_result(
        BenchResult("alpha", {"x": 1.0}, "| a |\n|---|\n| 1 |", command="wallwm bench alpha"),
        tmp_path,
    )
    write_result(
        BenchResult("beta", {"y": 2.0}, "beta body", command="wallwm bench beta"), tmp_path
    )
    write_result(
        BenchResult("alpha", {"x": 3.0}, "alpha again", command="wallwm bench alpha"), tmp_path
    )

    md = (tmp_path / "benchmarks.md").read_text()
    assert md.count("bench:alpha:begin") == 1 and "alpha again" in md and "| 1 |" not in md
    assert "beta body" in md
    data = json.loads((tmp_path / "bench" / "alpha.json").read_text())
    assert data["x"] == 3.0 and data["command"] == "wallwm bench alpha" and "machine" in data
