"""Video autoencoder: Wan2.1 layout (4x time, 8x space, causal first frame), loss, calibration."""

import re

import numpy as np
import pytest
import torch

from backend.model.vae import VAEConfig, VideoVAE, frames_to_video, latent_frames, video_to_frames

SMALL = VAEConfig(base_dim=8, z_dim=4)


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(SMALL).eval()


@pytest.mark.parametrize("t", [1, 5, 9, 33])
def test_latent_layout(vae: VideoVAE, t: int) -> None:
    video = torch.rand(1, 3, t, 16, 24) * 2 - 1
    with torch.no_grad():
        z = vae.encode(video)
        back = vae.decode(z)
    assert z.shape == (1, SMALL.z_dim, 1 + (t - 1) // 4, 2, 3) == (1, 4, latent_frames(t), 2, 3)
    assert back.shape == video.shape
    assert back.abs().max() <= 1.0


def test_first_latent_frame_is_the_first_frame_alone(vae: VideoVAE) -> None:
    """Causal: latent frame 0 depends on frame 0 only, so it encodes the current observation."""
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(video)
        first = vae.encode(video[:, :, :1])
        changed_future = video.clone()
        changed_future[:, :, 1:] = -video[:, :, 1:]
        other = vae.encode(changed_future)
    torch.testing.assert_close(whole[:, :, :1], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole[:, :, :1], other[:, :, :1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(whole[:, :, 1:], other[:, :, 1:])


@pytest.mark.parametrize(
    "shape, what",
    [
        ((1, 3, 4, 16, 16), "1 + 4k"),
        ((1, 3, 5, 12, 16), "multiples of 8"),
        ((1, 4, 5, 16, 16), "(B, 3, T, H, W)"),
    ],
)
def test_bad_video_is_refused(vae: VideoVAE, shape: tuple, what: str) -> None:
    with pytest.raises(ValueError, match=re.escape(what)):
        vae.encode(torch.zeros(shape))


def test_loss_trains_and_calibration_standardises() -> None:
    torch.manual_seed(0)
    vae = VideoVAE(SMALL)
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        parts = vae.loss(video)
        assert set(parts) == {"loss", "l1", "mse", "kl"} and torch.isfinite(parts["loss"])
        first = first if first is not None else parts["loss"].item()
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
    assert vae.loss(video)["loss"].item() < first
    vae.calibrate_([video])
    with torch.no_grad():
        z = vae.encode(video).transpose(0, 1).flatten(1)  # (C, N)
    torch.testing.assert_close(z.mean(1), torch.zeros(SMALL.z_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(SMALL.z_dim), atol=1e-3, rtol=0)


def test_frame_conversion_round_trip() -> None:
    frames = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)
    )
    video = frames_to_video(frames)
    assert video.shape == (2, 3, 5, 8, 8) and video.min() >= -1 and video.max() <= 1
    assert torch.equal(video_to_frames(video), frames)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="two temporal downsamples"):
        VAEConfig(temporal_downsample=(True, True, True))
    with pytest.raises(ValueError, match="4 dim_mult"):
        VAEConfig(dim_mult=(1, 2))


def test_foreground_marks_objects_not_the_table() -> None:
    """The VAE loss weights the few pixels of objects: on a real sim view they are the foreground."""
    from backend.model.vae import foreground
    from robot.sim.env import SimEnv

    with SimEnv("pick_place_bin", seed=0) as env:
        frame = env.observe()["images"]["front"]  # (64, 64, 3) uint8
    fg = foreground(frames_to_video(torch.from_numpy(frame)[None, None]))[
        0, 0, 0
    ].numpy()  # (64, 64)
    distance = np.abs(frame.astype(int) - np.median(frame.reshape(-1, 3), axis=0)).max(-1)
    assert fg[distance > 40].all()  # the gripper, block and bin edges stand out from the table
    assert not fg[distance < 5].any()  # the table itself never counts
    assert 0.02 < fg.mean() < 0.5  # a minority of the view
