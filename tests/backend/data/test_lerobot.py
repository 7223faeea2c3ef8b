"""LeRobot v3.0 writer/reader: round trip of our datasets, and datasets LeRobot wrote."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from backend.data import language
from backend.data.language import Interjection
from backend.data.lerobot import DatasetWriter, EventDataset, write_dataset
from backend.data.samples import EventSamples, FixedWindowSamples


def _write(tmp_path, make_episode):
    eps = [make_episode(0), make_episode(1, lengths=(10, 3, 20)), make_episode(2, lengths=(30, 6))]
    root = write_dataset(tmp_path / "ds", eps, splits=["train", "train", "test"])
    return root, eps


def test_round_trip_identical_numbers_and_close_frames(tmp_path, make_episode):
    root, eps = _write(tmp_path, make_episode)
    ds = EventDataset(root)
    assert ds.num_episodes == 3 and ds.has_events
    assert ds.camera_names == ["front", "left", "right"]
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.states, ep.states)
        np.testing.assert_array_equal(got.progress, ep.progress)
        for cam in ep.frames:
            assert got.frames[cam].shape == ep.frames[cam].shape
            err = np.abs(got.frames[cam].astype(np.int16) - ep.frames[cam]).mean()
            assert err < 3.0, f"episode {i} {cam}: mean abs error {err:.2f} on uint8"
        assert got.events == ep.events  # all four tracks, boundaries and spans
        assert got.plan == ep.plan == ds.plan(i)
        assert got.instruction == ep.instruction and got.task == ep.task and got.family == ep.family
        assert got.variation == ep.variation and got.seed == ep.seed
        for cam, calib in ep.cameras.items():
            np.testing.assert_array_equal(ds.cameras(i)[cam].K, calib.K)
            np.testing.assert_array_equal(ds.cameras(i)[cam].T_world_cam, calib.T_world_cam)


def test_layout_and_metadata_follow_lerobot_v3(tmp_path, make_episode):
    root, eps = _write(tmp_path, make_episode)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["splits"] == {"train": "0:2", "test": "2:3"}
    assert info["total_frames"] == sum(e.length for e in eps)
    feats = info["features"]
    assert feats["observation.images.front"]["dtype"] == "video"
    assert feats["observation.images.front"]["info"]["video.codec"] == "h264"
    assert feats["observation.images.front"]["info"]["video.pix_fmt"] == "yuv420p"
    assert feats["action"]["names"] == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    for key in (
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
        "language_persistent",
    ):
        assert key in feats
    for cam in ("front", "left", "right"):
        assert (root / f"videos/observation.images.{cam}/chunk-000/file-000.mp4").exists()
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name == "task" and tasks.loc[eps[0].instruction, "task_index"] == 0
    episodes = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    # episodes share one video file per camera, back to back in time
    assert episodes["videos/observation.images.left/from_timestamp"].tolist() == [0.0, 3.3, 6.6]
    assert episodes["dataset_to_index"].tolist() == np.cumsum([e.length for e in eps]).tolist()
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    row = data.slice(5, 1).to_pylist()[0]
    styles = [r["style"] for r in row["language_persistent"]]
    assert styles[0] == "plan" and styles.count("subtask") == len(eps[0].events)
    assert {"task_aug", "action", "motion"} <= set(styles)  # task and segment on core styles
    stats = json.loads((root / "meta/stats.json").read_text())
    all_actions = np.concatenate([e.actions for e in eps])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(0), atol=1e-6)
    assert EventDataset(root).episodes_in_split("test") == [2]


def test_reads_the_style_table_the_dataset_was_written_with(tmp_path, make_episode, monkeypatch):
    """A dataset keeps its track -> style table in info.json; reading follows it, not today's."""
    legacy = {"task": "task", "subtask": "subtask", "action": "action", "segment": "motion"}
    ep = make_episode(0)  # a task track that rephrases the instruction, as the sim's does
    ep = dataclasses.replace(
        ep,
        events=[dataclasses.replace(e, task="first red, then blue, last green") for e in ep.events],
    )
    with monkeypatch.context() as m:  # write as before the task track moved to `task_aug`
        m.setattr(language, "TRACK_STYLES", legacy)
        write_dataset(tmp_path / "old", [ep])
    info = json.loads((tmp_path / "old/meta/info.json").read_text())
    assert info["wallwm"]["caption_styles"] == legacy
    assert EventDataset(tmp_path / "old").events(0) == ep.events
    write_dataset(tmp_path / "new", [ep])
    assert (
        json.loads((tmp_path / "new/meta/info.json").read_text())["wallwm"]["caption_styles"][
            "task"
        ]
        == "task_aug"
    )
    assert EventDataset(tmp_path / "new").events(0) == ep.events


def test_operator_edits_and_takeovers_round_trip(tmp_path, make_episode):
    ep = make_episode(0)
    flags = np.zeros(ep.length, bool)
    flags[12:18] = True
    with DatasetWriter(tmp_path / "ds", fps=10) as w:
        w.add_episode(
            ep,
            interjections=[Interjection(11, "skip the green one")],
            plan_updates=[(11, ["press the red button", "press the blue button"])],
            intervention=flags,
        )
    ds = EventDataset(tmp_path / "ds")
    assert ds.interjections(0) == [Interjection(11, "skip the green one")]
    assert ds.plan_updates(0) == [(11, ["press the red button", "press the blue button"])]
    np.testing.assert_array_equal(ds.intervention(0), flags)
    assert ds.events(0) == ep.events


def test_writer_rejects_bad_input(tmp_path, make_episode):
    with DatasetWriter(tmp_path / "a", fps=10) as w:
        w.add_episode(make_episode(0), split="train")
        w.add_episode(make_episode(1), split="test")
        with pytest.raises(ValueError, match="already closed"):
            w.add_episode(make_episode(2), split="train")
        with pytest.raises(ValueError, match="fps"):
            w.add_episode(dataclasses.replace(make_episode(3), fps=30))
        with pytest.raises(ValueError, match="outside the episode"):
            w.add_episode(make_episode(4), split="test", plan_updates=[(999, ["x"])])
    with pytest.raises(FileExistsError):
        DatasetWriter(tmp_path / "a", fps=10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a dataset"):
        DatasetWriter(tmp_path / "b", fps=10, overwrite=True)
    with pytest.raises(ValueError, match="v3"):
        (tmp_path / "c" / "meta").mkdir(parents=True)
        (tmp_path / "c" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
        EventDataset(tmp_path / "c")


@pytest.mark.parametrize("version", ["0.4.4", "0.6.1"])
def test_reads_a_dataset_written_by_lerobot(version, lerobot_fixtures):
    """tests/fixtures/lerobot-<version>/ was recorded by that LeRobot release (see its script)."""
    fx = lerobot_fixtures
    root = fx.FIXTURES / f"lerobot-{version}"
    ds = EventDataset(root)
    assert ds.info["codebase_version"] == "v3.0"
    assert ds.num_episodes == len(fx.LENGTHS) and ds.fps == fx.FPS
    assert ds.camera_names == list(fx.CAMERAS)
    assert ds.cameras(0) == {}
    for i in range(ds.num_episodes):
        truth = fx.episode_truth(i)
        assert ds.task(i) == truth["task"]
        ep = ds.episode(i)
        np.testing.assert_array_equal(ep.actions, truth["actions"])
        np.testing.assert_array_equal(ep.states, truth["states"])
        for cam in fx.CAMERAS:
            got, want = ep.frames[cam].astype(np.int16), truth["frames"][cam].astype(np.int16)
            assert got.shape == want.shape == (fx.LENGTHS[i], fx.SIZE, fx.SIZE, 3)
            assert np.abs(got - want).mean() < 6.0  # AV1 at crf 30 on 32x32 frames
            # each decoded frame is nearest to the frame recorded at its time, not a neighbour
            err = np.abs(got[:, None] - want[None]).mean(axis=(2, 3, 4))  # (T, T)
            np.testing.assert_array_equal(err.argmin(1), np.arange(fx.LENGTHS[i]))
    all_actions = np.concatenate([fx.episode_truth(i)["actions"] for i in range(ds.num_episodes)])
    np.testing.assert_allclose(ds.norm_stats()["action"]["mean"], all_actions.mean(0), rtol=1e-6)
    s = FixedWindowSamples(ds, horizon=8, stride=4)[0]
    assert s["video"].shape == (2, 9, fx.SIZE, fx.SIZE, 3) and s["actions"].shape == (8, 6)
    assert s["caption"] == fx.TASKS[0] and s["cameras"] == {}
    assert s["event_index"] == (0 if ds.has_events else -1)  # 0.6.1 has subtask rows


def test_reads_lerobot_044_tasks_kept_as_an_unnamed_index(lerobot_fixtures):
    """LeRobot 0.4 writes meta/tasks.parquet with the task string as an unnamed index."""
    root = lerobot_fixtures.FIXTURES / "lerobot-0.4.4"
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name is None and "task" not in tasks.columns
    ds = EventDataset(root)
    assert [ds.task(i) for i in range(2)] == list(lerobot_fixtures.TASKS)
    assert not ds.has_events and ds.events(0) == []
    with pytest.raises(ValueError, match=r"no events.*fixed"):
        EventSamples(ds)


def test_reads_lerobot_061_subtask_annotations_as_events(lerobot_fixtures):
    """LeRobot 0.6's annotation writer put subtask rows (and a shrinking plan) in the dataset."""
    fx = lerobot_fixtures
    ds = EventDataset(fx.FIXTURES / "lerobot-0.6.1")
    assert ds.has_events
    for i in range(ds.num_episodes):
        starts = [frame for frame, _ in fx.SUBTASKS[i]]
        ev = ds.events(i)
        assert [(e.start, e.end) for e in ev] == list(zip(starts, [*starts[1:], fx.LENGTHS[i]]))
        assert [e.subtask for e in ev] == [text for _, text in fx.SUBTASKS[i]]
        assert ev[0].task == fx.TASKS[i]  # no task row: the episode's task
        assert ev[0].segment == ev[0].action == ev[0].subtask  # no motion/action rows: the subtask
        # LeRobot re-states the remaining plan at each boundary: not an operator's edit
        assert ds.plan(i) == [text for _, text in fx.SUBTASKS[i]] and ds.plan_updates(i) == []
    samples = EventSamples(ds, h_max=8)
    assert len(samples) == sum(len(s) for s in fx.SUBTASKS)
    assert samples[0]["caption"] == fx.SUBTASKS[0][0][1]
