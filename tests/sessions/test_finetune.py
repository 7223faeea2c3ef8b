"""Learning from corrections: a recorded session (real sim views and expert motion, the second
half taken over by hand) exported to LeRobot v3.0 and fine-tuned on with `wallwm train --init`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.data.lerobot import EventDataset
from sessions.export import export
from sessions.store import SessionStore


def _tiny_checkpoint(root: Path) -> Path:
    spec = importlib.util.spec_from_file_location(
        "studio_app_conftest", Path(__file__).parents[1] / "app" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_checkpoint(root)


@pytest.fixture(scope="module")
def exported(sim_session, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finetune")
    with SessionStore(sim_session.root).open(sim_session.id) as r:
        (path,) = export(r, "lerobot", root / "exported")
    return path, root


def test_the_export_carries_the_takeover_and_the_edit(exported) -> None:
    ds = EventDataset(exported[0])
    flags = ds.intervention(0)
    half = len(flags) // 2
    assert not flags[:half].any() and flags[half:].all()
    (said,) = ds.interjections(0)
    assert said.frame == 2 and "now" in said.text
    assert ds.events(0)[-1].boundary == "takeover"


def test_intervention_weights_repeat_or_drop_takeover_samples(exported) -> None:
    from backend.data.samples import EventSamples, frameless
    from backend.train import intervention_weights

    ds = EventDataset(exported[0])
    samples = EventSamples(frameless(ds), h_max=32)
    assert intervention_weights(ds, samples, 1) is None
    w3 = intervention_weights(ds, samples, 3)
    flags = ds.intervention(0)
    hit = [flags[r.start : r.stop].any() for r in samples.refs]
    assert w3.tolist() == [3 if h else 1 for h in hit] and any(hit) and not all(hit)
    assert intervention_weights(ds, samples, 0).tolist() == [0 if h else 1 for h in hit]


@pytest.mark.slow
def test_fine_tune_on_an_exported_session_with_the_same_trainer(exported) -> None:
    path, root = exported
    ckpt = _tiny_checkpoint(root / "base")
    out = root / "finetuned"
    subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--init", str(ckpt), "--dataset", str(path),
         "--out", str(out), "--stage", "denoiser", "--preset", "tiny", "--steps", "3",
         "--batch-size", "1", "--threads", "1", "--no-progress", "--log-every", "1",
         "--intervention-weight", "3"],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    base = json.loads((ckpt / "config.json").read_text())
    tuned = json.loads((out / "checkpoint" / "config.json").read_text())
    assert tuned["train"]["intervention_weight"] == 3
    assert tuned["normalizer"] == base["normalizer"]  # fine-tuning keeps the model's units
