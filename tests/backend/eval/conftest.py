"""Tiny checkpoints for the evaluation tests: real sim data, real (2-step) training, every recipe."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from app.cli import main


@dataclass(frozen=True)
class Trained:
    train_data: Path  # 2 train-split episodes of pick_place_bin
    test_data: Path  # 1 test-split episode of pick_place_bin
    vae: Path  # the autoencoder stage
    event: Path  # event recipe, denoiser stage
    unified: Path  # event recipe, unified stage (VLM trained)
    fixed: Path  # fixed recipe, denoiser stage


def _train(data: Path, out: Path, *args: str) -> Path:
    rc = main(
        [
            "train",
            "--dataset",
            str(data),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "1",
            "--threads",
            "1",
            "--no-progress",
            *args,
        ]
    )
    assert rc == 0
    return out / "checkpoint"


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("eval")
    for split, n in (("train", "2"), ("test", "1")):
        rc = main(
            [
                "data",
                "generate",
                "--task",
                "pick_place_bin",
                "--episodes",
                n,
                "--split",
                split,
                "--out",
                str(root / split),
            ]
        )
        assert rc == 0
    vae = _train(root / "train", root / "vae", "--stage", "vae")
    event = _train(root / "train", root / "event", "--stage", "denoiser", "--init", str(vae))
    unified = _train(root / "train", root / "unified", "--stage", "unified", "--init", str(event))
    fixed = _train(
        root / "train",
        root / "fixed",
        "--recipe",
        "fixed",
        "--stage",
        "denoiser",
        "--init",
        str(vae),
    )
    torch.set_num_threads(threads)
    return Trained(root / "train", root / "test", vae, event, unified, fixed)
