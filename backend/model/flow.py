"""Rectified flow: the one noising convention, loss, timestep sampling and Euler sampler.

Convention (stated once, used everywhere):

    x_t = (1 - t) · x0 + t · ε,    t ∈ [0, 1],  t = 0 clean data, t = 1 pure noise
    velocity target v = ε − x0     (so dx_t/dt = v)
    sampling integrates from t = 1 to t = 0:  x_{t'} = x_t + (t' − t) · v̂,  t' < t

Video latents and actions use the same convention with independent timesteps per sample.
A fraction of training samples gets `t_video = 1` (video fully noised) so that the
action-only fast path, which never denoises the video, is in distribution.
Classifier-free guidance extrapolates from the null-instruction velocity:
`v = v_uncond + scale · (v_cond − v_uncond)`.
"""

from __future__ import annotations

import torch


def _expand_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against x."""
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) · x0 + t · ε with t of shape (B,)."""
    tt = _expand_like(t, x0)
    return (1.0 - tt) * x0 + tt * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target ε − x0."""
    return noise - x0


def predict_x0(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Clean estimate from a velocity: x0 = x_t − t · v (used for denoising previews)."""
    return x_t - _expand_like(t, x_t) * v


def flow_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared velocity error; `mask` (broadcastable to pred, 1 = counts) drops padding."""
    err = (pred - target).pow(2)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def sample_timesteps(
    n: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """Logit-normal t (SD3): most samples at mid noise, where the velocity is hardest to learn."""
    z = torch.randn(n, generator=generator, device="cpu") * logit_std + logit_mean
    return torch.sigmoid(z).to(device)


def sampling_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Times 1 = t_0 > t_1 > ... > t_steps = 0, warped by Wan's shift (shift > 1 spends more steps at high noise)."""
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1.0 + (shift - 1.0) * t)


def guided(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on the instruction."""
    return v_uncond + scale * (v_cond - v_uncond)


def euler_step(
    x: torch.Tensor, v: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor
) -> torch.Tensor:
    """One Euler step from t to t_next < t along the predicted velocity."""
    return x + (t_next - t) * v
