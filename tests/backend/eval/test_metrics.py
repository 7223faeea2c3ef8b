"""Image metrics of the imagination evaluation, against closed forms."""

import math

import numpy as np
import pytest

from backend.eval.imagination import PSNR_CAP_DB, bucket_of, psnr, resize_frames, ssim


def test_psnr_closed_form() -> None:
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    b = a + np.uint8(10)  # MSE 100
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, a) == PSNR_CAP_DB
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(a, a[:1])


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    # No variance: the structure term is C2 / C2 = 1, SSIM = (2 xy + C1) / (x^2 + y^2 + C1).
    a = np.full((16, 16, 3), 80, np.uint8)
    b = np.full((16, 16, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 80 * 120 + c1) / (80**2 + 120**2 + c1))
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_falls_with_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)
    prev = 1.0
    for sigma in (5, 20, 60):
        noisy = np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)
        s = ssim(noisy, x)
        assert s < prev
        prev = s


def test_resize_and_buckets() -> None:
    frames = np.zeros((2, 128, 128, 3), np.uint8)
    frames[:, :64] = 200
    small = resize_frames(frames, 64)
    assert small.shape == (2, 64, 64, 3) and small[0, 0, 0, 0] == 200 and small[0, -1, 0, 0] == 0
    assert [bucket_of(n) for n in (1, 4, 5, 16, 17)] == ["1-4", "1-4", "5-8", "13-16", "17-20"]
