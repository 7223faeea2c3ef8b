"""One trainer for every preset, recipe and stage (`wallwm train`), torchrun-ready.

    stage vae       the video autoencoder alone (reconstruction + KL) on fixed-length clips
                    cut from any step of an episode
    stage denoiser  the denoiser on frozen-VAE latents, conditioned on the sample's caption:
                    recipe `event` -> next-event captions, variable-length chunks (event mode);
                    recipe `fixed` -> task caption, fixed 16-step windows (the baseline)
    stage unified   denoiser + VLM in unified mode: fixed 16-step windows, task caption,
                    staircase states, and the next-event caption of the window's event as the
                    VLM's text target; with recipe `event`, `--event-mix` of the steps are
                    event-mode steps on next-event samples, so the one denoiser keeps event
                    mode while it learns unified mode

Denoiser and unified steps are of two kinds, drawn per step: joint steps (video latents and
actions denoised together, what imagination runs) and, with probability
`objective.video_noise_prob`, action-only steps in the layout the closed-loop policy runs
(video tokens of the observation frame alone; see backend.model.wam), which cost a fraction
of a joint step. With `suffixes`, action-only steps cut event samples from a random step of
the event on, so the mid-event states a policy replans from are seen in training. Latents
come from a persistent on-disk cache (backend.latents), so no frame is encoded twice, and the
action/state normaliser is fitted on the dataset being trained (in the model's action frame).

Stages chain through `--init CKPT` (vae -> denoiser -> unified); `--resume` continues a run
from its own `OUT/checkpoint` with optimizer, EMA, step, data position and RNG restored, so
2 steps + resume to 4 equals 4 steps (single process). Under `torchrun` (WORLD_SIZE > 1) the
model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU), each rank takes every
WORLD_SIZE-th sample of a shared order and draws its own noise; rank 0 logs and saves.

Outputs under OUT: `checkpoint/` (see backend.model.checkpoint) and `log.jsonl` (one line per
logged step: losses, learning rate, samples/s).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from backend.model.wam import Objective

if TYPE_CHECKING:
    from backend.model.presets import ModelConfig

RECIPES = ("event", "fixed")
STAGES = ("vae", "denoiser", "unified")
OPTIMIZERS = ("adamw", "muon")
CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.jsonl"


def _choice(kind: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        close = difflib.get_close_matches(value, options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {kind} {value!r}{hint} (choices: {', '.join(options)})")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str  # LeRobot v3 dataset directory (ours carries events and calibration)
    out: str  # run directory: checkpoint/ and log.jsonl
    preset: str = "tiny"
    # Override the preset's longest chunk (a multiple of 4) for a new model.
    h_max: int | None = None
    # Soft-argmax keypoint tokens per view for the action tower (DenoiserConfig.keypoints);
    # None keeps the preset's or the --init checkpoint's; with --init they start fresh.
    keypoints: int | None = None
    # Instruction-queried keypoints per view (DenoiserConfig.keypoint_queries); None keeps the
    # checkpoint's. With --init, adding them keeps the trained keypoint features and starts the
    # query head and the keypoint MLP fresh.
    keypoint_queries: int | None = None
    recipe: str = "event"  # event: next-event samples; fixed: 16-step windows, task caption only
    stage: str = "denoiser"  # vae | denoiser | unified
    steps: int = 1000  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 4  # per process
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 10 % of lr
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # EMA weights are what inference loads
    optimizer: str = "adamw"  # adamw, or muon for 2-D weight matrices (AdamW for the rest)
    log_every: int = 10
    save_every: int = 500
    keep_every: int = 0  # also keep a step-numbered copy of every k-th step's checkpoint (0: never)
    seed: int = 0
    resume: bool = False
    init: str | None = None  # start from this checkpoint's weights (e.g. the VAE stage's)
    caption_track: str = "subtask"  # next-event caption track for the event recipe
    balanced: bool = True  # cluster-balanced event sampling (event recipe)
    # Samples with operator take-over steps (`intervention`) are drawn this many times as often
    # as the others; 0 leaves them out (docs/sessions.md: learning from corrections).
    intervention_weight: int = 1
    vae_clip_frames: int = 9  # frames per clip in the VAE stage (1 + 4k)
    # Latent cache directory (default OUT/latents); runs on the same data and VAE share it.
    latent_cache: str | None = None
    suffixes: bool = True  # action-only steps start event samples at a random step of the event
    # Train only the action tower (and its keypoint encoder; in the unified stage also the VLM
    # and the embedding of its staircase states); the video tower, and so every event-mode
    # imagined video, stays exactly as --init left it.
    freeze_video_tower: bool = False
    # Unified stage: train the VLM and the embedding of its staircase states only; the denoiser,
    # and so event mode (which uses neither), stays exactly as --init left it.
    freeze_denoiser: bool = False
    # Give the denoiser a future-frame expert (DenoiserConfig.future_expert; a copy of the video
    # tower's weights for the frames after the observation, if --init has none) and train only
    # it and the video head: the observation's path, and so the action-only policy, stays
    # exactly as --init left it; the joint (imagination) path learns to imagine. Every step is
    # a joint step (an action-only one would train nothing).
    future_expert: bool = False
    # Residual video (ModelConfig.video_residual): the scale of the video tower's residual
    # target; 0 keeps the checkpoint's (or the preset's) setting.
    video_residual: float = 0.0
    # Action-conditioned future frames (DenoiserConfig.future_actions; a fresh, zero-initialised
    # embedding if --init has none).
    future_actions: bool = False
    # End-effector track for the future frames (DenoiserConfig.future_track; a fresh,
    # zero-initialised embedding if --init has none).
    future_track: bool = False
    # Joint (video) steps draw their samples from the first K episodes only, whose clips a
    # cache holds (scripts/fill_latents.py --clips K); action-only steps from all. 0: all.
    video_episodes: int = 0
    precompute_latents: bool = (
        False  # encode every latent before the first step (else on first use)
    )
    vlm_path: str | None = None  # a local Qwen checkpoint for the unified stage
    # Unified stage, event recipe: this share of the steps are event-mode steps (next-event
    # samples, no VLM), the rest unified steps; the checkpoint serves both modes. 0: unified only.
    event_mix: float = 0.5
    progress: bool = True
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    objective: Objective = field(default_factory=Objective)

    def __post_init__(self) -> None:
        _choice("recipe", self.recipe, RECIPES)
        _choice("stage", self.stage, STAGES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.ema_decay < 1:
            raise ValueError(
                f"need lr > 0 and 0 <= ema_decay < 1, got lr={self.lr}, ema_decay={self.ema_decay}"
            )
        if self.vae_clip_frames < 1 or (self.vae_clip_frames - 1) % 4:
            raise ValueError(f"vae_clip_frames must be 1 + 4k, got {self.vae_clip_frames}")
        if self.keep_every < 0:
            raise ValueError(f"keep_every must be >= 0, got {self.keep_every}")
        if not 0 <= self.event_mix < 1:
            raise ValueError(f"event_mix must be in [0, 1), got {self.event_mix}")
        if self.intervention_weight < 0:
            raise ValueError(f"intervention_weight must be >= 0, got {self.intervention_weight}")
        if self.freeze_denoiser and self.stage != "unified":
            raise ValueError("--freeze-denoiser is for the unified stage")
        if self.freeze_video_tower and self.stage == "vae":
            raise ValueError("--freeze-video-tower is for the denoiser and unified stages")
        if self.resume and self.init:
            raise ValueError("--resume continues this run's own checkpoint; drop --init")
        if self.future_expert and (self.stage != "denoiser" or self.freeze_video_tower):
            raise ValueError(
                "--future-expert trains the video tower's expert in the denoiser stage"
            )
        if self.video_residual < 0 or self.video_episodes < 0:
            raise ValueError("--video-residual and --video-episodes must be >= 0")

    @property
    def objective_name(self) -> str:
        return {"vae": "vae", "denoiser": "event", "unified": "unified"}[self.stage]


class EMA:
    """Exponential moving average of the trainable parameters (warm-up: decay grows with steps)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach(), 1 - d)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full model state with EMA values for the trained parameters."""
        return {**model.state_dict(), **self.shadow}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for n in self.shadow:
            if n not in tensors:
                raise ValueError(f"EMA checkpoint lacks {n!r}")
            self.shadow[n].copy_(tensors[n])


class IndexStream:
    """Sample indices for one rank, epoch after epoch, with a resumable position."""

    def __init__(
        self, n: int, seed: int, rank: int, world: int, balanced=None, weights=None
    ) -> None:
        self.n, self.seed, self.rank, self.world, self.balanced = n, seed, rank, world, balanced
        self.weights = weights  # (n,) int draws per epoch of each sample, or None (one each)
        self.epoch, self.offset = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        if self.balanced is not None:
            self.balanced.set_epoch(self.epoch)
            order = list(self.balanced)
        else:
            pool = (
                np.arange(self.n)
                if self.weights is None
                else np.repeat(np.arange(self.n), self.weights)
            )
            order = np.random.default_rng((self.seed, self.epoch)).permutation(pool).tolist()
        return order[self.rank :: self.world]

    def seek(self, epoch: int, offset: int) -> None:
        self.epoch, self.offset = epoch, offset
        self._order = self._make_order()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.offset >= len(self._order):
                self.seek(self.epoch + 1, 0)
                if not self._order:
                    raise ValueError(
                        "this rank got no samples: the dataset is smaller than the world size"
                    )
            out.append(self._order[self.offset])
            self.offset += 1
        return out


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % (step counts from 0)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# The denoiser's action-side parameters (everything else is the video tower and its embedders).
ACTION_TOWER = ("action_", "obs_keypoints.")
FUTURE_EXPERT = (
    "future_patch_embedding.",
    "future_action_embedding.",
    "future_track_embedding.",
    "head.",
)  # + blocks.*.future.*


def _trainable(model, stage: str) -> list[nn.Module]:
    return {
        "vae": [model.vae],
        "denoiser": [model.denoiser],
        "unified": [model.denoiser, model.vlm],
    }[stage]


def _optimizers(
    cfg: TrainConfig, params: list[tuple[str, nn.Parameter]]
) -> list[torch.optim.Optimizer]:
    if cfg.optimizer == "muon":
        # Muon orthogonalises 2-D hidden weight updates; embeddings, heads, norms and biases stay on AdamW.
        hidden = [p for n, p in params if p.ndim == 2 and "embed" not in n and "head" not in n]
        ids = {id(p) for p in hidden}
        rest = [p for _, p in params if id(p) not in ids]
        return [
            torch.optim.Muon(
                hidden, lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw"
            ),
            torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)),
        ]
    return [
        torch.optim.AdamW(
            [p for _, p in params], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)
        )
    ]


def _samples(cfg: TrainConfig, model_cfg, source):
    from backend.data.samples import ClipSamples, EventSamples, FixedWindowSamples

    if cfg.stage == "vae":
        return ClipSamples(source, cfg.vae_clip_frames)
    if cfg.stage == "unified":
        # fixed chunks, every step supervised; the window's event caption is the VLM's target
        track = cfg.caption_track if source.has_events else None
        return FixedWindowSamples(source, horizon=model_cfg.h_unified, caption_track=track)
    if cfg.recipe == "event":
        return EventSamples(
            source, h_max=model_cfg.h_max, caption_track=cfg.caption_track, seed=cfg.seed
        )
    return FixedWindowSamples(source, horizon=model_cfg.h_unified)


def action_stats(source, samples, relative: bool) -> dict[str, dict[str, np.ndarray]]:
    """min/max of the actions in the model's action frame over every training chunk and start.

    Relative actions are offsets from the state a chunk starts in, so their range depends on
    which starts training (and control) uses: every step of every sample's span counts.
    """
    from backend.model.wam import to_model_actions

    lo, hi = np.full(7, np.inf), np.full(7, -np.inf)
    by_episode: dict[int, list] = {}
    for r in samples.refs:
        by_episode.setdefault(r.episode_index, []).append(r)
    for i, refs in by_episode.items():
        ep = source.episode(i)
        actions = torch.from_numpy(ep.actions).double()
        states = torch.from_numpy(ep.states).double()
        for r in refs:
            for s in range(r.start, r.stop) if relative else (r.start,):
                x = to_model_actions(actions[None, s : r.stop], states[s : s + 1], relative)
                lo = np.minimum(lo, x[0].min(0).values.numpy())
                hi = np.maximum(hi, x[0].max(0).values.numpy())
    return {"min": lo, "max": hi}


def intervention_weights(dataset, samples, weight: int) -> np.ndarray | None:
    """(n,) draws per epoch: `weight` for samples with intervened steps, 1 for the rest; None
    when it changes nothing (weight 1, or no take-over in the data)."""
    if weight == 1:
        return None
    flags = {i: dataset.intervention(i) for i in {r.episode_index for r in samples.refs}}
    hit = np.array([flags[r.episode_index][r.start : r.stop].any() for r in samples.refs])
    if not hit.any():
        return None
    weights = np.where(hit, weight, 1).astype(np.int64)
    if not weights.any():
        raise ValueError("--intervention-weight 0 leaves no sample: every one has take-over steps")
    return weights


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def _source(cfg: TrainConfig) -> Path | None:
    """The checkpoint this run starts from: its own (resume), another (init) or none."""
    if cfg.resume:
        return Path(cfg.out) / CHECKPOINT_DIR
    return Path(cfg.init) if cfg.init else None


def _model_config(cfg: TrainConfig, source: Path | None):
    """(ModelConfig, Normalizer or None).

    Resume: the run's own config and normaliser. Init from a VAE-stage checkpoint: the preset
    (only the autoencoder's weights carry over, so the denoiser's sizes, h_max included, are
    the preset's). Init from a later stage: that checkpoint's config. Without resume the
    normaliser is None: it is fitted on the dataset being trained.
    """
    from backend.model.checkpoint import read_config
    from backend.model.normalizer import Normalizer
    from backend.model.presets import ModelConfig, get_preset

    model_cfg, normalizer = get_preset(cfg.preset), None
    if cfg.h_max is not None:
        model_cfg = replace(model_cfg, denoiser=replace(model_cfg.denoiser, h_max=cfg.h_max))
    if source is not None:
        ckpt = read_config(source)
        if ckpt["preset"] != cfg.preset:
            raise ValueError(
                f"checkpoint {source} is preset {ckpt['preset']!r}, this run asks for {cfg.preset!r}"
            )
        if cfg.resume:
            asked = {"recipe": cfg.recipe, "stage": recorded_stage(cfg, ckpt)}
            for key, value in asked.items():
                if ckpt.get(key) != value:
                    raise ValueError(
                        f"checkpoint {source} was trained with {key} {ckpt.get(key)!r}, this run asks for "
                        f"{value!r}"
                    )
            normalizer = Normalizer.from_stats(ckpt["normalizer"])
        if cfg.resume or ckpt.get("stage") != "vae":
            model_cfg = ModelConfig.from_dict(ckpt["model"])
        if cfg.init and _continues(ckpt, cfg):
            # fine-tuning (e.g. on exported sessions) or the unified stage after the denoiser
            # stage: the weights were trained in this normaliser's units, so keep it rather
            # than refit it (on a small dataset, or on windows instead of events)
            normalizer = Normalizer.from_stats(ckpt["normalizer"])
    if cfg.keypoints is not None and cfg.keypoints != model_cfg.denoiser.keypoints:
        # fresh keypoints, in the current design: their MLP reads the instruction too
        model_cfg = replace(
            model_cfg,
            denoiser=replace(model_cfg.denoiser, keypoints=cfg.keypoints, keypoint_text=True),
        )
    queries = cfg.keypoint_queries
    if queries is not None and queries != model_cfg.denoiser.keypoint_queries:
        model_cfg = replace(
            model_cfg,
            denoiser=replace(model_cfg.denoiser, keypoint_queries=queries, keypoint_text=True),
        )
    if cfg.vlm_path:
        model_cfg = replace(model_cfg, vlm=replace(model_cfg.vlm, path=cfg.vlm_path))
    if cfg.future_expert:
        model_cfg = replace(model_cfg, denoiser=replace(model_cfg.denoiser, future_expert=True))
    if cfg.future_actions:
        model_cfg = replace(model_cfg, denoiser=replace(model_cfg.denoiser, future_actions=True))
    if cfg.future_track:
        model_cfg = replace(model_cfg, denoiser=replace(model_cfg.denoiser, future_track=True))
    if cfg.video_residual:
        model_cfg = replace(model_cfg, video_residual=cfg.video_residual)
    return model_cfg, normalizer


def recorded_stage(cfg: TrainConfig, source_config: dict | None) -> str:
    """The stage this run's checkpoints record: its own, but a --future-expert run from a
    unified-stage checkpoint stays "unified" (its VLM, and so unified mode, are the init's)."""
    if cfg.future_expert and source_config and source_config.get("stage") == "unified":
        return "unified"
    return cfg.stage


def _continues(ckpt: dict, cfg: TrainConfig) -> bool:
    """Whether an --init run goes on training the checkpoint's denoiser in its own units: the
    same recipe, from and to a stage that trains the denoiser (denoiser or unified, either way:
    a unified-stage checkpoint holds the denoiser it started from)."""
    trains_denoiser = ("denoiser", "unified")
    return (
        ckpt.get("recipe") == cfg.recipe
        and ckpt.get("stage") in trains_denoiser
        and cfg.stage in trains_denoiser
    )


def _fresh_parts(ckpt: dict, model_cfg: ModelConfig) -> tuple[str, ...]:
    """Weight-name prefixes an --init run starts fresh rather than load: the keypoint encoder
    when the checkpoint had none, its MLP and query head when the queries or the MLP's inputs
    change (the trained convolutional features are kept)."""
    had = ckpt["model"].get("denoiser", {})
    now = model_cfg.denoiser
    expert = ()
    if now.future_expert and not had.get("future_expert", False):  # copied in after loading
        blocks = (f"denoiser.blocks.{i}.future." for i in range(now.num_layers))
        expert = ("denoiser.future_patch_embedding.", *blocks)
    if now.future_actions and not had.get("future_actions", False):
        expert += ("denoiser.future_action_embedding.",)
    if now.future_track and not had.get("future_track", False):
        expert += ("denoiser.future_track_embedding.",)
    return expert + _fresh_keypoints(had, now)


def _fresh_keypoints(had: dict, now) -> tuple[str, ...]:
    if not had.get("keypoints", 0):
        return ("denoiser.obs_keypoints.",) if now.keypoints else ()
    if had.get("keypoints") != now.keypoints:
        return ("denoiser.obs_keypoints.",)
    changed = (had.get("keypoint_queries", 0), bool(had.get("keypoint_text", False))) != (
        now.keypoint_queries,
        now.keypoint_text,
    )
    if changed:
        return ("denoiser.obs_keypoints.mlp.", "denoiser.obs_keypoints.query")
    return ()


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary (steps, last losses, samples/s, checkpoint path)."""
    from tqdm import tqdm

    from backend.data.lerobot import EventDataset
    from backend.data.samples import collate, frameless
    from backend.model.checkpoint import (
        EMA_FILE,
        MODEL_FILE,
        keep_checkpoint,
        load_tensors,
        load_training_state,
        load_weights,
        read_config,
        save_checkpoint,
    )
    from backend.model.normalizer import Normalizer
    from backend.model.wam import WorldActionModel

    rank, local_rank, world = _distributed()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)  # ranks draw different noise and timesteps
    np.random.seed(cfg.seed + rank)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    dataset = EventDataset(cfg.dataset)
    source_ckpt = _source(cfg)
    model_cfg, normalizer = _model_config(cfg, source_ckpt)
    episodes = frameless(dataset)  # states, actions, captions in memory; frames decoded on demand
    samples = _samples(cfg, model_cfg, episodes)
    if len(samples) == 0:
        raise ValueError(f"{cfg.dataset}: no {cfg.recipe} samples to train on")
    if normalizer is None:  # fitted on this dataset, in the model's action frame
        stats = dataset.norm_stats()
        if cfg.stage != "vae":
            stats = {**stats, "action": action_stats(episodes, samples, model_cfg.relative_actions)}
        normalizer = Normalizer.from_stats(stats)
    stage = recorded_stage(cfg, read_config(source_ckpt) if source_ckpt is not None else None)
    model = WorldActionModel(
        model_cfg, normalizer, episodes.episode(0).cameras, recipe=cfg.recipe, stage=stage
    )
    if (
        source_ckpt is not None
    ):  # init: published (EMA) weights; resume: the raw weights being optimised
        use_ema = cfg.init is not None and (source_ckpt / EMA_FILE).exists()
        weights = source_ckpt / (EMA_FILE if use_ema else MODEL_FILE)
        ckpt = read_config(source_ckpt)
        if cfg.init is not None and ckpt.get("stage") == "vae":
            load_weights(model.vae, weights, prefix="vae.")  # the rest is built from the preset
        else:
            fresh = _fresh_parts(ckpt, model_cfg) if cfg.init else ()
            load_weights(model, weights, fresh=fresh)
            if "denoiser.future_patch_embedding." in fresh:
                model.denoiser.init_future_expert()
    model.to(device)

    for p in model.parameters():
        p.requires_grad_(False)
    for m in _trainable(model, cfg.stage):
        m.requires_grad_(True)
    if cfg.freeze_video_tower:  # unified: the staircase states' embedding is unified mode's own
        own = ACTION_TOWER + (("extra_context_embedding.",) if cfg.stage == "unified" else ())
        for name, p in model.denoiser.named_parameters():
            p.requires_grad_(name.startswith(own))
    if cfg.freeze_denoiser:
        for name, p in model.denoiser.named_parameters():
            p.requires_grad_(name.startswith("extra_context_embedding."))
    if cfg.future_expert:
        for name, p in model.denoiser.named_parameters():
            p.requires_grad_(name.startswith(FUTURE_EXPERT) or ".future." in name)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizers = _optimizers(cfg, params)
    ema = EMA(model, cfg.ema_decay)

    balanced = None
    if cfg.stage == "denoiser" and cfg.recipe == "event" and cfg.balanced:
        from backend.data.sampler import ClusterBalancedSampler

        balanced = ClusterBalancedSampler.from_samples(samples, cfg.caption_track, seed=cfg.seed)
    weights = intervention_weights(dataset, samples, cfg.intervention_weight)
    if balanced is not None and weights is not None:  # the same emphasis on the balanced draw
        p = balanced.probabilities * weights
        balanced.probabilities = p / p.sum()
    stream = IndexStream(len(samples), cfg.seed, rank, world, balanced, weights)
    mix = _event_mix(cfg, model_cfg, episodes, rank, world)  # (samples, stream) or None
    video_rows = None  # the samples joint steps may draw (None: all)
    if cfg.video_episodes and objective_uses_video(cfg):
        video_rows = [i for i, r in enumerate(samples.refs) if r.episode_index < cfg.video_episodes]
        if not video_rows:
            raise ValueError(f"--video-episodes {cfg.video_episodes}: no samples in those episodes")
        video_stream = IndexStream(len(video_rows), cfg.seed + 1, rank, world)

    step = 0
    if cfg.resume:
        state = load_training_state(source_ckpt, optimizers)
        step = int(state["step"])
        stream.seek(int(state["epoch"]), int(state["offset"]))
        if mix is not None:
            mix[1].seek(int(state.get("event_epoch", 0)), int(state.get("event_offset", 0)))
        if video_rows is not None:
            video_stream.seek(int(state.get("video_epoch", 0)), int(state.get("video_offset", 0)))
        ema.load(load_tensors(source_ckpt / EMA_FILE))
        if world > 1:  # the saved RNG is rank 0's: give every rank its own stream again
            torch.manual_seed(cfg.seed + rank + 7919 * step)

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(
            model,
            device_ids=[local_rank] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    objective = cfg.objective_name
    store = None
    if objective != "vae":
        from backend.latents import LatentStore

        store = LatentStore(
            cfg.latent_cache or out / "latents",
            model,
            str(Path(cfg.dataset).resolve()),
            list(model.cameras),
        )
        if cfg.precompute_latents:
            n_episodes = len({r.episode_index for r in samples.refs})
            clips = objective_uses_video(cfg)  # else every step is action-only
            with tqdm(
                total=n_episodes + (len(samples) if clips else 0),
                desc="encode latents",
                disable=not cfg.progress or rank != 0,
            ) as fill_bar:
                store.fill(
                    samples,
                    episodes,
                    fill_bar.update,
                    clips=clips,
                    pixels=bool(model_cfg.denoiser.keypoints or model_cfg.video_residual),
                    stills=bool(model_cfg.video_residual),
                    clip_samples=video_rows,
                )
    log_path = out / LOG_FILE
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not cfg.progress or rank != 0,
        desc=f"train {cfg.stage}",
    )
    losses: dict[str, float] = {}
    t_start, samples_seen = time.perf_counter(), 0
    model.train()
    while step < cfg.steps:
        # Per-step draws from (seed, step): a resumed run makes the same choices, and every rank
        # takes the same kind of step (their losses are averaged key by key); suffixes per rank.
        action_only = not cfg.future_expert and bool(  # an expert run trains only joint steps
            np.random.default_rng((cfg.seed, step)).random() < cfg.objective.video_noise_prob
        )
        event_step = mix is not None and bool(
            np.random.default_rng((cfg.seed, step, 1)).random() < cfg.event_mix
        )
        step_samples, step_stream = mix if event_step else (samples, stream)
        step_objective = "event" if event_step else objective
        if video_rows is not None and not action_only and not event_step:
            idx = [video_rows[i] for i in video_stream.take(cfg.batch_size)]
        else:
            idx = step_stream.take(cfg.batch_size)
        rng = np.random.default_rng((cfg.seed, rank, step))
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
        if objective == "vae":
            parts = net(collate([samples[i] for i in idx]), "vae")
        else:
            batch, latents, stills = _batch(
                step_samples,
                idx,
                store,
                episodes,
                action_only,
                cfg.suffixes,
                rng,
                pixels=bool(model_cfg.denoiser.keypoints),
                stills=bool(model_cfg.video_residual),
            )
            parts = net(
                batch,
                step_objective,
                latents=latents.to(device),
                loss_config=cfg.objective,
                action_only=action_only,
                stills=None if stills is None else stills.to(device),
            )
        loss = parts["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {step + 1}: lower --lr or check the data"
            )
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
        for opt in optimizers:
            opt.step()
        ema.update(model, step)
        step += 1
        samples_seen += cfg.batch_size * world
        losses = {k: float(v.detach()) for k, v in parts.items()}
        if world > 1:
            losses = _mean_across_ranks(losses)
        bar.update(1)
        bar.set_postfix(loss=f"{losses['loss']:.4f}")
        keep = bool(cfg.keep_every) and step % cfg.keep_every == 0  # kept steps are logged too
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps or keep):
            rate = samples_seen / max(time.perf_counter() - t_start, 1e-9)
            row = {
                "step": step,
                **losses,
                "action_only": objective != "vae" and action_only,
                **({"event_step": event_step} if mix is not None else {}),
                "lr": lr_at(cfg, step - 1),
                "samples_per_s": rate,
                "elapsed_s": time.perf_counter() - t_start,
                "world_size": world,
            }
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if step % cfg.save_every == 0 or step == cfg.steps or keep:
            if (
                objective == "vae"
            ):  # every saved VAE carries latent statistics fitted to its EMA weights
                _calibrate_latents(model, ema, samples, cfg)
            if rank == 0:
                train_state = {"step": step, "epoch": stream.epoch, "offset": stream.offset}
                if mix is not None:
                    train_state.update(event_epoch=mix[1].epoch, event_offset=mix[1].offset)
                if video_rows is not None:
                    train_state.update(
                        video_epoch=video_stream.epoch, video_offset=video_stream.offset
                    )
                config = {
                    **model.checkpoint_config(),
                    "stage": stage,
                    "step": step,
                    "train": _jsonable(asdict(cfg)),
                }
                save_checkpoint(
                    out / CHECKPOINT_DIR,
                    config,
                    model.state_dict(),
                    ema.state_dict(model),
                    optimizers,
                    train_state,
                )
                if keep:
                    keep_checkpoint(out / CHECKPOINT_DIR, out / f"checkpoint-{step:07d}")
            if world > 1:
                torch.distributed.barrier()
    bar.close()
    elapsed = time.perf_counter() - t_start
    return {
        "steps": step,
        "losses": losses,
        "samples_per_s": samples_seen / max(elapsed, 1e-9),
        "checkpoint": str(out / CHECKPOINT_DIR),
        "world_size": world,
        "rank": rank,
    }


def _event_mix(cfg: TrainConfig, model_cfg, episodes, rank: int, world: int):
    """(next-event samples, their index stream) for the unified stage's event-mode steps, or
    None when the run takes none (another stage or recipe, `event_mix` 0, a frozen
    denoiser, no events)."""
    if cfg.stage != "unified" or cfg.recipe != "event" or cfg.event_mix <= 0:
        return None
    if cfg.freeze_denoiser:  # an event-mode step would train nothing
        return None
    if not episodes.has_events:
        return None
    from backend.data.sampler import ClusterBalancedSampler

    samples = _samples(replace(cfg, stage="denoiser"), model_cfg, episodes)  # next-event samples
    if len(samples) == 0:
        return None
    balanced = (
        ClusterBalancedSampler.from_samples(samples, cfg.caption_track, seed=cfg.seed)
        if cfg.balanced
        else None
    )
    return samples, IndexStream(len(samples), cfg.seed + 1, rank, world, balanced)


def _batch(
    samples,
    idx: list[int],
    store,
    episodes,
    action_only: bool,
    suffixes: bool,
    rng: np.random.Generator,
    pixels: bool = False,
    stills: bool = False,
) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """A collated batch without frames, its latents from the store, and (`stills`, joint steps)
    the latents of its observations held still.

    Action-only steps need only the observation's latent frame (B, V, C, 1, h, w) and may start
    an event sample at any of its steps; joint steps take whole clips (B, V, C, F, h, w).
    `pixels`: the batch also carries the observation frame, "obs_frames" (B, V, H, W, 3) uint8.
    """
    from backend.data.samples import EventSamples, collate

    if action_only and suffixes and isinstance(samples, EventSamples):
        rows = [samples.suffix(i, rng, video=False) for i in idx]
    else:
        rows = [samples.sample(i, video=False) for i in idx]
    if action_only:
        lat = [store.obs(episodes, int(r["episode_index"]), int(r["start"])) for r in rows]
    else:
        lat = store.clips(rows, samples.video)
    still = None
    if stills and not action_only:
        still = torch.from_numpy(np.stack(store.stills(rows, episodes))).float()
    batch = collate(rows)
    if pixels:
        batch["obs_frames"] = torch.from_numpy(
            np.stack(
                [store.frames(episodes, int(r["episode_index"]), int(r["start"])) for r in rows]
            )
        )
    return batch, torch.from_numpy(np.stack(lat)).float(), still


def objective_uses_video(cfg: TrainConfig) -> bool:
    """Whether a run takes joint (video) steps at all."""
    return cfg.stage != "vae" and (cfg.future_expert or cfg.objective.video_noise_prob < 1.0)


@torch.no_grad()
def _calibrate_latents(model, ema: EMA, samples, cfg: TrainConfig, n: int = 8) -> None:
    """Fit the latent standardisation on a few training clips with the EMA autoencoder.

    Inference and later stages load the EMA weights, so the statistics must describe what the
    EMA encoder produces; the fitted buffers go into both the raw and the EMA state.
    """
    import copy

    from backend.model.vae import frames_to_video

    vae = copy.deepcopy(model.vae)
    for name, p in vae.named_parameters():
        p.copy_(ema.shadow[f"vae.{name}"])
    rng = np.random.default_rng(cfg.seed)
    picks = rng.choice(len(samples), size=min(n, len(samples)), replace=False)
    videos = [
        frames_to_video(model._resize(torch.from_numpy(samples[int(i)]["video"])).to(model.device))
        for i in picks
    ]  # each (V, 3, T, H, W)
    vae.calibrate_(videos)
    model.vae.latents_mean.copy_(vae.latents_mean)
    model.vae.latents_std.copy_(vae.latents_std)


def _mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def _jsonable(d: dict) -> dict:
    return json.loads(
        json.dumps(d, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    )


def iterate_log(path: str | Path) -> Iterator[dict]:
    """Rows of a run's log.jsonl."""
    with Path(path).open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
