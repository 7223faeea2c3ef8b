"""`wallwm eval imagine` end to end: held-out events, baselines, buckets, contact sheet."""

import json
from pathlib import Path

import pytest
from PIL import Image

from app.cli import main
from backend.eval.imagination import ACTION_METRICS, VIDEO_METRICS

pytestmark = pytest.mark.slow


def test_imagine_eval_writes_metrics_events_and_contact_sheet(
    trained, tmp_path: Path, capsys
) -> None:
    rc = main(
        [
            "eval",
            "imagine",
            "--checkpoint",
            str(trained.event),
            "--dataset",
            str(trained.test_data),
            "--max-events",
            "2",
            "--steps",
            "1",
            "--sheet-events",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "psnr_repeat_last" in capsys.readouterr().out
    im = json.loads((tmp_path / "eval.json").read_text())["imagine"]
    for key in (*VIDEO_METRICS, *ACTION_METRICS, "length_error"):
        assert isinstance(im[key], float), key
    assert im["events"] == 2 and im["episodes"] == 1 and im["split"] == "test"
    assert im["futures"] == 1 and im["psnr_single"] == im["psnr"]  # the checkpoint imagines one
    gain, (lo, hi) = im["psnr_gain"], im["psnr_gain_ci95"]  # paired over events
    assert gain == pytest.approx(im["psnr"] - im["psnr_repeat_last"], abs=1e-3)
    assert lo <= gain <= hi
    assert 0 < im["psnr_repeat_last"] <= 60 and -1 <= im["ssim"] <= 1
    assert set(im["per_view"]) == {"front", "left", "right"}
    assert sum(b["events"] for b in im["buckets"].values()) == 2
    events = [
        json.loads(line)
        for line in (tmp_path / "imagine" / "events.jsonl").read_text().splitlines()
    ]
    assert len(events) == 2 and all(
        e["frames"] >= 1 and set(e["psnr"]) == {"front", "left", "right"} for e in events
    )
    with Image.open(tmp_path / "imagine" / "contact_sheet.png") as sheet:
        assert (
            sheet.width > 300 and sheet.height > 2 * 6 * 64
        )  # 2 events x 3 views x (real, imagined)


def test_imagine_eval_bad_input(trained, tmp_path: Path, capsys) -> None:
    base = ["eval", "imagine", "--out", str(tmp_path), "--no-progress"]
    cases = [
        (
            [
                "--checkpoint",
                str(trained.event),
                "--dataset",
                str(trained.test_data),
                "--split",
                "train",
            ],
            "has no train episodes",
        ),
        (
            ["--checkpoint", str(tmp_path / "missing"), "--dataset", str(trained.test_data)],
            "does not exist",
        ),
        (
            ["--checkpoint", str(trained.event), "--dataset", str(tmp_path / "nodata")],
            "does not exist",
        ),
    ]
    for args, message in cases:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
