"""Task Progress: the one scorer used by data generation, closed-loop evaluation and the studio.

Each task has ordered stages with integer weights summing to 10, checked on privileged sim
state. A stage is credited only once every earlier stage has been, and stays credited
(latched) even if its condition stops holding: pressing the last button first earns nothing,
and a block that was lifted keeps its "lifted" credit when it is put down. Several stages may
be credited on the same step if their conditions hold together, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from robot.sim.env import SimEnv

MAX_SCORE = 10


@dataclass(frozen=True)
class Stage:
    """One ordered stage of a task: `check(env)` reads privileged state."""

    name: str
    weight: int
    check: Callable[[SimEnv], bool]


class TaskProgress:
    """Latched, in-order stage credit for one episode."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        total = sum(s.weight for s in stages)
        if total != MAX_SCORE or any(s.weight <= 0 for s in stages):
            raise ValueError(
                f"stage weights must be positive and sum to {MAX_SCORE}, got "
                f"{[(s.name, s.weight) for s in stages]}"
            )
        self.stages = tuple(stages)
        self.reached = 0  # number of stages credited so far

    @property
    def score(self) -> int:
        return sum(s.weight for s in self.stages[: self.reached])

    @property
    def success(self) -> bool:
        return self.reached == len(self.stages)

    @property
    def credited(self) -> list[str]:
        return [s.name for s in self.stages[: self.reached]]

    def update(self, env: SimEnv) -> int:
        """Credit the next stages whose conditions hold now, in order; return the score."""
        while self.reached < len(self.stages) and self.stages[self.reached].check(env):
            self.reached += 1
        return self.score


def task_progress_percent(scores: Iterable[int]) -> float:
    """Task Progress of a set of episodes: 100 x mean(score) / 10."""
    s = np.asarray(list(scores), dtype=np.float64)
    if s.size == 0:
        raise ValueError("task_progress_percent needs at least one score")
    if np.any((s < 0) | (s > MAX_SCORE)):
        raise ValueError(f"scores must be in [0, {MAX_SCORE}], got {s.tolist()}")
    return float(100.0 * s.mean() / MAX_SCORE)


def success_rate(scores: Iterable[int]) -> float:
    """Fraction of episodes with the full score."""
    s = np.asarray(list(scores))
    if s.size == 0:
        raise ValueError("success_rate needs at least one score")
    return float(np.mean(s == MAX_SCORE))
