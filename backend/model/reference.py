"""A shipped checkpoint's stored output on a fixed input, so a regression shows up as a diff.

`write_reference` records one real observation of the simulated robot (test seed 4 of the
task the checkpoint was trained on, its three views and calibrations), the instruction of the
expert's first event, and what the model answers: the action-only chunk and the full
imagination (chunk, validity, imagined video); for a model trained through the unified stage
also unified mode on the task instruction (the fixed chunk and the VLM's proposed next event). `check_reference` loads the same input into the
checkpoint and compares. Inputs are stored rather than re-rendered, so the check does not
depend on the renderer; only the model's numerics are under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REFERENCE_FILE = "reference.npz"
# float32 CPU kernels are not bit-reproducible across thread counts and CPUs: outputs agree to
# about 1e-5 after 10 Euler steps; a changed weight or code path moves them by orders more.
ATOL_ACTIONS = 1e-3
VIDEO_MAX_MEAN_ABS = 1.0  # uint8 levels, mean over the imagined video


def _observation_arrays(task: str, seed: int, cameras: list[str]) -> dict[str, np.ndarray]:
    from robot.sim.env import SimEnv
    from robot.sim.experts import record_episode

    rollout = record_episode(task, seed, resolution=16)
    caption = rollout.events[0].caption("action")
    with SimEnv(task, seed=seed, cameras=cameras) as env:
        env.reset(seed, render=False)
        o = env.observe(render=True)
        calib = env.cameras
    arrays: dict[str, np.ndarray] = {
        "instruction": np.array(caption),
        "task_instruction": np.array(rollout.instruction),
        "cameras": np.array(cameras),
        "state": np.asarray(o["state"], np.float32),
    }
    for c in cameras:
        arrays[f"image/{c}"] = np.asarray(o["images"][c], np.uint8)
        arrays[f"K/{c}"] = np.asarray(calib[c].K, np.float64)
        arrays[f"T_world_cam/{c}"] = np.asarray(calib[c].T_world_cam, np.float64)
    return arrays


def _observation(arrays):
    from backend.model.wam import Observation
    from robot.types import CameraCalib

    cams = [str(c) for c in arrays["cameras"]]
    images = {c: arrays[f"image/{c}"] for c in cams}
    calib = {
        c: CameraCalib(
            c,
            arrays[f"K/{c}"],
            arrays[f"T_world_cam/{c}"],
            images[c].shape[1],
            images[c].shape[0],
        )
        for c in cams
    }
    return Observation(images, arrays["state"], calib)


def _outputs(model, arrays) -> dict[str, np.ndarray]:
    obs, text = _observation(arrays), str(arrays["instruction"])
    fast = model.predict_actions(obs, text, seed=0)
    full = model.imagine(obs, text, seed=0)
    cams = [str(c) for c in arrays["cameras"]]
    return {
        "out/action_only_chunk": np.asarray(fast.chunk, np.float32),
        "out/chunk": np.asarray(full.chunk, np.float32),
        "out/validity": np.asarray(full.validity, np.float32),
        "out/video": np.stack([full.video[c] for c in cams]),  # (V, T, H, W, 3) uint8
    } | (_unified_outputs(model, obs, arrays) if model.stage == "unified" else {})


def _unified_outputs(model, obs, arrays) -> dict[str, np.ndarray]:
    task = str(arrays["task_instruction"])
    uni = model.predict_actions(obs, task, mode="unified", seed=0)
    return {
        "out/unified_chunk": np.asarray(uni.chunk, np.float32),
        "out/proposal": np.array(uni.proposed_event or ""),
    }


def write_reference(directory: str | Path, task: str = "pick_place_bin", seed: int = 4) -> Path:
    """Record the fixed input and the checkpoint's output on it, beside its weights."""
    import torch

    from backend.model.wam import WorldActionModel

    torch.manual_seed(0)
    directory = Path(directory)
    model = WorldActionModel.from_checkpoint(directory).eval()
    arrays = _observation_arrays(task, seed, list(model.cameras) or ["front", "left", "right"])
    arrays |= {"task": np.array(task), "seed": np.array(seed)} | _outputs(model, arrays)
    path = directory / REFERENCE_FILE
    np.savez_compressed(path, **arrays)
    return path


def check_reference(directory: str | Path) -> dict[str, float]:
    """Differences between the checkpoint's output now and the stored one (raises past tolerance)."""
    from backend.model.wam import WorldActionModel

    directory = Path(directory)
    with np.load(directory / REFERENCE_FILE) as f:
        stored = dict(f)
    model = WorldActionModel.from_checkpoint(directory).eval()
    now = _outputs(model, stored)
    diff = {
        "action_only_chunk": float(
            np.abs(now["out/action_only_chunk"] - stored["out/action_only_chunk"]).max()
        ),
        "chunk": float(np.abs(now["out/chunk"] - stored["out/chunk"]).max()),
        "validity": float(np.abs(now["out/validity"] - stored["out/validity"]).max()),
        "video_mean_abs": float(
            np.abs(now["out/video"].astype(np.int16) - stored["out/video"].astype(np.int16)).mean()
        ),
    }
    if "out/unified_chunk" in stored:
        diff["unified_chunk"] = float(
            np.abs(now.get("out/unified_chunk", np.inf) - stored["out/unified_chunk"]).max()
        )
        if str(now.get("out/proposal", "")) != str(stored["out/proposal"]):
            raise AssertionError(
                f"{directory}: the VLM now proposes {str(now.get('out/proposal', ''))!r}, "
                f"{REFERENCE_FILE} stored {str(stored['out/proposal'])!r}"
            )
    keys = ("action_only_chunk", "chunk", "validity", "unified_chunk")
    bad = [k for k in keys if k in diff and diff[k] > ATOL_ACTIONS]
    if diff["video_mean_abs"] > VIDEO_MAX_MEAN_ABS:
        bad.append("video_mean_abs")
    if bad:
        raise AssertionError(f"{directory}: output differs from {REFERENCE_FILE}: {diff}")
    return diff
