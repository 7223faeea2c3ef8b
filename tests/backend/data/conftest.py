"""Synthetic episodes for the dataset tests: smooth frames, random-walk states, tiled events."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from robot.types import CameraCalib, Episode, Event

CAMERAS = ("front", "left", "right")
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 230)}


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_world_cam of an OpenCV camera at `eye` looking at `target` (y down)."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def calibration(size: int = 64) -> dict[str, CameraCalib]:
    f = size / (2 * np.tan(np.deg2rad(25)))
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    eyes = {"front": [0.9, 0.0, 0.6], "left": [0.3, 0.7, 0.6], "right": [0.3, -0.7, 0.6]}
    return {
        c: CameraCalib(c, K, _look_at(np.array(e), np.array([0.3, 0.0, 0.0])), size, size)
        for c, e in eyes.items()
    }


def synthetic_episode(
    seed: int = 0,
    lengths: tuple[int, ...] = (7, 12, 5, 9),
    size: int = 64,
    task: str = "press_buttons_in_order",
    subtasks: tuple[str, ...] | None = None,
) -> Episode:
    """An episode whose events have the given lengths; frame t shows a block at x = f(t)."""
    rng = np.random.default_rng(seed)
    T = sum(lengths)
    frames = {}
    for v, cam in enumerate(CAMERAS):
        f = np.empty((T, size, size, 3), np.uint8)
        f[:] = (150 + 20 * v, 140, 120)
        for t in range(T):
            x = 4 + (2 * t + 5 * v) % (size - 16)
            f[t, size // 3 : size // 3 + 10, x : x + 10] = COLOURS["red"]
            f[t, 2 * size // 3 : 2 * size // 3 + 8, size // 2 : size // 2 + 8] = COLOURS["blue"]
        frames[cam] = f
    states = np.cumsum(rng.normal(0, 0.01, (T, 7)), axis=0).astype(np.float32)
    states[:, 6] = (np.arange(T) > T // 2).astype(np.float32)
    actions = np.r_[states[1:], states[-1:]].astype(np.float32)
    names = subtasks or tuple(
        f"press the {c} button" for c in ("red", "blue", "green", "red", "blue", "green")
    )
    events, start = [], 0
    for k, n in enumerate(lengths):
        events.append(
            Event(
                start=start,
                end=start + n,
                task="press red, then blue, then green",
                subtask=names[k % len(names)],
                action=f"move above button {k}",
                segment=f"descend {k + 2} cm",
                boundary="press" if k < len(lengths) - 1 else "end",
            )
        )
        start += n
    ep = Episode(
        task=task,
        family="reasoning",
        seed=seed,
        fps=10,
        frames=frames,
        states=states,
        actions=actions,
        events=events,
        cameras=calibration(size),
        instruction="press red, then blue, then green",
        progress=np.minimum(np.arange(T) // 4, 10).astype(np.int64),
        variation={"distractors": 1, "light": 0.8},
    )
    ep.validate()
    return ep


@pytest.fixture
def make_episode():
    return synthetic_episode


def _load_fixture_script():
    """scripts/make_lerobot_fixtures.py, which wrote tests/fixtures/lerobot-*/ with LeRobot.

    Its `episode_truth` (numpy only) is the ground truth of those datasets.
    """
    path = Path(__file__).resolve().parents[3] / "scripts" / "make_lerobot_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_lerobot_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lerobot_fixtures():
    """The fixture generator: FIXTURES (folder), CAMERAS, FPS, SUBTASKS, episode_truth(i)."""
    return _load_fixture_script()
