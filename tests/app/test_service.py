"""backend/service.py on a tiny checkpoint trained through the real chain: streaming, one
model for many threads, cancellation, bad input, missing and corrupt checkpoints."""

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backend.service import Backend, BackendError, CheckpointChoice, check_plan, resolve_checkpoint


@pytest.fixture(scope="module")
def backend(tiny_checkpoint: Path):
    b = Backend(CheckpointChoice(tiny_checkpoint, "test"))
    assert b.wait_ready(300) and b.model_error is None
    yield b
    b.close()


@pytest.fixture(scope="module")
def obs(tiny_checkpoint: Path):
    from backend.data.lerobot import EventDataset
    from backend.model.wam import Observation

    ep = EventDataset(tiny_checkpoint.parent.parent / "ds").episode(0)
    return Observation({c: f[0] for c, f in ep.frames.items()}, ep.states[0], ep.cameras)


def test_imagine_streams_cheap_previews_then_the_decoded_final(backend, obs) -> None:
    msgs = list(backend.imagine(obs, ["grasp the block", "lift it"], event_index=1, steps=3))
    previews, final = msgs[:-1], msgs[-1]
    assert [m["step"] for m in previews] == [1, 2, 3] and final["type"] == "final"
    for m in previews:
        assert set(m["video"]) == {"front", "left", "right"}
        length = len(m["video"]["front"]) - 1
        assert (
            m["video"]["front"].shape == (length + 1, 64, 64, 3)
            and m["video"]["front"].dtype == np.uint8
        )
        assert (m["video"]["front"][0] == obs.images["front"]).all()  # frame 0 is the observation
    result = final["result"]
    assert result.instruction == "lift it" and final["event_index"] == 1
    assert result.video["front"].shape == (result.length + 1, 64, 64, 3)
    assert {"denoise_s", "decode_s", "total_s", "queue_s"} <= set(final["timings"])
    assert backend.info()["last_timings"] == final["timings"]


def test_requests_from_many_threads_run_one_at_a_time(backend, obs) -> None:
    spans: list[tuple[float, float]] = []

    def one() -> None:
        final = list(backend.imagine(obs, ["grasp"], steps=2))[-1]
        end = time.perf_counter()
        spans.append((end - final["timings"]["total_s"], end))  # when the model worked on it

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    spans.sort()
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.05  # no overlap: the worker serves one request at a time


def test_closing_the_stream_cancels_and_the_next_request_runs(backend, obs) -> None:
    stream = backend.imagine(obs, ["grasp"], steps=50)
    assert next(stream)["step"] == 1
    stream.close()
    t0 = time.perf_counter()
    final = list(backend.imagine(obs, ["grasp"], steps=1))[-1]
    assert final["type"] == "final" and time.perf_counter() - t0 < 30


def test_bad_requests_get_a_clear_error(backend, obs) -> None:
    with pytest.raises(BackendError, match="plan is empty"):
        list(backend.imagine(obs, [], 0))
    with pytest.raises(BackendError, match="at most 32"):
        list(backend.imagine(obs, ["e"] * 50, 0))
    with pytest.raises(BackendError, match="event 1 is empty"):
        list(backend.imagine(obs, [" "], 0))
    with pytest.raises(BackendError, match="10000 characters"):
        list(backend.imagine(obs, ["x" * 10_000], 0))
    with pytest.raises(BackendError, match="steps must be in"):
        list(backend.imagine(obs, ["grasp"], 0, steps=0))
    with pytest.raises(BackendError, match="task is empty"):
        backend.propose_plan(obs, "")
    assert check_plan(["a", " b "], 1) == "b"


def test_propose_plan_and_cone_overlap(backend, obs) -> None:
    events = backend.propose_plan(obs, "put the block in the bin")
    assert len(events) == 1 and isinstance(events[0], str) and events[0]
    cones = backend.cone_overlap(dict(obs.cameras))
    v = len(cones["names"])
    assert cones["overlap"].shape == (v, v) and np.allclose(np.diag(cones["overlap"]), 1.0)
    assert cones["patch_mask"].shape[0] == v * cones["grid"][0] * cones["grid"][1]


def test_missing_and_corrupt_checkpoints_leave_a_working_backend_that_says_why(
    tmp_path: Path, obs
) -> None:
    missing = Backend(CheckpointChoice(tmp_path / "nope", "given"))
    missing.wait_ready(60)
    assert "does not exist" in missing.info()["error"]
    with pytest.raises(BackendError, match="does not exist"):
        list(missing.imagine(obs, ["grasp"]))
    missing.close()

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    bad = Backend(CheckpointChoice(corrupt, "given"))
    bad.wait_ready(60)
    assert "cannot load checkpoint" in bad.info()["error"]
    with pytest.raises(BackendError, match="cannot load checkpoint"):
        list(bad.imagine(obs, ["grasp"]))
    bad.close()


def test_checkpoint_resolution_order(tmp_path: Path, monkeypatch) -> None:
    import backend.service as service

    monkeypatch.setattr(service, "SHIPPED_CHECKPOINT", tmp_path / "shipped")
    assert resolve_checkpoint(tmp_path / "x").reason == "given with --checkpoint"
    none = resolve_checkpoint(runs=tmp_path / "runs")
    assert none.path is None and "no checkpoint" in none.reason
    for name in ("old", "new"):
        (tmp_path / "runs" / name / "checkpoint").mkdir(parents=True)
        (tmp_path / "runs" / name / "checkpoint" / "config.json").write_text("{}")
        time.sleep(0.01)
    assert (
        resolve_checkpoint(runs=tmp_path / "runs").path == tmp_path / "runs" / "new" / "checkpoint"
    )
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "config.json").write_text("{}")
    assert resolve_checkpoint(runs=tmp_path / "runs").reason == "shipped checkpoint"
