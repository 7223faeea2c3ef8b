"""`python -m robot.sim.report`: the task table of docs/sim.md, measured.

For every task: family, stages with weights, the expert's Task Progress and success rate over
N seeds, a random-action baseline, event counts and lengths, and one seed's event sequence.
No rendering, so it runs in about a minute on two cores.
"""

from __future__ import annotations

import argparse

import numpy as np

from robot.sim.env import SimEnv
from robot.sim.experts import random_action, run_expert, run_policy
from robot.sim.progress import success_rate, task_progress_percent
from robot.sim.tasks import TASKS


def task_rows(seeds: int, random_seeds: int = 3, random_steps: int = 60) -> list[dict]:
    """Measured summary per task (see module docstring)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    rows = []
    rng = np.random.default_rng(0)
    for name, task in TASKS.items():
        env = SimEnv(name)
        try:
            scores, n_events, lengths, example = [], [], [], []
            for seed in range(seeds):
                env.reset(seed, render=False)
                rollout = run_expert(env)
                for _ in rollout:
                    pass
                scores.append(env.task_progress())
                n_events.append(len(rollout.events))
                lengths += [e.length for e in rollout.events]
                if seed == 0:
                    example = [e.action for e in rollout.events]
            randoms = []
            for seed in range(random_seeds):
                env.reset(seed, render=False)
                randoms.append(run_policy(env, lambda e: random_action(e, rng), random_steps)[-1])
            rows.append(
                {
                    "task": name,
                    "family": task.family,
                    "stages": [(s.name, s.weight) for s in env.progress.stages],
                    "expert_tp": task_progress_percent(scores),
                    "expert_success": success_rate(scores),
                    "random_tp": task_progress_percent(randoms),
                    "events_mean": float(np.mean(n_events)),
                    "event_len": (min(lengths), max(lengths)),
                    "example": example,
                    "description": task.description,
                }
            )
        finally:
            env.close()
    return rows


def markdown(rows: list[dict], seeds: int) -> str:
    out = [
        f"| task | family | stages (weight) | expert TP / success ({seeds} seeds) | random TP | events / episode (length) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        stages = "; ".join(f"{n} ({w})" for n, w in r["stages"])
        lo, hi = r["event_len"]
        out.append(
            f"| `{r['task']}` | {r['family']} | {stages} | {r['expert_tp']:.0f} / {100 * r['expert_success']:.0f} % "
            f"| {r['random_tp']:.0f} | {r['events_mean']:.1f} ({lo}–{hi} steps) |"
        )
    out += ["", "Event sequence of seed 0 (action track):", ""]
    out += [f"- `{r['task']}`: " + " → ".join(r["example"]) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot.sim.report", description=__doc__)
    p.add_argument("--seeds", type=int, default=20, help="expert seeds per task")
    args = p.parse_args(argv)
    print(markdown(task_rows(args.seeds), args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
