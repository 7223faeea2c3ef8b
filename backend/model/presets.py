"""Full-model presets: the denoiser's sizes composed with the autoencoder, text encoder and VLM.

One code path from `tiny` (CPU, ships with the studio) to `wan14b` (the paper's scale);
a preset is a frozen `ModelConfig` in the `MODEL_PRESETS` dict, and a checkpoint's
config.json stores the whole config so a run is rebuilt exactly.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace

from backend.model.denoiser import DENOISER_PRESETS, DenoiserConfig
from backend.model.text_encoder import TextConfig
from backend.model.vae import SPATIAL_COMPRESSION, VAEConfig
from backend.model.vlm import VLMConfig

# Most futures one imagination may average (ModelConfig.imagine_futures; the --futures flags).
MAX_FUTURES = 16


@dataclass(frozen=True)
class ModelConfig:
    name: str
    denoiser: DenoiserConfig
    vae: VAEConfig
    text: TextConfig
    vlm: VLMConfig
    image_size: int = 64  # square camera images the model sees (VAE: 8x smaller latents)
    h_unified: int = 16  # unified mode's fixed chunk length
    sampling_steps: int = 10  # Euler steps at inference
    sampling_shift: float = 3.0  # Wan's timestep shift: more of the steps at high noise
    guidance_scale: float = 3.0  # classifier-free guidance on the instruction
    # Sight-cone mask: pixel cones span depths [d_min, d_max] (m) clipped to the workspace box.
    cone_d_min: float = 0.05
    cone_d_max: float = 2.0
    workspace_min: tuple[float, float, float] = (-0.22, -0.22, 0.0)
    workspace_max: tuple[float, float, float] = (0.22, 0.22, 0.30)
    sight_cone: bool = True  # False: full cross-view attention (ablation)
    # Actions as offsets from the chunk's starting state (gripper absolute): the model learns where
    # to go from here instead of memorising the dataset's mean pose (openpi's delta actions).
    relative_actions: bool = True
    # Residual video: > 0 makes the video tower's target, for every latent frame after the
    # observation, (latents - still latents) * video_residual, where the still latents encode the
    # observation held still for the clip. Zero then means "nothing moves", and imagination
    # composites the decoded change onto the observed pixels (the autoencoder's rendering errors
    # cancel). 0: the tower predicts the latents themselves (Wan's way).
    video_residual: float = 0.0
    # Futures imagined per event: the video shown (and scored) is the per-pixel mean of this
    # many sampled futures, the model's estimate of the expected future; the actions are the
    # first future's. 1: one future, as sharp as the model draws it.
    imagine_futures: int = 1

    def __post_init__(self) -> None:
        d, v = self.denoiser, self.vae
        if not 1 <= self.imagine_futures <= MAX_FUTURES:
            raise ValueError(
                f"preset {self.name}: imagine_futures must be in [1, {MAX_FUTURES}], "
                f"got {self.imagine_futures}"
            )
        if self.video_residual < 0:
            raise ValueError(
                f"preset {self.name}: video_residual must be >= 0, got {self.video_residual}"
            )
        if d.out_channels != v.z_dim:
            raise ValueError(
                f"preset {self.name}: denoiser out_channels {d.out_channels} != VAE z_dim {v.z_dim}"
            )
        if d.in_channels != 2 * v.z_dim + 4:
            raise ValueError(
                f"preset {self.name}: denoiser in_channels {d.in_channels} != 2 * z_dim + 4 "
                "(noisy latents, 4 mask channels, observation latents: the Wan2.1-I2V layout)"
            )
        if d.text_dim != self.text.dim:
            raise ValueError(
                f"preset {self.name}: denoiser text_dim {d.text_dim} != text encoder dim {self.text.dim}"
            )
        lat = self.image_size // SPATIAL_COMPRESSION
        if self.image_size % SPATIAL_COMPRESSION or lat % d.patch_size[1] or lat % d.patch_size[2]:
            raise ValueError(
                f"preset {self.name}: image_size {self.image_size} must give latents divisible by the patch size"
            )
        if (d.h_max % 4) or (self.h_unified % 4) or self.h_unified > d.h_max:
            raise ValueError(
                f"preset {self.name}: h_max ({d.h_max}) and h_unified ({self.h_unified}) must be multiples "
                "of 4 (whole latent frames) with h_unified <= h_max"
            )

    @property
    def h_max(self) -> int:
        return self.denoiser.h_max

    @property
    def latent_size(self) -> int:
        return self.image_size // SPATIAL_COMPRESSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of `to_dict` (lists from JSON become tuples again)."""

        def tuples(x: dict) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}

        top = tuples({k: v for k, v in d.items() if k not in ("denoiser", "vae", "text", "vlm")})
        return cls(
            denoiser=DenoiserConfig(**tuples(d["denoiser"])),
            vae=VAEConfig(**tuples(d["vae"])),
            text=TextConfig(**d["text"]),
            vlm=VLMConfig(**d["vlm"]),
            **top,
        )

    def with_vlm_width(self, width: int) -> ModelConfig:
        """The same config with the denoiser's staircase input sized to a loaded VLM's width."""
        return replace(self, denoiser=replace(self.denoiser, extra_context_dim=width))


def _tiny() -> ModelConfig:
    vlm = VLMConfig()
    return ModelConfig(
        name="tiny",
        denoiser=replace(DENOISER_PRESETS["tiny"], extra_context_dim=vlm.hidden_size),
        vae=VAEConfig(base_dim=16, z_dim=16),
        text=TextConfig(),
        vlm=vlm,
    )


def _small() -> ModelConfig:
    vlm = VLMConfig(
        hidden_size=512,
        num_layers=8,
        num_heads=8,
        head_dim=64,
        intermediate_size=1536,
        linear_heads=8,
        linear_head_dim=64,
    )
    return ModelConfig(
        name="small",
        denoiser=replace(DENOISER_PRESETS["small"], extra_context_dim=vlm.hidden_size),
        vae=VAEConfig(base_dim=32, z_dim=16, num_res_blocks=2),
        text=TextConfig(),
        vlm=vlm,
        image_size=128,
    )


# Wan2.1's VAE (base_dim 96, z_dim 16, 2 res blocks) and umT5-xxl context, so released weights map.
_WAN_VAE = VAEConfig(base_dim=96, z_dim=16, num_res_blocks=2)
_UMT5 = TextConfig(kind="umt5", dim=4096, max_len=64)
# Qwen3.5-9B's text stack: 32 layers (3 gated delta nets : 1 full attention), width 4096.
_QWEN35_9B = VLMConfig(
    hidden_size=4096,
    num_layers=32,
    num_heads=16,
    num_kv_heads=4,
    head_dim=256,
    intermediate_size=12288,
    linear_heads=32,
    linear_head_dim=128,
)
# A Qwen3.5 of ~2B scale for the 1.3B video backbone.
_QWEN35_2B = VLMConfig(
    hidden_size=2048,
    num_layers=24,
    num_heads=8,
    num_kv_heads=2,
    head_dim=256,
    intermediate_size=6144,
    linear_heads=16,
    linear_head_dim=128,
)


def _wan(name: str, vlm: VLMConfig) -> ModelConfig:
    return ModelConfig(
        name=name,
        denoiser=replace(DENOISER_PRESETS[name], extra_context_dim=vlm.hidden_size),
        vae=_WAN_VAE,
        text=_UMT5,
        vlm=vlm,
        image_size=256,
        sampling_steps=30,
        sampling_shift=5.0,
        guidance_scale=5.0,
    )


MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": _tiny(),
    "small": _small(),
    "wan1_3b": _wan("wan1_3b", _QWEN35_2B),
    "wan14b": _wan("wan14b", _QWEN35_9B),
}


def get_preset(name: str) -> ModelConfig:
    """The named preset, or a ValueError that suggests the closest names."""
    if name in MODEL_PRESETS:
        return MODEL_PRESETS[name]
    close = difflib.get_close_matches(name, list(MODEL_PRESETS), n=2, cutoff=0.4)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model preset {name!r}{hint} (presets: {', '.join(MODEL_PRESETS)})")
