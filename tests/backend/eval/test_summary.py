"""Bootstrap intervals, score summaries and the shared results file."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from backend.eval.summary import (
    bootstrap_ci,
    closed_loop_update,
    merge_results,
    read_results,
    score_summary,
)


def test_bootstrap_of_constant_values_is_a_point() -> None:
    assert bootstrap_ci([70.0] * 5) == (70.0, 70.0)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 11, size=40) * 10.0
    a, b = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert a == b
    assert a[0] < x.mean() < a[1]
    assert bootstrap_ci(x, seed=8) != a  # a different seed draws different resamples


def test_bootstrap_matches_the_normal_interval_of_a_proportion() -> None:
    x = np.r_[np.ones(200), np.zeros(200)]  # p = 0.5, n = 400: 1.96 * sqrt(p(1-p)/n) = 0.049
    lo, hi = bootstrap_ci(x)
    half = 1.96 * math.sqrt(0.25 / 400)
    assert lo == pytest.approx(0.5 - half, abs=0.006)
    assert hi == pytest.approx(0.5 + half, abs=0.006)


def test_stratified_bootstrap_keeps_each_tasks_share() -> None:
    # One task always solved, one never: resampling within tasks leaves the mean at 50 exactly,
    # while pooling the episodes would let the mix drift.
    x = [100.0] * 10 + [0.0] * 10
    tasks = ["a"] * 10 + ["b"] * 10
    assert bootstrap_ci(x, tasks) == (50.0, 50.0)
    lo, hi = bootstrap_ci(x)
    assert lo < 40 and hi > 60


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="group labels"):
        bootstrap_ci([1.0, 2.0], ["a"])


def test_score_summary_is_task_progress_and_success() -> None:
    s = score_summary([10, 10, 4, 0], ["a", "a", "b", "b"])
    assert s["task_progress"] == 60.0 and s["success"] == 0.5 and s["episodes"] == 4
    assert s["ci95"][0] <= 60.0 <= s["ci95"][1]
    assert s["success_ci95"][0] <= 0.5 <= s["success_ci95"][1]
    with pytest.raises(ValueError, match="scores must be in"):
        score_summary([11], ["a"])


def _record(task: str, family: str, score: int) -> dict:
    return {"task": task, "family": family, "score": score, "checkpoint": None}


def test_closed_loop_update_per_task_and_suite() -> None:
    recs = [
        _record("t1", "diverse", 10),
        _record("t2", "diverse", 0),
        _record("t3", "dexterous", 5),
    ]
    up = closed_loop_update(recs, "all", "hold")
    assert up["closed_loop_tasks"]["t1"]["hold"]["task_progress"] == 100.0
    assert up["closed_loop"]["diverse"]["hold"]["task_progress"] == 50.0
    assert up["closed_loop"]["dexterous"]["hold"]["episodes"] == 1
    assert up["closed_loop"]["all"]["hold"]["episodes"] == 3
    assert "closed_loop" not in closed_loop_update(recs[:1], None, "hold")  # a single-task run


def test_merge_builds_one_table_from_several_runs(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    merge_results(path, closed_loop_update([_record("t1", "diverse", 10)], "diverse", "expert"))
    merge_results(path, closed_loop_update([_record("t1", "diverse", 0)], "diverse", "hold"))
    merge_results(path, {"imagine": {"psnr": 20.0}})
    merge_results(path, {"imagine": {"psnr": 21.0}})
    out = json.loads(path.read_text())
    assert set(out["closed_loop"]["diverse"]) == {"expert", "hold"}
    entry = out["closed_loop"]["diverse"]["expert"]
    assert {"task_progress", "ci95", "success", "episodes"} <= set(entry)
    assert out["imagine"] == {"psnr": 21.0}
    assert read_results(tmp_path / "absent.json") == {}
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        merge_results(path, {"imagine": {}})
