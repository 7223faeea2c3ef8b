"""`SimRobot`: the MuJoCo tabletop behind the `robot.robot.Robot` contract.

The robot server drives it exactly as it would drive a real arm: features, connect,
observations, one absolute end-effector target per control period. Extras a real robot lacks
(Task Progress, `reset(task, seed, split)`, the task list, the expert's event plan) are what
the closed-loop evaluation and the studio use.

The world keeps its own clock (`realtime=True`, the default behind the server): a physics
thread advances the simulation in wall-clock time, 10 ms slices of 2 ms steps, whether or not
targets arrive, so a block released while the arm holds still falls. `send_action` only hands
the target over; the sim moves the mocap to it over the next control period of sim time, and
a target that arrives while the previous one is still being reached waits for it (the newest
waiting target wins). `time_scale` below 1 runs that clock in slow motion (0.25: a 10 Hz control
period lasts 0.4 s of wall time; the robot server stretches its control loop to match), for
watching a chunk as it runs or replacing it mid-way. With `realtime=False` physics advances one control period per
`send_action`, deterministic and as fast as the CPU allows (closed-loop evaluation).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from robot.geometry import quat_to_rpy
from robot.sim import scene as S
from robot.sim.env import SimEnv
from robot.sim.experts import run_expert
from robot.sim.tasks import TASKS, get_task, next_seed
from robot.sim.tasks import split as seed_split
from robot.types import ACTION_DIM, ACTION_NAMES, CameraCalib

SLICE_STEPS = 5  # physics steps per clock slice: 10 ms of sim time
MAX_LAG_S = 0.5  # further behind wall time than this, the world slows down instead of racing


class SimRobot:
    """The simulated robot at 10 Hz, with its own physics clock (see the module docstring)."""

    name = "sim"

    def __init__(
        self,
        task: str = "pick_place_bin",
        seed: int = 0,
        resolution: int = 64,
        cameras: Sequence[str] = ("front", "left", "right"),
        wrist: bool = False,
        variation: dict | None = None,
        realtime: bool = True,
        time_scale: float = 1.0,
    ) -> None:
        get_task(task)
        if not 0.01 <= time_scale <= 10:
            raise ValueError(
                f"time_scale must be within [0.01, 10], got {time_scale}"
            )  # fail fast on a bad name, before building anything
        self._kwargs = {
            "resolution": resolution,
            "cameras": tuple(cameras),
            "wrist": wrist,
            "variation": variation,
        }
        self.realtime = realtime
        self.time_scale = float(time_scale)  # sim seconds per wall-clock second (real time: 1)
        self.env = SimEnv(task, seed=seed, **self._kwargs)
        self._planner: SimEnv | None = None  # a private copy the expert plans on
        self._connected = False
        self._lock = threading.RLock()  # the MuJoCo model/data: physics, rendering, reset
        # Targets cross to the clock under their own lock, so a render never delays them.
        self._cmd_lock = threading.Lock()
        self._pending: np.ndarray | None = None  # a target waiting for the current motion
        self._hold = False  # stop the motion under way at the next physics step
        self._commanded = self.env.target  # (7,) where the mocap is now, gripper command
        self._stop = threading.Event()
        self._clock: threading.Thread | None = None
        self._origin = (time.monotonic(), 0.0)  # (wall, sim) time the clock counts from
        self._state = self.env.state()
        self._progress = self.env.progress.snapshot()

    # ------------------------------------------------------------ Robot contract

    @property
    def observation_features(self) -> dict[str, Any]:
        r = self.env.resolution
        feats: dict[str, Any] = {
            f"observation.images.{c}": ((r, r, 3), "uint8") for c in self.env.camera_names
        }
        feats["observation.state"] = ((ACTION_DIM,), "float32")
        return feats

    @property
    def action_features(self) -> dict[str, Any]:
        return {"action": ((ACTION_DIM,), "float32"), "names": list(ACTION_NAMES)}

    @property
    def cameras(self) -> dict[str, CameraCalib]:
        with self._lock:
            return self.env.cameras

    @property
    def fps(self) -> int:
        return self.env.fps

    @property
    def task(self) -> str:
        return self.env.task.name

    @property
    def instruction(self) -> str:
        return self.env.instruction

    @property
    def workspace_min(self) -> np.ndarray:
        return self.env.workspace_min.copy()

    @property
    def workspace_max(self) -> np.ndarray:
        return self.env.workspace_max.copy()

    @property
    def sim_time(self) -> float:
        """Seconds of simulated time since the last reset."""
        return float(self.env.data.time)

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if self._connected:
            return
        self._connected = True
        if self.realtime:
            self._stop.clear()
            self._rebase()
            self._clock = threading.Thread(target=self._run_clock, name="sim-clock", daemon=True)
            self._clock.start()

    def disconnect(self) -> None:
        self._connected = False
        self._stop.set()
        if self._clock is not None:
            self._clock.join(5)
            self._clock = None
        with self._lock:
            self.env.close()
            if self._planner is not None:
                self._planner.close()
                self._planner = None

    def __enter__(self) -> SimRobot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _check(self) -> None:
        if not self._connected:
            raise RuntimeError("SimRobot is not connected: call connect() first")

    def get_state(self) -> np.ndarray:
        """(7,) float32 measured end-effector pose and gripper closure, without rendering."""
        if not self.realtime:
            return self.env.state()
        return self._state.copy()

    def get_observation(self) -> dict[str, Any]:
        self._check()
        with self._lock:  # the clock waits for the render, then catches up
            obs = self.env.observe(render=True)
        obs["progress"] = self.progress()
        return obs

    def send_action(self, action: np.ndarray) -> np.ndarray:
        """Hand over one absolute target (7,); returns the clipped target.

        Real time: reached over the next control period of sim time, after the motion under
        way. Otherwise: physics advances one control period now.
        """
        self._check()
        a = self.env.clip_action(action)
        if not self.realtime:
            with self._lock:
                self.env.step(a, render=False)
                self._progress = self.env.progress.snapshot()
        else:
            with self._cmd_lock:
                self._pending, self._hold = a, False
        return a.astype(np.float32)

    def hold(self) -> np.ndarray:
        """Stop where the commanded pose is now, keeping the gripper command; return that pose.

        Real time: the motion under way stops at the next physics step (within 10 ms)."""
        if not self.realtime:
            with self._lock:
                return self.env.hold().astype(np.float32)
        with self._cmd_lock:
            self._pending, self._hold = None, True
            return self._commanded.astype(np.float32)

    def task_progress(self) -> int:
        return int(self._progress["score"])

    def progress(self) -> dict[str, Any]:
        """Task Progress now: score 0..10, stages with their credit, success, why credit ended."""
        return dict(self._progress)

    def tasks(self) -> list[dict[str, Any]]:
        """Every task this robot can reset to (`Task.describe`)."""
        return [t.describe() for t in TASKS.values()]

    def episode(self) -> dict[str, Any]:
        """The current episode: task, family, seed, split, instruction."""
        env = self.env
        return {
            "task": env.task.name,
            "family": env.task.family,
            "seed": env.seed,
            "split": env.split,
            "instruction": env.instruction,
        }

    def reset(
        self, task: str | None = None, seed: int | None = None, split: str | None = None
    ) -> dict[str, Any]:
        """Reload the scene for `task` (rebuilt only if it changes) at `seed`; return what the
        episode is (task, family, seed, split, instruction, variation, Task Progress).

        `split` without a seed picks the next seed of that split after the current one; with a
        seed, the two must agree. The default is the current task and seed.
        """
        name = self.env.task.name if task is None else task
        get_task(name)
        if seed is None:
            seed = self.env.seed if split is None else next_seed(name, split, self.env.seed)
        elif split is not None and seed_split(name, seed) != split:
            raise ValueError(f"seed {seed} is a {seed_split(name, seed)} seed, not a {split} seed")
        with self._lock:
            if name != self.env.task.name:
                old = self.env
                self.env = SimEnv(name, seed=seed, **self._kwargs)
                old.close()
            else:
                self.env.reset(seed, render=False)
            with self._cmd_lock:
                self._pending, self._hold = None, False
                self._commanded = self.env.target
            self._state = self.env.state()
            self._progress = self.env.progress.snapshot()
            self._rebase()
            env = self.env
            return {
                **self.episode(),
                "variation": {
                    **env.variation,
                    "layout": {
                        k: v for k, v in env.layout.items() if k not in ("objects", "fixtures")
                    },
                },
                "progress": dict(self._progress),
            }

    def expert_plan(self) -> list[dict[str, Any]]:
        """The scripted expert's events for the current task and seed, planned on a private
        copy of the scene: [{start, end, boundary, task, subtask, action, segment}]."""
        task, seed = self.env.task.name, self.env.seed
        if self._planner is None or self._planner.task.name != task:
            if self._planner is not None:
                self._planner.close()
            self._planner = SimEnv(task, seed=seed, **self._kwargs)  # never renders
        self._planner.reset(seed, render=False)
        rollout = run_expert(self._planner)
        for _ in rollout:
            pass
        return [
            {
                "start": e.start,
                "end": e.end,
                "boundary": e.boundary,
                "task": e.task,
                "subtask": e.subtask,
                "action": e.action,
                "segment": e.segment,
            }
            for e in rollout.events
        ]

    @contextlib.contextmanager
    def paused(self) -> Iterator[SimEnv]:
        """Stop the clock for a moment to read or edit privileged state (tests, evaluation)."""
        with self._lock:
            yield self.env
            self._state = self.env.state()

    # ------------------------------------------------------------ the physics clock

    def _rebase(self) -> None:
        self._origin = (time.monotonic(), float(self.env.data.time))

    def _run_clock(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += SLICE_STEPS * S.TIMESTEP
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -MAX_LAG_S:
                next_t = time.monotonic()
            self._tick()

    def _tick(self) -> None:
        """Advance the sim to the wall clock (one slice, more after a stall), taking each
        waiting target as soon as the motion under way is done."""
        with self._lock:
            env = self.env
            wall0, sim0 = self._origin
            scale = self.time_scale
            behind = (time.monotonic() - wall0) * scale - (float(env.data.time) - sim0)
            if behind > MAX_LAG_S:  # the world slows down rather than jumping ahead
                self._origin = (wall0 + (behind - SLICE_STEPS * S.TIMESTEP) / scale, sim0)
                behind = SLICE_STEPS * S.TIMESTEP
            for _ in range(round(behind / S.TIMESTEP)):
                with self._cmd_lock:
                    if self._hold:
                        env.hold()
                        self._hold = False
                    if self._pending is not None and not env.moving:
                        env.command(self._pending)
                        self._pending = None
                env.advance(1)
            env.progress.update(env)
            self._state = env.state()
            self._progress = env.progress.snapshot()
            d = env.data
            with self._cmd_lock:
                self._commanded = np.r_[d.mocap_pos[0], quat_to_rpy(d.mocap_quat[0]), env.target[6]]
