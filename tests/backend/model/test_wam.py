"""The world action model on real sim events: losses, staircase gradients, both inference paths,
bad input, and a short overfit in which the validity channel learns event lengths."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.data.samples import EventSamples, collate
from backend.model.normalizer import Normalizer
from backend.model.presets import get_preset
from backend.model.wam import Objective, Observation, WorldActionModel, chunk_length

RES = 32  # sim images and model input: 32x32 keeps these tests fast; the code path is the tiny preset's
H = get_preset("tiny").h_max

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def episode():
    from robot.sim.experts import record_episode

    return record_episode("pick_place_bin", 0, resolution=RES)


def _normalizer(ep) -> Normalizer:
    return Normalizer.from_stats(
        {
            "state": {"min": ep.states.min(0), "max": ep.states.max(0)},
            "action": {"min": ep.actions.min(0), "max": ep.actions.max(0)},
        }
    )


def _model(ep, seed: int = 0) -> WorldActionModel:
    torch.manual_seed(seed)
    return WorldActionModel(
        replace(get_preset("tiny"), image_size=RES), _normalizer(ep), ep.cameras
    )


@pytest.fixture(scope="module")
def model(episode) -> WorldActionModel:
    return _model(episode)


@pytest.fixture(scope="module")
def batch(episode) -> dict:
    samples = EventSamples([episode], caption_track="action", h_max=H)
    return collate([samples[1], samples[2]])


def _obs(ep, frame: int = 0) -> Observation:
    return Observation({c: f[frame] for c, f in ep.frames.items()}, ep.states[frame], ep.cameras)


def test_event_loss_trains_the_denoiser_only(model: WorldActionModel, batch: dict) -> None:
    model.zero_grad()
    parts = model(batch, "event")
    assert set(parts) == {"video", "action", "validity", "loss"}
    assert all(torch.isfinite(v) for v in parts.values())
    parts["loss"].backward()
    assert model.denoiser.action_head.head.weight.grad.abs().sum() > 0
    assert model.denoiser.head.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vlm.parameters())  # event mode does not use the VLM


def test_staircase_gradients_reach_the_vlm(episode, batch: dict) -> None:
    """Unified mode: the action loss alone back-propagates through the staircase states into the VLM."""
    model = _model(episode)
    objective = Objective(uncond_prob=0.0)
    # One optimizer step first: the zero-initialised output heads pass no gradient at all at init.
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.zero_grad()
    model(batch, "unified", loss_config=objective)["loss"].backward()
    opt.step()
    model.zero_grad()
    parts = model(batch, "unified", loss_config=objective)
    assert "caption" in parts and torch.isfinite(
        parts["caption"]
    )  # action-track captions: next-event text
    parts["action"].backward()
    for i, layer in enumerate(model.vlm.decoder.layers):
        norm = sum(p.grad.abs().sum() for p in layer.parameters() if p.grad is not None)
        assert norm > 0, (
            f"VLM layer {i} ({model.vlm.decoder.config.layer_types[i]}) got no gradient"
        )
    assert model.vlm.visual_proj[0].weight.grad.abs().sum() > 0
    assert model.vlm.lm_head.weight.grad is None  # only the text loss reaches the text head


def test_imagine_outputs(model: WorldActionModel, episode) -> None:
    model.eval()
    stream = list(
        model.imagine_stream(_obs(episode), "go over the blue block", steps=2, preview_every=1)
    )
    previews, final = stream[:-1], stream[-1]
    assert [m["step"] for m in previews] == [1, 2] and "video" in previews[0]
    r = final["result"]
    assert r.mode == "event" and r.chunk.shape == (H, 7) and r.validity.shape == (H,)
    assert r.length == chunk_length(r.validity) and r.actions.shape == (r.length, 7)
    assert set(r.video) == {"front", "left", "right"}
    assert all(
        v.shape == (r.length + 1, RES, RES, 3) and v.dtype == np.uint8 for v in r.video.values()
    )
    np.testing.assert_array_equal(r.video["front"][0].shape, episode.frames["front"][0].shape)
    assert {"encode_s", "denoise_s", "decode_s", "total_s"} <= set(r.timings)

    u = model.imagine(_obs(episode), episode.instruction, mode="unified", steps=2)
    assert u.length == 16 and u.chunk.shape == (16, 7) and isinstance(u.proposed_event, str)
    assert "vlm_s" in u.timings

    again = model.predict_actions(_obs(episode), "go over the blue block", steps=3, seed=5)
    same = model.predict_actions(_obs(episode), "go over the blue block", steps=3, seed=5)
    np.testing.assert_array_equal(again.chunk, same.chunk)
    assert again.video is None


def test_action_only_path_is_exact(model: WorldActionModel, episode) -> None:
    """The fast path (video keys computed once) equals the joint forward over the observation frame."""
    from backend.model.denoiser import i2v_condition
    from backend.model.flow import euler_step, guided, sampling_schedule

    model.eval()
    steps, seed, text = 3, 7, "grasp"
    fast = model.predict_actions(_obs(episode), text, steps=steps, seed=seed)

    obs = _obs(episode)
    with torch.no_grad():
        images, state_abs, cams = model._observation(obs)
        state = model.normalizer.normalize_state(state_abs)
        lat = model.encode_video(images)  # (1, V, C, 1, h, w)
        gen = torch.Generator().manual_seed(seed)
        _, V, C, _, h, w = lat.shape
        xv = torch.randn((1, V, C, 1 + H // 4, h, w), generator=gen)[
            :, :, :, :1
        ]  # the observation frame
        xa = torch.randn((1, H, 8), generator=gen)
        ctx, mask = model.encode_text([text])
        ctx, mask = ctx.repeat(2, 1, 1), torch.cat([mask, torch.zeros_like(mask)])
        cond = i2v_condition(lat, 1).repeat(2, 1, 1, 1, 1, 1)
        vmask = model.view_mask([cams], 1, V)
        ts = sampling_schedule(steps, model.config.sampling_shift).tolist()
        for i in range(steps):
            _, va = model.denoiser(
                xv.repeat(2, 1, 1, 1, 1, 1),
                xa.repeat(2, 1, 1),
                torch.ones(2),
                torch.full((2,), ts[i]),
                ctx,
                mask,
                state.repeat(2, 1),
                cond,
                vmask,
                None,
                compute_video=False,
            )
            xa = euler_step(
                xa, guided(va[:1], va[1:], model.config.guidance_scale), ts[i], ts[i + 1]
            )
    slow = model._finish(
        xa, "event", text, {"proposal": None, "timings": {}, "state_abs": state_abs}
    )
    np.testing.assert_allclose(fast.chunk, slow.chunk, atol=1e-5)
    np.testing.assert_allclose(fast.validity, slow.validity, atol=1e-5)


def test_bad_input_is_refused(model: WorldActionModel, episode) -> None:
    for text in ("", "   "):
        with pytest.raises(ValueError, match="instruction is empty"):
            model.imagine(_obs(episode), text)
    with pytest.raises(ValueError, match="instruction is empty"):
        model.predict_actions(_obs(episode), "", mode="unified")
    obs = _obs(episode)
    del obs.images["left"]
    with pytest.raises(ValueError, match=r"lacks cameras \['left'\]"):
        model.imagine(obs, "grasp")
    with pytest.raises(ValueError, match="mode must be one of"):
        model.imagine(_obs(episode), "grasp", mode="fixed")
    with pytest.raises(ValueError, match="horizon must be a multiple of 4"):
        model.predict_actions(_obs(episode), "grasp", horizon=10)
    bad = _obs(episode)
    bad.state = np.full(7, np.nan)
    with pytest.raises(ValueError, match="state must be 7 finite floats"):
        model.predict_actions(bad, "grasp")


def test_chunk_length_rule() -> None:
    assert chunk_length(np.array([1.0, 0.5, -0.1, 1.0])) == 2  # up to the first drop below 0
    assert chunk_length(np.array([0.3, 0.2])) == 2  # never drops: the whole chunk
    assert chunk_length(np.array([-1.0, 1.0])) == 1  # at least one step


@pytest.mark.slow
def test_validity_channel_learns_event_lengths(episode) -> None:
    """Overfit a handful of real sim events: predicted chunk lengths follow the events' lengths."""
    samples = EventSamples([episode], caption_track="action", h_max=H)
    picks = {s["caption"]: i for i, s in enumerate(samples[i] for i in range(len(samples)))}
    chosen = [
        "let go",
        "grasp",
        "descend to grasp the blue block",
        "bring the blue block above the bin",
    ]
    batch = collate([samples[picks[c]] for c in chosen])
    lengths = batch["length"].tolist()
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]  # short events first

    model = _model(episode)
    with torch.no_grad():
        latents = model.encode_video(batch["video"])
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=1e-3, weight_decay=0.0)
    for i in range(200):  # every third step in the action-only layout, as the trainer draws them
        loss = model(batch, "event", latents=latents, action_only=i % 3 == 0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    predicted = []
    for caption in chosen:
        event = next(e for e in episode.events if e.action == caption)
        predicted.append(
            model.predict_actions(
                _obs(episode, event.start), caption, steps=10, guidance=1.0
            ).length
        )
    short, long = predicted[:2], predicted[2:]
    assert max(short) < min(long), f"events of lengths {lengths} got chunks of {predicted}"


def test_residual_video_predicts_the_change_from_the_still_observation(episode, batch) -> None:
    """With `video_residual`, the video loss is on (clip - still clip) * scale, and imagination
    composites the decoded change onto the observed pixels: frame 0 is the observation itself,
    and latents equal to the still clip's imagine an unmoving scene, exactly."""
    torch.manual_seed(0)
    model = WorldActionModel(
        replace(get_preset("tiny"), image_size=RES, video_residual=2.0),
        _normalizer(episode),
        episode.cameras,
    )
    lat = model.encode_video(batch["video"])
    still = model.encode_video(batch["video"][:, :, :1].expand_as(batch["video"]))
    res = model._residual(lat, still)
    assert torch.equal(res[:, :, :, :1], lat[:, :, :, :1])
    assert torch.allclose(res[:, :, :, 1:], (lat - still)[:, :, :, 1:] * 2.0)
    assert torch.allclose(model._absolute(res, still), lat, atol=1e-6)
    losses = model(batch, "event", latents=lat, stills=still)
    assert torch.isfinite(losses["video"])
    torch.manual_seed(1)  # stills encoded from the batch when not given: the same loss
    again = model(batch, "event", latents=lat)
    torch.manual_seed(1)
    given = model(batch, "event", latents=lat, stills=still)
    assert torch.allclose(again["video"], given["video"], atol=1e-5)

    obs = _obs(episode)
    im = model.imagine(obs, "grasp the block", steps=2, full_video=True)
    for cam, frames in im.video.items():
        assert np.array_equal(frames[0], obs.images[cam])  # RES-sized sim frames: no resize
    p = model._prepare(obs, "grasp the block", "event", 1.0, H)
    still_video, _ = model._decode(p["stills"], p, H)
    for cam, frames in still_video.items():
        assert (np.abs(frames.astype(int) - obs.images[cam][None].astype(int)) <= 1).all()


@pytest.mark.parametrize(
    "option, embedding",
    [("future_actions", "future_action_embedding"), ("future_track", "future_track_embedding")],
)
def test_an_action_conditioned_future_is_imagined_under_the_action_only_chunk(
    episode, batch, option, embedding
) -> None:
    """With `future_actions` (the chunk) or `future_track` (where the chunk takes the gripper
    in each calibrated view), training feeds the true chunk to the future frames and
    imagination the action-only path's chunk: the video changes with it, the action-only path
    does not."""
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg = replace(cfg, image_size=RES, denoiser=replace(cfg.denoiser, **{option: True}))
    model = WorldActionModel(cfg, _normalizer(episode), episode.cameras)
    with torch.no_grad():  # a fresh (zero) video head would predict no change whatever it sees
        model.denoiser.head.head.weight.normal_(0, 0.05)
    assert torch.isfinite(model(batch, "event")["video"])
    obs = _obs(episode)
    before = model.imagine(obs, "grasp the block", steps=2, seed=3, full_video=True)
    fast = model.predict_actions(obs, "grasp the block", steps=2, seed=3)
    with torch.no_grad():
        getattr(model.denoiser, embedding).weight.normal_(0, 0.5)
    after = model.imagine(obs, "grasp the block", steps=2, seed=3, full_video=True)
    assert np.array_equal(
        model.predict_actions(obs, "grasp the block", steps=2, seed=3).chunk, fast.chunk
    )
    cam = next(iter(after.video))
    assert not np.array_equal(before.video[cam][1:], after.video[cam][1:])


def test_the_track_is_the_chunk_seen_through_the_calibrations(episode) -> None:
    """`WorldActionModel._track`: the chunk's gripper projected into each view; without
    calibrations, nothing."""
    cfg = get_preset("tiny")
    cfg = replace(cfg, image_size=RES, denoiser=replace(cfg.denoiser, future_track=True))
    model = WorldActionModel(cfg, _normalizer(episode), episode.cameras)
    obs = _obs(episode)
    chunk = torch.from_numpy(model.predict_actions(obs, "grasp the block", steps=2).chunk[None])
    state = torch.as_tensor(np.asarray(obs.state, dtype=np.float32))[None]
    views = len(episode.cameras)
    track = model._track(state, chunk, [obs.cameras], views)
    assert track.shape[:3] == (1, views, H // 4) and torch.count_nonzero(track[..., 2]) > 0
    assert torch.count_nonzero(model._track(state, chunk, None, views)) == 0


def test_several_futures_are_averaged_and_the_first_is_the_single_one(episode) -> None:
    """`futures=K` denoises K futures in one batch: the video is their per-pixel mean, each is
    kept, and the first (with its actions) is what a single-future call with that seed draws."""
    torch.manual_seed(0)
    cfg = replace(get_preset("tiny"), image_size=RES, video_residual=1.0)
    model = WorldActionModel(cfg, _normalizer(episode), episode.cameras)
    with torch.no_grad():  # a fresh (zero) video head would imagine no change at all
        model.denoiser.head.head.weight.normal_(0, 0.05)
    obs = _obs(episode)
    one = model.imagine(obs, "grasp the block", steps=2, seed=5, full_video=True)
    three = model.imagine(obs, "grasp the block", steps=2, seed=5, full_video=True, futures=3)
    assert one.video_futures is None
    np.testing.assert_allclose(three.chunk, one.chunk, atol=1e-5)
    for cam, frames in three.video_futures.items():
        assert frames.shape == (3, *one.video[cam].shape)
        assert (np.abs(frames[0].astype(int) - one.video[cam].astype(int)) <= 1).all()
        assert not np.array_equal(frames[1], frames[0])
        mean = frames.astype(float).mean(0)
        assert (np.abs(three.video[cam] - mean) <= 1).all()
        assert np.array_equal(three.video[cam][0], obs.images[cam])
    with pytest.raises(ValueError, match="futures must be in"):
        model.imagine(obs, "grasp the block", steps=2, futures=17)
