"""Keypoints: the soft-argmax finds what is bright, the instruction's queries find what it names,
and the action tower reads the frames."""

import dataclasses

import pytest
import torch

from backend.model.denoiser import DENOISER_PRESETS, WorldActionDenoiser, i2v_condition
from backend.model.keypoints import SpatialKeypoints, soft_argmax

CFG = dataclasses.replace(DENOISER_PRESETS["tiny"], num_layers=2, keypoints=8)


@pytest.mark.parametrize("row, col", [(0, 0), (3, 12), (15, 7)])
def test_soft_argmax_lands_on_the_peak(row, col):
    maps = torch.zeros(1, 1, 16, 16)
    maps[0, 0, row, col] = 1.0
    ((x, y),) = soft_argmax(maps, torch.tensor(6.0))[0]  # e^6: a sharp softmax
    grid = torch.linspace(-1, 1, 16)
    assert abs(x - grid[col]) < 1e-3 and abs(y - grid[row]) < 1e-3


def test_keypoints_follow_an_object_across_the_image():
    """A fixed edge detector as the last layer: the keypoint moves with a white square."""
    torch.manual_seed(0)
    enc = SpatialKeypoints(keypoints=1, width=16, views=2, state_dim=7)
    with torch.no_grad():  # the net's output = mean brightness seen by the last conv
        for m in enc.features:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        enc.features[0].weight[:, :, 2, 2] = 1.0  # centre tap: brightness
        for i in (3, 6, 9):
            enc.features[i].weight[:, :, 1, 1] = torch.eye(
                enc.features[i].weight.shape[0], enc.features[i].weight.shape[1]
            )
        enc.features[12].weight.fill_(1.0)
        enc.log_temperature.fill_(2.0)
    frames = torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8)
    frames[0, 0, 8:16, 40:48] = 255  # view 0: top right
    frames[0, 1, 44:52, 8:16] = 255  # view 1: bottom left
    pts = enc.points(frames)[0, :, 0]  # (V, 2)
    assert pts[0, 0] > 0.2 and pts[0, 1] < -0.2
    assert pts[1, 0] < -0.2 and pts[1, 1] > 0.2
    assert enc.embed(enc.points(frames), torch.zeros(1, 7)).shape == (1, 16)


def _colour_detector() -> SpatialKeypoints:
    """Hand-set features: hidden channel 0 = redness, channel 2 = blueness (other groups)."""
    enc = SpatialKeypoints(keypoints=1, width=16, views=1, state_dim=7, text_width=2, queries=1)
    with torch.no_grad():
        for m in enc.features:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        enc.features[0].weight[0, 0, 2, 2] = 1.0  # red
        enc.features[0].weight[2, 2, 2, 2] = 1.0  # blue
        for i in (3, 6, 9):
            w = enc.features[i].weight
            w[:, :, 1, 1] = torch.eye(w.shape[0], w.shape[1])
        query = enc.query[1]  # after a LayerNorm: text (1, 0) -> (1, -1), (0, 1) -> (-1, 1)
        query.weight.zero_()
        query.bias.zero_()
        query.weight[0] = torch.tensor([4.0, -4.0])  # "red" -> the red channel, minus blue
        query.weight[2] = torch.tensor([-4.0, 4.0])  # "blue" -> the blue channel, minus red
        enc.query_log_temperature.fill_(2.0)
    return enc


def test_instruction_queries_find_the_named_colour():
    """Same image, two instructions: the queried keypoint lands on the red or the blue square."""
    enc = _colour_detector()
    frames = torch.zeros(2, 1, 64, 64, 3, dtype=torch.uint8)
    frames[:, 0, 8:16, 40:48, 0] = 255  # red: top right
    frames[:, 0, 44:52, 8:16, 2] = 255  # blue: bottom left
    points, features = enc.look(frames)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # "red", "blue"
    (red,), (blue,) = enc.query_points(features, text)[:, 0]  # (Q=1, 2) each
    assert red[0] > 0.2 and red[1] < -0.2
    assert blue[0] < -0.2 and blue[1] > 0.2
    assert enc.embed(points, torch.zeros(2, 7), text, features).shape == (2, 16)
    with pytest.raises(ValueError, match="features and text"):
        enc.embed(points, torch.zeros(2, 7), text)


def _inputs(B=2, V=3, h=4, w=4, H=8):
    g = torch.Generator().manual_seed(0)
    return dict(
        video=torch.randn(B, V, CFG.out_channels, 1, h, w, generator=g),
        t_video=torch.ones(B),
        context=torch.randn(B, 5, CFG.text_dim, generator=g),
        context_mask=None,
        cond=i2v_condition(torch.randn(B, V, CFG.out_channels, 1, h, w, generator=g), 1),
    ), dict(
        actions=torch.randn(B, H, CFG.action_dim, generator=g),
        t_action=torch.rand(B, generator=g),
        state=torch.randn(B, CFG.state_dim, generator=g),
    )


@pytest.mark.parametrize(
    "text, queries", [(False, 0), (True, 0), (True, 4)], ids=["state", "+instruction", "+queries"]
)
def test_fresh_keypoints_change_nothing_and_trained_ones_read_the_frames(text, queries):
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, keypoint_text=text, keypoint_queries=queries)
    net = WorldActionDenoiser(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(net.action_head.head.weight, std=0.1)  # a fresh head outputs zero
    video, act = _inputs()
    frames = torch.randint(0, 255, (2, 3, 64, 64, 3), dtype=torch.uint8)

    def actions(f):
        with torch.no_grad():
            return net.denoise_actions(**act, video_kv=net.encode_video(**video, obs_frames=f))

    a = actions(frames)
    assert a.shape == act["actions"].shape
    torch.testing.assert_close(actions(frames.flip(2)), a)  # zero-initialised: no effect yet
    with torch.no_grad():
        torch.nn.init.normal_(net.obs_keypoints.mlp[-1].weight, std=0.1)  # as if trained
    assert (actions(frames.flip(2)) - actions(frames)).abs().max() > 1e-4


def test_missing_frames_are_a_clear_error():
    net = WorldActionDenoiser(CFG)
    video, _ = _inputs()
    with pytest.raises(ValueError, match="obs_frames"):
        net.encode_video(**video)


def test_queried_keypoints_read_the_instruction():
    """Only the query path differs between two instructions when the MLP ignores the text."""
    torch.manual_seed(0)
    net = WorldActionDenoiser(dataclasses.replace(CFG, keypoint_queries=2)).eval()
    kp = net.obs_keypoints
    frames = torch.randint(0, 255, (1, 3, 64, 64, 3), dtype=torch.uint8)
    _, features = kp.look(frames)
    a, b = torch.randn(2, 1, CFG.dim).unbind(0)
    assert not torch.allclose(kp.query_points(features, a), kp.query_points(features, b))


def test_queries_need_keypoints():
    with pytest.raises(ValueError, match="keypoint_queries"):
        dataclasses.replace(CFG, keypoints=0, keypoint_queries=2)
