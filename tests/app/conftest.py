"""Studio test fixtures: a tiny checkpoint trained through the real CLI chain (2 + 2 steps).

Its outputs are meaningless, but data generation, the VAE stage, the denoiser stage, the
checkpoint format and loading are all the real ones. Built once per test session and shared
with tests/e2e (which loads `build_tiny_checkpoint` from this file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _wallwm(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "app.cli", *args], check=True, env=env, capture_output=True
    )


def build_tiny_checkpoint(root: Path) -> Path:
    """data generate -> train vae (2 steps) -> train denoiser (2 steps); reused if present."""
    ckpt = root / "wam" / "checkpoint"
    if (ckpt / "config.json").is_file():
        return ckpt
    ds = root / "ds"
    _wallwm(
        "data",
        "generate",
        "--suite",
        "reasoning",
        "--episodes",
        "2",
        "--out",
        str(ds),
        "--overwrite",
    )
    common = (
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--threads",
        "1",
        "--no-progress",
    )
    _wallwm("train", "--stage", "vae", "--dataset", str(ds), "--out", str(root / "vae"), *common)
    _wallwm(
        "train",
        "--stage",
        "denoiser",
        "--dataset",
        str(ds),
        "--out",
        str(root / "wam"),
        "--init",
        str(root / "vae" / "checkpoint"),
        *common,
    )
    return ckpt


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.getbasetemp() / "studio-checkpoint")
