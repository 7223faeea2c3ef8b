"""Denoiser: config validation, presets, shapes, conditioning, bad input, wan14b on meta."""

import dataclasses

import pytest
import torch

from backend.model.denoiser import (
    DENOISER_PRESETS,
    DenoiserConfig,
    WorldActionDenoiser,
    count_parameters,
    i2v_condition,
    video_tower_parameters,
)
from backend.model.track import TRACK_FEATURES

CFG = dataclasses.replace(DENOISER_PRESETS["tiny"], num_layers=2, extra_context_dim=24)


def randomise(net):
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5 / max(p.shape[-1], 1) ** 0.5)
    return net


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomise(WorldActionDenoiser(CFG)).eval()


def batch(B=2, V=3, Fr=3, h=4, w=6, H=12, L=5):
    g = torch.Generator().manual_seed(0)
    return dict(
        video=torch.randn(B, V, CFG.out_channels, Fr, h, w, generator=g),
        actions=torch.randn(B, H, CFG.action_dim, generator=g),
        t_video=torch.rand(B, generator=g),
        t_action=torch.rand(B, generator=g),
        context=torch.randn(B, L, CFG.text_dim, generator=g),
        context_mask=torch.ones(B, L, dtype=torch.bool),
        state=torch.randn(B, CFG.state_dim, generator=g),
        cond=i2v_condition(torch.randn(B, V, CFG.out_channels, 1, h, w, generator=g), Fr),
    )


def test_tiny_preset_size_and_fresh_output():
    net = WorldActionDenoiser(DENOISER_PRESETS["tiny"])
    n = count_parameters(net)
    assert 1e6 < n < 10e6
    x = batch()
    v, a = net(**x)
    assert v.shape == x["video"].shape and a.shape == x["actions"].shape
    # zero-initialised heads: a fresh model predicts zero velocity (Wan / DiT init)
    assert v.abs().max() == 0 and a.abs().max() == 0


def test_shapes_and_variable_horizon(net):
    for H in (1, 7, CFG.h_max):
        x = batch(H=H)
        with torch.no_grad():
            v, a = net(**x)
        assert v.shape == x["video"].shape and a.shape == (2, H, CFG.action_dim)
        assert torch.isfinite(v).all() and torch.isfinite(a).all()


def test_fewer_views_than_config(net):
    x = batch(V=1)
    with torch.no_grad():
        v, a = net(**x)
    assert v.shape[1] == 1 and a.shape == x["actions"].shape


def test_context_mask_hides_padding(net):
    x = batch()
    mask = x["context_mask"].clone()
    mask[:, 3:] = False
    ctx2 = x["context"].clone()
    ctx2[:, 3:] = torch.randn_like(ctx2[:, 3:]) * 10
    with torch.no_grad():
        v1, a1 = net(**dict(x, context_mask=mask))
        v2, a2 = net(**dict(x, context_mask=mask, context=ctx2))
        v3, _ = net(**dict(x, context=ctx2))
    assert torch.allclose(v1, v2, atol=1e-6) and torch.allclose(a1, a2, atol=1e-6)
    assert not torch.allclose(v1, v3, atol=1e-4)


def test_empty_context_is_unconditional(net):
    """A row with no valid token (classifier-free guidance's null branch) is finite and text-free."""
    x = batch()
    none = torch.zeros_like(x["context_mask"])
    with torch.no_grad():
        v1, a1 = net(**dict(x, context_mask=none))
        v2, a2 = net(**dict(x, context_mask=none, context=torch.randn_like(x["context"])))
    assert torch.isfinite(v1).all() and torch.isfinite(a1).all()
    assert torch.equal(v1, v2) and torch.equal(a1, a2)


def test_extra_context_conditions_both_towers(net):
    x = batch()
    extra = torch.randn(2, 3, CFG.extra_context_dim)
    with torch.no_grad():
        v1, a1 = net(**x)
        v2, a2 = net(**x, extra_context=extra)
    assert not torch.allclose(v1, v2, atol=1e-4) and not torch.allclose(a1, a2, atol=1e-4)
    with pytest.raises(ValueError, match="extra_context_dim=0"):
        WorldActionDenoiser(DENOISER_PRESETS["tiny"])(**x, extra_context=extra)


def test_all_parameters_train():
    torch.manual_seed(0)
    net = randomise(WorldActionDenoiser(CFG))
    x = batch()
    v, a = net(**x, extra_context=torch.randn(2, 3, CFG.extra_context_dim))
    (v.square().mean() + a.square().mean()).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead, dead


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(video=torch.zeros(2, 3, 5, 3, 4, 6)), "video must be"),
        (dict(actions=torch.zeros(2, 40, 8)), "actions must be"),
        (dict(actions=torch.zeros(2, 8, 7)), "actions must be"),
        (dict(state=torch.zeros(2, 6)), "state must be"),
        (dict(t_video=torch.zeros(3)), "t_video must be"),
        (dict(cond=None), "cond"),
        (dict(context=torch.zeros(2, 5, 17)), "context must be"),
        (dict(context_mask=torch.ones(2, 4, dtype=torch.bool)), "context_mask must be"),
        (dict(video=torch.zeros(2, 4, 16, 3, 4, 6)), "num_views=3"),
        (dict(video=torch.zeros(2, 3, 16, 3, 5, 6)), "not divisible"),
    ],
)
def test_bad_input_is_named(net, change, message):
    with pytest.raises(ValueError, match=message):
        net(**dict(batch(), **change))


def test_config_validation():
    with pytest.raises(ValueError, match="num_layers"):
        DenoiserConfig(num_layers=0)
    with pytest.raises(ValueError, match="in_channels"):
        DenoiserConfig(in_channels=8, out_channels=16)
    with pytest.raises(ValueError, match="even"):
        DenoiserConfig(attention_head_dim=31)


def test_i2v_condition_layout():
    obs = torch.randn(1, 2, 16, 1, 4, 4)
    c = i2v_condition(obs, 3)
    assert c.shape == (1, 2, 20, 3, 4, 4)
    assert (c[:, :, :4, 0] == 1).all() and (c[:, :, :4, 1:] == 0).all()
    assert torch.equal(c[:, :, 4:, 0], obs[:, :, :, 0]) and (c[:, :, 4:, 1:] == 0).all()


def test_wan14b_on_meta_device():
    cfg = DENOISER_PRESETS["wan14b"]
    assert (cfg.dim, cfg.num_layers, cfg.num_attention_heads, cfg.ffn_dim, cfg.text_dim) == (
        5120,
        40,
        40,
        13824,
        4096,
    )
    with torch.device("meta"):
        net = WorldActionDenoiser(cfg)
    video, total = video_tower_parameters(net), count_parameters(net)
    print(
        f"wan14b: video tower {video / 1e9:.2f}B, with action tower {total / 1e9:.2f}B parameters"
    )
    assert 13.5e9 < video < 14.5e9  # Wan2.1-14B (I2V input layout, without its CLIP branch)
    assert total < 1.1 * video  # the action tower is narrow
    with torch.device("meta"):
        small = WorldActionDenoiser(DENOISER_PRESETS["wan1_3b"])
    assert 1.2e9 < video_tower_parameters(small) < 1.6e9


@pytest.mark.parametrize("frequencies", [0, 4])
def test_patch_positions_reach_the_values_the_action_tower_reads(frequencies):
    """Identical patches everywhere: without absolute positions every first-layer value is the
    same (RoPE only rotates queries and keys); with them, values differ from patch to patch,
    so an action query that finds the block also reads where it is."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, patch_position_frequencies=frequencies)
    net = randomise(WorldActionDenoiser(cfg)).eval()
    B, V, Fr, h, w = 1, 2, 1, 4, 4
    video = torch.ones(B, V, cfg.out_channels, Fr, h, w)
    cond = i2v_condition(torch.ones(B, V, cfg.out_channels, 1, h, w), Fr)
    ctx = torch.randn(B, 3, cfg.text_dim)
    with torch.no_grad():
        kv = net.encode_video(video, torch.zeros(B), ctx, None, cond=cond)
    per_view = kv.values[0].unflatten(2, (V, -1))  # (B, heads, V, h*w*Fr, hd)
    spread = (per_view - per_view[:, :, :, :1]).abs().max().item()
    assert (spread > 1e-3) == bool(frequencies)


def test_fresh_patch_positions_change_nothing():
    torch.manual_seed(0)
    off = WorldActionDenoiser(dataclasses.replace(CFG, patch_position_frequencies=0))
    on = WorldActionDenoiser(dataclasses.replace(CFG, patch_position_frequencies=4))
    shared = {k: v for k, v in on.state_dict().items() if not k.startswith("patch_position")}
    off.load_state_dict(shared)
    randomise(off)
    on.load_state_dict({**on.state_dict(), **off.state_dict()})  # positions stay zero
    x = batch()
    torch.testing.assert_close(on(**x)[1], off(**x)[1])


def test_future_expert_starts_as_the_shared_weights_and_leaves_the_observation_path_alone(net):
    """A future-frame expert copied from the shared weights computes what the model did without
    one; changing it changes the imagined video, never the action-only (observation) path."""
    expert = WorldActionDenoiser(dataclasses.replace(CFG, future_expert=True)).eval()
    missing, unexpected = expert.load_state_dict(net.state_dict(), strict=False)
    assert not unexpected and missing and all("future" in k for k in missing)
    expert.init_future_expert()
    x = batch()
    with torch.no_grad():
        (v0, a0), (v1, a1) = net(**x), expert(**x)
        assert torch.allclose(v0, v1, atol=1e-5) and torch.allclose(a0, a1, atol=1e-5)
        only = batch(Fr=1)  # the action-only layout: the observation frame alone
        _, solo = expert(**only)
        for name, p in expert.named_parameters():
            if name.startswith("future_") or ".future." in name:
                p.add_(torch.randn_like(p) * 0.1)
        v2, a2 = expert(**x)
        _, solo2 = expert(**only)
    assert not torch.allclose(v1, v2, atol=1e-3) and not torch.allclose(a1, a2, atol=1e-3)
    assert torch.equal(solo, solo2)


def test_future_actions_condition_the_future_frames_only(net):
    """The zero-initialised action embedding changes nothing at first; trained, it changes the
    imagined future with the chunk given, never the observation-alone (action-only) layout."""
    model = WorldActionDenoiser(dataclasses.replace(CFG, future_actions=True)).eval()
    missing, _ = model.load_state_dict(net.state_dict(), strict=False)
    assert missing and all(k.startswith("future_action_embedding.") for k in missing)
    x = batch()  # 3 latent frames: 8 steps of actions after the observation
    plan = torch.randn(2, 8, CFG.action_dim)
    with torch.no_grad():
        v0, _ = net(**x)
        v1, _ = model(**x, future_actions=plan)
        assert torch.allclose(v0, v1, atol=1e-6)
        model.future_action_embedding.weight.normal_(0, 0.1)
        v2, _ = model(**x, future_actions=plan)
        v3, _ = model(**x, future_actions=-plan)
        _, solo = model(**batch(Fr=1), future_actions=None)
        _, solo_net = net(**batch(Fr=1))
    assert not torch.allclose(v2, v3, atol=1e-4)
    assert torch.allclose(solo, solo_net, atol=1e-6)
    with pytest.raises(ValueError, match="future_actions must be"):
        model(**x, future_actions=plan[:, :4])


def test_future_track_conditions_the_future_frames_only(net):
    """Like the chunk, the end-effector track's zero-initialised embedding changes nothing at
    first; trained, each patch reads its own features, and the observation alone is untouched."""
    model = WorldActionDenoiser(dataclasses.replace(CFG, future_track=True)).eval()
    missing, _ = model.load_state_dict(net.state_dict(), strict=False)
    assert missing and all(k.startswith("future_track_embedding.") for k in missing)
    x = batch()  # 3 latent frames of 2x3 patches per view
    track = torch.randn(2, 3, 2, 6, TRACK_FEATURES)
    with torch.no_grad():
        v0, a0 = net(**x)
        v1, a1 = model(**x, future_track=track)
        assert torch.allclose(v0, v1, atol=1e-6) and torch.allclose(a0, a1, atol=1e-6)
        model.future_track_embedding.weight.normal_(0, 0.1)
        v2, _ = model(**x, future_track=track)
        moved = track.clone()
        moved[:, :, :, 0] += 1.0  # one patch's features, in every view and frame
        v3, _ = model(**x, future_track=moved)
        _, solo = model(**batch(Fr=1), future_track=None)
        _, solo_net = net(**batch(Fr=1))
    assert not torch.allclose(v2, v3, atol=1e-4)
    assert torch.allclose(solo, solo_net, atol=1e-6)
    with pytest.raises(ValueError, match="future_track must be"):
        model(**x, future_track=track[:, :, :1])
