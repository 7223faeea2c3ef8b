"""Task Progress: the one scorer used by data generation, closed-loop evaluation and the studio.

Each task has ordered stages with integer weights summing to 10, checked on privileged sim
state. A stage is credited only once every earlier stage has been, and stays credited
(latched) even if its condition stops holding: a block that was lifted keeps its "lifted"
credit when it is put down. Several stages may be credited on the same step if their
conditions hold together, in order.

Where order or identity is the point, a task also has a `watch`: called before crediting on
every update, it keeps latched facts the stages read (a block that came to rest in the wrong
bin never counts as sorted) and may end credit for the rest of the episode with a reason (a
button pressed out of order). Mistakes cost: a policy cannot collect credit by trying
everything.
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


# watch(env, reached) -> None, or the reason credit ends for the episode (latched).
Watch = Callable[["SimEnv", int], "str | None"]


class TaskProgress:
    """Latched, in-order stage credit for one episode."""

    def __init__(self, stages: Sequence[Stage], watch: Watch | None = None) -> None:
        total = sum(s.weight for s in stages)
        if total != MAX_SCORE or any(s.weight <= 0 for s in stages):
            raise ValueError(
                f"stage weights must be positive and sum to {MAX_SCORE}, got "
                f"{[(s.name, s.weight) for s in stages]}"
            )
        self.stages = tuple(stages)
        self.watch = watch
        self.reached = 0  # number of stages credited so far
        self.ended: str | None = None  # why credit ended early (latched), if it did

    @property
    def score(self) -> int:
        return sum(s.weight for s in self.stages[: self.reached])

    @property
    def success(self) -> bool:
        return self.reached == len(self.stages)

    @property
    def credited(self) -> list[str]:
        return [s.name for s in self.stages[: self.reached]]

    @property
    def final(self) -> bool:
        """No further credit is possible: success, or credit ended."""
        return self.success or self.ended is not None

    def update(self, env: SimEnv) -> int:
        """Credit the next stages whose conditions hold now, in order; return the score."""
        if self.final:
            return self.score
        if self.watch is not None:
            self.ended = self.watch(env, self.reached)
            if self.ended is not None:
                return self.score
        while self.reached < len(self.stages) and self.stages[self.reached].check(env):
            self.reached += 1
        return self.score

    def snapshot(self) -> dict:
        """Plain data for the wire: score 0..10, stages with their credit, success, why it ended."""
        return {
            "score": self.score,
            "stages": [
                {"name": s.name, "weight": s.weight, "done": i < self.reached}
                for i, s in enumerate(self.stages)
            ],
            "success": self.success,
            "ended": self.ended,
        }


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
