"""The learning-curve command and the look-probe, on a run with step-numbered checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from backend.eval.curve import kept_checkpoints, training_hours
from backend.eval.probe import target_follow
from backend.model.wam import WorldActionModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_hours_add_up_resumed_segments(tmp_path: Path) -> None:
    rows = [(10, 60.0), (20, 120.0), (30, 30.0), (40, 90.0)]  # resumed after step 20
    (tmp_path / "log.jsonl").write_text(
        "".join(json.dumps({"step": s, "elapsed_s": e}) + "\n" for s, e in rows)
    )
    hours = training_hours(tmp_path / "log.jsonl")
    assert hours == pytest.approx({10: 60 / 3600, 20: 120 / 3600, 30: 150 / 3600, 40: 210 / 3600})


@pytest.mark.slow
def test_curve_scores_every_kept_checkpoint(trained, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--dataset",
            str(trained.train_data),
            "--out",
            str(run),
            "--init",
            str(trained.vae),
            "--steps",
            "2",
            "--batch-size",
            "1",
            "--keep-every",
            "1",
            "--caption-track",
            "action",
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert [s for s, _ in kept_checkpoints(run)] == [1, 2]
    out = tmp_path / "curve"
    rc = main(
        [
            "eval",
            "curve",
            "--run",
            str(run),
            "--dataset",
            str(trained.test_data),
            "--task",
            "pick_place_bin",
            "--episodes",
            "1",
            "--max-events",
            "2",
            "--steps",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = json.loads((out / "curve.json").read_text())
    assert [r["step"] for r in rows] == [1, 2] and all(r["hours"] > 0 for r in rows)
    assert all(r["method"] == "event" for r in rows)  # an event-recipe run, on its own protocol
    assert all(
        r["action_l2_hold"] > 0 and 0 <= r["task_progress/pick_place_bin"] <= 100 for r in rows
    )
    assert (out / "curve.png").stat().st_size > 5000
    from PIL import Image

    assert Image.open(out / "curve.png").size[0] > 1500  # three panels: the loss is drawn too
    assert "step 2" in capsys.readouterr().out
    # Run again: the checkpoints already in curve.json are kept, not scored again.
    curve_args = ["eval", "curve", "--run", str(run), "--dataset", str(trained.test_data)]
    curve_args += ["--task", "pick_place_bin", "--episodes", "1", "--max-events", "2"]
    assert main([*curve_args, "--steps", "1", "--out", str(out)]) == 0
    assert "step 1 (" not in capsys.readouterr().out
    assert json.loads((out / "curve.json").read_text()) == rows
    rc = main(
        [
            "eval",
            "curve",
            "--run",
            str(trained.vae.parent),
            "--dataset",
            str(trained.test_data),
            "--task",
            "pick_place_bin",
            "--out",
            str(out),
        ]
    )
    assert rc == 2  # a run without step-numbered checkpoints: one clear line


def test_target_follow_measures_the_moved_object(trained) -> None:
    model = WorldActionModel.from_checkpoint(trained.event)
    probe = target_follow(model, seed=4, shift_xy=(0.04, 0.0), steps=1)
    moved = np.asarray(probe["object_shift"])
    assert np.linalg.norm(moved - [0.04, 0.0]) < 0.01  # the block really moved about 4 cm in x
    assert np.isfinite(probe["follow_ratio"]) and probe["caption"]
