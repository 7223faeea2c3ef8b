"""The layer-coupled video-action denoiser (DESIGN §4), read top to bottom:
config → presets → embedders → blocks → heads → model.

Public interface (other modules call exactly these):

    cfg = DENOISER_PRESETS["tiny"]                      # or dataclasses.replace(cfg, ...)
    net = WorldActionDenoiser(cfg)
    video_v, action_v = net(video, actions, t_video, t_action, context, context_mask, state,
                            cond=None, view_mask=None, extra_context=None, compute_video=True,
                            obs_frames=None)
    kv = net.encode_video(video, t_video, context, context_mask, cond=None, view_mask=None,
                          extra_context=None, compute_video=False, obs_frames=None)  # VideoKV
    action_v = net.denoise_actions(actions, t_action, state, kv)    # reuse kv every step
    cond = i2v_condition(obs_latents, num_frames)                    # (B, V, 4 + C, F, h, w)

Shapes: ``video`` (B, V, C, F, h, w) noisy latents with C = ``out_channels``; ``cond``
(B, V, in_channels - out_channels, F, h, w) (Wan2.1-I2V layout: 4 mask channels + clean latents
of the current observation in latent frame 0, zeros elsewhere; see :func:`i2v_condition`);
``actions`` (B, H, action_dim) with H <= h_max (7 ee_pose_abs channels + the validity channel);
``t_video``, ``t_action`` (B,) in [0, 1] (1 = pure noise, the flow convention of
backend.model.flow); ``context`` (B, L, text_dim) instruction tokens with ``context_mask`` (B, L)
bool (True = real token; a row with no True token contributes nothing, which is how the
unconditional branch of classifier-free guidance is run); ``state`` (B, state_dim);
``extra_context`` (B, K, extra_context_dim) staircase states of the VLM, projected and appended
to the instruction tokens of both towers' cross-attention. ``view_mask``: a
``attention.ViewMask`` from ``sight_cone.build_attention_mask`` (None = full attention).
``obs_frames`` uint8 (B, V, H, W, 3): the observation in pixels, for configs with ``keypoints``
(soft-argmax keypoints that, with the state, condition the action tower's adaLN;
backend.model.keypoints).
Outputs: video velocity (B, V, out_channels, F, h, w) (None when ``compute_video`` is False) and
action velocity (B, H, action_dim).

Coupling: at every layer the action queries attend to [action keys; that layer's video keys];
video queries never see action keys, so the video output does not depend on the actions and
the video keys/values can be computed once and reused while only actions are denoised (the
action-only fast path: encode the video at t_video = 1, i.e. only the observation in ``cond``
is informative, then run ``denoise_actions`` for every step).

Parameter names are Wan2.1's (``patch_embedding``, ``text_embedding.{0,2}``,
``time_embedding.{0,2}``, ``time_projection.1``, ``blocks.N.{norm3, modulation, ffn.{0,2}}``,
``blocks.N.self_attn.{q,k,v,o,norm_q,norm_k}``, ``blocks.N.cross_attn.*``, ``head.head``,
``head.modulation``), so an original Wan2.1 checkpoint loads with ``strict=False`` (only our
additions are missing) and diffusers' layout maps through ``wan_mapping``.
Timesteps enter the sinusoidal embedding scaled to Wan's [0, 1000].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from backend.model.attention import ViewMask, apply_rope, attention, patch_order, rope_freqs_3d
from backend.model.keypoints import SpatialKeypoints
from backend.model.track import TRACK_FEATURES

# Parameter-name prefixes of what this denoiser adds to Wan2.1's video tower.
ADDITIONS = (
    "view_embedding",
    "patch_position_embedding",
    "extra_context_embedding",
    "action_",
    "future_patch_embedding",
    "future_action_embedding",
    "future_track_embedding",
)


@dataclass(frozen=True)
class DenoiserConfig:
    """Sizes of both towers. Video fields use Wan2.1 / diffusers' names and meanings."""

    # --- video tower (Wan2.1) ---
    in_channels: int = 36  # Wan2.1-I2V: 16 noisy latents + 4 mask + 16 clean observation latents
    out_channels: int = 16  # latent channels of the video autoencoder
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent patch per token, Wan's choice
    num_attention_heads: int = 4
    attention_head_dim: int = 32  # shared by both towers so action queries can read video keys
    ffn_dim: int = 512
    num_layers: int = 4
    text_dim: int = 384  # MiniLM token width for small presets, umT5's 4096 at Wan scale
    freq_dim: int = 256  # sinusoidal timestep features, Wan's value
    eps: float = 1e-6
    qk_norm: bool = True  # RMS-normed q/k across heads (Wan's "rms_norm_across_heads")
    cross_attn_norm: bool = True  # affine LayerNorm before cross-attention (Wan2.1 default)
    rope_max_seq_len: int = 1024  # longest RoPE axis (frames, patch rows or columns)
    # --- multi-view ---
    num_views: int = 3  # cameras; a learned, zero-initialised view embedding tells them apart
    # Absolute patch position: K sinusoidal frequencies per image axis of each token's (row,
    # column), through a learned zero-initialised linear. RoPE makes attention *scores*
    # position-aware but leaves the *values* position-free, so without this the action tower,
    # which reads video values, can see that a block is there but not where (0 = off, Wan's way).
    patch_position_frequencies: int = 0
    # --- action tower ---
    action_dim: int = 8  # 7 ee_pose_abs channels + 1 validity channel
    action_heads: int = 2  # action width = action_heads * attention_head_dim (narrower than video)
    action_ffn_dim: int = 256
    h_max: int = 32  # longest chunk: learned positions for this many action tokens
    state_dim: int = 7  # proprio state, one token in front of the actions
    # Soft-argmax keypoints per view of the observation frame in pixels, with the state through
    # an MLP into the action tower's adaLN conditioning (backend.model.keypoints; 0 = off: the
    # action tower sees the views only through the video tower's keys and values, the paper's).
    keypoints: int = 0
    # The keypoint MLP also reads the pooled instruction, so its vector can say where the
    # *named* object is ("go over the red button" among three); False: keypoints + state only.
    keypoint_text: bool = False
    # Instruction-queried keypoints per view: the pooled instruction makes query vectors that
    # are matched against the keypoint features at every pixel (0 = none).
    keypoint_queries: int = 0
    # --- conditioning ---
    extra_context_dim: int = 0  # width of VLM staircase states (0 = none); appended to the context
    # Future-frame expert: tokens of the latent frames after the observation go through their
    # own copy of every block's weights (and of the patch embedding); the observation's tokens
    # keep the shared ones. The action-only path (the closed-loop policy: the observation frame
    # alone) is then untouched by training the expert, which learns to imagine the future.
    future_expert: bool = False
    # Action-conditioned future: each latent frame after the observation also gets the 4
    # actions it spans (model units, validity included) through a zero-initialised linear
    # added to its tokens, so the imagined video shows the motion of a given chunk.
    future_actions: bool = False
    # End-effector track: each future latent frame's tokens also get the geometry of the chunk
    # in their view (backend.model.track: the offset from the patch to the projected gripper at
    # the frame's end and at the observation) through a zero-initialised linear, so the change
    # is drawn where the calibrated cameras see the arm go.
    future_track: bool = False

    def __post_init__(self) -> None:
        pos = {
            "out_channels": self.out_channels,
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "num_views": self.num_views,
            "action_dim": self.action_dim,
            "action_heads": self.action_heads,
            "action_ffn_dim": self.action_ffn_dim,
            "h_max": self.h_max,
            "state_dim": self.state_dim,
            "rope_max_seq_len": self.rope_max_seq_len,
        }
        for name, value in pos.items():
            if int(value) <= 0:
                raise ValueError(f"DenoiserConfig.{name} must be positive, got {value}")
        if self.in_channels < self.out_channels:
            raise ValueError(
                f"in_channels ({self.in_channels}) must be >= out_channels ({self.out_channels}): "
                "the input is [noisy latents, conditioning channels]"
            )
        if len(self.patch_size) != 3 or min(self.patch_size) <= 0:
            raise ValueError(f"patch_size must be three positive ints, got {self.patch_size}")
        if self.attention_head_dim % 2:
            raise ValueError(
                f"attention_head_dim must be even (RoPE), got {self.attention_head_dim}"
            )
        if self.extra_context_dim < 0:
            raise ValueError(f"extra_context_dim must be >= 0, got {self.extra_context_dim}")
        if self.patch_position_frequencies < 0:
            raise ValueError(
                f"patch_position_frequencies must be >= 0, got {self.patch_position_frequencies}"
            )
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim must be even, got {self.freq_dim}")
        if self.keypoints < 0:
            raise ValueError(f"keypoints must be >= 0, got {self.keypoints}")
        if self.keypoint_queries < 0 or (self.keypoint_queries and not self.keypoints):
            raise ValueError(
                f"keypoint_queries must be >= 0 and needs keypoints > 0, got "
                f"{self.keypoint_queries} with keypoints={self.keypoints}"
            )

    @property
    def dim(self) -> int:
        """Video tower width."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def action_width(self) -> int:
        return self.action_heads * self.attention_head_dim

    @property
    def cond_channels(self) -> int:
        return self.in_channels - self.out_channels


DENOISER_PRESETS: dict[str, DenoiserConfig] = {
    # CPU: ~3M parameters, trains in minutes on 64x64 views. h_max 16: the sim's events last 3-18
    # steps, so almost none is split, and the video tokens are half of h_max 32's.
    "tiny": DenoiserConfig(
        num_attention_heads=6,
        attention_head_dim=32,
        ffn_dim=768,
        num_layers=4,
        text_dim=384,
        action_heads=2,
        action_ffn_dim=256,
        h_max=16,
        patch_position_frequencies=4,
    ),
    # One GPU: ~40M parameters.
    "small": DenoiserConfig(
        num_attention_heads=8,
        attention_head_dim=64,
        ffn_dim=2048,
        num_layers=8,
        text_dim=384,
        action_heads=4,
        action_ffn_dim=1024,
    ),
    # Wan2.1-1.3B backbone (dim 1536, 30 layers, 12 heads, ffn 8960, umT5 context).
    "wan1_3b": DenoiserConfig(
        num_attention_heads=12,
        attention_head_dim=128,
        ffn_dim=8960,
        num_layers=30,
        text_dim=4096,
        action_heads=4,
        action_ffn_dim=2048,
    ),
    # Wan2.1-14B backbone (dim 5120, 40 layers, 40 heads, ffn 13824), the paper's scale.
    "wan14b": DenoiserConfig(
        num_attention_heads=40,
        attention_head_dim=128,
        ffn_dim=13824,
        num_layers=40,
        text_dim=4096,
        action_heads=4,
        action_ffn_dim=2048,
    ),
}


# ----------------------------------------------------------------------------- embedders


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan2.1's timestep features ``[cos, sin]`` of ``t`` (B,) on Wan's 0..1000 scale -> (B, dim)."""
    half = dim // 2
    pos = t.to(torch.float64) * 1000.0
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(pos, freqs)  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def i2v_condition(obs_latents: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Wan2.1-I2V conditioning channels: ``obs_latents`` (B, V, C, 1, h, w) -> (B, V, 4 + C, F, h, w).

    Four mask channels are 1 on latent frame 0 (Wan's mask covers the 4 video frames a latent
    frame stands for; frame 0 is the observation alone) and 0 elsewhere; the clean latents sit in
    frame 0 with zeros after it.
    """
    if obs_latents.ndim != 6 or obs_latents.shape[3] != 1:
        raise ValueError(f"obs_latents must be (B, V, C, 1, h, w), got {tuple(obs_latents.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    B, V, C, _, h, w = obs_latents.shape
    out = obs_latents.new_zeros(B, V, 4 + C, num_frames, h, w)
    out[:, :, :4, 0] = 1.0
    out[:, :, 4:, :1] = obs_latents
    return out


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activation dtype (Wan's WanLayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


class Attention(nn.Module):
    """Wan2.1 attention: q/k/v/o linears and RMS norms on q and k across all heads.

    ``q_dim`` is the query stream's width, ``kv_dim`` the key/value stream's, ``inner`` =
    heads * head_dim. The video tower uses one width for all three; the action tower's joint
    attention projects its narrow stream up to the video tower's heads so its keys line up with
    the video keys of the same layer.
    """

    def __init__(self, q_dim: int, kv_dim: int, inner: int, heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(q_dim, inner)
        self.k = nn.Linear(kv_dim, inner)
        self.v = nn.Linear(kv_dim, inner)
        self.o = nn.Linear(inner, q_dim)
        self.norm_q = nn.RMSNorm(inner, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(inner, eps=eps) if qk_norm else nn.Identity()

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_q(self.q(x)).unflatten(-1, (self.heads, -1))  # (B, N, heads, hd)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values in one matmul (weights fused on the fly, names stay Wan's)."""
        kv = F.linear(
            x, torch.cat([self.k.weight, self.v.weight]), torch.cat([self.k.bias, self.v.bias])
        )
        k, v = kv.chunk(2, dim=-1)
        return self.norm_k(k).unflatten(-1, (self.heads, -1)), v.unflatten(-1, (self.heads, -1))

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention q, k, v (B, N, heads, hd) in one matmul."""
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        q, k, v = F.linear(x, w, torch.cat([self.q.bias, self.k.bias, self.v.bias])).chunk(
            3, dim=-1
        )
        split = (self.heads, -1)
        return (
            self.norm_q(q).unflatten(-1, split),
            self.norm_k(k).unflatten(-1, split),
            v.unflatten(-1, split),
        )

    def out(self, y: torch.Tensor) -> torch.Tensor:
        return self.o(y.transpose(1, 2).flatten(2))  # (B, heads, N, hd) -> (B, N, q_dim)

    def cross(
        self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-attention of ``x`` (B, N, q_dim) to ``ctx`` (B, L, kv_dim); ``ctx_mask`` (B, L) or None."""
        q = self.project_q(x).transpose(1, 2)  # (B, heads, N, hd)
        k, v = self.project_kv(ctx)
        if ctx_mask is None:
            return self.out(attention(q, k.transpose(1, 2), v.transpose(1, 2)))
        any_valid = ctx_mask.any(dim=1)  # (B,)
        safe = ctx_mask | ~any_valid[:, None]  # an all-masked row would give NaN; zeroed below
        y = attention(q, k.transpose(1, 2), v.transpose(1, 2), safe[:, None, None, :])
        return self.out(y * any_valid[:, None, None, None].to(y.dtype))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` as one fused multiply-add."""
    return torch.addcmul(shift, x, 1 + scale)


class WanBlock(nn.Module):
    """A Wan2.1 DiT block (video tower). ``norm3`` is Wan's cross-attention norm, ``norm2`` the FFN's.

    With the config's `future_expert`, ``future`` holds a second set of the block's weights for
    the tokens of the frames after the observation (``parts`` in `forward`); the two groups
    still attend to each other in one self-attention.
    """

    def __init__(self, cfg: DenoiserConfig, expert: bool = True):
        super().__init__()
        d, h = cfg.dim, cfg.num_attention_heads
        self.norm1 = LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = Attention(d, d, d, h, cfg.qk_norm, cfg.eps)
        self.norm3 = (
            LayerNorm(d, eps=cfg.eps, elementwise_affine=True)
            if cfg.cross_attn_norm
            else nn.Identity()
        )
        self.cross_attn = Attention(d, d, d, h, cfg.qk_norm, cfg.eps)
        self.norm2 = LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d**0.5)
        self.future = WanBlock(cfg, expert=False) if expert and cfg.future_expert else None

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        freqs: torch.Tensor,
        ctx: torch.Tensor,
        ctx_mask: torch.Tensor | None,
        view_mask: ViewMask | None,
        parts: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, D), e (B, 6, D) -> x, and this layer's keys/values (B, heads, N, hd) for coupling.

        `parts`: (observation, future) token indices, when the block has a future expert and the
        tokens include frames after the observation.
        """
        if parts is not None and self.future is not None:
            return self._forward_parts(x, e, freqs, ctx, ctx_mask, view_mask, parts)
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).chunk(6, dim=1)
        y = _modulate(self.norm1(x).float(), shift1, scale1).type_as(x)
        q, k, v = self.self_attn.project_qkv(y)  # (B, N, heads, hd) each
        q = apply_rope(q, freqs).transpose(1, 2)  # (B, heads, N, hd)
        k = apply_rope(k, freqs).transpose(1, 2)
        v = v.transpose(1, 2)
        x = torch.addcmul(x, self.self_attn.out(attention(q, k, v, view_mask)), gate1)
        x = x + self.cross_attn.cross(self.norm3(x), ctx, ctx_mask)
        y = _modulate(self.norm2(x).float(), shift2, scale2).type_as(x)
        x = torch.addcmul(x, self.ffn(y), gate2)
        return x, k, v

    def _forward_parts(self, x, e, freqs, ctx, ctx_mask, view_mask, parts):
        """`forward` with the observation's tokens on this block's weights and the future's on
        the expert's: per-group projections, one joint self-attention."""
        groups = tuple(zip((self, self.future), parts, strict=True))
        mods = [(w.modulation + e).chunk(6, dim=1) for w, _ in groups]
        xn = self.norm1(x).float()
        qkv = [
            w.self_attn.project_qkv(_modulate(xn[:, i], m[0], m[1]).type_as(x))
            for (w, i), m in zip(groups, mods)
        ]
        q, k, v = (_scatter([t[j] for t in qkv], parts, x.shape[1]) for j in range(3))
        q = apply_rope(q, freqs).transpose(1, 2)  # (B, heads, N, hd)
        k = apply_rope(k, freqs).transpose(1, 2)
        v = v.transpose(1, 2)
        y = attention(q, k, v, view_mask)  # (B, heads, N, hd)
        out = []
        for (w, i), m in zip(groups, mods):
            xi = torch.addcmul(x[:, i], w.self_attn.out(y[:, :, i]), m[2])
            xi = xi + w.cross_attn.cross(w.norm3(xi), ctx, ctx_mask)
            h = _modulate(self.norm2(xi).float(), m[3], m[4]).type_as(x)
            out.append(torch.addcmul(xi, w.ffn(h), m[5]))
        return _scatter(out, parts, x.shape[1]), k, v


def _scatter(values: list[torch.Tensor], parts, n: int) -> torch.Tensor:
    """Token groups (B, n_i, ...) back into one (B, n, ...) tensor at their indices."""
    out = values[0].new_empty(values[0].shape[0], n, *values[0].shape[2:])
    for value, index in zip(values, parts, strict=True):
        out[:, index] = value
    return out


class ActionBlock(nn.Module):
    """An action-tower block: Wan's block at the action width, its self-attention joined to video.

    Queries (state + action tokens) attend to [action keys; video keys of the same layer]; the
    joint attention works at the video tower's heads so the video keys are used unchanged.
    """

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        a, d = cfg.action_width, cfg.dim
        self.norm1 = LayerNorm(a, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = Attention(a, a, d, cfg.num_attention_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = (
            LayerNorm(a, eps=cfg.eps, elementwise_affine=True)
            if cfg.cross_attn_norm
            else nn.Identity()
        )
        self.cross_attn = Attention(a, d, a, cfg.action_heads, cfg.qk_norm, cfg.eps)
        self.norm2 = LayerNorm(a, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(a, cfg.action_ffn_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(cfg.action_ffn_dim, a),
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, a) / a**0.5)

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        video_k: torch.Tensor,
        video_v: torch.Tensor,
        ctx: torch.Tensor,
        ctx_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, 1 + H, A), e (B, 6, A), video_k/v (B, heads, N, hd) -> x."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).chunk(6, dim=1)
        y = _modulate(self.norm1(x).float(), shift1, scale1).type_as(x)
        q, k, v = self.self_attn.project_qkv(y)  # (B, 1 + H, heads, hd) each
        k = torch.cat([k.transpose(1, 2), video_k], dim=2)  # (B, heads, 1 + H + N, hd)
        v = torch.cat([v.transpose(1, 2), video_v], dim=2)
        x = torch.addcmul(x, self.self_attn.out(attention(q.transpose(1, 2), k, v)), gate1)
        x = x + self.cross_attn.cross(self.norm3(x), ctx, ctx_mask)
        y = _modulate(self.norm2(x).float(), shift2, scale2).type_as(x)
        return torch.addcmul(x, self.ffn(y), gate2)


class Head(nn.Module):
    """Wan2.1's output head: adaLN (shift, scale) from the timestep embedding, then a linear."""

    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation + e.unsqueeze(1)).chunk(2, dim=1)  # (B, 1, D) each
        return self.head(_modulate(self.norm(x).float(), shift, scale).type_as(x))


# ----------------------------------------------------------------------------- model


@dataclass
class VideoKV:
    """What the action tower needs from one video-tower pass, reusable across action steps."""

    keys: list[torch.Tensor]  # per layer (B, heads, N, hd), RMS-normed and rotated
    values: list[torch.Tensor]  # per layer (B, heads, N, hd)
    context: torch.Tensor  # (B, L + K, D) instruction (+ staircase) tokens after text_embedding
    context_mask: torch.Tensor | None  # (B, L + K) bool, None = all valid
    velocity: torch.Tensor | None = None  # (B, V, C, F, h, w) when computed
    grid: tuple[int, int, int] = field(default=(0, 0, 0))  # (F, h, w) in tokens
    obs_points: torch.Tensor | None = None  # (B, V, K, 2) keypoints of the observation frame
    obs_features: torch.Tensor | None = None  # (B, V, C, h, w) for instruction-queried keypoints


class WorldActionDenoiser(nn.Module):
    """Video tower (Wan2.1 DiT) + action tower coupled at every layer; see module docstring."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        d, a = cfg.dim, cfg.action_width
        # video tower, Wan2.1 names
        self.patch_embedding = nn.Conv3d(
            cfg.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.future_action_embedding = (
            nn.Linear(4 * cfg.action_dim, d) if cfg.future_actions else None
        )
        self.future_track_embedding = nn.Linear(TRACK_FEATURES, d) if cfg.future_track else None
        self.future_patch_embedding = (
            nn.Conv3d(cfg.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
            if cfg.future_expert
            else None
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, d * 6))
        self.blocks = nn.ModuleList([WanBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(d, cfg.out_channels * math.prod(cfg.patch_size), cfg.eps)
        # additions: view embedding, staircase projection, action tower
        self.view_embedding = nn.Parameter(torch.zeros(cfg.num_views, d))
        k = cfg.patch_position_frequencies
        self.patch_position_embedding = nn.Linear(4 * k, d) if k else None
        self.extra_context_embedding = (
            nn.Sequential(
                nn.Linear(cfg.extra_context_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d)
            )
            if cfg.extra_context_dim
            else None
        )
        self.action_embedding = nn.Linear(cfg.action_dim, a)
        self.action_state_embedding = nn.Linear(cfg.state_dim, a)
        self.action_pos_embedding = nn.Parameter(torch.zeros(1, 1 + cfg.h_max, a))
        self.action_time_embedding = nn.Sequential(
            nn.Linear(cfg.freq_dim, a), nn.SiLU(), nn.Linear(a, a)
        )
        self.action_time_projection = nn.Sequential(nn.SiLU(), nn.Linear(a, a * 6))
        self.action_blocks = nn.ModuleList([ActionBlock(cfg) for _ in range(cfg.num_layers)])
        self.obs_keypoints = (
            SpatialKeypoints(
                cfg.keypoints,
                a,
                cfg.num_views,
                cfg.state_dim,
                text_width=d,
                embed_text=cfg.keypoint_text,
                queries=cfg.keypoint_queries,
            )
            if cfg.keypoints
            else None
        )
        self.action_head = Head(a, cfg.action_dim, cfg.eps)
        self._layout_cache: dict[tuple, torch.Tensor] = {}
        self.init_weights()

    def init_weights(self) -> None:
        """Wan2.1's init: xavier linears, N(0, 0.02) embedders, zero output heads."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (
            self.text_embedding,
            self.time_embedding,
            self.action_time_embedding,
            self.extra_context_embedding,
        ):
            for m in seq.modules() if seq is not None else ():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        # Zero heads: the first step predicts zero velocity, as in Wan and DiT.
        nn.init.zeros_(self.head.head.weight)
        nn.init.zeros_(self.action_head.head.weight)
        # Positions start small so the action tokens first read as a set; the view embedding
        # starts at zero so a mapped Wan2.1 checkpoint initially behaves exactly like Wan.
        nn.init.normal_(self.action_pos_embedding, std=0.02)
        nn.init.zeros_(self.view_embedding)
        for m in (
            self.patch_position_embedding,
            self.future_action_embedding,
            self.future_track_embedding,
        ):
            if m is not None:  # new inputs change nothing at first
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        if self.obs_keypoints is not None:  # fresh keypoints change nothing at first
            self.obs_keypoints.zero_output()
        self.init_future_expert()

    @torch.no_grad()
    def init_future_expert(self) -> None:
        """Start the future expert (if any) as a copy of the shared weights: the model then
        computes exactly what it did without one."""
        if self.future_patch_embedding is None:
            return
        self.future_patch_embedding.load_state_dict(self.patch_embedding.state_dict())
        for block in self.blocks:
            shared = {k: v for k, v in block.state_dict().items() if not k.startswith("future.")}
            block.future.load_state_dict(shared)

    # ------------------------------------------------------------------ helpers

    def _freqs(self, frames: int, h: int, w: int, views: int, device: torch.device) -> torch.Tensor:
        key = (frames, h, w, views, str(device))
        if key not in self._layout_cache:
            longest = max(frames, h, w)
            if longest > self.cfg.rope_max_seq_len:
                raise ValueError(
                    f"token grid {frames}x{h}x{w} exceeds rope_max_seq_len={self.cfg.rope_max_seq_len}"
                )
            self._layout_cache[key] = rope_freqs_3d(
                self.cfg.attention_head_dim, frames, h, w, views
            ).to(device)
        return self._layout_cache[key]

    def _order(self, h: int, w: int, device: torch.device, inverse: bool = False) -> torch.Tensor:
        """Z-order of the patches of one view (or its inverse), cached per grid."""
        key = ("order", h, w, str(device), inverse)
        if key not in self._layout_cache:
            order = patch_order(h, w)
            self._layout_cache[key] = (torch.argsort(order) if inverse else order).to(device)
        return self._layout_cache[key]

    def _patch_positions(self, h: int, w: int, frames: int, device: torch.device) -> torch.Tensor:
        """Sinusoidal (row, column) features (h*w*frames, 4K) in the token layout of one view."""
        key = ("pos", h, w, frames, str(device))
        if key not in self._layout_cache:
            idx = patch_order(h, w)  # patch indices (row-major) in token order
            rc = torch.stack(
                [(idx // w + 0.5) / h, (idx % w + 0.5) / w], dim=1
            )  # (h*w, 2) in (0, 1)
            k = self.cfg.patch_position_frequencies
            angles = rc[:, :, None] * (math.pi * 2.0 ** torch.arange(k))  # (h*w, 2, K)
            feats = torch.cat([angles.sin(), angles.cos()], dim=2).flatten(1)  # (h*w, 4K)
            self._layout_cache[key] = feats.repeat_interleave(frames, dim=0).to(device)
        return self._layout_cache[key]

    def _future_parts(self, views: int, grid: tuple[int, int, int], device) -> tuple | None:
        """(observation, future) token indices in the (view, patch, frame) layout, or None
        without a future expert or without future frames."""
        f, h, w = grid
        if self.future_patch_embedding is None or f < 2:
            return None
        key = ("parts", views, grid, str(device))
        if key not in self._layout_cache:
            future = torch.arange(views * h * w * f, device=device) % f != 0
            self._layout_cache[key] = (future.logical_not().nonzero()[:, 0], future.nonzero()[:, 0])
        return self._layout_cache[key]

    def _patchify(self, x: torch.Tensor, parts: tuple | None = None) -> torch.Tensor:
        """(B, V, Cin, F, H, W) -> tokens (B, V*h*w*f, D) in layout (view, patch, frame).

        The Conv3d with stride = kernel is a linear map of each patch; done as one matmul.
        `parts`: the future tokens take the future expert's patch embedding.
        """
        B, V, C, Fr, H, W = x.shape
        pt, ph, pw = self.cfg.patch_size
        f, h, w = Fr // pt, H // ph, W // pw
        x = x.reshape(B, V, C, f, pt, h, ph, w, pw)
        x = x.permute(0, 1, 5, 7, 3, 2, 4, 6, 8)  # (B, V, h, w, f, C, pt, ph, pw)
        x = x.reshape(B, V, h * w, f, C * pt * ph * pw)[:, :, self._order(h, w, x.device)]
        x = x.reshape(B, V * h * w * f, C * pt * ph * pw)  # patches in Z-order
        if parts is None:
            return F.linear(x, self.patch_embedding.weight.flatten(1), self.patch_embedding.bias)
        embed = (self.patch_embedding, self.future_patch_embedding)
        return _scatter(
            [F.linear(x[:, i], m.weight.flatten(1), m.bias) for m, i in zip(embed, parts)],
            parts,
            x.shape[1],
        )

    def _unpatchify(
        self, x: torch.Tensor, B: int, V: int, grid: tuple[int, int, int]
    ) -> torch.Tensor:
        """(B, V*h*w*f, pt*ph*pw*C) tokens (view, patch, frame) -> (B, V, C, f*pt, h*ph, w*pw)."""
        f, h, w = grid
        pt, ph, pw = self.cfg.patch_size
        x = x.reshape(B, V, h * w, f, -1)[:, :, self._order(h, w, x.device, inverse=True)]
        x = x.reshape(B, V, h, w, f, pt, ph, pw, -1)
        x = x.permute(0, 1, 8, 4, 5, 2, 6, 3, 7)  # (B, V, C, f, pt, h, ph, w, pw)
        return x.reshape(B, V, -1, f * pt, h * ph, w * pw)

    def _context(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        extra_context: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.cfg
        if context.ndim != 3 or context.shape[-1] != cfg.text_dim:
            raise ValueError(f"context must be (B, L, {cfg.text_dim}), got {tuple(context.shape)}")
        ctx = self.text_embedding(context)  # (B, L, D)
        mask = context_mask
        if mask is not None and mask.shape != context.shape[:2]:
            raise ValueError(
                f"context_mask must be {tuple(context.shape[:2])}, got {tuple(mask.shape)}"
            )
        if extra_context is not None:
            if self.extra_context_embedding is None:
                raise ValueError("extra_context given but this config has extra_context_dim=0")
            if extra_context.ndim != 3 or extra_context.shape[-1] != cfg.extra_context_dim:
                raise ValueError(
                    f"extra_context must be (B, K, {cfg.extra_context_dim}), got {tuple(extra_context.shape)}"
                )
            ctx = torch.cat(
                [ctx, self.extra_context_embedding(extra_context)], dim=1
            )  # (B, L + K, D)
            if mask is not None:
                # A row without instruction tokens is the unconditional branch: it sees no
                # staircase states either (they carry the task).
                present = mask.bool().any(dim=1, keepdim=True)  # (B, 1)
                mask = torch.cat([mask.bool(), present.expand(-1, extra_context.shape[1])], dim=1)
        if mask is not None:
            mask = mask.bool()
            if bool(mask.all()):
                mask = None  # all tokens real: skip masking (faster, identical)
        return ctx, mask

    # ------------------------------------------------------------------ towers

    def encode_video(
        self,
        video: torch.Tensor,
        t_video: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        cond: torch.Tensor | None = None,
        view_mask: ViewMask | None = None,
        extra_context: torch.Tensor | None = None,
        compute_video: bool = False,
        obs_frames: torch.Tensor | None = None,
        future_actions: torch.Tensor | None = None,
        future_track: torch.Tensor | None = None,
    ) -> VideoKV:
        """Run the video tower once; return every layer's keys/values (and the velocity if asked).

        `obs_frames` uint8 (B, V, H, W, 3): the observation in pixels, required when the config
        has `keypoints` (their keypoints come with the keys and values, for the action tower).
        `future_actions` (B, 4 (F - 1), action_dim): the chunk the future frames are imagined
        under (config `future_actions`; None: no action input, as for the observation alone).
        `future_track` (B, V, F - 1, h * w, TRACK_FEATURES): that chunk's end-effector track
        (backend.model.track.track_features; config `future_track`).
        """
        cfg = self.cfg
        if video.ndim != 6 or video.shape[2] != cfg.out_channels:
            raise ValueError(
                f"video must be (B, V, {cfg.out_channels}, F, h, w) latents, got {tuple(video.shape)}"
            )
        B, V, _, Fr, H, W = video.shape
        if cfg.num_views < V:
            raise ValueError(f"got {V} views, the config has num_views={cfg.num_views}")
        pt, ph, pw = cfg.patch_size
        if Fr % pt or H % ph or W % pw:
            raise ValueError(
                f"latent size {Fr}x{H}x{W} is not divisible by patch_size {cfg.patch_size}"
            )
        if cfg.cond_channels:
            if cond is None:
                raise ValueError(
                    f"cond (B, V, {cfg.cond_channels}, F, h, w) is required by this config"
                )
            if cond.shape != (B, V, cfg.cond_channels, Fr, H, W):
                raise ValueError(
                    f"cond must be {(B, V, cfg.cond_channels, Fr, H, W)}, got {tuple(cond.shape)}"
                )
            video = torch.cat([video, cond.to(video.dtype)], dim=2)  # (B, V, Cin, F, H, W)
        elif cond is not None:
            raise ValueError("cond given but in_channels == out_channels leaves no room for it")
        if t_video.shape != (B,):
            raise ValueError(f"t_video must be ({B},), got {tuple(t_video.shape)}")
        grid = (Fr // pt, H // ph, W // pw)
        n_tok = V * math.prod(grid)
        if view_mask is not None and view_mask.num_tokens != n_tok:
            raise ValueError(
                f"view_mask covers {view_mask.num_tokens} tokens, the video has {n_tok} "
                f"({V} views x {grid[1]}x{grid[2]} patches x {grid[0]} frames)"
            )

        parts = self._future_parts(V, grid, video.device)
        x = self._patchify(video, parts)  # (B, N, D)
        per_view = math.prod(grid)
        x = x.view(B, V, per_view, -1) + self.view_embedding[:V, None]
        if self.patch_position_embedding is not None:
            pos = self._patch_positions(grid[1], grid[2], grid[0], x.device)  # (per_view, 4K)
            x = x + self.patch_position_embedding(pos.to(x.dtype))
        if future_actions is not None and self.future_action_embedding is not None and grid[0] > 1:
            x = self._add_future_actions(x, future_actions, grid)
        if future_track is not None and self.future_track_embedding is not None and grid[0] > 1:
            x = self._add_future_track(x, future_track, grid)
        x = x.view(B, n_tok, -1)
        freqs = self._freqs(*grid, V, x.device)  # (N, hd/2)
        e = self.time_embedding(sinusoidal_embedding(t_video, cfg.freq_dim))  # (B, D)
        e0 = self.time_projection(e).unflatten(1, (6, -1))  # (B, 6, D)
        ctx, ctx_mask = self._context(context, context_mask, extra_context)

        keys, values = [], []
        for block in self.blocks:
            x, k, v = block(x, e0, freqs, ctx, ctx_mask, view_mask, parts)
            keys.append(k)
            values.append(v)
        velocity = None
        if compute_video:
            velocity = self._unpatchify(self.head(x, e), B, V, grid)  # (B, V, C, F, h, w)
        return VideoKV(keys, values, ctx, ctx_mask, velocity, grid, *self._look(obs_frames, B))

    def _add_future_actions(
        self, x: torch.Tensor, actions: torch.Tensor, grid: tuple[int, int, int]
    ) -> torch.Tensor:
        """x (B, V, h*w*f, D): add to every token of latent frame k >= 1 the embedding of the
        4 actions it spans."""
        B, V, _, D = x.shape
        f = grid[0]
        if actions.shape[0] != B or actions.shape[1:] != (4 * (f - 1), self.cfg.action_dim):
            raise ValueError(
                f"future_actions must be ({B}, {4 * (f - 1)}, {self.cfg.action_dim}), "
                f"got {tuple(actions.shape)}"
            )
        e = self.future_action_embedding(actions.reshape(B, f - 1, -1).to(x.dtype))  # (B, f-1, D)
        e = torch.cat([e.new_zeros(B, 1, D), e], dim=1)  # the observation's frame: none
        return (x.view(B, V, -1, f, D) + e[:, None, None]).view(B, V, -1, D)

    def _add_future_track(
        self, x: torch.Tensor, track: torch.Tensor, grid: tuple[int, int, int]
    ) -> torch.Tensor:
        """x (B, V, h*w*f, D): add to every token of latent frame k >= 1 the embedding of its
        patch's end-effector track features (rows in row-major patch order)."""
        B, V, _, D = x.shape
        f, h, w = grid
        if track.shape != (B, V, f - 1, h * w, TRACK_FEATURES):
            raise ValueError(
                f"future_track must be {(B, V, f - 1, h * w, TRACK_FEATURES)}, "
                f"got {tuple(track.shape)}"
            )
        order = patch_order(h, w).to(track.device)
        e = self.future_track_embedding(track[:, :, :, order].to(x.device, x.dtype))
        e = torch.cat([e.new_zeros(B, V, 1, h * w, D), e], dim=2)  # the observation: none
        return (x.view(B, V, h * w, f, D) + e.transpose(2, 3)).view(B, V, -1, D)

    def _look(
        self, obs_frames: torch.Tensor | None, batch: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.obs_keypoints is None:
            return None, None
        if obs_frames is None:
            raise ValueError(
                f"this config has keypoints={self.cfg.keypoints}: pass obs_frames (B, V, H, W, 3)"
            )
        if obs_frames.shape[0] != batch:
            raise ValueError(f"obs_frames has batch {obs_frames.shape[0]}, the video {batch}")
        return self.obs_keypoints.look(obs_frames)

    def denoise_actions(
        self, actions: torch.Tensor, t_action: torch.Tensor, state: torch.Tensor, video_kv: VideoKV
    ) -> torch.Tensor:
        """Action tower: (B, H, action_dim) noisy actions -> (B, H, action_dim) velocity."""
        cfg = self.cfg
        if actions.ndim != 3 or actions.shape[-1] != cfg.action_dim or actions.shape[1] > cfg.h_max:
            raise ValueError(
                f"actions must be (B, H <= {cfg.h_max}, {cfg.action_dim}), got {tuple(actions.shape)}"
            )
        B, H, _ = actions.shape
        if state.shape != (B, cfg.state_dim):
            raise ValueError(f"state must be ({B}, {cfg.state_dim}), got {tuple(state.shape)}")
        if t_action.shape != (B,):
            raise ValueError(f"t_action must be ({B},), got {tuple(t_action.shape)}")
        x = torch.cat(
            [self.action_state_embedding(state)[:, None], self.action_embedding(actions)], dim=1
        )
        x = x + self.action_pos_embedding[:, : 1 + H]  # (B, 1 + H, A)
        e = self.action_time_embedding(sinusoidal_embedding(t_action, cfg.freq_dim))  # (B, A)
        if self.obs_keypoints is not None:  # where things are, where the hand is: into adaLN
            if video_kv.obs_points is None:
                raise ValueError("this config has keypoints: encode_video needs obs_frames")
            text = pooled_context(video_kv)
            kp = self.obs_keypoints.embed(video_kv.obs_points, state, text, video_kv.obs_features)
            e = e + kp.to(e.dtype)
        e0 = self.action_time_projection(e).unflatten(1, (6, -1))  # (B, 6, A)
        for block, k, v in zip(self.action_blocks, video_kv.keys, video_kv.values, strict=True):
            x = block(x, e0, k, v, video_kv.context, video_kv.context_mask)
        return self.action_head(x[:, 1:], e)  # (B, H, action_dim)

    def forward(
        self,
        video: torch.Tensor,
        actions: torch.Tensor,
        t_video: torch.Tensor,
        t_action: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        state: torch.Tensor,
        cond: torch.Tensor | None = None,
        view_mask: ViewMask | None = None,
        extra_context: torch.Tensor | None = None,
        compute_video: bool = True,
        obs_frames: torch.Tensor | None = None,
        future_actions: torch.Tensor | None = None,
        future_track: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Joint denoising step: (video velocity or None, action velocity)."""
        kv = self.encode_video(
            video,
            t_video,
            context,
            context_mask,
            cond,
            view_mask,
            extra_context,
            compute_video,
            obs_frames,
            future_actions,
            future_track,
        )
        return kv.velocity, self.denoise_actions(actions, t_action, state, kv)


def pooled_context(kv: VideoKV) -> torch.Tensor:
    """(B, D) mean of the context tokens a row has (zeros for the unconditional branch)."""
    ctx, mask = kv.context, kv.context_mask
    if mask is None:
        return ctx.mean(1)
    w = mask.to(ctx.dtype)[..., None]
    return (ctx * w).sum(1) / w.sum(1).clamp(min=1.0)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


def is_addition(name: str) -> bool:
    """Whether a denoiser parameter is ours only (no Wan2.1 counterpart): the view and patch
    position embeddings, the staircase projection, the action tower, the future expert."""
    return name.startswith(ADDITIONS) or ".future." in name


def video_tower_parameters(net: WorldActionDenoiser) -> int:
    """Parameters of the Wan2.1 part alone (what a Wan2.1 checkpoint holds)."""
    return sum(p.numel() for n, p in net.named_parameters() if not is_addition(n))
