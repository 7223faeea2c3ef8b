"""A real simulated scene (cameras, images, an expert episode) and a reader for Rerun streams."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rerun as rr
import torch
from rerun.chunk import RrdReader

from backend.model.sight_cone import look_at_camera
from robot.sim.experts import record_episode
from robot.types import Episode


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def episode() -> Episode:
    """The press-buttons expert on seed 3: three calibrated cameras, 64 px images, events."""
    return record_episode("press_buttons_in_order", seed=3)


@pytest.fixture(scope="session")
def pick_episode() -> Episode:
    """A pick-and-place expert episode: the gripper opens and closes along the path."""
    return record_episode("pick_place_bin", seed=3)


@pytest.fixture()
def away_camera():
    """A camera beside the table looking away from it: it sees none of the workspace."""
    return look_at_camera("away", (0.5, 0.0, 0.3), (1.5, 0.0, 0.3), 42.0, 64, 64)


class Recording:
    """What a Rerun stream held, read back from the .rrd bytes with rerun's chunk reader."""

    def __init__(self, *paths: Path) -> None:
        """``paths``: .rrd files in logging order (each piece a binary stream's read() gave)."""
        self.recordings = []
        self.rows: dict[str, int] = defaultdict(int)
        self.static: dict[str, bool] = {}
        self.timelines: dict[str, set[str]] = defaultdict(set)
        self.columns: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.blueprint_values: list[str] = []
        for path in paths:
            reader = RrdReader(path)
            self.recordings += [r for r in reader.recordings() if r not in self.recordings]
            for chunk in reader.stream().collect().stream():
                e = chunk.entity_path
                self.rows[e] += chunk.num_rows
                self.static[e] = chunk.is_static
                self.timelines[e] |= set(chunk.timeline_names)
                batch = chunk.to_record_batch()
                for name in batch.schema.names:
                    self.columns[e][name] += batch.column(name).to_pylist()
            for entry in reader.blueprints():
                for chunk in reader.stream(store=entry).collect().stream():
                    batch = chunk.to_record_batch()
                    for name in batch.schema.names:
                        self.blueprint_values += [
                            f"{name}={v}" for v in batch.column(name).to_pylist()
                        ]

    def entities(self) -> set[str]:
        return {e for e in self.rows if not e.startswith("/__")}

    def column(self, entity: str, name: str) -> list:
        assert name in self.columns[entity], (
            f"{entity} has no {name}: {sorted(self.columns[entity])}"
        )
        return self.columns[entity][name]


@pytest.fixture()
def read_rrd() -> Callable[..., Recording]:
    return Recording


@pytest.fixture()
def record(tmp_path) -> Callable[[Callable], Recording]:
    """Run ``fn(recording)`` on a fresh recording streamed to bytes; return what it holds."""

    def run(fn: Callable[[rr.RecordingStream], None]) -> Recording:
        rec = rr.RecordingStream("wallwm", recording_id="test")
        stream = rr.binary_stream(recording=rec)
        fn(rec)
        data = stream.read()
        assert data, "the stream is empty"
        path = tmp_path / "out.rrd"
        path.write_bytes(data)
        return Recording(path)

    return run


def _event_chunk(ep: Episode, index: int, horizon: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """An event of the expert as a model-shaped result: (H, 7) chunk padded by holding the last
    action, validity +1 inside the event and -1 after it, video of the event's length + 1 frames."""
    e = ep.events[index]
    acts = ep.actions[e.start : e.end]
    chunk = np.vstack([acts, np.repeat(acts[-1:], horizon - len(acts), axis=0)])
    validity = np.r_[np.ones(len(acts)), -np.ones(horizon - len(acts))]
    video = {c: f[e.start : min(e.end + 1, ep.length)] for c, f in ep.frames.items()}
    return chunk, validity, video


@pytest.fixture()
def event_chunk() -> Callable[..., tuple[np.ndarray, np.ndarray, dict]]:
    return _event_chunk
