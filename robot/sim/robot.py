"""`SimRobot`: the MuJoCo tabletop behind the `robot.robot.Robot` contract.

The robot server drives it exactly as it would drive a real arm: features, connect,
observations, one absolute end-effector target per control period. Extras a real robot lacks
(`task_progress`, `reset(task, seed)`) are what the closed-loop evaluation and the studio use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robot.sim.env import SimEnv
from robot.sim.tasks import get_task
from robot.types import ACTION_DIM, ACTION_NAMES, CameraCalib


class SimRobot:
    """The simulated robot at 10 Hz; `send_action` advances physics by one control period."""

    name = "sim"

    def __init__(
        self,
        task: str = "pick_place_bin",
        seed: int = 0,
        resolution: int = 64,
        cameras: Sequence[str] = ("front", "left", "right"),
        wrist: bool = False,
        variation: dict | None = None,
    ) -> None:
        get_task(task)  # fail fast on a bad name, before building anything
        self._kwargs = {
            "resolution": resolution,
            "cameras": tuple(cameras),
            "wrist": wrist,
            "variation": variation,
        }
        self.env = SimEnv(task, seed=seed, **self._kwargs)
        self._connected = False

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
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False
        self.env.close()

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
        return self.env.state()

    def get_observation(self) -> dict[str, Any]:
        self._check()
        return self.env.observe(render=True)

    def send_action(self, action: np.ndarray) -> np.ndarray:
        """Execute one absolute target for one control period; returns the clipped target."""
        self._check()
        self.env.step(action, render=False)
        return self.env.target.astype(np.float32)

    def task_progress(self) -> int:
        return self.env.task_progress()

    def reset(self, task: str | None = None, seed: int | None = None) -> None:
        """Reload the scene for `task` (rebuilt only if it changes) at `seed` (default: same)."""
        if task is not None and task != self.env.task.name:
            get_task(task)
            old = self.env
            self.env = SimEnv(task, seed=self.env.seed if seed is None else seed, **self._kwargs)
            old.close()
            return
        self.env.reset(seed, render=False)
