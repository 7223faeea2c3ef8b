"""Attention helpers shared by the denoiser: 3D RoPE and one attention call with three mask paths.

Token layout of the video tower (stated once, used everywhere in backend/model):
tokens are ordered ``(view, patch, frame)``: views outermost, then the patches of a view in
Z-order (:func:`patch_order`), the latent frame innermost. Attention is permutation-equivariant,
so this order changes nothing numerically against Wan's ``(frame, h, w)`` order; it is chosen
for the sight-cone mask. That mask is a per-patch relation that holds for every frame, so the
token mask is ``patch_mask ⊗ ones(F, F)``, and a contiguous run of tokens is a compact square
of patches whose cones cover a small part of another view. That is what lets a flex_attention
``BlockMask`` skip whole blocks: with frames outermost every block would mix all patches of a
frame, and with row-major patches a block is a thin strip that sees a wide band of the other
view (on our rig at 256 px, 9 frames and 128-token blocks: 86% of blocks visited row-major, 68%
in Z-order, for a 38% element density).

Mask paths of :func:`attention`:
- ``None``: full attention through ``F.scaled_dot_product_attention``.
- a bool tensor: dense masked SDPA (the reference path, and the training path on CPU).
- a :class:`ViewMask` (from ``sight_cone.build_attention_mask``): compiled ``flex_attention``
  with its block mask where that pays off (CUDA, or CPU inference at >= ``FLEX_MIN_TOKENS``
  tokens: inductor's CPU flex kernel is inference-only), dense masked SDPA otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Below this many keys dense SDPA beats flex on CPU even at low density (measured by
# `wallwm bench model`); compiled flex also costs a one-off compilation of ~20 s on CPU.
FLEX_MIN_TOKENS = 2048


@dataclass(frozen=True)
class ViewMask:
    """A token-level attention mask in the video tower's token layout.

    ``dense`` is bool ``(N, N)`` or ``(B, 1, N, N)`` (True = may attend), ``block_mask`` the same
    relation as a flex_attention ``BlockMask``. ``backend`` is ``"auto"``, ``"flex"`` or
    ``"dense"``; ``"auto"`` picks per call (see module docstring).
    """

    dense: torch.Tensor
    block_mask: Any  # torch.nn.attention.flex_attention.BlockMask
    frames: int  # latent frames per patch (the token mask repeats the patch mask over them)
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "flex", "dense"):
            raise ValueError(
                f"ViewMask.backend must be 'auto', 'flex' or 'dense', got {self.backend!r}"
            )

    @property
    def num_tokens(self) -> int:
        return self.dense.shape[-1]

    @property
    def density(self) -> float:
        """Fraction of allowed (query, key) pairs."""
        return float(self.dense.float().mean())

    def with_backend(self, backend: str) -> ViewMask:
        return ViewMask(self.dense, self.block_mask, self.frames, backend)


@functools.cache
def compiled_flex_attention() -> Any:
    """`flex_attention` compiled once per process (eager flex materialises the full score matrix)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _use_flex(mask: ViewMask, q: torch.Tensor) -> bool:
    if mask.backend != "auto":
        return mask.backend == "flex"
    if q.device.type == "cuda":
        return True
    return not (torch.is_grad_enabled() and q.requires_grad) and mask.num_tokens >= FLEX_MIN_TOKENS


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | ViewMask | None = None
) -> torch.Tensor:
    """Scaled dot-product attention over ``(B, heads, N, head_dim)`` tensors.

    ``mask``: None, a bool tensor broadcastable to ``(B, heads, Nq, Nk)`` (True = attend), or a
    :class:`ViewMask`. Returns ``(B, heads, Nq, head_dim)``.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if isinstance(mask, ViewMask):
        if _use_flex(mask, q):
            if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
                raise ValueError(
                    "flex_attention on CPU is inference-only; use ViewMask backend 'dense' or "
                    "'auto' for training"
                )
            return compiled_flex_attention()(q, k, v, block_mask=mask.block_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def patch_order(height: int, width: int) -> torch.Tensor:
    """Row-major patch indices ``(height * width,)`` sorted along the Z-order (Morton) curve."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    code = torch.zeros_like(ys)
    for bit in range(max(height, width).bit_length()):
        code |= ((xs >> bit) & 1) << (2 * bit) | ((ys >> bit) & 1) << (2 * bit + 1)
    return torch.argsort(code, stable=True)


def rope_freqs_1d(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations ``(length, dim // 2)`` for positions ``0..length-1`` (Wan2.1's rope_params)."""
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)


def rope_freqs_3d(
    head_dim: int, frames: int, height: int, width: int, num_views: int = 1, theta: float = 10000.0
) -> torch.Tensor:
    """Wan2.1's 3D RoPE, laid out for tokens ``(view, patch, frame)``: complex64 ``(N, head_dim // 2)``.

    Head channels split as in Wan2.1: ``head_dim - 4 * (head_dim // 6)`` for time, ``2 * (head_dim
    // 6)`` each for height and width. Every view reuses the same grid of positions; views are told
    apart by the learned view embedding.
    """
    if head_dim % 2:
        raise ValueError(f"attention_head_dim must be even for RoPE, got {head_dim}")
    hw_dim = 2 * (head_dim // 6)
    t_dim = head_dim - 2 * hw_dim
    ft = rope_freqs_1d(t_dim, frames, theta)  # (F, t_dim/2)
    fh = rope_freqs_1d(hw_dim, height, theta)  # (h, hw_dim/2)
    fw = rope_freqs_1d(hw_dim, width, theta)  # (w, hw_dim/2)
    grid = torch.cat(
        [
            ft.view(1, 1, frames, -1).expand(height, width, frames, -1),
            fh.view(height, 1, 1, -1).expand(height, width, frames, -1),
            fw.view(1, width, 1, -1).expand(height, width, frames, -1),
        ],
        dim=-1,
    )  # (h, w, F, head_dim/2)
    grid = grid.reshape(height * width, frames, -1)[patch_order(height, width)]  # (P, F, hd/2)
    return (
        grid.reshape(1, height * width * frames, -1)
        .expand(num_views, -1, -1)
        .reshape(num_views * height * width * frames, -1)
        .to(torch.complex64)
    )


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` ``(B, N, heads, head_dim)`` by ``freqs`` ``(N, head_dim/2)``."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, N, heads, hd/2)
    return torch.view_as_real(xc * freqs[None, :, None]).flatten(3).type_as(x)
