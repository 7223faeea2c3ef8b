"""Our video tower against diffusers' WanTransformer3DModel with the same (mapped) weights."""

import dataclasses

import pytest
import torch
from diffusers import WanTransformer3DModel

from backend.model.denoiser import (
    ADDITIONS,
    DENOISER_PRESETS,
    WorldActionDenoiser,
    i2v_condition,
)
from backend.model.wan_mapping import (
    diffusers_kwargs,
    diffusers_to_wan,
    diffusers_to_wan_name,
    load_video_tower,
    wan_to_diffusers,
    wan_to_diffusers_name,
)

CFG = dataclasses.replace(DENOISER_PRESETS["tiny"], num_views=1, num_layers=2)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = WanTransformer3DModel(**diffusers_kwargs(CFG)).eval()
    # diffusers' default init leaves biases and norms at 0/1; randomise every tensor at a
    # trained-like scale (unit-gain matrices) so each weight matters and activations stay O(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                p.copy_(1 + torch.randn_like(p) * 0.1)
    net = WorldActionDenoiser(CFG).eval()
    load_video_tower(net, ref.state_dict(), names="diffusers")
    return ref, net


def test_parity_with_diffusers(pair):
    ref, net = pair
    B, Fr, h, w = 2, 3, 6, 8
    g = torch.Generator().manual_seed(1)
    video = torch.randn(B, 1, CFG.out_channels, Fr, h, w, generator=g)
    cond = i2v_condition(torch.randn(B, 1, CFG.out_channels, 1, h, w, generator=g), Fr)
    t = torch.tensor([0.25, 0.9])
    ctx = torch.randn(B, 7, CFG.text_dim, generator=g)
    with torch.no_grad():
        expected = ref(torch.cat([video, cond], 2)[:, 0], t * 1000, ctx, return_dict=False)[0]
        kv = net.encode_video(video, t, ctx, None, cond=cond, compute_video=True)
    assert kv.velocity.shape == (B, 1, CFG.out_channels, Fr, h, w)
    err = (kv.velocity[:, 0] - expected).abs().max().item()
    assert expected.abs().max() > 1.0  # a meaningful output, not zeros
    print(
        f"video tower vs diffusers: max abs diff {err:.2e} (output max {expected.abs().max():.2f})"
    )
    assert err < 1e-4, err


def test_mapping_round_trip(pair):
    ref, net = pair
    ref_sd = ref.state_dict()
    assert wan_to_diffusers(diffusers_to_wan(ref_sd)).keys() == ref_sd.keys()
    assert diffusers_to_wan_name("blocks.3.attn1.to_out.0.weight") == "blocks.3.self_attn.o.weight"
    assert diffusers_to_wan_name("blocks.0.norm2.bias") == "blocks.0.norm3.bias"
    assert diffusers_to_wan_name("scale_shift_table") == "head.modulation"
    assert wan_to_diffusers_name("blocks.11.modulation") == "blocks.11.scale_shift_table"
    assert wan_to_diffusers_name("head.head.weight") == "proj_out.weight"
    # every tensor of our video tower has a diffusers counterpart with the same values
    ours = wan_to_diffusers(net.state_dict())
    assert ours.keys() == ref_sd.keys()
    for k, v in ours.items():
        assert torch.equal(v, ref_sd[k]), k


def test_original_wan_names():
    """Our names are the ones of Wan-Video/Wan2.1 wan/modules/model.py."""
    names = set(WorldActionDenoiser(CFG).state_dict())
    for n in (
        "patch_embedding.weight",
        "text_embedding.0.weight",
        "text_embedding.2.bias",
        "time_embedding.0.weight",
        "time_projection.1.weight",
        "blocks.0.self_attn.q.weight",
        "blocks.0.self_attn.norm_k.weight",
        "blocks.1.cross_attn.o.bias",
        "blocks.0.norm3.weight",
        "blocks.0.ffn.0.weight",
        "blocks.0.ffn.2.weight",
        "blocks.0.modulation",
        "head.head.weight",
        "head.modulation",
    ):
        assert n in names, n


def test_load_reports_mismatch(pair):
    ref, _ = pair
    sd = diffusers_to_wan(ref.state_dict())
    net = WorldActionDenoiser(dataclasses.replace(CFG, ffn_dim=CFG.ffn_dim * 2))
    with pytest.raises(ValueError, match=r"shape of blocks\.0\.ffn\.0\.weight"):
        load_video_tower(net, sd)
    del sd["head.modulation"]
    with pytest.raises(ValueError, match=r"missing head\.modulation"):
        load_video_tower(WorldActionDenoiser(CFG), sd)
    with pytest.raises(ValueError, match=r"no Wan2\.1 name"):
        diffusers_to_wan_name("blocks.0.attn1.to_qkv.weight")


def test_text_to_video_checkpoint_adapts_channels():
    """A 16-channel (T2V) tower loads with zeroed conditioning weights and behaves as before."""
    torch.manual_seed(0)
    t2v_cfg = dataclasses.replace(CFG, in_channels=CFG.out_channels)
    ref = WanTransformer3DModel(**diffusers_kwargs(t2v_cfg)).eval()
    net = WorldActionDenoiser(CFG).eval()
    with pytest.raises(ValueError, match=r"shape of patch_embedding\.weight"):
        load_video_tower(net, ref.state_dict(), names="diffusers")
    load_video_tower(net, ref.state_dict(), names="diffusers", adapt_in_channels=True)
    video = torch.randn(1, 1, CFG.out_channels, 2, 4, 4)
    cond = torch.randn(1, 1, CFG.cond_channels, 2, 4, 4)  # ignored by the zeroed weights
    t, ctx = torch.tensor([0.5]), torch.randn(1, 3, CFG.text_dim)
    with torch.no_grad():
        expected = ref(video[:, 0], t * 1000, ctx, return_dict=False)[0]
        got = net.encode_video(video, t, ctx, None, cond=cond, compute_video=True).velocity[:, 0]
    assert (got - expected).abs().max() < 1e-4


def test_image_branch_of_i2v_checkpoint_is_skipped():
    ref = WanTransformer3DModel(**diffusers_kwargs(CFG), image_dim=32, added_kv_proj_dim=CFG.dim)
    sd = diffusers_to_wan(ref.state_dict())
    assert any(k.startswith("img_emb.") for k in sd) and "blocks.0.cross_attn.k_img.weight" in sd
    untouched = load_video_tower(WorldActionDenoiser(CFG), sd)
    assert "view_embedding" in untouched and all(k.startswith(ADDITIONS) for k in untouched)


def test_bench_item_a_runs_on_identical_weights():
    from backend.model.bench_kernels import video_tower_vs_diffusers

    r = video_tower_vs_diffusers("tiny", (4, 4), 2, text_len=4, repeats=1)
    assert r["tokens"] == 2 * 2 * 2 and r["max_abs_diff"] < 1e-4
    assert r["ours_ms"] > 0 and r["diffusers_ms"] > 0
    assert r["ratio"] == pytest.approx(r["diffusers_ms"] / r["ours_ms"])
