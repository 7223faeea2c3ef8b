"""The checkpoints shipped in assets/: small, loadable, and reproducing their stored output."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.model.reference import REFERENCE_FILE, check_reference
from backend.service import SHIPPED_CHECKPOINT, resolve_checkpoint

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "checkpoints"
SHIPPED = sorted(p for p in ASSETS.glob("*") if (p / "config.json").is_file())
MAX_BYTES = 40 * 10**6


def test_the_event_checkpoint_is_shipped_and_the_studio_loads_it_by_default():
    assert (SHIPPED_CHECKPOINT / "config.json").is_file(), (
        f"nothing shipped at {SHIPPED_CHECKPOINT}"
    )
    choice = resolve_checkpoint(None)
    assert choice.path == SHIPPED_CHECKPOINT and choice.reason == "shipped checkpoint"


@pytest.mark.parametrize("directory", SHIPPED, ids=[p.name for p in SHIPPED])
def test_a_shipped_checkpoint_is_small_and_inference_only(directory):
    files = {p.name for p in directory.iterdir()}
    assert {"config.json", "ema.safetensors", REFERENCE_FILE} <= files
    assert "optimizer.safetensors" not in files
    assert sum(p.stat().st_size for p in directory.iterdir()) <= MAX_BYTES


@pytest.mark.slow
@pytest.mark.parametrize("directory", SHIPPED, ids=[p.name for p in SHIPPED])
def test_a_shipped_checkpoint_reproduces_its_stored_output(directory):
    diff = check_reference(directory)  # raises with the differences past tolerance
    assert diff["chunk"] <= 1e-3 and diff["video_mean_abs"] <= 1.0
