"""Video autoencoder: diffusers' causal 3D-conv `AutoencoderKLWan` at a configurable size.

Wan2.1 layout: time is compressed 4x and space 8x, and the first frame is encoded alone
(causal convolutions), so T frames become `1 + (T - 1) // 4` latent frames and latent frame
0 is the current observation. The `tiny` config (base_dim 16, z_dim 16, 2.6M parameters)
trains on a 2-core CPU at the rate `wallwm bench model` reports for the vae stage (item d,
docs/benchmarks.md); the `wan*` presets use Wan2.1's own size so its released VAE weights map
one to one.

The denoiser sees latents standardised per channel with `latents_mean` / `latents_std`
buffers, fitted on training data after the VAE stage (`calibrate_`), so that unit-variance
noise at t = 1 matches the data's scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8


@dataclass(frozen=True)
class VAEConfig:
    base_dim: int = 16  # channels of the first conv stage; Wan2.1 uses 96
    z_dim: int = 8  # latent channels; Wan2.1 uses 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # channel multiplier per stage; 3 downsamples -> 8x
    num_res_blocks: int = 1  # per stage; Wan2.1 uses 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # two 2x steps in time -> 4x
    kl_weight: float = 1e-6  # tiny KL keeps latents near N(0, I) without blurring reconstructions
    # Extra reconstruction weight on foreground pixels (unlike their frame's dominant colour): in
    # tabletop views the objects cover a few percent of the pixels, and an unweighted loss first
    # learns the table alone (at 200 steps the tiny VAE decoded an empty table).
    foreground_weight: float = 8.0

    def __post_init__(self) -> None:
        if len(self.dim_mult) != 4 or len(self.temporal_downsample) != 3:
            raise ValueError(
                "VAEConfig needs 4 dim_mult stages and 3 temporal_downsample flags (8x / 4x)"
            )
        if sum(self.temporal_downsample) != 2:
            raise ValueError(
                "VAEConfig: exactly two temporal downsamples give the 4x Wan2.1 layout"
            )
        if self.base_dim <= 0 or self.z_dim <= 0:
            raise ValueError(
                f"VAEConfig: base_dim and z_dim must be positive, got {self.base_dim}, {self.z_dim}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def latent_frames(num_frames: int) -> int:
    """Causal 4x temporal compression: frame 0 alone, then groups of four."""
    return 1 + (num_frames - 1) // TEMPORAL_COMPRESSION


def frames_to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float (..., 3, T, H, W) in [-1, 1]."""
    x = frames.to(torch.float32) / 127.5 - 1.0
    return x.movedim(-1, -4)


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """float (..., 3, T, H, W) in [-1, 1] -> uint8 (..., T, H, W, 3)."""
    x = ((video.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-4, -1)


def foreground(video: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, 1, T, H, W): 1 where a pixel differs from its frame's
    per-channel median (the dominant colour, the table) by more than `threshold`."""
    median = video.flatten(-2).median(dim=-1).values[..., None, None]  # (B, 3, T, 1, 1)
    return ((video - median).abs().amax(dim=1, keepdim=True) > threshold).to(video.dtype)


@dataclass
class LatentPosterior:
    """Diagonal Gaussian over (unstandardised) latents, (B, C, F, h, w) each."""

    mean: torch.Tensor
    logvar: torch.Tensor
    _std: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.logvar = self.logvar.clamp(-30.0, 20.0)
        self._std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype).to(
            self.mean.device
        )
        return self.mean + self._std * eps

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over latent dims, averaged over the batch."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1).mean()


class VideoVAE(nn.Module):
    """encode: video (B, 3, T, H, W) in [-1, 1] -> standardised latents (B, C, 1 + (T-1)//4, H/8, W/8);
    decode: the inverse, clamped to [-1, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        from diffusers import AutoencoderKLWan

        self.config = config
        z = config.z_dim
        self.model = AutoencoderKLWan(
            base_dim=config.base_dim,
            z_dim=z,
            dim_mult=list(config.dim_mult),
            num_res_blocks=config.num_res_blocks,
            temperal_downsample=list(config.temporal_downsample),
            latents_mean=[0.0] * z,
            latents_std=[1.0] * z,
        )
        # Standardisation of latents for the denoiser; fitted by `calibrate_` after VAE training.
        self.register_buffer("latents_mean", torch.zeros(z))
        self.register_buffer("latents_std", torch.ones(z))

    @staticmethod
    def check_video(video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, T, H, W), got {tuple(video.shape)}")
        _, _, t, h, w = video.shape
        if (t - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(f"video needs T = 1 + 4k frames for the causal 4x layout, got T={t}")
        if h % SPATIAL_COMPRESSION or w % SPATIAL_COMPRESSION:
            raise ValueError(f"video height and width must be multiples of 8, got {h}x{w}")

    def posterior(self, video: torch.Tensor) -> LatentPosterior:
        """Latent distribution of a video (unstandardised)."""
        self.check_video(video)
        h = self.model._encode(video)  # (B, 2C, F, h, w)
        mean, logvar = h.chunk(2, dim=1)
        return LatentPosterior(mean, logvar)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latents_mean.view(shape).to(like), self.latents_std.view(shape).to(like)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Posterior mean, standardised: the deterministic latents the denoiser trains on."""
        mu = self.posterior(video).mean
        m, s = self._stats(mu)
        return (mu - m) / s

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents (B, C, F, h, w) -> video (B, 3, 1 + 4(F-1), 8h, 8w) in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.config.z_dim:
            raise ValueError(
                f"latents must be (B, {self.config.z_dim}, F, h, w), got {tuple(latents.shape)}"
            )
        m, s = self._stats(latents)
        return self.model._decode(latents * s + m).sample

    def loss(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Foreground-weighted reconstruction (L1 + MSE) plus a small KL: the `--stage vae` objective."""
        post = self.posterior(video)
        recon = self.model._decode(post.sample(generator)).sample
        w = 1.0 + self.config.foreground_weight * foreground(video)  # (B, 1, T, H, W)
        w = w / w.mean()  # the loss keeps its scale whatever the share of foreground
        l1 = (w * (recon - video).abs()).mean()
        mse = (w * (recon - video).pow(2)).mean()
        kl = post.kl()
        return {"loss": l1 + mse + self.config.kl_weight * kl, "l1": l1, "mse": mse, "kl": kl}

    @torch.no_grad()
    def calibrate_(self, videos: list[torch.Tensor]) -> None:
        """Fit the per-channel latent mean/std on a few training videos (B, 3, T, H, W)."""
        mus = [self.posterior(v).mean.transpose(0, 1).flatten(1) for v in videos]  # (C, N)
        mu = torch.cat(mus, dim=1)
        self.latents_mean.copy_(mu.mean(1))
        self.latents_std.copy_(mu.std(1).clamp_min(1e-3))
