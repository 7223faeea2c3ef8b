"""Event-cut and fixed-window samples: one boundary for video, actions and caption."""

from __future__ import annotations

import numpy as np
import pytest

from backend.data.lerobot import EventDataset, write_dataset
from backend.data.samples import EventSamples, FixedWindowSamples, collate


def test_event_samples_cut_video_actions_caption_at_the_same_boundary(make_episode):
    ep = make_episode(0, lengths=(7, 12, 5, 9))
    samples = EventSamples([ep], h_max=32)
    assert len(samples) == 4
    s = samples[1]  # event 1: steps [7, 19)
    assert (s["event_index"], s["start"], s["length"]) == (1, 7, 12)
    assert s["caption"] == ep.events[1].subtask and s["task"] == ep.events[1].task
    assert s["video"].shape == (3, 33, 64, 64, 3) and s["video"].dtype == np.uint8
    assert s["actions"].shape == (32, 7) and s["actions"].dtype == np.float32
    # actions: the event's 12 steps, then the last one repeated; validity marks the 12
    np.testing.assert_array_equal(s["actions"][:12], ep.actions[7:19])
    np.testing.assert_array_equal(s["actions"][12:], np.repeat(ep.actions[18:19], 20, axis=0))
    np.testing.assert_array_equal(s["valid"], np.arange(32) < 12)
    # video: frame 0 is the observation at the event start, through frame 19 (after the last action)
    for v, cam in enumerate(("front", "left", "right")):
        np.testing.assert_array_equal(s["video"][v, :13], ep.frames[cam][7:20])
        np.testing.assert_array_equal(
            s["video"][v, 13:], np.repeat(ep.frames[cam][19:20], 20, axis=0)
        )
    np.testing.assert_array_equal(s["video_valid"], np.arange(33) <= 12)
    np.testing.assert_array_equal(s["state"], ep.states[7])
    assert set(s["cameras"]) == {"front", "left", "right"}


def test_last_event_has_no_frame_after_the_episode(make_episode):
    ep = make_episode(0, lengths=(7, 12, 5, 9))
    s = EventSamples([ep])[3]  # steps [24, 33): the episode ends with the event
    assert s["length"] == 9
    np.testing.assert_array_equal(s["video_valid"], np.arange(33) < 9)
    np.testing.assert_array_equal(
        s["video"][0, 9:], np.repeat(ep.frames["front"][32:33], 24, axis=0)
    )


def test_long_events_are_split_into_h_max_pieces(make_episode):
    ep = make_episode(0, lengths=(40, 5))
    samples = EventSamples([ep], h_max=16)
    assert [(r.event_index, r.start, r.stop) for r in samples.refs] == [
        (0, 0, 16),
        (0, 16, 32),
        (0, 32, 40),
        (1, 40, 45),
    ]
    assert samples[1]["valid"].all() and samples[1]["caption"] == ep.events[0].subtask


def test_caption_tracks_selectable_and_mixed(make_episode):
    ep = make_episode(0)
    assert EventSamples([ep], caption_track="segment")[2]["caption"] == ep.events[2].segment
    mixed = EventSamples([ep], caption_track={"subtask": 0.5, "action": 0.5}, seed=3)
    tracks = {mixed[0]["caption_track"] for _ in range(40)}
    assert tracks == {"subtask", "action"}
    with pytest.raises(ValueError, match="unknown caption tracks"):
        EventSamples([ep], caption_track="nope")
    with pytest.raises(ValueError, match="probabilities"):
        EventSamples([ep], caption_track={"subtask": -1.0})


def test_fixed_windows_task_caption_and_padding(make_episode):
    ep = make_episode(0, lengths=(7, 12, 5, 9))  # 33 steps
    windows = FixedWindowSamples([ep], horizon=16, stride=8)
    assert [r.start for r in windows.refs] == [0, 8, 16, 24, 32]
    s = windows[3]  # steps [24, 33): 9 valid of 16
    assert s["caption"] == ep.instruction and s["caption_track"] == "task"
    assert s["video"].shape == (3, 17, 64, 64, 3) and s["actions"].shape == (16, 7)
    np.testing.assert_array_equal(s["valid"], np.arange(16) < 9)
    np.testing.assert_array_equal(s["actions"][:9], ep.actions[24:33])
    assert s["event_index"] == 3  # the event active at the window start


def test_samples_from_a_written_dataset_and_collate(tmp_path, make_episode):
    eps = [make_episode(0), make_episode(1)]
    ds = EventDataset(write_dataset(tmp_path / "ds", eps))
    samples = EventSamples(ds, cameras=["left", "front"])
    s = samples[0]
    assert s["video"].shape[0] == 2 and list(s["cameras"]) == ["left", "front"]
    np.testing.assert_array_equal(s["actions"][: s["length"]], eps[0].actions[: s["length"]])
    batch = collate([samples[i] for i in range(3)])
    assert tuple(batch["video"].shape) == (3, 2, 33, 64, 64, 3)
    assert tuple(batch["actions"].shape) == (3, 32, 7) and tuple(batch["valid"].shape) == (3, 32)
    assert tuple(batch["K"].shape) == (3, 2, 3, 3) and tuple(batch["T_world_cam"].shape) == (
        3,
        2,
        4,
        4,
    )
    assert batch["caption"] == [samples[i]["caption"] for i in range(3)]
    assert batch["episode_index"].tolist() == [0, 0, 0]


def test_captions_for_clustering_follow_the_main_track(make_episode):
    ep = make_episode(0)
    mixed = EventSamples([ep], caption_track={"subtask": 0.2, "segment": 0.8})
    assert mixed.captions() == [e.segment for e in ep.events]
    assert mixed.captions({"action": 1.0}) == [e.action for e in ep.events]
    assert mixed.captions("task") == [e.task for e in ep.events]
