"""`wallwm train` and `wallwm imagine`: the model's command line (heavy imports inside handlers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the world action model (any preset, recipe and stage; torchrun-ready)",
        description="One training loop for every preset and recipe. Stages chain with --init: "
        "vae -> denoiser -> unified. Under torchrun it trains with DDP (gloo on CPU, NCCL on GPU).",
    )
    p.add_argument("--dataset", required=True, type=Path, help="LeRobot v3 dataset directory")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoint/, log.jsonl)")
    p.add_argument("--preset", default="tiny", help="model preset: tiny, small, wan1_3b, wan14b")
    p.add_argument(
        "--recipe", default="event", help="event (next-event samples) or fixed (16-step windows)"
    )
    p.add_argument("--stage", default="denoiser", help="vae, denoiser or unified")
    p.add_argument("--steps", type=int, default=1000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=4, help="samples per step and process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--optimizer", default="adamw", help="adamw, or muon for 2-D weights")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--caption-track",
        default="subtask",
        help="next-event caption track: task, subtask, action or segment (event recipe)",
    )
    p.add_argument(
        "--h-max",
        type=int,
        help="longest chunk of a new model, a multiple of 4 (default: the preset's)",
    )
    p.add_argument(
        "--keypoints",
        type=int,
        help="soft-argmax keypoints per view for the action tower (0 = off; with --init they "
        "are added fresh to the checkpoint's model; default: the preset's or checkpoint's)",
    )
    p.add_argument(
        "--keypoint-queries",
        type=int,
        help="instruction-queried keypoints per view (needs keypoints; with --init the trained "
        "keypoint features are kept and the query head starts fresh; default: the checkpoint's)",
    )
    p.add_argument(
        "--video-noise-prob",
        type=float,
        default=0.5,
        help="share of steps in the action-only layout the closed-loop policy runs (0..1)",
    )
    p.add_argument(
        "--freeze-video-tower",
        action="store_true",
        help="train the action tower (and its keypoints) only: the imagined video stays as it is",
    )
    p.add_argument(
        "--future-expert",
        action="store_true",
        help="train a future-frame expert of the video tower only: the action-only policy stays as it is",
    )
    p.add_argument(
        "--future-actions",
        action="store_true",
        help="the future frames also see the action chunk they are imagined under",
    )
    p.add_argument(
        "--future-track",
        action="store_true",
        help="the future frames also see where the chunk takes the gripper in each view "
        "(projected with the cameras' calibration)",
    )
    p.add_argument(
        "--video-residual",
        type=float,
        default=0.0,
        metavar="SCALE",
        help="the video tower predicts the change from the still observation, times SCALE (0: keep)",
    )
    p.add_argument(
        "--video-episodes",
        type=int,
        default=0,
        metavar="K",
        help="joint (video) steps draw from the first K episodes only (0: all)",
    )
    p.add_argument(
        "--no-suffixes",
        action="store_true",
        help="action-only steps start at the event's first step, not a random one",
    )
    p.add_argument(
        "--latent-cache",
        type=Path,
        help="latent cache directory (default OUT/latents); runs on the same data and VAE share it",
    )
    p.add_argument(
        "--precompute-latents",
        action="store_true",
        help="encode every latent before the first step (default: on first use, then cached)",
    )
    p.add_argument(
        "--keep-every",
        type=int,
        default=0,
        help="also keep a step-numbered checkpoint every this many steps (0: only the latest)",
    )
    p.add_argument(
        "--no-balance", action="store_true", help="uniform instead of cluster-balanced sampling"
    )
    p.add_argument(
        "--intervention-weight",
        type=int,
        default=1,
        help="draw samples with operator take-over steps this many times as often (0: leave "
        "them out); for fine-tuning on exported studio sessions",
    )
    p.add_argument(
        "--init", type=Path, help="start from this checkpoint's weights (e.g. the vae stage's)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue OUT/checkpoint (optimizer, EMA, step, RNG)"
    )
    p.add_argument("--vlm-path", help="a local Qwen checkpoint directory for the unified VLM")
    p.add_argument(
        "--freeze-denoiser",
        action="store_true",
        help="stage unified: train the VLM (and its states' embedding) only; event mode stays as "
        "--init left it",
    )
    p.add_argument(
        "--event-mix",
        type=float,
        default=0.5,
        help="stage unified, recipe event: share of event-mode steps, so the checkpoint keeps "
        "event mode (0: unified steps only)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "export-checkpoint",
        help="an inference-only copy of a checkpoint (EMA weights, float16 matrices) to ship",
        description="Writes config.json and ema.safetensors (no optimizer state), checks that it "
        "loads, and stores its output on a fixed sim observation (reference.npz) for regression tests.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (e.g. RUN/checkpoint)")
    p.add_argument("out", type=Path, help="output directory, e.g. assets/checkpoints/NAME")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")
    p.add_argument(
        "--guidance-scale",
        type=float,
        help="default classifier-free guidance of the copy (chosen on held-out data; "
        "default: the checkpoint's)",
    )
    p.add_argument(
        "--imagine-futures",
        type=int,
        help="futures one imagination averages in the copy (ModelConfig.imagine_futures; "
        "default: the checkpoint's)",
    )
    p.add_argument(
        "--reference-task",
        default="pick_place_bin",
        help="sim task of the fixed input whose output is stored as reference.npz",
    )
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "imagine",
        help="imagine the next event from a dataset frame: video per view, actions, validity",
        description="Load a checkpoint, take the observation at --frame of --episode, and imagine "
        "the event described by --event (event mode) or the task (unified mode).",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory")
    p.add_argument("--dataset", required=True, type=Path, help="LeRobot v3 dataset directory")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--frame", type=int, default=0)
    p.add_argument(
        "--event",
        help="next-event text (event mode) or task (unified mode); "
        "default: the dataset's caption for that frame",
    )
    p.add_argument("--mode", default="event", choices=("event", "unified"))
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default: the preset's)"
    )
    p.add_argument("--action-only", action="store_true", help="fast path: actions only, no video")
    p.add_argument(
        "--raw-weights", action="store_true", help="use the raw weights instead of the EMA"
    )
    p.set_defaults(func=_imagine)


def _export(args: argparse.Namespace) -> int:
    from backend.model.checkpoint import export_checkpoint
    from backend.model.reference import write_reference
    from backend.model.wam import WorldActionModel

    out = export_checkpoint(
        args.checkpoint,
        args.out,
        half=not args.float32,
        guidance_scale=args.guidance_scale,
        imagine_futures=args.imagine_futures,
    )
    WorldActionModel.from_checkpoint(out)  # it loads, or this says why
    write_reference(out, task=args.reference_task)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from backend.model.wam import Objective
    from backend.train import TrainConfig, train

    cfg = TrainConfig(
        dataset=str(args.dataset),
        out=str(args.out),
        preset=args.preset,
        recipe=args.recipe,
        stage=args.stage,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        ema_decay=args.ema_decay,
        warmup_steps=args.warmup_steps,
        log_every=args.log_every,
        save_every=args.save_every,
        seed=args.seed,
        caption_track=args.caption_track,
        balanced=not args.no_balance,
        intervention_weight=args.intervention_weight,
        suffixes=not args.no_suffixes,
        freeze_video_tower=args.freeze_video_tower,
        future_expert=args.future_expert,
        future_actions=args.future_actions,
        future_track=args.future_track,
        video_residual=args.video_residual,
        video_episodes=args.video_episodes,
        h_max=args.h_max,
        keypoints=args.keypoints,
        keypoint_queries=args.keypoint_queries,
        objective=Objective(video_noise_prob=args.video_noise_prob),
        keep_every=args.keep_every,
        precompute_latents=args.precompute_latents,
        latent_cache=str(args.latent_cache) if args.latent_cache else None,
        init=str(args.init) if args.init else None,
        resume=args.resume,
        vlm_path=args.vlm_path,
        event_mix=args.event_mix,
        freeze_denoiser=args.freeze_denoiser,
        threads=args.threads,
        device=args.device,
        progress=not args.no_progress,
    )
    summary = train(cfg)
    if summary["rank"] == 0:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in summary["losses"].items())
        print(
            f"trained {summary['steps']} steps ({summary['samples_per_s']:.2f} samples/s, "
            f"world size {summary['world_size']}): {losses}"
        )
        print(f"checkpoint: {summary['checkpoint']}")
    return 0


def _default_instruction(dataset, episode: int, frame: int, mode: str) -> str:
    if mode == "unified":
        return dataset.task(episode)
    for e in dataset.events(episode):
        if e.start <= frame < e.end:
            return e.subtask
    raise ValueError(f"episode {episode} has no event at frame {frame}; pass --event TEXT")


def _imagine(args: argparse.Namespace) -> int:
    import numpy as np

    from backend.data.lerobot import EventDataset
    from backend.data.video import VideoWriter
    from backend.model.wam import Observation, WorldActionModel

    dataset = EventDataset(args.dataset)
    ep = dataset.episode(args.episode)
    if not 0 <= args.frame < ep.length:
        raise ValueError(
            f"frame {args.frame} out of range: episode {args.episode} has {ep.length} frames"
        )
    text = (
        args.event
        if args.event is not None
        else _default_instruction(dataset, args.episode, args.frame, args.mode)
    )
    model = WorldActionModel.from_checkpoint(args.checkpoint, use_ema=not args.raw_weights)
    obs = Observation(
        {c: f[args.frame] for c, f in ep.frames.items()}, ep.states[args.frame], ep.cameras
    )
    kwargs = dict(mode=args.mode, steps=args.steps, seed=args.seed, guidance=args.guidance)
    if args.action_only:
        result = model.predict_actions(obs, text, **kwargs)
    else:
        result = model.imagine(obs, text, **kwargs)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    videos = {}
    for cam, frames in (result.video or {}).items():
        path = out / f"{cam}.mp4"
        with VideoWriter(path, fps=ep.fps, width=frames.shape[2], height=frames.shape[1]) as w:
            w.add_episode(frames)
        videos[cam] = path.name
    gt = ep.actions[args.frame : args.frame + len(result.chunk)]
    np.savez(
        out / "actions.npz",
        actions=result.actions,
        chunk=result.chunk,
        validity=result.validity,
        ground_truth=gt,
    )
    (out / "actions.json").write_text(
        json.dumps({"actions": result.actions.tolist(), "validity": result.validity.tolist()})
        + "\n"
    )
    report = {
        "checkpoint": str(args.checkpoint),
        "dataset": str(args.dataset),
        "episode": args.episode,
        "frame": args.frame,
        "mode": result.mode,
        "instruction": result.instruction,
        "length": result.length,
        "horizon": len(result.chunk),
        "validity": result.validity.tolist(),
        "proposed_event": result.proposed_event,
        "timings": result.timings,
        "videos": videos,
        "action_only": bool(args.action_only),
    }
    (out / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    timing = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
    print(
        f"{result.mode} mode, {result.length}/{len(result.chunk)} steps for {result.instruction!r} ({timing})"
    )
    if result.proposed_event is not None:
        print(f"proposed next event: {result.proposed_event!r}")
    print(f"wrote {out}")
    return 0
