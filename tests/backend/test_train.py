"""Trainer: 2 steps + resume per recipe (exactly equal to an uninterrupted run), every stage,
config errors, and a 2-process torchrun (DDP over gloo) run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.model.checkpoint import EMA_FILE, MODEL_FILE, load_tensors, read_config
from backend.train import CHECKPOINT_DIR, LOG_FILE, TrainConfig, iterate_log, lr_at, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """One real sim episode (8 events) written as a LeRobot v3 dataset."""
    from backend.data.lerobot import write_dataset
    from robot.sim.experts import record_episode

    root = tmp_path_factory.mktemp("train") / "ds"
    write_dataset(root, [record_episode("pick_place_bin", 0)])
    return root


def _cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        dataset=str(dataset),
        out=str(out),
        batch_size=2,
        log_every=1,
        warmup_steps=2,
        threads=1,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run / CHECKPOINT_DIR / MODEL_FILE)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["event", "fixed"])
def test_two_steps_then_resume_equals_four_steps(
    dataset: Path, tmp_path: Path, recipe: str
) -> None:
    first = train(_cfg(dataset, tmp_path / "a", recipe=recipe, steps=2))
    assert first["steps"] == 2 and read_config(tmp_path / "a" / CHECKPOINT_DIR)["step"] == 2
    resumed = train(_cfg(dataset, tmp_path / "a", recipe=recipe, steps=4, resume=True))
    straight = train(_cfg(dataset, tmp_path / "b", recipe=recipe, steps=4))
    assert resumed["steps"] == straight["steps"] == 4
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "resumed run diverged from the uninterrupted one"
    )
    assert resumed["losses"] == straight["losses"]
    rows = list(iterate_log(tmp_path / "a" / LOG_FILE))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(
        {"loss", "action", "validity", "lr", "samples_per_s", "action_only"} <= set(r) for r in rows
    )
    # joint steps carry the video loss; action-only steps (the closed-loop layout) do not
    assert {r["action_only"] for r in rows} == {True, False}
    assert all(("video" in r) != r["action_only"] for r in rows)
    cfg = read_config(tmp_path / "a" / CHECKPOINT_DIR)
    assert cfg["recipe"] == recipe and cfg["stage"] == "denoiser" and cfg["preset"] == "tiny"
    assert set(cfg["cameras"]) == {"front", "left", "right"}
    assert set(cfg["normalizer"]) == {"state", "action"} and cfg["code_version"]
    assert (tmp_path / "a" / CHECKPOINT_DIR / EMA_FILE).exists()


@pytest.mark.slow
def test_vae_then_unified_stages_chain(dataset: Path, tmp_path: Path) -> None:
    vae = train(_cfg(dataset, tmp_path / "vae", stage="vae", steps=1, batch_size=1))
    assert set(vae["losses"]) == {"loss", "l1", "mse", "kl"}
    std = load_tensors(tmp_path / "vae" / CHECKPOINT_DIR / EMA_FILE)["vae.latents_std"]
    assert not torch.equal(std, torch.ones_like(std))  # latents standardised after the VAE stage
    uni = train(
        _cfg(
            dataset,
            tmp_path / "uni",
            stage="unified",
            steps=1,
            event_mix=0.0,
            init=str(tmp_path / "vae" / CHECKPOINT_DIR),
        )
    )
    assert {"caption", "video", "action", "validity"} <= set(uni["losses"])
    torch.testing.assert_close(
        _weights(tmp_path / "uni")["vae.latents_std"], std
    )  # frozen, carried over
    uni2 = train(
        _cfg(dataset, tmp_path / "uni", stage="unified", steps=2, event_mix=0.0, resume=True)
    )
    assert uni2["steps"] == 2
    with pytest.raises(
        ValueError, match="trained with stage 'unified', this run asks for 'denoiser'"
    ):
        train(_cfg(dataset, tmp_path / "uni", stage="denoiser", steps=3, resume=True))


@pytest.mark.slow
def test_unified_stage_keeps_event_mode_with_event_steps(dataset: Path, tmp_path: Path) -> None:
    """After the denoiser stage, the unified stage mixes in event-mode steps, keeps the
    denoiser's normaliser (its weights were trained in those units) and resumes exactly."""
    train(_cfg(dataset, tmp_path / "ev", steps=1))
    init = str(tmp_path / "ev" / CHECKPOINT_DIR)
    uni = dict(stage="unified", event_mix=0.5)
    train(_cfg(dataset, tmp_path / "a", steps=3, init=init, **uni))
    train(_cfg(dataset, tmp_path / "a", steps=6, resume=True, **uni))
    straight = train(_cfg(dataset, tmp_path / "b", steps=6, init=init, **uni))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed mixed run diverged"
    rows = list(iterate_log(tmp_path / "a" / LOG_FILE))
    kinds = {r["event_step"] for r in rows}
    assert kinds == {True, False}, rows  # both kinds of step in six
    assert all(("caption" in r) != r["event_step"] for r in rows)  # the VLM on unified steps only
    assert straight["steps"] == 6
    cfg, ev = read_config(tmp_path / "a" / CHECKPOINT_DIR), read_config(init)
    assert cfg["stage"] == "unified" and cfg["normalizer"] == ev["normalizer"]
    with pytest.raises(ValueError, match="event_mix"):
        _cfg(dataset, tmp_path, event_mix=1.0)


@pytest.mark.slow
def test_unified_stage_with_a_frozen_denoiser_leaves_event_mode_as_it_was(
    dataset: Path, tmp_path: Path
) -> None:
    train(_cfg(dataset, tmp_path / "ev", steps=1))
    init = tmp_path / "ev" / CHECKPOINT_DIR
    run = train(
        _cfg(
            dataset, tmp_path / "u", stage="unified", steps=2, init=str(init), freeze_denoiser=True
        )
    )
    assert "caption" in run["losses"]  # every step a unified step
    before, after = load_tensors(init / EMA_FILE), _weights(tmp_path / "u")
    denoiser = [k for k in before if k.startswith("denoiser.")]
    moved = {k for k in denoiser if not torch.equal(before[k].float(), after[k].float())}
    assert moved and all(k.startswith("denoiser.extra_context_embedding.") for k in moved)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vlm."))
    with pytest.raises(ValueError, match="freeze-denoiser is for the unified stage"):
        _cfg(dataset, tmp_path, freeze_denoiser=True)


@pytest.mark.slow
def test_a_future_expert_learns_residual_video_and_leaves_the_policy_as_it_was(
    dataset: Path, tmp_path: Path
) -> None:
    """--future-expert --video-residual: the expert starts as a copy of the video tower and
    only it and the video head train (joint steps from --video-episodes' episodes, with still
    clips from the cache), so the observation's path, the closed-loop policy, is unchanged;
    the run resumes exactly."""
    train(_cfg(dataset, tmp_path / "ev", steps=1))
    init = tmp_path / "ev" / CHECKPOINT_DIR
    kw = dict(
        future_expert=True, video_residual=1.5, video_episodes=1, init=str(init), steps=4, seed=1
    )
    train(_cfg(dataset, tmp_path / "a", **{**kw, "steps": 2}))
    train(_cfg(dataset, tmp_path / "a", **{**kw, "init": None, "resume": True}))
    train(_cfg(dataset, tmp_path / "b", **kw))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed expert run diverged"
    rows = list(iterate_log(tmp_path / "a" / LOG_FILE))
    assert not any(r["action_only"] for r in rows) and all("video" in r for r in rows)
    before = load_tensors(init / EMA_FILE)
    moved = {k for k in before if not torch.equal(before[k].float(), a[k].float())}
    assert moved and all(k.startswith("denoiser.head.") for k in moved)
    expert = [k for k in a if k.startswith("denoiser.future_") or ".future." in k]
    assert expert and any(not torch.equal(a[k], a[k.replace("future.", "")]) for k in expert)
    cfg = read_config(tmp_path / "a" / CHECKPOINT_DIR)
    assert cfg["model"]["denoiser"]["future_expert"] and cfg["model"]["video_residual"] == 1.5
    still = list((tmp_path / "a" / "latents").glob("*/still/*.npy"))
    assert still and all(int(p.name.split("_")[0]) < 1 for p in still)
    with pytest.raises(ValueError, match="future-expert"):
        _cfg(dataset, tmp_path, future_expert=True, stage="unified")


def test_a_future_track_starts_fresh_and_trains_with_the_expert(
    dataset: Path, tmp_path: Path
) -> None:
    """--future-track on a checkpoint without one: the track embedding starts at zero (the
    model computes what it did) and learns from the dataset's calibrations; the policy stays."""
    train(_cfg(dataset, tmp_path / "ev", steps=1))
    init = tmp_path / "ev" / CHECKPOINT_DIR
    kw = dict(future_expert=True, future_track=True, init=str(init), steps=2, seed=1)
    train(_cfg(dataset, tmp_path / "t", **kw))
    after = _weights(tmp_path / "t")
    assert after["denoiser.future_track_embedding.weight"].abs().sum() > 0
    before = load_tensors(init / EMA_FILE)
    moved = {k for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert moved and all(k.startswith("denoiser.head.") for k in moved)
    assert read_config(tmp_path / "t" / CHECKPOINT_DIR)["model"]["denoiser"]["future_track"]


def test_a_future_expert_run_keeps_a_unified_checkpoint_unified() -> None:
    """Its VLM and unified mode are untouched, so the checkpoint still serves unified mode."""
    from backend.train import recorded_stage

    expert = TrainConfig(dataset="d", out="o", future_expert=True)
    assert recorded_stage(expert, {"stage": "unified"}) == "unified"
    assert recorded_stage(expert, {"stage": "denoiser"}) == "denoiser"
    assert recorded_stage(TrainConfig(dataset="d", out="o"), {"stage": "unified"}) == "denoiser"
    assert recorded_stage(expert, None) == "denoiser"


def test_init_keeps_the_normaliser_of_a_denoiser_it_goes_on_training() -> None:
    """Fine-tuning the shipped (unified-stage) model's denoiser, or the unified stage after the
    denoiser stage, keeps the checkpoint's units; another recipe or a VAE checkpoint does not."""
    from backend.train import _continues

    def cfg(stage: str, recipe: str = "event") -> TrainConfig:
        return TrainConfig(dataset="d", out="o", stage=stage, recipe=recipe)

    for was, now in [("denoiser", "denoiser"), ("denoiser", "unified"), ("unified", "denoiser"),
                     ("unified", "unified")]:  # fmt: skip
        assert _continues({"recipe": "event", "stage": was}, cfg(now))
    assert not _continues({"recipe": "fixed", "stage": "denoiser"}, cfg("denoiser"))
    assert not _continues({"recipe": "event", "stage": "vae"}, cfg("denoiser"))


def test_config_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 'event'"):
        _cfg(dataset, tmp_path, recipe="evnt")
    with pytest.raises(ValueError, match="unknown stage"):
        _cfg(dataset, tmp_path, stage="policy")
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        _cfg(dataset, tmp_path, vae_clip_frames=8)
    with pytest.raises(ValueError, match="drop --init"):
        _cfg(dataset, tmp_path, resume=True, init="x")
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        train(_cfg(dataset, tmp_path / "nothing", resume=True, steps=1))
    with pytest.raises(FileNotFoundError, match="not a LeRobot dataset"):
        train(_cfg(tmp_path / "no_dataset", tmp_path / "x", steps=1))


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(dataset="d", out="o", lr=1.0, warmup_steps=10, steps=110)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 110) == pytest.approx(0.1)
    assert all(lr_at(cfg, s) >= lr_at(cfg, s + 1) for s in range(10, 110))


@pytest.mark.slow
def test_torchrun_two_processes(dataset: Path, tmp_path: Path) -> None:
    """`wallwm train` under torchrun: DDP over gloo with 2 CPU processes."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "app.cli",
        "train",
        "--dataset",
        str(dataset),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--no-balance",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    rows = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["world_size"] == 2 for r in rows)
    assert read_config(out / CHECKPOINT_DIR)["step"] == 2
    assert all(torch.isfinite(t).all() for t in _weights(out).values() if t.is_floating_point())
