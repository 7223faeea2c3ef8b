"""One session as the studio records it, shared by the export and fine-tuning tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sessions.store import SessionStore

TASK, SEED = "press_buttons_in_order", 0


@dataclass(frozen=True)
class RecordedSession:
    root: Path  # the session store
    id: str
    steps: int
    cameras: tuple[str, ...]
    events: int
    images: dict  # cam -> (T, 64, 64, 3) uint8, what was recorded
    imagined: np.ndarray  # the actions recorded as event 0's imagination


def record_sim_session(root: Path) -> RecordedSession:
    """Plan, an operator edit, an imagination of event 0, executed steps with three 64 px views
    of the real sim; the steps from the middle of the episode on are a take-over."""
    from robot.sim.env import SimEnv
    from robot.sim.experts import ExpertRollout

    env = SimEnv(TASK, seed=SEED, resolution=64)
    try:
        rollout = ExpertRollout(env, render=True)
        steps = list(rollout)
        cams = {n: c.to_dict() for n, c in env.cameras.items()}
        instruction = rollout.task_caption or TASK
    finally:
        env.close()
    events = rollout.events
    plan = [e.subtask for e in events]
    w = SessionStore(root).create(
        {"task": TASK, "seed": SEED, "instruction": instruction, "fps": 10, "cameras": cams}
    )
    w.plan(plan, "scene", "the page's plan")
    first = [s for s in steps if events[0].start <= s.t < events[0].end]
    imagined = np.stack([s.action for s in first]).astype(np.float32)
    w.imagination(
        0,
        plan[0],
        imagined,
        np.ones(len(first), np.float32),
        {c: np.stack([s.obs["images"][c] for s in first]) for c in cams},
        length=len(first),
        model="expert replay",
        checkpoint="none",
        checkpoint_hash="0" * 16,
        seed=SEED,
        steps=1,
        mode="event",
        timings={"total_s": 0.0},
        start_state=np.asarray(first[0].obs["state"], np.float32),
    )
    half = len(steps) // 2
    for s in steps:
        k = next(i for i, e in enumerate(events) if e.start <= s.t < e.end)
        if s.t == 2:
            edited = [*plan[:1], plan[1] + " now", *plan[2:]]
            w.plan(edited, "operator", f"edit event 2: {plan[1]!r} -> {edited[1]!r}", True, 1)
        w.step(
            np.asarray(s.obs["state"], np.float32),
            s.obs["images"],
            event_index=k,
            intervention=s.t >= half,
            target=s.action,
            task_progress=s.progress,
        )
    w.close("recorded by the test")
    return RecordedSession(
        root=root,
        id=w.id,
        steps=len(steps),
        cameras=tuple(cams),
        events=len(events),
        images={c: np.stack([s.obs["images"][c] for s in steps]) for c in cams},
        imagined=imagined,
    )


@pytest.fixture(scope="session")
def sim_session(tmp_path_factory) -> RecordedSession:
    return record_sim_session(tmp_path_factory.mktemp("sim-session") / "sessions")
