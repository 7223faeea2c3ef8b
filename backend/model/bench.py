"""`wallwm bench model`: the model's speed, items (a)-(d) of docs/benchmarks.md.

(a) video tower vs diffusers' WanTransformer3DModel and (b) sight-cone flex_attention vs dense
masked SDPA come from backend.model.bench_kernels. This module adds
(c) action-only vs full imagination latency for one event (tiny preset, the sim's 3 views at
    64 px, one real observation): full = encode + joint video/action denoising + decoding the
    whole imagined horizon; action-only = encode + one video-tower pass + action steps;
(d) training throughput in samples/s of the real trainer on a recorded sim episode, per stage
    (the VAE stage trains on 9-frame clips of the 3 views).
Latency does not depend on the weights, so an untrained model is timed unless --checkpoint
is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

EVENT_TEXT = "go over the blue block"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender (best of)")
    parser.add_argument("--sampling-steps", type=int, default=10, help="denoising steps for (c)")
    parser.add_argument("--train-steps", type=int, default=12, help="optimizer steps per run for (d)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per step for (d)")
    parser.add_argument("--rig-resolution", type=int, default=64, help="(a)/(b): the rig's image size")
    parser.add_argument("--large-resolution", type=int, default=256, help="(b): the larger token count")
    parser.add_argument("--checkpoint", type=Path, help="time this checkpoint in (c) instead of an untrained tiny model")
    parser.add_argument("--skip-kernels", action="store_true", help="only (c) and (d)")


def _sim_dataset(root: Path) -> tuple[Path, object]:
    """One recorded sim episode (8 events) as a dataset; returns its path and the episode."""
    from backend.data.lerobot import write_dataset
    from robot.sim.experts import record_episode

    episode = record_episode("pick_place_bin", 0)
    write_dataset(root / "ds", [episode])
    return root / "ds", episode


def action_only_vs_imagination(episode, repeats: int, steps: int, checkpoint: Path | None = None) -> list[dict]:
    """(c) Latency of both inference paths on one observation, per thread regime."""
    from backend.model.bench_kernels import interleaved
    from backend.model.presets import get_preset
    from backend.model.wam import Observation, WorldActionModel

    if checkpoint is not None:
        model = WorldActionModel.from_checkpoint(checkpoint)
    else:
        torch.manual_seed(0)
        model = WorldActionModel(get_preset("tiny"), cameras=episode.cameras).eval()
    obs = Observation({c: f[0] for c, f in episode.frames.items()}, episode.states[0], episode.cameras)
    rows = []
    all_threads = torch.get_num_threads()
    try:
        for threads in dict.fromkeys((all_threads, 1)):
            torch.set_num_threads(threads)
            fns = {
                "full": lambda: model.imagine(obs, EVENT_TEXT, steps=steps, full_video=True),
                "action_only": lambda: model.predict_actions(obs, EVENT_TEXT, steps=steps),
            }
            sec = interleaved(fns, repeats)
            parts = model.imagine(obs, EVENT_TEXT, steps=steps, full_video=True).timings
            rows.append({
                "regime": "1 thread, CPU time" if threads == 1 else f"{threads} threads, wall time",
                "steps": steps, "horizon": model.default_horizon("event"),
                "guidance": model.config.guidance_scale,
                "full_ms": sec["full"] * 1e3, "action_only_ms": sec["action_only"] * 1e3,
                "speedup": sec["full"] / sec["action_only"],
                "full_parts_ms": {k: v * 1e3 for k, v in parts.items()},
            })
    finally:
        torch.set_num_threads(all_threads)
    return rows


def training_throughput(dataset: Path, out: Path, steps: int, batch_size: int) -> list[dict]:
    """(d) samples/s of `backend.train.train` on the tiny preset, per stage.

    Samples are drawn in shuffled epochs (not cluster-balanced) so every sample's latents are
    cached by the end of the first epoch; the steady rate is over the second half of the run.
    """
    from backend.train import LOG_FILE, TrainConfig, iterate_log, train

    rows = []
    for stage in ("denoiser", "unified", "vae"):
        run = out / stage
        t0 = time.perf_counter()
        summary = train(TrainConfig(dataset=str(dataset), out=str(run), stage=stage, steps=steps,
                                    batch_size=batch_size, log_every=1, save_every=10**9, progress=False,
                                    balanced=False))
        wall = time.perf_counter() - t0
        log = list(iterate_log(run / LOG_FILE))
        half = log[len(log) // 2 - 1]  # second half: latents cached, warm kernels
        steady = (log[-1]["step"] - half["step"]) * batch_size / (log[-1]["elapsed_s"] - half["elapsed_s"])
        rows.append({
            "stage": stage, "recipe": "event", "preset": "tiny", "batch_size": batch_size, "steps": steps,
            "samples_per_s": summary["samples_per_s"], "steady_samples_per_s": steady,
            "wall_s_with_setup": wall, "threads": torch.get_num_threads(),
        })
    return rows


def run(args: argparse.Namespace):
    from app.bench import BenchResult

    numbers: dict = {}
    sections = []
    if not args.skip_kernels:
        from backend.model.bench_kernels import run_kernels

        kernel_numbers, kernel_md = run_kernels(args.rig_resolution, args.large_resolution, args.repeats)
        numbers |= kernel_numbers
        sections.append(kernel_md)
    with tempfile.TemporaryDirectory(prefix="wallwm-bench-") as tmp:
        dataset, episode = _sim_dataset(Path(tmp))
        c_rows = action_only_vs_imagination(episode, args.repeats, args.sampling_steps, args.checkpoint)
        d_rows = training_throughput(dataset, Path(tmp) / "runs", args.train_steps, args.batch_size)
    numbers |= {
        "action_only_speedup": c_rows[0]["speedup"],
        "action_only_speedup_1thread": c_rows[-1]["speedup"],
        "action_only": c_rows,
        "training_samples_per_s": d_rows[0]["steady_samples_per_s"],
        "training": d_rows,
    }
    c_table = "\n".join(
        f"| {r['regime']} | {r['full_ms']:.0f} | {r['action_only_ms']:.0f} | **{r['speedup']:.1f}×** | "
        + " / ".join(f"{r['full_parts_ms'][k]:.0f}" for k in ("encode_s", "denoise_s", "decode_s"))
        + " |"
        for r in c_rows
    )
    d_table = "\n".join(
        f"| {r['stage']} | {r['preset']} | {r['batch_size']} | {r['steps']} | **{r['steady_samples_per_s']:.2f}** | "
        f"{r['samples_per_s']:.2f} | {r['threads']} |"
        for r in d_rows
    )
    r0 = c_rows[0]
    sections.append(
        "### (c) Action-only fast path vs full imagination, one event\n\n"
        f"Tiny preset, event mode, the sim's 3 views at 64 px, {r0['steps']} Euler steps, guidance "
        f"{r0['guidance']} (conditional + unconditional rows in one batch), horizon {r0['horizon']} steps. "
        "Full = encode + joint video/action denoising + decoding the whole imagined horizon; "
        "action-only = encode + one video-tower pass at t = 1 + action-tower steps, no decoding. "
        f"Best of {args.repeats}, timed in alternation.\n\n"
        "| regime | full (ms) | action-only (ms) | speedup | full: encode / denoise / decode (ms) |\n"
        "|---|---|---|---|---|\n" + c_table + "\n\n"
        "### (d) Training throughput\n\n"
        "`backend.train.train` on one recorded sim episode (8 events, event recipe), AdamW + EMA, "
        "frozen VAE with latents cached in the first epoch (the vae stage trains the VAE itself on "
        "9-frame clips of the 3 views). Steady = the second half of the run (overall includes the "
        "first epoch's VAE encoding and warm-up).\n\n"
        "| stage | preset | batch | steps | steady samples/s | overall samples/s | threads |\n"
        "|---|---|---|---|---|---|---|\n" + d_table + "\n"
    )
    return BenchResult(target="model", numbers=numbers, markdown="\n".join(sections))
