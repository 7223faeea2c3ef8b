"""The robot contract the server drives (LeRobot-style), so a real arm can replace the sim.

A robot exposes its features, connects, returns observations, and executes one absolute
end-effector target per call, returning what it really sent (after its own limits).

Threads: the server calls `send_action`/`hold` from its control thread (and `hold` from its
socket loop on a halt) while `get_observation` may be running on its worker thread; a robot
must allow that, and `send_action` must not wait for a render.

Optional methods the server uses when present: `get_state()` (cheap measured state, no
images), `hold()` (stop where you are now, keep the gripper command; return that pose),
`progress()` (Task Progress snapshot), `tasks()`, `episode()`, `expert_plan()` (sim).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from robot.types import CameraCalib


@runtime_checkable
class Robot(Protocol):
    name: str

    @property
    def observation_features(self) -> dict[str, Any]:
        """Feature name -> dtype/shape, e.g. {"observation.state": ((7,), "float32"), ...}."""

    @property
    def action_features(self) -> dict[str, Any]:
        """{"action": ((7,), "float32")} with the `ee_pose_abs` names."""

    @property
    def cameras(self) -> dict[str, CameraCalib]:
        """Calibration of every camera the observation carries."""

    @property
    def fps(self) -> int:
        """Control rate in Hz."""

    @property
    def is_connected(self) -> bool: ...

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def get_observation(self) -> dict[str, Any]:
        """{"images": {cam: uint8 (H, W, 3)}, "state": float32 (7,)} plus optional extras
        (e.g. "task_progress": int 0..10 on the sim)."""

    def send_action(self, action: np.ndarray) -> np.ndarray:
        """Move to the absolute target `action` (7,) over one control period; return what was
        really sent."""

    def reset(self, task: str | None = None, seed: int | None = None) -> dict[str, Any] | None:
        """Put the scene back to a task's initial state (sim only; a real robot may refuse).
        May return what the episode is (task, seed, split, instruction, ...)."""
