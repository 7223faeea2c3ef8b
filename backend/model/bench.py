"""`wallwm bench model`: the model's speed, items (a)-(d) of docs/benchmarks.md.

(a) video tower vs diffusers' WanTransformer3DModel and (b) sight-cone flex_attention vs dense
masked SDPA come from backend.model.bench_kernels. This module adds
(c) action-only vs full imagination latency for one event (tiny preset, the sim's 3 views at
    64 px, one real observation): full = encode + joint video/action denoising + decoding the
    whole imagined horizon; action-only = encode + one video-tower pass over the observation
    frame + action steps;
(d) steady training throughput in samples/s of the real trainer on many recorded episodes:
    the recipe before the make-it-learn changes against the recipe now, at one and two threads,
    and the VAE stage (9-frame clips of the 3 views).
Latency does not depend on the weights, so an untrained model is timed unless --checkpoint
is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

EVENT_TEXT = "go over the blue block"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender (best of)")
    parser.add_argument("--sampling-steps", type=int, default=10, help="denoising steps for (c)")
    parser.add_argument(
        "--train-steps", type=int, default=40, help="optimizer steps per timed run for (d)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step for (d)")
    parser.add_argument("--episodes", type=int, default=40, help="episodes in (d)'s dataset")
    parser.add_argument(
        "--rig-resolution", type=int, default=64, help="(a)/(b): the rig's image size"
    )
    parser.add_argument(
        "--large-resolution", type=int, default=256, help="(b): the larger token count"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="time this checkpoint in (c) instead of an untrained tiny model",
    )
    parser.add_argument("--skip-kernels", action="store_true", help="only (c) and (d)")


def _sim_dataset(root: Path, episodes: int) -> tuple[Path, object]:
    """Recorded pick-and-place episodes (train seeds) as a dataset; returns its path and the first."""
    from backend.data.generate import generate
    from backend.data.lerobot import EventDataset

    generate(None, episodes, root / "ds", task="pick_place_bin")
    return root / "ds", EventDataset(root / "ds").episode(0)


def action_only_vs_imagination(
    episode, repeats: int, steps: int, checkpoint: Path | None = None
) -> list[dict]:
    """(c) Latency of both inference paths on one observation, per thread regime."""
    from backend.model.bench_kernels import interleaved
    from backend.model.presets import get_preset
    from backend.model.wam import Observation, WorldActionModel

    if checkpoint is not None:
        model = WorldActionModel.from_checkpoint(checkpoint)
    else:
        torch.manual_seed(0)
        model = WorldActionModel(get_preset("tiny"), cameras=episode.cameras).eval()
    obs = Observation(
        {c: f[0] for c, f in episode.frames.items()}, episode.states[0], episode.cameras
    )
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
            rows.append(
                {
                    "regime": "1 thread, CPU time"
                    if threads == 1
                    else f"{threads} threads, wall time",
                    "steps": steps,
                    "horizon": model.default_horizon("event"),
                    "guidance": model.config.guidance_scale,
                    "full_ms": sec["full"] * 1e3,
                    "action_only_ms": sec["action_only"] * 1e3,
                    "speedup": sec["full"] / sec["action_only"],
                    "full_parts_ms": {k: v * 1e3 for k, v in parts.items()},
                }
            )
    finally:
        torch.set_num_threads(all_threads)
    return rows


# (d) contenders: the recipe before the make-it-learn changes (h_max 32, every step a joint
# video + action step) and the recipe now (h_max 16, half the steps in the action-only layout,
# event suffixes); both on the same data, with the same batch size and a warm latent cache.
RECIPES = {
    "before: h_max 32, 10 % action-only steps": dict(
        h_max=32, video_noise_prob=0.1, suffixes=False
    ),
    "now: h_max 16, 50 % action-only steps": dict(h_max=16, video_noise_prob=0.5, suffixes=True),
}


def training_throughput(
    dataset: Path, out: Path, steps: int, batch_size: int, threads: tuple[int, ...] = (1, 2)
) -> list[dict]:
    """(d) steady samples/s of `backend.train.train` (denoiser stage, event recipe) per recipe and
    thread count, plus the VAE stage, on a dataset of many episodes.

    Every contender first fills its latent cache (`precompute_latents`: encoding is a one-time
    cost, on disk); the timed run reads the cache, and its steady rate is over its second half.
    """
    from backend.model.wam import Objective
    from backend.train import LOG_FILE, TrainConfig, iterate_log, train

    def timed(name: str, n_threads: int, stage: str, **kw) -> dict:
        cfg = TrainConfig(
            dataset=str(dataset),
            out=str(out / f"{stage}-{len(rows)}"),
            stage=stage,
            steps=steps,
            batch_size=batch_size,
            log_every=1,
            save_every=10**9,
            progress=False,
            threads=n_threads,
            latent_cache=str(out / "latents"),
            caption_track="action",
            **kw,
        )
        if stage != "vae":  # encode everything first: the timed run reads the cache only
            train(replace(cfg, out=cfg.out + "-warm", steps=2, precompute_latents=True))
        t0 = time.perf_counter()
        summary = train(cfg)
        wall = time.perf_counter() - t0
        log = list(iterate_log(Path(cfg.out) / LOG_FILE))
        half = log[len(log) // 2 - 1]
        steady = (
            (log[-1]["step"] - half["step"])
            * batch_size
            / (log[-1]["elapsed_s"] - half["elapsed_s"])
        )
        return {
            "recipe": name,
            "stage": stage,
            "preset": "tiny",
            "batch_size": batch_size,
            "steps": steps,
            "threads": n_threads,
            "steady_samples_per_s": steady,
            "samples_per_s": summary["samples_per_s"],
            "wall_s_with_setup": wall,
        }

    rows: list[dict] = []
    for n in threads:
        for name, r in RECIPES.items():
            rows.append(
                timed(
                    name,
                    n,
                    "denoiser",
                    h_max=r["h_max"],
                    suffixes=r["suffixes"],
                    objective=Objective(video_noise_prob=r["video_noise_prob"]),
                )
            )
    rows.append(timed("vae (9-frame clips)", threads[0], "vae"))
    return rows


def run(args: argparse.Namespace):
    from app.bench import BenchResult

    numbers: dict = {}
    sections = []
    if not args.skip_kernels:
        from backend.model.bench_kernels import run_kernels

        kernel_numbers, kernel_md = run_kernels(
            args.rig_resolution, args.large_resolution, args.repeats
        )
        numbers |= kernel_numbers
        sections.append(kernel_md)
    with tempfile.TemporaryDirectory(prefix="wallwm-bench-") as tmp:
        dataset, episode = _sim_dataset(Path(tmp), args.episodes)
        c_rows = action_only_vs_imagination(
            episode, args.repeats, args.sampling_steps, args.checkpoint
        )
        d_rows = training_throughput(dataset, Path(tmp) / "runs", args.train_steps, args.batch_size)
    numbers |= {
        "action_only_speedup": c_rows[0]["speedup"],
        "action_only_speedup_1thread": c_rows[-1]["speedup"],
        "action_only": c_rows,
        "training_samples_per_s": d_rows[1]["steady_samples_per_s"],
        "training_speedup_vs_before": d_rows[1]["steady_samples_per_s"]
        / d_rows[0]["steady_samples_per_s"],
        "training": d_rows,
    }
    c_table = "\n".join(
        f"| {r['regime']} | {r['full_ms']:.0f} | {r['action_only_ms']:.0f} | **{r['speedup']:.1f}×** | "
        + " / ".join(f"{r['full_parts_ms'][k]:.0f}" for k in ("encode_s", "denoise_s", "decode_s"))
        + " |"
        for r in c_rows
    )
    d_table = "\n".join(
        f"| {r['recipe']} | {r['threads']} | {r['batch_size']} | {r['steps']} | **{r['steady_samples_per_s']:.2f}** | "
        f"{r['samples_per_s']:.2f} |"
        for r in d_rows
    )
    r0 = c_rows[0]
    sections.append(
        "### (c) Action-only fast path vs full imagination, one event\n\n"
        f"Tiny preset, event mode, the sim's 3 views at 64 px, {r0['steps']} Euler steps, guidance "
        f"{r0['guidance']} (conditional + unconditional rows in one batch), horizon {r0['horizon']} steps. "
        "Full = encode + joint video/action denoising + decoding the whole imagined horizon; "
        "action-only = encode + one video-tower pass over the observation frame + action-tower steps, no decoding. "
        f"Best of {args.repeats}, timed in alternation.\n\n"
        "| regime | full (ms) | action-only (ms) | speedup | full: encode / denoise / decode (ms) |\n"
        "|---|---|---|---|---|\n" + c_table + "\n\n"
        "### (d) Training throughput\n\n"
        f"`backend.train.train`, denoiser stage, event recipe (action track), tiny preset, on "
        f"{args.episodes} recorded `pick_place_bin` episodes; AdamW + EMA; frozen-VAE latents from a "
        "warm on-disk cache (each contender first fills it). Steady = the second half of the timed "
        "run; overall includes model set-up. The first two rows are the recipe before and after the "
        "make-it-learn changes, in the same run.\n\n"
        "| recipe | threads | batch | steps | steady samples/s | overall samples/s |\n"
        "|---|---|---|---|---|---|\n" + d_table + "\n\n"
        f"Speedup of the recipe now over before, one thread: **{numbers['training_speedup_vs_before']:.2f}×**.\n"
    )
    return BenchResult(target="model", numbers=numbers, markdown="\n".join(sections))
