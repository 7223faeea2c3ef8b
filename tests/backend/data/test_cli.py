"""`wallwm data generate` + `wallwm data show` end to end on the real MuJoCo sim."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from backend.data.generate import plan_episodes
from backend.data.lerobot import EventDataset
from backend.data.sampler import ClusterBalancedSampler
from backend.data.samples import EventSamples, FixedWindowSamples


def test_generate_then_show_on_the_sim(tmp_path, capsys):
    out = tmp_path / "reasoning"
    assert (
        main(["data", "generate", "--suite", "reasoning", "--episodes", "2", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "episodes: 2 (train 2)" in printed and "caption examples" in printed

    ds = EventDataset(out)
    assert ds.num_episodes == 2 and ds.has_events and ds.camera_names == ["front", "left", "right"]
    info = json.loads((out / "meta/info.json").read_text())
    assert info["wallwm"]["generation"]["suite"] == "reasoning"
    assert {ds.meta(i)["task_name"] for i in range(2)} == {
        "press_buttons_in_order",
        "sort_by_colour",
    }
    for i in range(2):
        ep = ds.episode(i)
        ep.validate()  # events tile the episode, shapes agree
        assert ep.frames["front"].shape[1:] == (64, 64, 3)
        assert set(ds.cameras(i)) == {"front", "left", "right"}
        assert ep.progress is not None and ep.progress[-1] == 10  # the expert solved it
        assert ds.split(i) == "train" and ep.variation["split"] == "train"

    samples = EventSamples(ds)
    s = samples[0]
    assert s["video"].shape == (3, 33, 64, 64, 3) and s["valid"].sum() == s["length"]
    sampler = ClusterBalancedSampler.from_samples(samples, num_samples=64)
    assert sampler.num_clusters >= 2 and len(list(sampler)) == 64
    assert len(FixedWindowSamples(ds, stride=16)) > 0

    png = tmp_path / "sheet.png"
    assert main(["data", "show", str(out), "--out", str(png), "--episode", "1"]) == 0
    printed = capsys.readouterr().out
    assert "events:" in printed and "mean" in printed and str(png) in printed
    img = Image.open(png)
    n_events = len(ds.events(1))
    assert img.width > 3 * 128 and img.height > n_events * 128  # one row of 2x frames per event
    assert png.stat().st_size < 500_000
    pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 20  # frames and text, not a blank page


def test_cli_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("not a dataset")
    assert (
        main(["data", "generate", "--suite", "dexterous", "--episodes", "1", "--out", str(out)])
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "missing")]) == 2
    assert "not a LeRobot dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "generate", "--suite", "nope", "--episodes", "1", "--out", str(out)])


def test_episode_plan_respects_the_train_test_split():
    train = plan_episodes("all", 9)
    assert len({s.task for s in train}) == 9 and all(
        s.split == "train" and s.seed % 5 != 4 for s in train
    )
    test = plan_episodes("generalization", 3, split="test")
    assert all(s.split == "test" and s.seed % 5 == 4 for s in test)
    both = plan_episodes("reasoning", 12, split="all")
    splits = [s.split for s in both]
    assert splits == sorted(splits, key=["train", "test"].index) and "test" in splits  # train first
    with pytest.raises(ValueError, match="episodes"):
        plan_episodes("reasoning", 0)


def test_bench_measures_generation_throughput():
    from backend.data.bench import measure

    m = measure(64, ["press_buttons_in_order"], seeds=1)
    assert m["steps"] > 0 and m["views"] == 3
    assert m["steps_per_s"] > 0 and m["steps_per_s"] < m["record_steps_per_s"]
