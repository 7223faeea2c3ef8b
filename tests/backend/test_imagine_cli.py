"""`wallwm imagine` end to end: a trained checkpoint, a dataset frame -> mp4 per view, actions, timings."""

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from backend.data.lerobot import EventDataset
from backend.data.video import decode_frames, video_info
from backend.model.presets import get_preset

H = get_preset("tiny").h_max


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A dataset of one sim episode and a checkpoint trained on it for one step (stage denoiser),
    next to `unified/`: one more step of the unified stage from it."""
    from backend.data.lerobot import write_dataset
    from backend.train import CHECKPOINT_DIR, TrainConfig, train
    from robot.sim.experts import record_episode

    root = tmp_path_factory.mktemp("imagine")
    write_dataset(root / "ds", [record_episode("pick_place_bin", 0)])
    train(
        TrainConfig(
            dataset=str(root / "ds"),
            out=str(root / "run"),
            steps=1,
            batch_size=1,
            threads=1,
            progress=False,
            balanced=False,
        )
    )
    train(
        TrainConfig(
            dataset=str(root / "ds"),
            out=str(root / "run" / "unified"),
            stage="unified",
            steps=1,
            batch_size=1,
            threads=1,
            progress=False,
            init=str(root / "run" / CHECKPOINT_DIR),
        )
    )
    return root / "ds", root / "run" / CHECKPOINT_DIR


def test_imagine_writes_videos_actions_and_timings(trained, tmp_path: Path, capsys) -> None:
    ds, ckpt = trained
    out = tmp_path / "event"
    rc = main(
        [
            "imagine",
            "--checkpoint",
            str(ckpt),
            "--dataset",
            str(ds),
            "--episode",
            "0",
            "--frame",
            "15",
            "--event",
            "grasp",
            "--out",
            str(out),
            "--steps",
            "2",
        ]
    )
    assert rc == 0
    assert "event mode" in capsys.readouterr().out
    report = json.loads((out / "result.json").read_text())
    assert report["mode"] == "event" and report["instruction"] == "grasp" and report["horizon"] == H
    assert 1 <= report["length"] <= H and len(report["validity"]) == H
    assert {"encode_s", "denoise_s", "decode_s", "total_s"} <= set(report["timings"])
    for cam in ("front", "left", "right"):
        assert report["videos"][cam] == f"{cam}.mp4"
        info = video_info(out / f"{cam}.mp4")
        assert (info["video.width"], info["video.height"]) == (64, 64)
        frames = decode_frames(out / f"{cam}.mp4", np.arange(report["length"] + 1) / 10.0)
        assert frames.shape == (report["length"] + 1, 64, 64, 3)
    arrays = np.load(out / "actions.npz")
    assert arrays["actions"].shape == (report["length"], 7) and arrays["chunk"].shape == (H, 7)
    assert arrays["ground_truth"].shape == (H, 7)
    assert json.loads((out / "actions.json").read_text())["validity"] == pytest.approx(
        report["validity"]
    )


def test_imagine_unified_action_only(trained, tmp_path: Path, capsys) -> None:
    ds, ckpt = trained
    out = tmp_path / "unified"
    args = [
        "imagine",
        "--dataset",
        str(ds),
        "--frame",
        "0",
        "--mode",
        "unified",
        "--out",
        str(out),
        "--steps",
        "2",
        "--action-only",
    ]
    assert main([*args, "--checkpoint", str(ckpt)]) == 2  # its VLM was never trained
    assert "stopped at stage 'denoiser'" in capsys.readouterr().err
    rc = main([*args, "--checkpoint", str(ckpt.parent / "unified" / "checkpoint")])
    assert rc == 0
    report = json.loads((out / "result.json").read_text())
    assert report["mode"] == "unified" and report["length"] == report["horizon"] == 16
    assert report["instruction"] == EventDataset(ds).task(0)  # the task, by default
    assert isinstance(report["proposed_event"], str) and report["videos"] == {}


def test_imagine_bad_input(trained, tmp_path: Path, capsys) -> None:
    ds, ckpt = trained
    args = ["imagine", "--dataset", str(ds), "--out", str(tmp_path / "x")]
    assert main([*args, "--checkpoint", str(ckpt), "--event", " "]) == 2
    assert "instruction is empty" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(ckpt), "--frame", "9999"]) == 2
    assert "out of range" in capsys.readouterr().err
