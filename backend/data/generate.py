"""Record a suite's expert demonstrations from the MuJoCo sim into a LeRobot v3.0 dataset.

Episodes are spread over the suite's tasks round-robin (or all go to one `task`). Seeds follow the sim's fixed
train/test split (`robot.sim.tasks.split`: every fifth seed is held out, and with the
generalization tasks' `unseen` knob, test seeds draw held-out colours, orders, distractor
shapes and lighting). By default only train seeds are recorded, so the test seeds stay
unseen for evaluation; `split="test"` or `"all"` records them too (train episodes first, so
`info.json`'s `splits` stay contiguous ranges as LeRobot expects). Each episode's seed,
split and variation go to the episodes table, and the seed lists to `info.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUITES = ("diverse", "reasoning", "dexterous", "generalization", "all")
SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class EpisodeSpec:
    task: str
    seed: int
    split: str


def plan_episodes(
    suite: str | None, episodes: int, seed: int = 0, split: str = "train", task: str | None = None
) -> list[EpisodeSpec]:
    """Which (task, seed) to record: `episodes` spread over the suite's tasks (or the comma-separated
    `task` names), train first."""
    from robot.sim import tasks as sim_tasks

    if (suite is None) == (task is None):
        raise ValueError("name either a suite or a task")
    if task is not None:
        for name in task.split(","):
            sim_tasks.get_task(name)  # "did you mean" on a typo
    elif suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites are {SUITES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    names = task.split(",") if task is not None else sim_tasks.tasks_in(suite)
    wanted = ("train", "test") if split == "all" else (split,)
    seeds: dict[tuple[str, str], list[int]] = {(n, w): [] for n in names for w in ("train", "test")}
    for k, name in enumerate(names):
        count = episodes // len(names) + (1 if k < episodes % len(names) else 0)
        s = seed
        while count:
            which = sim_tasks.split(name, s)
            if which in wanted:
                seeds[(name, which)].append(s)
                count -= 1
            s += 1
    # train before test; within a split round-robin over tasks, so any prefix covers them all
    specs = []
    for which in ("train", "test"):
        queues = [seeds[(n, which)] for n in names]
        for r in range(max(len(q) for q in queues)):
            specs += [EpisodeSpec(n, q[r], which) for n, q in zip(names, queues) if r < len(q)]
    return specs


def generate(
    suite: str | None,
    episodes: int,
    out: str | Path,
    resolution: int = 64,
    seed: int = 0,
    wrist: bool = False,
    split: str = "train",
    crf: int = 18,
    overwrite: bool = False,
    progress: Callable[[EpisodeSpec], None] | None = None,
    task: str | None = None,
) -> Path:
    """Record and write the dataset; `progress` is called after each episode."""
    from backend.data.lerobot import DatasetWriter
    from robot.sim.env import SimEnv
    from robot.sim.experts import record_episode

    if resolution < 16 or resolution > 256 or resolution % 2:
        raise ValueError(
            f"--resolution must be an even number of pixels in [16, 256], got {resolution}"
        )
    specs = plan_episodes(suite, episodes, seed, split, task=task)
    generation = {
        "suite": suite,
        "task": task,
        "resolution": resolution,
        "wrist": wrist,
        "seeds": {
            s: sorted({(e.task, e.seed) for e in specs if e.split == s}) for s in ("train", "test")
        },
        "split_rule": "robot.sim.tasks.split: seed % 5 == 4 is test",
    }
    envs: dict[str, SimEnv] = {}
    try:
        with DatasetWriter(
            out, fps=SimEnv.fps, crf=crf, overwrite=overwrite, info_extra={"generation": generation}
        ) as writer:
            for spec in specs:
                if spec.task not in envs:  # one renderer per task, reused across its seeds
                    envs[spec.task] = SimEnv(
                        spec.task, seed=spec.seed, resolution=resolution, wrist=wrist
                    )
                episode = record_episode(
                    spec.task, spec.seed, resolution=resolution, wrist=wrist, env=envs[spec.task]
                )
                writer.add_episode(episode, split=spec.split)
                if progress is not None:
                    progress(spec)
    finally:
        for env in envs.values():
            env.close()
    return Path(out)
