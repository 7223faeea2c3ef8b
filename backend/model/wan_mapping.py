"""Parameter names: diffusers' ``WanTransformer3DModel`` ↔ Wan2.1's original ``WanModel`` (ours).

The denoiser keeps the original Wan2.1 names (Wan-Video/Wan2.1 ``wan/modules/model.py``) rather
than diffusers' because the released Wan2.1 checkpoints, and the tools around them, use those
names; the modules behind them are plain ``nn.Linear``/``nn.Sequential`` with no attention
processor indirection, which keeps the tower one readable file. Diffusers' layout is one rename
away, both ways, with this table. Two renames are not one-to-one look-alikes: Wan's ``norm3`` is
the (affine) cross-attention norm that diffusers calls ``norm2``, and Wan's parameter-free FFN
norm ``norm2`` is diffusers' ``norm3`` (no tensors, so it never appears in a state dict).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from backend.model.denoiser import DenoiserConfig, WorldActionDenoiser, is_addition

# (diffusers, Wan2.1) name templates; "{n}" is a block index. Weight and bias follow the module.
_MODULES: tuple[tuple[str, str], ...] = (
    ("patch_embedding", "patch_embedding"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("blocks.{n}.attn1.to_q", "blocks.{n}.self_attn.q"),
    ("blocks.{n}.attn1.to_k", "blocks.{n}.self_attn.k"),
    ("blocks.{n}.attn1.to_v", "blocks.{n}.self_attn.v"),
    ("blocks.{n}.attn1.to_out.0", "blocks.{n}.self_attn.o"),
    ("blocks.{n}.attn1.norm_q", "blocks.{n}.self_attn.norm_q"),
    ("blocks.{n}.attn1.norm_k", "blocks.{n}.self_attn.norm_k"),
    ("blocks.{n}.attn2.to_q", "blocks.{n}.cross_attn.q"),
    ("blocks.{n}.attn2.to_k", "blocks.{n}.cross_attn.k"),
    ("blocks.{n}.attn2.to_v", "blocks.{n}.cross_attn.v"),
    ("blocks.{n}.attn2.to_out.0", "blocks.{n}.cross_attn.o"),
    ("blocks.{n}.attn2.norm_q", "blocks.{n}.cross_attn.norm_q"),
    ("blocks.{n}.attn2.norm_k", "blocks.{n}.cross_attn.norm_k"),
    # Wan2.1-I2V image cross-attention (mapped for completeness; the denoiser has no CLIP branch)
    ("blocks.{n}.attn2.add_k_proj", "blocks.{n}.cross_attn.k_img"),
    ("blocks.{n}.attn2.add_v_proj", "blocks.{n}.cross_attn.v_img"),
    ("blocks.{n}.attn2.norm_added_k", "blocks.{n}.cross_attn.norm_k_img"),
    ("blocks.{n}.norm2", "blocks.{n}.norm3"),
    ("blocks.{n}.ffn.net.0.proj", "blocks.{n}.ffn.0"),
    ("blocks.{n}.ffn.net.2", "blocks.{n}.ffn.2"),
    ("proj_out", "head.head"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
)
# Bare parameters (no .weight/.bias suffix).
_PARAMS: tuple[tuple[str, str], ...] = (
    ("blocks.{n}.scale_shift_table", "blocks.{n}.modulation"),
    ("scale_shift_table", "head.modulation"),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
)


def _compile(
    pairs_modules: tuple, pairs_params: tuple, reverse: bool
) -> list[tuple[re.Pattern, str]]:
    rules = []
    for src, dst in pairs_modules:
        if reverse:
            src, dst = dst, src
        pat = re.escape(src).replace(r"\{n\}", r"(?P<n>\d+)") + r"\.(?P<leaf>weight|bias)"
        rules.append((re.compile(f"^{pat}$"), dst.replace("{n}", r"\g<n>") + r".\g<leaf>"))
    for src, dst in pairs_params:
        if reverse:
            src, dst = dst, src
        pat = re.escape(src).replace(r"\{n\}", r"(?P<n>\d+)")
        rules.append((re.compile(f"^{pat}$"), dst.replace("{n}", r"\g<n>")))
    return rules


_TO_WAN = _compile(_MODULES, _PARAMS, reverse=False)
_TO_DIFFUSERS = _compile(_MODULES, _PARAMS, reverse=True)


def _rename(name: str, rules: list[tuple[re.Pattern, str]], direction: str) -> str:
    for pat, repl in rules:
        if pat.match(name):
            return pat.sub(repl, name)
    raise ValueError(f"no {direction} name for parameter {name!r}")


def diffusers_to_wan_name(name: str) -> str:
    """``blocks.3.attn1.to_q.weight`` -> ``blocks.3.self_attn.q.weight``."""
    return _rename(name, _TO_WAN, "Wan2.1")


def wan_to_diffusers_name(name: str) -> str:
    """``blocks.3.self_attn.q.weight`` -> ``blocks.3.attn1.to_q.weight``."""
    return _rename(name, _TO_DIFFUSERS, "diffusers")


def diffusers_to_wan(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``WanTransformer3DModel`` state dict to Wan2.1 names."""
    return {diffusers_to_wan_name(k): v for k, v in state_dict.items()}


def wan_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Wan2.1 (or our video tower's) state dict to diffusers names.

    Parameters that exist only in our denoiser (view embedding, action tower, staircase
    projection) have no diffusers counterpart and are skipped.
    """
    return {wan_to_diffusers_name(k): v for k, v in state_dict.items() if not _ours_only(k)}


def _ours_only(name: str) -> bool:
    return is_addition(name)


def diffusers_kwargs(cfg: DenoiserConfig) -> dict:
    """Arguments for diffusers' ``WanTransformer3DModel`` with the same video tower as ``cfg``."""
    return {
        "patch_size": tuple(cfg.patch_size),
        "num_attention_heads": cfg.num_attention_heads,
        "attention_head_dim": cfg.attention_head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "text_dim": cfg.text_dim,
        "freq_dim": cfg.freq_dim,
        "ffn_dim": cfg.ffn_dim,
        "num_layers": cfg.num_layers,
        "cross_attn_norm": cfg.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads" if cfg.qk_norm else None,
        "eps": cfg.eps,
        "rope_max_seq_len": cfg.rope_max_seq_len,
    }


_IMAGE_BRANCH = re.compile(r"^(img_emb\.|blocks\.\d+\.cross_attn\.(k_img|v_img|norm_k_img)\.)")


def load_video_tower(
    net: WorldActionDenoiser,
    state_dict: Mapping[str, torch.Tensor],
    names: str = "wan",
    adapt_in_channels: bool = False,
) -> list[str]:
    """Load a Wan2.1 video tower (``names`` = ``"wan"`` or ``"diffusers"``) into ``net``.

    Every video-tower parameter must be present with the right shape; the denoiser's additions
    (action tower, view embedding) keep their values. Wan2.1-I2V's CLIP image branch
    (``img_emb``, ``cross_attn.{k_img,v_img,norm_k_img}``) has no counterpart and is skipped; its
    36 input channels are already our [noisy, mask, observation] layout. A text-to-video
    checkpoint has 16 input channels: ``adapt_in_channels=True`` puts them first and zeroes the
    conditioning channels' weights, so the loaded tower starts out as that model. Returns the
    names left untouched. Raises ValueError naming each missing, unexpected or mis-shaped tensor.
    """
    if names not in ("wan", "diffusers"):
        raise ValueError(f"names must be 'wan' or 'diffusers', got {names!r}")
    sd = diffusers_to_wan(state_dict) if names == "diffusers" else dict(state_dict)
    sd = {k: v for k, v in sd.items() if not _IMAGE_BRANCH.match(k)}
    own = net.state_dict()
    key = "patch_embedding.weight"
    if adapt_in_channels and key in sd and sd[key].shape[1] < own[key].shape[1]:
        w = torch.zeros_like(own[key], dtype=sd[key].dtype)
        w[:, : sd[key].shape[1]] = sd[key]
        sd[key] = w
    tower = {k for k in own if not _ours_only(k)}
    problems = [f"missing {k} {tuple(own[k].shape)}" for k in sorted(tower - sd.keys())]
    problems += [f"unexpected {k}" for k in sorted(sd.keys() - own.keys())]
    problems += [
        f"shape of {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(tower & sd.keys())
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if problems:
        raise ValueError("video tower weights do not fit the denoiser:\n  " + "\n  ".join(problems))
    net.load_state_dict({k: sd[k] for k in tower}, strict=False)
    return sorted(own.keys() - tower)
