"""Plain data types shared by the robot side, the dataset layer and the workbench.

Only numpy here: `robot/` is deployable alone.

Conventions (see docs/glossary.md):
- Action space `ee_pose_abs`: x, y, z (m, base/world frame), roll, pitch, yaw (rad), gripper
  (0 open ... 1 closed). The state uses the same seven names.
- Cameras follow OpenCV: x right, y down, z forward. `T_world_cam` maps camera coordinates
  to world coordinates (its translation is the camera centre in the world).
- An episode of T control steps holds T observations and T actions: `actions[t]` is the
  command issued after observing `frames[cam][t]` and `states[t]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTION_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
STATE_NAMES: tuple[str, ...] = ACTION_NAMES
ACTION_DIM = len(ACTION_NAMES)
CAPTION_TRACKS: tuple[str, ...] = ("task", "subtask", "action", "segment")


@dataclass(frozen=True)
class CameraCalib:
    """Pinhole intrinsics and extrinsics of one camera."""

    name: str
    K: np.ndarray  # (3, 3) float64 intrinsics, pixels
    T_world_cam: np.ndarray  # (4, 4) float64, camera -> world
    width: int
    height: int

    def __post_init__(self) -> None:
        if np.shape(self.K) != (3, 3):
            raise ValueError(f"camera {self.name!r}: K must be 3x3, got {np.shape(self.K)}")
        if np.shape(self.T_world_cam) != (4, 4):
            raise ValueError(
                f"camera {self.name!r}: T_world_cam must be 4x4, got {np.shape(self.T_world_cam)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera {self.name!r}: bad image size {self.width}x{self.height}")

    @property
    def T_cam_world(self) -> np.ndarray:
        return np.linalg.inv(self.T_world_cam)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        return np.asarray(self.T_world_cam[:3, 3], dtype=np.float64)

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N, 3) to pixels (N, 2) and depths (N,) along the optical axis.

        Pixel coordinates are continuous, with (0, 0) the top-left corner of the top-left pixel,
        so the centre of pixel (u, v) is (u + 0.5, v + 0.5).
        """
        p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        T = self.T_cam_world
        pc = p @ T[:3, :3].T + T[:3, 3]  # (N, 3) camera frame
        depth = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uvw = pc @ np.asarray(self.K, dtype=np.float64).T
            uv = uvw[:, :2] / uvw[:, 2:3]
        return uv, depth

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Back-project pixels (N, 2) at depths (N,) to world points (N, 3)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        d = np.asarray(depth, dtype=np.float64).reshape(-1)
        rays = np.linalg.solve(
            np.asarray(self.K, dtype=np.float64), np.c_[uv, np.ones(len(uv))].T
        ).T
        pc = rays * d[:, None]  # z component of rays is 1, so depth is z
        return pc @ self.T_world_cam[:3, :3].T + self.T_world_cam[:3, 3]

    def to_dict(self) -> dict:
        return {
            "K": np.asarray(self.K, dtype=np.float64).tolist(),
            "T_world_cam": np.asarray(self.T_world_cam, dtype=np.float64).tolist(),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> CameraCalib:
        return cls(
            name=name,
            K=np.asarray(d["K"], dtype=np.float64),
            T_world_cam=np.asarray(d["T_world_cam"], dtype=np.float64),
            width=int(d["width"]),
            height=int(d["height"]),
        )


@dataclass
class Event:
    """One semantic action event: frames [start, end) of an episode and its four captions."""

    start: int
    end: int
    task: str  # "press red, then blue, then green"
    subtask: str  # "press the blue button"
    action: str  # "move above the blue button"
    segment: str  # "descend 4 cm"
    boundary: str = ""  # why the event ends: "grasp", "release", "contact", "press", "end", ...

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"event needs 0 <= start < end, got [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start

    def caption(self, track: str) -> str:
        if track not in CAPTION_TRACKS:
            raise KeyError(f"unknown caption track {track!r}; tracks are {CAPTION_TRACKS}")
        return getattr(self, track)


@dataclass
class Episode:
    """A recorded demonstration: multi-view frames, states, actions and events."""

    task: str  # task name, e.g. "press_buttons_in_order"
    family: str  # "diverse" | "reasoning" | "dexterous" | "generalization"
    seed: int
    fps: int
    frames: dict[str, np.ndarray]  # cam -> (T, H, W, 3) uint8
    states: np.ndarray  # (T, 7) float32
    actions: np.ndarray  # (T, 7) float32
    events: list[Event]
    cameras: dict[str, CameraCalib]
    instruction: str  # the task-level instruction shown to the policy
    progress: np.ndarray | None = None  # (T,) int Task Progress score 0..10 after each step
    variation: dict = field(default_factory=dict)  # generalization knobs used for this episode

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def plan(self) -> list[str]:
        """The ordered next-event instructions (subtask track) of this episode."""
        return [e.subtask for e in self.events]

    def validate(self) -> None:
        T = self.length
        if self.states.shape != (T, len(STATE_NAMES)):
            raise ValueError(f"states shape {self.states.shape} != ({T}, {len(STATE_NAMES)})")
        if self.actions.shape != (T, ACTION_DIM):
            raise ValueError(f"actions shape {self.actions.shape} != ({T}, {ACTION_DIM})")
        for cam, f in self.frames.items():
            if f.ndim != 4 or f.shape[0] != T or f.shape[3] != 3 or f.dtype != np.uint8:
                raise ValueError(
                    f"frames[{cam!r}] must be uint8 (T={T}, H, W, 3), got {f.shape} {f.dtype}"
                )
        prev = 0
        for e in self.events:
            if e.start != prev:
                raise ValueError(f"events must tile the episode: gap or overlap at frame {prev}")
            prev = e.end
        if self.events and prev != T:
            raise ValueError(f"events end at {prev}, episode has {T} steps")
