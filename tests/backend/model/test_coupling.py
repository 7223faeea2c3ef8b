"""One-way layer coupling: video never sees actions; actions read every layer's video keys."""

import dataclasses

import pytest
import torch

from backend.model.denoiser import DENOISER_PRESETS, WorldActionDenoiser, i2v_condition

CFG = dataclasses.replace(DENOISER_PRESETS["tiny"], num_layers=3)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = WorldActionDenoiser(CFG).eval()
    with torch.no_grad():  # trained-like weights: zero-initialised heads would hide the coupling
        for p in net.parameters():
            p.normal_(0, 0.5 / max(p.shape[-1], 1) ** 0.5)
    return net


def inputs(seed: int = 0, B: int = 2, V: int = 3, Fr: int = 3, h: int = 4, w: int = 4):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, V, CFG.out_channels, Fr, h, w, generator=g)
    cond = i2v_condition(torch.randn(B, V, CFG.out_channels, 1, h, w, generator=g), Fr)
    return dict(
        video=video,
        actions=torch.randn(B, CFG.h_max, CFG.action_dim, generator=g),
        t_video=torch.rand(B, generator=g),
        t_action=torch.rand(B, generator=g),
        context=torch.randn(B, 6, CFG.text_dim, generator=g),
        context_mask=torch.ones(B, 6, dtype=torch.bool),
        state=torch.randn(B, 7, generator=g),
        cond=cond,
    )


def test_actions_do_not_change_video(net):
    x = inputs()
    with torch.no_grad():
        v1, a1 = net(**x)
        x2 = dict(
            x,
            actions=torch.randn_like(x["actions"]) * 3,
            t_action=torch.rand(2),
            state=torch.randn(2, 7),
        )
        v2, a2 = net(**x2)
    assert torch.equal(v1, v2)  # bit-identical
    assert not torch.allclose(a1, a2)


def test_video_changes_actions(net):
    x = inputs()
    with torch.no_grad():
        _, a1 = net(**x)
        future = x["video"].clone()
        future[:, :, :, 1:] += torch.randn_like(future[:, :, :, 1:])  # only the noisy future frames
        _, a2 = net(**dict(x, video=future))
        _, a3 = net(**dict(x, t_video=x["t_video"] * 0.5))
    assert (a1 - a2).abs().max() > 1e-3
    assert (a1 - a3).abs().max() > 1e-3


def test_every_layer_is_coupled(net):
    """The action output depends on the video keys of each layer, not just the last one."""
    x = inputs()
    with torch.no_grad():
        kv = net.encode_video(
            x["video"], x["t_video"], x["context"], x["context_mask"], cond=x["cond"]
        )
        base = net.denoise_actions(x["actions"], x["t_action"], x["state"], kv)
        for layer in range(CFG.num_layers):
            keys = list(kv.keys)
            keys[layer] = torch.randn_like(keys[layer])
            out = net.denoise_actions(
                x["actions"], x["t_action"], x["state"], dataclasses.replace(kv, keys=keys)
            )
            assert (out - base).abs().max() > 1e-4, layer


def test_action_only_path_matches_joint_forward(net):
    """encode_video once + denoise_actions per step == the joint forward, bit for bit."""
    x = inputs()
    with torch.no_grad():
        kv = net.encode_video(
            x["video"],
            x["t_video"],
            x["context"],
            x["context_mask"],
            cond=x["cond"],
            compute_video=False,
        )
        assert kv.velocity is None
        for t in (1.0, 0.5, 0.1):
            ta = torch.full((2,), t)
            _, joint = net(**dict(x, t_action=ta), compute_video=False)
            fast = net.denoise_actions(x["actions"], ta, x["state"], kv)
            assert torch.equal(fast, joint)


def test_action_gradients_reach_video_tower(net):
    x = inputs()
    _, a = net(**x, compute_video=False)
    a.square().mean().backward()
    grad = net.blocks[0].self_attn.k.weight.grad
    assert grad is not None and grad.abs().max() > 0
    net.zero_grad()
