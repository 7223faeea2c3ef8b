"""Closed-loop evaluation in the MuJoCo sim: a policy drives the robot, Task Progress scores it.

Protocol (docs/eval.md):
- Episodes are the test split's seeds (`robot.sim.tasks.split`: seed % 5 == 4), the first N of
  each task, spread round-robin over a suite's tasks; generalization tasks draw their held-out
  variations (colours, orders, distractors, lighting) on exactly these seeds.
- Every episode first runs the scripted expert on a private copy of the env from the same seed.
  That run gives the step limit (1.5x the expert's length, rounded up) and, for event mode, the
  event plan: the expert's events with their captions on the checkpoint's caption track, each
  cut into pieces of at most `h_max` steps as the training samples were.
- Methods: `event` executes one chunk per planned event (length from the validity channel),
  then observes and moves to the next event; `unified` gives the task to the VLM, which proposes
  each next event, and executes fixed chunks of H = 16; `fixed` replans every chunk with the
  task instruction (a fixed-recipe checkpoint); `expert` is the scripted expert; `hold` commands
  the initial pose for the whole episode.
- An episode ends when no more credit is possible (full score, or credit ended by the task's
  rubric, e.g. a button pressed out of order: Task Progress is latched, so nothing after that
  changes the score), at the step limit, or when event mode's plan is done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robot.sim.experts import run_expert
from robot.types import CAPTION_TRACKS, Event

if TYPE_CHECKING:
    from backend.model.wam import Observation, WorldActionModel
    from robot.sim.env import SimEnv

METHODS = ("event", "unified", "fixed", "expert", "hold")
MODEL_METHODS = ("event", "unified", "fixed")
SUITES = ("diverse", "reasoning", "dexterous", "generalization", "all")
STEP_LIMIT_FACTOR = 1.5  # episode step limit = this x the expert's length on the same seed
SEED_STRIDE = 1000  # the model's sampling seed for chunk k of episode seed s is s * 1000 + k


@dataclass(frozen=True)
class PlanStep:
    """One next-event instruction of the plan and how many steps the expert took for it."""

    text: str
    steps: int


@dataclass(frozen=True)
class ExpertPlan:
    """What the scripted expert did from one seed (run on a private copy of the env)."""

    task_caption: str  # the task track, what the unified VLM is conditioned on in training
    events: list[Event]  # the expert's events, uncut
    plan: list[PlanStep]  # events on the caption track, cut into pieces of at most h_max steps
    steps: int  # the expert's episode length
    score: int  # the expert's final Task Progress score (0..10)


@dataclass
class EpisodeRecord:
    """One evaluated episode; written as one JSON line."""

    task: str
    family: str
    seed: int
    split: str
    method: str
    checkpoint: str | None
    instruction: str  # the task-level instruction of this seed
    task_progress: float  # 100 x score / 10 for this episode
    score: int  # 0..10
    success: bool
    steps: int  # control steps executed
    step_limit: int
    expert_steps: int
    stages: list[str]  # stages credited, in order
    ended: str | None  # why credit ended early (the rubric's reason), if it did
    events: list[dict[str, Any]] = field(default_factory=list)  # executed events / chunks
    wall_s: float = 0.0
    # torch CPU threads of the model (None without one): the order of float sums depends on
    # it, and a closed loop can tip an episode either way on such a difference
    threads: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def check_method(method: str) -> str:
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {method!r}{hint} (methods: {', '.join(METHODS)})")
    return method


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        import difflib

        close = difflib.get_close_matches(suite, SUITES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown suite {suite!r}{hint} (suites: {', '.join(SUITES)})")
    return suite


def caption_track_of(config: dict) -> str:
    """The next-event caption track a checkpoint was trained on (a mix: its most likely track)."""
    track = config.get("train", {}).get("caption_track", "subtask")
    if isinstance(track, dict) and track:
        track = max(track, key=lambda k: float(track[k]))
    if track not in CAPTION_TRACKS:
        raise ValueError(
            f"checkpoint trained on unknown caption track {track!r}; tracks are {CAPTION_TRACKS}"
        )
    return str(track)


def check_checkpoint_for(method: str, config: dict, path: str | Path) -> None:
    """Refuse a checkpoint that cannot stand for the method (before the slow model load)."""
    recipe, stage = config.get("recipe", "event"), config.get("stage", "denoiser")
    if stage == "vae":
        raise ValueError(
            f"{path} is a VAE-stage checkpoint (its denoiser is untrained); "
            "train --stage denoiser --init it first"
        )
    if method == "event" and recipe != "event":
        raise ValueError(
            f"--method event needs an event-recipe checkpoint; {path} has recipe {recipe!r}"
        )
    if method == "fixed" and recipe != "fixed":
        raise ValueError(
            f"--method fixed needs a fixed-recipe checkpoint (the baseline); {path} has recipe {recipe!r}"
        )
    if method == "unified" and stage != "unified":
        raise ValueError(
            f"--method unified needs a checkpoint whose VLM was trained (wallwm train --stage unified); "
            f"{path} is from stage {stage!r}"
        )


def expert_plan(env: SimEnv, seed: int, track: str, h_max: int) -> ExpertPlan:
    """Run the scripted expert on `env` (a private copy, not the evaluated one) from `seed`."""
    env.reset(seed, render=False)
    rollout = run_expert(env)
    steps = sum(1 for _ in rollout)
    plan = [
        PlanStep(e.caption(track), min(s + h_max, e.end) - s)
        for e in rollout.events
        for s in range(e.start, e.end, h_max)
    ]
    return ExpertPlan(rollout.task_caption, list(rollout.events), plan, steps, env.task_progress())


def _done(env: SimEnv, limit: int) -> bool:
    assert env.progress is not None
    return env.steps >= limit or env.progress.final


def _execute(env: SimEnv, actions: np.ndarray, limit: int) -> int:
    """Step through a chunk (N, 7) until it ends, the limit is reached or the task is done."""
    n = 0
    for a in actions:
        if _done(env, limit):
            break
        env.step(a, render=False)
        n += 1
    return n


class ClosedLoop:
    """Runs episodes of one method; one evaluated env and one private planning env per task."""

    def __init__(
        self,
        method: str,
        model: WorldActionModel | None = None,
        caption_track: str = "subtask",
        steps: int | None = None,
        max_steps: int | None = None,
        checkpoint: str | None = None,
    ) -> None:
        self.method = check_method(method)
        if method in MODEL_METHODS and model is None:
            raise ValueError(f"--method {method} needs --checkpoint")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
        self.model, self.track, self.steps, self.max_steps = model, caption_track, steps, max_steps
        self.checkpoint = checkpoint
        self.h_max = model.config.h_max if model is not None else 16
        cams = (
            list(model.cameras)
            if model is not None and model.cameras
            else ["front", "left", "right"]
        )
        first = model.cameras[cams[0]] if model is not None and model.cameras else None
        self.cameras, self.resolution = cams, (first.width if first is not None else 64)
        self._envs: dict[tuple[str, str], SimEnv] = {}

    def _env(self, task: str, role: str) -> SimEnv:
        from robot.sim.env import SimEnv

        key = (task, role)
        if key not in self._envs:
            if role == "planner":
                self._envs[key] = SimEnv(task)
            else:
                self._envs[key] = SimEnv(task, resolution=self.resolution, cameras=self.cameras)
        return self._envs[key]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def __enter__(self) -> ClosedLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step_limit(self, plan: ExpertPlan) -> int:
        return self.max_steps or math.ceil(STEP_LIMIT_FACTOR * plan.steps)

    def run(self, task: str, seed: int) -> EpisodeRecord:
        """Evaluate one episode of `task` from `seed`."""
        t0 = time.perf_counter()
        plan = expert_plan(self._env(task, "planner"), seed, self.track, self.h_max)
        limit = self.step_limit(plan)
        env = self._env(task, "eval")
        env.reset(seed, render=False)
        controller: Callable[[SimEnv, ExpertPlan, int, int], list[dict]] = getattr(
            self, f"_{self.method}"
        )
        events = controller(env, plan, limit, seed)
        progress = env.progress
        assert progress is not None
        return EpisodeRecord(
            task=task,
            family=env.task.family,
            seed=int(seed),
            split=env.split,
            method=self.method,
            checkpoint=self.checkpoint,
            instruction=env.instruction,
            task_progress=100.0 * progress.score / 10,
            score=progress.score,
            success=progress.success,
            steps=env.steps,
            step_limit=limit,
            expert_steps=plan.steps,
            stages=progress.credited,
            ended=progress.ended,
            events=events,
            wall_s=round(time.perf_counter() - t0, 3),
            threads=_torch_threads() if self.model is not None else None,
        )

    # ---- controllers: each drives `env` from its reset state and returns what it executed ----

    def _observe(self, env: SimEnv) -> Observation:
        from backend.model.wam import Observation

        o = env.observe(render=True)
        return Observation(o["images"], o["state"], env.cameras)

    def _predict(self, env: SimEnv, text: str, mode: str, seed: int, k: int):
        assert self.model is not None
        return self.model.predict_actions(
            self._observe(env), text, mode=mode, steps=self.steps, seed=seed * SEED_STRIDE + k
        )

    def _event(self, env: SimEnv, plan: ExpertPlan, limit: int, seed: int) -> list[dict]:
        out = []
        for k, piece in enumerate(plan.plan):
            if _done(env, limit):
                break
            im = self._predict(env, piece.text, "event", seed, k)
            n = _execute(env, im.actions, limit)
            out.append(
                {
                    "text": piece.text,
                    "steps": n,
                    "predicted_steps": im.length,
                    "expert_steps": piece.steps,
                }
            )
        return out

    def _chunks(
        self, env: SimEnv, limit: int, seed: int, text: str, mode: str
    ) -> Iterator[tuple[Any, int]]:
        k = 0
        while not _done(env, limit):
            im = self._predict(env, text, mode, seed, k)
            # unified: `actions` is the whole fixed chunk; fixed recipe: execute its fixed window
            yield im, _execute(env, im.actions if mode == "unified" else im.chunk, limit)
            k += 1

    def _unified(self, env: SimEnv, plan: ExpertPlan, limit: int, seed: int) -> list[dict]:
        return [
            {"text": im.proposed_event, "steps": n}
            for im, n in self._chunks(env, limit, seed, plan.task_caption, "unified")
        ]

    def _fixed(self, env: SimEnv, plan: ExpertPlan, limit: int, seed: int) -> list[dict]:
        return [
            {"text": env.instruction, "steps": n}
            for _, n in self._chunks(env, limit, seed, env.instruction, "event")
        ]

    def _expert(self, env: SimEnv, plan: ExpertPlan, limit: int, seed: int) -> list[dict]:
        for _ in run_expert(env):
            if _done(env, limit):
                break
        return [
            {"text": e.caption(self.track), "steps": min(e.end, env.steps) - e.start}
            for e in plan.events
            if e.start < env.steps
        ]

    def _hold(self, env: SimEnv, plan: ExpertPlan, limit: int, seed: int) -> list[dict]:
        pose = env.state()  # (7,) the initial pose, commanded for the whole episode
        n = _execute(env, np.repeat(pose[None], limit, axis=0), limit)
        return [{"text": "hold", "steps": n}]


def episode_specs(suite: str | None, task: str | None, episodes: int) -> list[tuple[str, int]]:
    """(task, seed) pairs: the first test seeds of each task, spread round-robin over the suite."""
    from backend.data.generate import plan_episodes

    if suite is not None:
        check_suite(suite)
    return [(s.task, s.seed) for s in plan_episodes(suite, episodes, 0, "test", task=task)]
