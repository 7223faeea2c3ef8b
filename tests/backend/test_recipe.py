"""The training recipe: what each stage trains on, which weights and statistics travel between
stages, the action frame, and the persistent latent cache (real sim episodes, real files)."""

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.data.lerobot import EventDataset, write_dataset
from backend.data.samples import ClipSamples, EventSamples, FixedWindowSamples, frameless
from backend.model.checkpoint import EMA_FILE, MODEL_FILE, load_tensors, read_config
from backend.model.presets import get_preset
from backend.model.wam import Observation, WorldActionModel, from_model_actions, to_model_actions
from backend.train import (
    CHECKPOINT_DIR,
    TrainConfig,
    _calibrate_latents,
    _samples,
    action_stats,
    train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Two real sim datasets of different tasks (different state and action ranges)."""
    from robot.sim.experts import record_episode

    root = tmp_path_factory.mktemp("recipe")
    return {
        "pick": write_dataset(
            root / "pick", [record_episode("pick_place_bin", s, resolution=32) for s in (0, 1)]
        ),
        "press": write_dataset(
            root / "press", [record_episode("press_buttons_in_order", 0, resolution=32)]
        ),
    }


def _cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        dataset=str(dataset),
        out=str(out),
        batch_size=2,
        log_every=1,
        warmup_steps=1,
        threads=1,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def vae_run(datasets, tmp_path_factory) -> Path:
    """A VAE stage whose EMA weights differ clearly from its raw weights (high lr, fast EMA)."""
    out = tmp_path_factory.mktemp("vae")
    train(
        _cfg(datasets["pick"], out, stage="vae", steps=3, lr=3e-3, ema_decay=0.5, vae_clip_frames=5)
    )
    return out / CHECKPOINT_DIR


def test_vae_stage_trains_on_whole_clips_from_any_step(datasets) -> None:
    source = frameless(EventDataset(datasets["pick"]))
    samples = _samples(
        _cfg(datasets["pick"], Path("unused"), stage="vae", vae_clip_frames=9), None, source
    )
    assert isinstance(samples, ClipSamples)
    assert all(samples[i]["video"].shape[1] == 9 for i in range(0, len(samples), 7))
    starts = {r.start for r in samples.refs if r.episode_index == 0}
    assert starts == set(range(source.length(0) - 8))  # every step, event boundaries or not


def test_latent_statistics_describe_the_ema_encoder(datasets, vae_run: Path) -> None:
    """Later stages load the EMA weights, so the standardisation must be fitted with them."""
    model = WorldActionModel.from_checkpoint(vae_run)  # EMA weights and the stored statistics
    raw = WorldActionModel.from_checkpoint(vae_run, use_ema=False)
    differ = any(
        not torch.equal(a, b) for a, b in zip(model.vae.parameters(), raw.vae.parameters())
    )
    assert differ, "test needs EMA weights that differ from the raw ones"
    stored = model.vae.latents_mean.clone(), model.vae.latents_std.clone()

    # the EMA of a finished run is exactly the EMA file's weights
    ema = SimpleNamespace(shadow={f"vae.{n}": p.detach() for n, p in model.vae.named_parameters()})

    cfg = _cfg(datasets["pick"], Path("unused"), stage="vae", vae_clip_frames=5)
    samples = _samples(cfg, None, frameless(EventDataset(datasets["pick"])))
    _calibrate_latents(model, ema, samples, cfg)  # refits into model.vae's buffers
    torch.testing.assert_close(stored[0], model.vae.latents_mean)
    torch.testing.assert_close(stored[1], model.vae.latents_std)


def test_init_from_a_vae_takes_the_preset_and_this_datasets_normaliser(
    datasets, vae_run: Path, tmp_path
) -> None:
    """--init from a VAE trained on other data: the denoiser is the preset's (h_max included) and
    the normaliser is fitted on the dataset being trained, in the model's action frame."""
    train(_cfg(datasets["press"], tmp_path, steps=1, init=str(vae_run), caption_track="action"))
    cfg = read_config(tmp_path / CHECKPOINT_DIR)
    assert cfg["model"]["denoiser"]["h_max"] == 16 and cfg["stage"] == "denoiser"
    press = EventDataset(datasets["press"])
    np.testing.assert_allclose(
        cfg["normalizer"]["state"]["min"], press.norm_stats()["observation.state"]["min"], atol=1e-6
    )
    source = frameless(press)
    expected = action_stats(source, EventSamples(source, h_max=16), relative=True)
    np.testing.assert_allclose(cfg["normalizer"]["action"]["min"], expected["min"], atol=1e-6)
    np.testing.assert_allclose(cfg["normalizer"]["action"]["max"], expected["max"], atol=1e-6)
    # the autoencoder came from the VAE run
    model = WorldActionModel.from_checkpoint(tmp_path / CHECKPOINT_DIR)
    vae = WorldActionModel.from_checkpoint(vae_run)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.vae.state_dict().values(), vae.vae.state_dict().values())
    )


def test_frameless_samples_never_decode_video(datasets, monkeypatch) -> None:
    """A trainer reading cached latents builds samples with video=False: no frame is decoded
    (checking that a camera exists once decoded the whole episode's video, ~80 % of a step)."""
    dataset = EventDataset(datasets["pick"])
    decoded = []
    real = dataset.frames
    monkeypatch.setattr(dataset, "frames", lambda *a: decoded.append(a) or real(*a))
    samples = EventSamples(frameless(dataset), h_max=16, caption_track="action")
    rows = [samples.sample(i, video=False) for i in range(len(samples))]
    rows += [samples.suffix(0, np.random.default_rng(0), video=False)]
    assert decoded == [] and all("video" not in r for r in rows)
    with_video = samples.sample(0)  # and frames still come when asked for
    assert with_video["video"].shape[0] == len(dataset.camera_names) and decoded


def test_unified_stage_supervises_whole_fixed_chunks(datasets) -> None:
    source = frameless(EventDataset(datasets["pick"]))
    cfg = _cfg(datasets["pick"], Path("unused"), stage="unified", caption_track="action")
    samples = _samples(cfg, get_preset("tiny"), source)
    assert isinstance(samples, FixedWindowSamples) and samples.horizon == 16
    inside = [
        samples[i]
        for i in range(len(samples))
        if samples.refs[i].start + 16 <= source.length(samples.refs[i].episode_index)
    ]
    assert inside and all(s["valid"].all() for s in inside)  # every step of a chunk is supervised
    events = source.events(0)
    s = samples[0]
    # the VLM's next-event target, next to the task it is conditioned on
    assert s["caption"] == events[0].action and s["task"] == events[0].task


def test_unified_mode_needs_a_unified_stage_checkpoint(datasets, vae_run: Path, tmp_path) -> None:
    train(_cfg(datasets["pick"], tmp_path, steps=1, init=str(vae_run)))
    model = WorldActionModel.from_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert model.stage == "denoiser"
    ep = EventDataset(datasets["pick"]).episode(0)
    obs = Observation({c: f[0] for c, f in ep.frames.items()}, ep.states[0], ep.cameras)
    with pytest.raises(ValueError, match="stopped at stage 'denoiser'"):
        model.predict_actions(obs, ep.instruction, mode="unified", steps=1)
    assert model.predict_actions(obs, "grasp", steps=1).actions.shape[1] == 7  # event mode works


def test_unconditional_branch_sees_no_staircase_states() -> None:
    """Guidance's unconditional row (no instruction token) must not see the task through the VLM states."""
    from backend.model.denoiser import DENOISER_PRESETS, WorldActionDenoiser, i2v_condition

    torch.manual_seed(0)
    cfg = replace(DENOISER_PRESETS["tiny"], extra_context_dim=24)
    net = WorldActionDenoiser(cfg)
    for p in net.parameters():  # non-zero heads so the outputs depend on everything
        torch.nn.init.normal_(p, std=0.05)
    B, V = 1, 3
    video = torch.randn(B, V, 16, 2, 4, 4)
    cond = i2v_condition(torch.randn(B, V, 16, 1, 4, 4), 2)
    ctx, none = torch.randn(B, 5, cfg.text_dim), torch.zeros(B, 5, dtype=torch.bool)
    args = (
        video,
        torch.randn(B, 4, 8),
        torch.rand(B),
        torch.rand(B),
        ctx,
        none,
        torch.randn(B, 7),
        cond,
    )
    a = net(*args, extra_context=torch.randn(B, 4, 24))
    b = net(*args, extra_context=torch.randn(B, 4, 24))
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    with_text = (*args[:5], torch.ones(B, 5, dtype=torch.bool), *args[6:])
    c = net(*with_text, extra_context=torch.randn(B, 4, 24))
    d = net(*with_text, extra_context=torch.randn(B, 4, 24))
    assert not torch.allclose(c[1], d[1])  # the conditional row does read them


def test_relative_actions_round_trip_and_wrap() -> None:
    state = torch.tensor([[0.1, -0.05, 0.2, 0.0, 0.0, 3.1, 0.0]])
    actions = torch.tensor([[[0.12, -0.05, 0.1, 0.0, 0.0, -3.1, 1.0]]])  # yaw crosses +-pi
    rel = to_model_actions(actions, state, relative=True)
    torch.testing.assert_close(rel[0, 0, :3], torch.tensor([0.02, 0.0, -0.1]))
    assert abs(float(rel[0, 0, 5]) - (2 * np.pi - 6.2)) < 1e-5  # the short way round
    assert float(rel[0, 0, 6]) == 1.0  # the gripper stays absolute
    back = from_model_actions(rel, state, relative=True)
    torch.testing.assert_close(back[..., :3], actions[..., :3])
    assert torch.allclose(torch.cos(back[..., 5]), torch.cos(actions[..., 5]), atol=1e-5)


def test_latent_cache_is_persistent_and_exact(
    datasets, vae_run: Path, tmp_path, monkeypatch
) -> None:
    """A second run on the same cache encodes nothing and trains on the very same numbers."""
    cache = tmp_path / "cache"
    first = train(
        _cfg(datasets["pick"], tmp_path / "a", steps=4, init=str(vae_run), latent_cache=str(cache))
    )
    calls = []
    original = WorldActionModel.encode_video
    monkeypatch.setattr(
        WorldActionModel, "encode_video", lambda self, x: calls.append(1) or original(self, x)
    )
    again = train(
        _cfg(datasets["pick"], tmp_path / "b", steps=4, init=str(vae_run), latent_cache=str(cache))
    )
    assert calls == [], "the second run re-encoded latents"
    assert first["losses"] == again["losses"]
    fresh = train(
        _cfg(
            datasets["pick"],
            tmp_path / "c",
            steps=4,
            init=str(vae_run),
            latent_cache=str(tmp_path / "new"),
        )
    )
    assert (
        fresh["losses"] == first["losses"]
    )  # read back or freshly encoded: the same float16 values
    assert len(calls) > 0


def _precompute(dataset: Path, vae_run: Path, tmp_path: Path, **kw) -> Path:
    """A run with --precompute-latents into tmp_path/cache; returns the cache."""
    cache = tmp_path / "cache"
    train(
        _cfg(
            dataset,
            tmp_path / "a",
            init=str(vae_run),
            latent_cache=str(cache),
            precompute_latents=True,
            **kw,
        )
    )
    return cache


def test_precomputed_latents_leave_nothing_to_encode(
    datasets, vae_run: Path, tmp_path, monkeypatch
) -> None:
    cache = _precompute(datasets["press"], vae_run, tmp_path, steps=1)
    calls = []
    original = WorldActionModel.encode_video
    monkeypatch.setattr(
        WorldActionModel, "encode_video", lambda self, x: calls.append(1) or original(self, x)
    )
    train(
        _cfg(datasets["press"], tmp_path / "b", steps=6, init=str(vae_run), latent_cache=str(cache))
    )
    assert calls == []  # every step, joint or action-only from any suffix, read the cache


def test_an_action_only_run_precomputes_observations_and_no_clip(
    datasets, vae_run: Path, tmp_path
) -> None:
    """--video-noise-prob 1: every step reads observation latents only; no clip is encoded."""
    from backend.model.wam import Objective

    cache = _precompute(
        datasets["press"], vae_run, tmp_path, steps=3, objective=Objective(video_noise_prob=1.0)
    )
    (store,) = [p for p in cache.iterdir() if p.is_dir()]
    assert len(list((store / "obs").glob("*.npy"))) == 1  # the one episode's frames
    assert list((store / "clip").glob("*.npy")) == []


def test_keypoints_join_a_trained_model_and_read_cached_pixels(
    datasets, vae_run: Path, tmp_path
) -> None:
    """--keypoints with --init: the trained weights load, the keypoint encoder starts fresh,
    action-only steps read the observation frames from the cache, and both inference paths run."""
    from backend.model.wam import Objective

    train(_cfg(datasets["pick"], tmp_path / "base", steps=1, init=str(vae_run)))
    base = tmp_path / "base" / CHECKPOINT_DIR
    cache = _precompute(
        datasets["pick"],
        base,
        tmp_path,
        steps=2,
        keypoints=4,
        freeze_video_tower=True,
        objective=Objective(video_noise_prob=1.0),
    )
    (store,) = [p for p in cache.iterdir() if p.is_dir()]
    pixels = sorted((store / "pixels").glob("*.npy"))
    assert len(pixels) == 2  # both episodes' frames, decoded once
    ep = EventDataset(datasets["pick"]).episode(1)
    first_camera = json.loads((store / "manifest.json").read_text())["cameras"][0]
    np.testing.assert_array_equal(np.load(pixels[1])[:, 0], ep.frames[first_camera])

    run = tmp_path / "a" / CHECKPOINT_DIR
    assert read_config(run)["model"]["denoiser"]["keypoints"] == 4
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(r["keypoint"] > 0 for r in rows)  # the endpoint regression trains the encoder
    before, after = load_tensors(base / EMA_FILE), load_tensors(run / MODEL_FILE)
    video = [k for k in after if k.startswith("denoiser.blocks.")]
    action = [k for k in after if k.startswith("denoiser.action_blocks.")]
    assert video and all(torch.equal(before[k], after[k]) for k in video)  # frozen
    assert any(not torch.equal(before[k], after[k]) for k in action)  # trained
    model = WorldActionModel.from_checkpoint(run)
    assert model.denoiser.obs_keypoints is not None
    obs = Observation({c: f[3] for c, f in ep.frames.items()}, ep.states[3], ep.cameras)
    assert model.predict_actions(obs, "grasp", steps=2).actions.shape[1] == 7
    assert model.imagine(obs, "grasp", steps=1, horizon=4).actions.shape[1] == 7

    # Instruction queries join the keypoint model: its trained features load, the query head
    # and the MLP (whose inputs grow) start fresh, and inference reads the instruction.
    train(
        _cfg(
            datasets["pick"],
            tmp_path / "q",
            steps=1,
            init=str(run),
            keypoint_queries=2,
            latent_cache=str(cache),
            freeze_video_tower=True,
            objective=Objective(video_noise_prob=1.0),
        )
    )
    queried = tmp_path / "q" / CHECKPOINT_DIR
    assert read_config(queried)["model"]["denoiser"]["keypoint_queries"] == 2
    model = WorldActionModel.from_checkpoint(queried)
    assert model.denoiser.obs_keypoints.query is not None
    assert model.predict_actions(obs, "grasp", steps=2).actions.shape[1] == 7
