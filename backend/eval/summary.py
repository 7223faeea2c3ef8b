"""Scores with intervals, and the one results file every evaluation writes into.

Task Progress of a set of episodes is 100 x mean(score) / 10 (`robot.sim.progress`); success is
the fraction of episodes with the full score. Their 95 % intervals come from a seeded,
task-stratified percentile bootstrap: each resample redraws every task's episodes with
replacement within that task, so a suite's interval keeps its fixed number of episodes per
task, as the protocol does.

The results file (`eval.json`) is shared by several invocations (one per suite and method,
plus the imagination metrics) and each merges its part under a file lock:

    closed_loop[suite][method]        = {"task_progress", "ci95", "success", "success_ci95", "episodes", ...}
    closed_loop_tasks[task][method]   = the same, per task
    imagine                           = {"psnr", "psnr_repeat_last", "ssim", "action_l2", "action_l2_hold", ...}
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from robot.sim.progress import MAX_SCORE

BOOTSTRAP_RESAMPLES = 10_000
RESULTS_FILE = "eval.json"


def bootstrap_ci(
    values: Sequence[float],
    groups: Sequence[str] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling within each group (stratified).

    All groups keep their size in every resample, so the statistic is the same weighted mean as
    the point estimate. Seeded: the same inputs give the same interval.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    labels = (
        np.zeros(x.size, dtype=np.int64)
        if groups is None
        else np.unique(groups, return_inverse=True)[1]
    )
    if labels.size != x.size:
        raise ValueError(f"{labels.size} group labels for {x.size} values")
    rng = np.random.default_rng(seed)
    sums = np.zeros(resamples)
    for g in np.unique(labels):
        members = x[labels == g]
        idx = rng.integers(0, members.size, size=(resamples, members.size))  # (B, n_g)
        sums += members[idx].sum(axis=1)
    means = sums / x.size  # (B,)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def score_summary(scores: Sequence[int], tasks: Sequence[str], seed: int = 0) -> dict:
    """Task Progress (0..100) and success (0..1) with their stratified 95 % intervals."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no episodes to summarise")
    if np.any((s < 0) | (s > MAX_SCORE)):
        raise ValueError(f"scores must be in [0, {MAX_SCORE}], got {s.tolist()}")
    tp = 100.0 * s / MAX_SCORE
    won = (s == MAX_SCORE).astype(np.float64)
    lo, hi = bootstrap_ci(tp, tasks, seed=seed)
    slo, shi = bootstrap_ci(won, tasks, seed=seed)
    return {
        "task_progress": round(float(tp.mean()), 2),
        "ci95": [round(lo, 2), round(hi, 2)],
        "success": round(float(won.mean()), 4),
        "success_ci95": [round(slo, 4), round(shi, 4)],
        "episodes": int(s.size),
    }


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_results(path: str | Path) -> dict:
    """The results file, or an empty one when it does not exist yet."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        out = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); move it away or pick another --out"
        ) from e
    if not isinstance(out, dict):
        raise ValueError(f"{path} does not hold a JSON object; move it away or pick another --out")
    return out


def merge_results(path: str | Path, update: Mapping[str, Mapping]) -> dict:
    """Merge `update` into the results file two levels deep (section -> key -> value) and write it.

    Section "imagine" is replaced as a whole; closed-loop sections merge per suite/task, so
    running another method or suite keeps the entries already there.
    """
    path = Path(path)
    with _locked(path):
        results = read_results(path)
        for section, entries in update.items():
            if section == "imagine":
                results[section] = dict(entries)
                continue
            target = results.setdefault(section, {})
            for key, methods in entries.items():
                target.setdefault(key, {}).update(methods)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)  # readers never see a half-written file
    return results


def closed_loop_update(
    records: Sequence[Mapping], suite: str | None, method: str, seed: int = 0
) -> dict:
    """The results-file sections for one closed-loop run: per task, and per suite for a suite run.

    A run over suite "all" also fills each family's suite from its own tasks' episodes.
    """
    if not records:
        raise ValueError("no episodes to summarise")
    checkpoint = records[0].get("checkpoint")

    def entry(rs: Sequence[Mapping]) -> dict:
        return {
            **score_summary([r["score"] for r in rs], [r["task"] for r in rs], seed),
            "checkpoint": checkpoint,
        }

    update: dict[str, dict] = {"closed_loop_tasks": {}}
    for task in dict.fromkeys(r["task"] for r in records):
        update["closed_loop_tasks"][task] = {
            method: entry([r for r in records if r["task"] == task])
        }
    if suite is not None:
        suites = {suite: list(records)}
        if suite == "all":
            for family in dict.fromkeys(r["family"] for r in records):
                suites[family] = [r for r in records if r["family"] == family]
        update["closed_loop"] = {s: {method: entry(rs)} for s, rs in suites.items()}
    return update
