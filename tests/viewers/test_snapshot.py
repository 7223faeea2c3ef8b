"""`python -m viewers.snapshot`: figures of a real sim scene, written to PNG through Chromium."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from viewers import snapshot


def test_build_figures_from_the_expert():
    figures, episode = snapshot.build_figures(
        "pick_place_bin", seed=3, n_events=3, checkpoint=None, resolution=64
    )
    assert set(figures) == {"trajectories", "cones", "overlap", "token_mask"}
    paths = [
        t
        for t in figures["trajectories"].data
        if isinstance(t, go.Scatter3d) and t.mode == "lines+markers"
    ]
    assert (
        sorted(t.name for t in paths) == ["executed"] * 3 + ["ground truth"] * 3
    )  # no model: nothing imagined
    e = episode.events[0]
    gt = next(t for t in paths if t.legendgroup == "e0" and t.name == "ground truth")
    np.testing.assert_allclose(np.c_[gt.x, gt.y, gt.z], episode.actions[e.start : e.end, :3])
    assert np.asarray(figures["overlap"].data[0].z).shape == (3, 3)
    # The tiny preset's token mask: 3 views x 4x4 patches x 5 latent frames.
    assert "240×240 tokens" in figures["token_mask"].layout.title.text


@pytest.mark.slow
def test_snapshot_writes_pictures(tmp_path, read_rrd):
    rrd = tmp_path / "scene.rrd"
    assert snapshot.main(["--out", str(tmp_path), "--events", "2", "--rrd", str(rrd)]) == 0
    for name, (w, h) in snapshot.FIGURE_SIZE.items():
        img = Image.open(tmp_path / f"{name}.png").convert("RGB")
        assert img.size == (w, h), name
        colours = np.unique(np.asarray(img).reshape(-1, 3), axis=0)
        assert len(colours) > 50, f"{name}.png looks blank"
    rec = read_rrd(rrd)
    assert {
        "/world/cameras/front",
        "/world/cones/front",
        "/observed/front",
        "/world/executed/e0/ee_path",
    } <= rec.entities()
    assert any("ViewBlueprint" in v for v in rec.blueprint_values)


def test_bad_arguments_say_why(tmp_path, capsys):
    assert snapshot.main(["--out", str(tmp_path), "--events", "0"]) == 2
    assert snapshot.main(["--out", str(tmp_path), "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "--events must be >= 1" in err and "does not exist" in err
