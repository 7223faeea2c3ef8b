"""A robot without physics: the end effector reaches each target in one control period.

It implements the `Robot` contract with plain numpy, so the link can be exercised and
benchmarked without a simulator, and it is the smallest template for wrapping a real arm.
Its one camera looks straight down at the workspace and draws the end effector as a dot.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot.types import ACTION_DIM, ACTION_NAMES, CameraCalib


class KinematicRobot:
    name = "kinematic"

    def __init__(
        self,
        fps: int = 10,
        workspace_min: tuple[float, float, float] = (-0.3, -0.3, 0.0),
        workspace_max: tuple[float, float, float] = (0.3, 0.3, 0.4),
        resolution: int = 32,
    ):
        self._fps = fps
        self.workspace_min = np.asarray(workspace_min, dtype=np.float64)
        self.workspace_max = np.asarray(workspace_max, dtype=np.float64)
        self.home = np.array([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0], dtype=np.float64)
        self.pose = self.home.copy()
        self.sent: list[np.ndarray] = []  # every target it received, for inspection
        self._connected = False
        f = resolution / (2 * np.tan(np.deg2rad(30)))  # 60 deg field of view
        T = np.eye(4)
        T[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking down: camera z = world -z
        T[:3, 3] = [0.0, 0.0, 1.0]
        K = np.array([[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1]])
        self._cameras = {"top": CameraCalib("top", K, T, resolution, resolution)}

    @property
    def observation_features(self) -> dict[str, Any]:
        c = self._cameras["top"]
        return {
            "observation.images.top": ((c.height, c.width, 3), "uint8"),
            "observation.state": ((ACTION_DIM,), "float32"),
        }

    @property
    def action_features(self) -> dict[str, Any]:
        return {"action": ((ACTION_DIM,), "float32"), "names": list(ACTION_NAMES)}

    @property
    def cameras(self) -> dict[str, CameraCalib]:
        return self._cameras

    @property
    def fps(self) -> int:
        return self._fps

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def get_state(self) -> np.ndarray:
        return self.pose.astype(np.float32)

    def get_observation(self) -> dict[str, Any]:
        c = self._cameras["top"]
        img = np.full((c.height, c.width, 3), 40, dtype=np.uint8)
        uv, _ = c.project(self.pose[None, :3])  # (1, 2) pixels
        u, v = int(uv[0, 0]), int(uv[0, 1])
        if 0 <= u < c.width and 0 <= v < c.height:
            img[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2] = (
                255,
                255,
                int(255 * (1 - self.pose[6])),
            )
        return {"images": {"top": img}, "state": self.get_state()}

    def send_action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(ACTION_DIM)
        sent = a.copy()
        sent[:3] = np.clip(a[:3], self.workspace_min, self.workspace_max)
        sent[6] = np.clip(a[6], 0.0, 1.0)
        self.pose = sent
        self.sent.append(sent)
        return sent.astype(np.float32)

    def reset(self, task: str | None = None, seed: int | None = None) -> None:
        if task is not None:
            raise ValueError(f"the kinematic robot has no tasks (asked for {task!r})")
        self.pose = self.home.copy()
