"""The world action model: autoencoder + instruction encoder + denoiser (+ VLM), both modes.

Event mode:   observation + next-event text  -> variable-length chunk (<= H_max) + imagined video
Unified mode: observation + task text -> VLM staircase states (+ proposed next event as text)
              -> fixed chunk of H = 16 steps + imagined video

Both modes run the same denoiser; unified mode adds the VLM's staircase states to its
cross-attention context. A chunk's length comes from the validity channel (the 8th action
channel, +1 inside the event and -1 after it in training): the robot executes steps until
the channel first drops below 0.

Two inference paths:
- `imagine_stream` / `imagine`: joint denoising of video latents and actions, then VAE
  decoding: what the studio shows.
- `predict_actions`: the action-only fast path. Video never attends to actions, so the video
  tower runs once over the observation's latent frame alone (the future frames would be pure
  noise at t = 1 and carry nothing), its per-layer keys/values are reused by every action
  step, and no video is decoded. Training runs a share of its steps in exactly this layout
  (`forward(..., action_only=True)`) so this path is in distribution; those steps cost a
  fraction of a joint step, since the video tokens shrink to one latent frame.

Actions are predicted relative to the current state (`ModelConfig.relative_actions`, as
openpi's delta-action transform): position and orientation as offsets from the state the chunk
starts in, the gripper absolute. The model's output is turned back into absolute
`ee_pose_abs` targets before anything leaves it, so callers never see the difference.

Training objective (`forward`): rectified flow (backend.model.flow) on video latents (latent
frames after the observation, masked where the clip is padding) and actions (7 channels
masked by validity, validity channel everywhere), plus in unified mode the VLM's next-event
text cross-entropy. The instruction is dropped for a share of samples so classifier-free
guidance has an unconditional branch.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.model.checkpoint import EMA_FILE, MODEL_FILE, load_weights, read_config
from backend.model.denoiser import WorldActionDenoiser, i2v_condition
from backend.model.flow import (
    add_noise,
    euler_step,
    flow_loss,
    guided,
    predict_x0,
    sample_timesteps,
    sampling_schedule,
    velocity_target,
)
from backend.model.normalizer import Normalizer
from backend.model.presets import MAX_FUTURES, ModelConfig
from backend.model.text_encoder import InstructionEncoder
from backend.model.track import track_features
from backend.model.vae import VideoVAE, frames_to_video, latent_frames, video_to_frames
from backend.model.vlm import StaircaseVLM
from robot.types import ACTION_DIM, CameraCalib

MODES = ("event", "unified")
OBJECTIVES = ("vae", *MODES)


@dataclass(frozen=True)
class Objective:
    """Knobs of the training loss."""

    uncond_prob: float = 0.1  # instruction dropped -> unconditional branch for guidance
    # Share of training steps in the action-only layout (what closed-loop control runs).
    video_noise_prob: float = 0.5
    video_weight: float = 1.0
    action_weight: float = 1.0
    caption_weight: float = 0.1  # VLM next-event text (unified mode)
    # Models with keypoints: weight of the endpoint regression that teaches the keypoint
    # encoder to localise (backend.model.keypoints); 0 = flow loss only.
    keypoint_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("uncond_prob", "video_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Objective.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Observation:
    """What the robot sees now: images per camera (uint8 H x W x 3), state (7,), calibrations."""

    images: Mapping[str, np.ndarray]
    state: np.ndarray
    cameras: Mapping[str, CameraCalib] | None = None


@dataclass
class Imagination:
    """One imagined event."""

    mode: str
    instruction: str
    actions: np.ndarray  # (length, 7) the chunk to execute, ee_pose_abs
    chunk: np.ndarray  # (H, 7) every denoised step, including those after the event ends
    validity: np.ndarray  # (H,) validity channel; executed up to its first value below 0
    length: int
    # cam -> (length + 1, H, W, 3) uint8; None on the action-only path
    video: dict[str, np.ndarray] | None
    proposed_event: str | None = None  # unified mode: the VLM's next-event text
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    # cam -> (K, length + 1, H, W, 3) uint8: each of the K futures `video` is the mean of
    # (ModelConfig.imagine_futures > 1); None for a single one
    video_futures: dict[str, np.ndarray] | None = None


def chunk_length(validity: np.ndarray) -> int:
    """Steps before the validity channel first drops below 0 (at least one)."""
    below = np.flatnonzero(np.asarray(validity) < 0)
    return max(1, int(below[0])) if len(below) else len(validity)


def check_instruction(instruction: str, mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(instruction, str) or not instruction.strip():
        what = "the next event" if mode == "event" else "the task"
        raise ValueError(f"instruction is empty: describe {what} in words ({mode} mode)")
    return instruction.strip()


def _calib_key(cams: Sequence[CameraCalib]) -> bytes:
    return b"".join(
        np.ascontiguousarray(c.K, np.float64).tobytes()
        + np.ascontiguousarray(c.T_world_cam, np.float64).tobytes()
        + f"{c.width}x{c.height}".encode()
        for c in cams
    )


def to_model_actions(actions: torch.Tensor, state: torch.Tensor, relative: bool) -> torch.Tensor:
    """Absolute ee_pose_abs actions (B, H, 7) -> what the model predicts, given the state (B, 7).

    Relative: xyz and roll/pitch/yaw as offsets from the state (angles wrapped to [-pi, pi)),
    the gripper absolute (it is a command, not a pose).
    """
    if not relative:
        return actions
    delta = actions[..., :6] - state[:, None, :6]
    delta = torch.cat(
        [delta[..., :3], torch.remainder(delta[..., 3:6] + math.pi, 2 * math.pi) - math.pi], dim=-1
    )
    return torch.cat([delta, actions[..., 6:]], dim=-1)


def from_model_actions(x: torch.Tensor, state: torch.Tensor, relative: bool) -> torch.Tensor:
    """Inverse of `to_model_actions`: model actions (B, H, 7) + state (B, 7) -> absolute actions."""
    if not relative:
        return x
    return torch.cat([x[..., :6] + state[:, None, :6], x[..., 6:]], dim=-1)


class WorldActionModel(nn.Module):
    """VAE + denoiser + staircase VLM, with the normaliser and camera set it was trained with.

    `stage` is the last training stage of the weights (None for a model being built): unified
    mode needs a `unified`-stage model, since only that stage trains the VLM.
    """

    def __init__(
        self,
        config: ModelConfig,
        normalizer: Normalizer | None = None,
        cameras: Mapping[str, CameraCalib] | None = None,
        recipe: str = "event",
        stage: str | None = None,
    ) -> None:
        super().__init__()
        self.vlm = StaircaseVLM(config.vlm, config.vae.z_dim, config.denoiser.num_views)
        if self.vlm.hidden_size != config.denoiser.extra_context_dim:
            config = config.with_vlm_width(
                self.vlm.hidden_size
            )  # a VLM loaded by path sets the width
        self.config = config
        self.vae = VideoVAE(config.vae)
        self.denoiser = WorldActionDenoiser(config.denoiser)
        self.normalizer = normalizer or Normalizer.identity()
        self.cameras: dict[str, CameraCalib] = dict(
            cameras or {}
        )  # training camera set, view order
        self.recipe = recipe
        self.stage = stage
        self._text: InstructionEncoder | None = None
        self._masks: OrderedDict = OrderedDict()

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, use_ema: bool = True) -> WorldActionModel:
        """Rebuild from a checkpoint directory (EMA weights when present)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} does not exist")
        cfg = read_config(path)
        try:
            config = ModelConfig.from_dict(cfg["model"])
            normalizer = Normalizer.from_stats(cfg["normalizer"])
            cameras = {n: CameraCalib.from_dict(n, d) for n, d in cfg.get("cameras", {}).items()}
        except (KeyError, TypeError) as e:
            raise ValueError(f"checkpoint file {path / 'config.json'} is incomplete: {e!r}") from e
        model = cls(
            config, normalizer, cameras, recipe=cfg.get("recipe", "event"), stage=cfg.get("stage")
        )
        weights = path / EMA_FILE if use_ema and (path / EMA_FILE).exists() else path / MODEL_FILE
        load_weights(model, weights)
        return model.eval()

    def checkpoint_config(self) -> dict:
        """What config.json records besides training details."""
        return {
            "preset": self.config.name,
            "model": self.config.to_dict(),
            "recipe": self.recipe,
            "normalizer": self.normalizer.to_dict(),
            "cameras": {n: c.to_dict() for n, c in self.cameras.items()},
        }

    @property
    def device(self) -> torch.device:
        return self.denoiser.patch_embedding.weight.device

    @property
    def text(self) -> InstructionEncoder:
        if self._text is None:
            self._text = InstructionEncoder(self.config.text)
        return self._text

    def default_horizon(self, mode: str) -> int:
        if mode == "unified":
            return self.config.h_unified
        return self.config.h_unified if self.recipe == "fixed" else self.config.h_max

    # ---- encoders ---------------------------------------------------------------------------

    def encode_text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text.encode(texts, self.device)  # (B, L, text_dim), (B, L) bool

    def _resize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., T, H, W, 3) -> the model's image size (area filter when shrinking)."""
        size = self.config.image_size
        if frames.shape[-3:-1] == (size, size):
            return frames
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        mode = "area" if x.shape[-1] >= size and x.shape[-2] >= size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode)
        return (
            x.round()
            .clamp(0, 255)
            .to(torch.uint8)
            .permute(0, 2, 3, 1)
            .reshape(*lead, size, size, 3)
        )

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, V, T, H, W, 3) -> standardised latents (B, V, C, 1 + (T-1)//4, h, w)."""
        b, v = frames.shape[:2]
        x = frames_to_video(self._resize(frames).to(self.device))  # (B, V, 3, T, H, W)
        z = self.vae.encode(x.flatten(0, 1))  # (B*V, C, F, h, w)
        return z.unflatten(0, (b, v))

    def view_mask(
        self, cameras: Sequence[Mapping[str, CameraCalib]] | None, frames: int, views: int
    ):
        """Sight-cone mask for a batch whose samples have these calibrations (None: full attention)."""
        from backend.model.sight_cone import build_attention_mask, sight_cone_mask

        cfg = self.config
        if not cfg.sight_cone or not cameras or any(len(c) != views for c in cameras):
            return None
        per_sample = [tuple(c.values()) for c in cameras]
        keys = [_calib_key(c) for c in per_sample]
        key = (tuple(keys) if len(set(keys)) > 1 else keys[0], frames, str(self.device))
        if key in self._masks:
            self._masks.move_to_end(key)
            return self._masks[key]
        gh = cfg.latent_size // cfg.denoiser.patch_size[1]
        gw = cfg.latent_size // cfg.denoiser.patch_size[2]

        def patch_mask(cams: tuple[CameraCalib, ...]) -> np.ndarray:
            return sight_cone_mask(
                cams, (gh, gw), cfg.cone_d_min, cfg.cone_d_max, cfg.workspace_min, cfg.workspace_max
            )

        if len(set(keys)) == 1:
            pm = patch_mask(per_sample[0])  # (P, P), shared by the batch
        else:
            pm = np.stack([patch_mask(c) for c in per_sample])  # (B, P, P), calibrations differ
        mask = build_attention_mask(pm, frames, grid=(gh, gw), device=self.device)
        self._masks[key] = mask
        if len(self._masks) > 32:
            self._masks.popitem(last=False)
        return mask

    def _track(
        self,
        state_abs: torch.Tensor,
        actions_abs: torch.Tensor,
        cameras: Sequence[Mapping[str, CameraCalib]] | None,
        views: int,
    ) -> torch.Tensor | None:
        """End-effector track features of absolute chunks (config `future_track`), else None."""
        cfg = self.config
        if not cfg.denoiser.future_track:
            return None
        grid = (
            cfg.latent_size // cfg.denoiser.patch_size[1],
            cfg.latent_size // cfg.denoiser.patch_size[2],
        )
        cams = list(cameras) if cameras is not None else [None] * len(actions_abs)
        return track_features(state_abs, actions_abs, cams, views, grid).to(self.device)

    # ---- training ---------------------------------------------------------------------------

    def forward(
        self,
        batch: Mapping,
        objective: str,
        latents: torch.Tensor | None = None,
        loss_config: Objective | None = None,
        action_only: bool = False,
        stills: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses of a collated batch (backend.data.samples.collate); key "loss" is the total.

        `latents` (B, V, C, F, h, w): precomputed (frozen-VAE) latents of `batch["video"]`; with
        `action_only` only the observation's latent frame is used (F may be 1) and the step trains
        the action-only layout: video tokens of that frame alone, no video loss. `stills`: the
        same for the observation held still (`ModelConfig.video_residual`; encoded when None).
        """
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if objective == "vae":
            video = frames_to_video(
                self._resize(batch["video"]).to(self.device)
            )  # (B, V, 3, T, H, W)
            return self.vae.loss(video.flatten(0, 1))
        oc = loss_config or Objective()
        dev = self.device
        actions = batch["actions"].to(dev)  # (B, H, 7)
        valid = batch["valid"].to(dev)  # (B, H)
        video_valid = batch["video_valid"].to(dev)  # (B, H + 1)
        horizon = actions.shape[1]
        if objective == "unified":
            horizon = min(horizon, self.config.h_unified)  # fixed chunks: crop longer samples
        if horizon % 4:
            raise ValueError(
                f"chunks must span whole latent frames (a multiple of 4 steps), got H={horizon}"
            )
        actions, valid, video_valid = (
            actions[:, :horizon],
            valid[:, :horizon],
            video_valid[:, : horizon + 1],
        )
        n_lat = 1 if action_only else latent_frames(horizon + 1)
        if latents is None:
            latents = self.encode_video(batch["video"][:, :, : 1 if action_only else horizon + 1])
        latents = latents[:, :, :, :n_lat].to(dev)  # (B, V, C, F, h, w)
        B, V = latents.shape[:2]

        obs = latents[:, :, :, :1]  # (B, V, C, 1, h, w) the current observation
        cond = i2v_condition(obs, n_lat)
        if self.config.video_residual and not action_only:
            if stills is None:
                frame = batch["video"][:, :, :1]
                stills = self.encode_video(frame.expand(-1, -1, horizon + 1, -1, -1, -1))
            latents = self._residual(latents, stills[:, :, :, :n_lat].to(dev))
        validity = torch.where(valid, 1.0, -1.0)[..., None]  # (B, H, 1)
        state_abs = batch["state"].to(dev).float()  # (B, 7)
        rel = to_model_actions(actions.float(), state_abs, self.config.relative_actions)
        a0 = torch.cat([self.normalizer.normalize_action(rel), validity], dim=-1)  # (B, H, 8)
        state = self.normalizer.normalize_state(state_abs)

        texts = batch["caption"] if objective == "event" else batch["task"]
        ctx, ctx_mask = self.encode_text(texts)
        keep = torch.rand(B) >= oc.uncond_prob  # instruction dropout for guidance
        ctx_mask = ctx_mask & keep.to(dev)[:, None]

        losses: dict[str, torch.Tensor] = {}
        extra = None
        if objective == "unified":
            tracks = batch.get("caption_track", ["task"] * B)
            captions = list(batch["caption"]) if all(t != "task" for t in tracks) else None
            out = self.vlm(obs[:, :, :, 0], list(batch["task"]), captions=captions)
            extra = out.states  # (B, K, hidden)
            if out.caption_loss is not None:
                losses["caption"] = out.caption_loss

        obs_frames = None
        if self.config.denoiser.keypoints:  # the observation frame in pixels, for the keypoints
            frames = batch["obs_frames"] if "obs_frames" in batch else batch["video"][:, :, 0]
            obs_frames = self._resize(frames).to(dev)  # (B, V, H, W, 3) uint8

        t_v = torch.ones(B, device=dev) if action_only else sample_timesteps(B, dev)
        t_a = sample_timesteps(B, dev)
        nv, na = torch.randn_like(latents), torch.randn_like(a0)
        xv, xa = add_noise(latents, nv, t_v), add_noise(a0, na, t_a)
        vmask = self.view_mask(batch.get("cameras"), n_lat, V)
        kv = self.denoiser.encode_video(
            xv,
            t_v,
            ctx,
            ctx_mask,
            cond,
            vmask,
            extra,
            compute_video=not action_only,
            obs_frames=obs_frames,
            future_actions=None if action_only else a0,  # the true chunk (config future_actions)
            future_track=None
            if action_only
            else self._track(state_abs, actions.float(), batch.get("cameras"), V),
        )
        pv, pa = kv.velocity, self.denoiser.denoise_actions(xa, t_a, state, kv)
        if kv.obs_points is not None and oc.keypoint_weight > 0:
            losses["keypoint"] = self._endpoint_loss(kv, state, a0, valid, keep.to(dev))

        if not action_only:
            # Latent frame f >= 1 stands for frames 4f-3 .. 4f; it counts when its first frame is real.
            lat_valid = video_valid[:, [0, *range(1, horizon + 1, 4)]].clone()  # (B, F)
            lat_valid[:, 0] = False  # the observation is given, not predicted
            losses["video"] = flow_loss(
                pv, velocity_target(latents, nv), lat_valid[:, None, None, :, None, None]
            )
        tgt = velocity_target(a0, na)
        losses["action"] = flow_loss(pa[..., :ACTION_DIM], tgt[..., :ACTION_DIM], valid[..., None])
        losses["validity"] = flow_loss(pa[..., ACTION_DIM:], tgt[..., ACTION_DIM:])
        total = oc.action_weight * (losses["action"] + losses["validity"])
        if "video" in losses:
            total = total + oc.video_weight * losses["video"]
        if "caption" in losses:
            total = total + oc.caption_weight * losses["caption"]
        if "keypoint" in losses:
            total = total + oc.keypoint_weight * losses["keypoint"]
        losses["loss"] = total
        return losses

    def _residual(self, latents: torch.Tensor, stills: torch.Tensor) -> torch.Tensor:
        """Latents -> what a residual video tower denoises: frame 0 (the observation) as it is,
        every later frame as its difference from the still clip, scaled."""
        r = self.config.video_residual
        return torch.cat(
            [latents[:, :, :, :1], (latents[:, :, :, 1:] - stills[:, :, :, 1:]) * r], 3
        )

    def _absolute(self, x: torch.Tensor, stills: torch.Tensor | None) -> torch.Tensor:
        """Inverse of `_residual` (the identity for a model without residual video)."""
        if stills is None:
            return x
        r = self.config.video_residual
        return torch.cat([x[:, :, :, :1], stills[:, :, :, 1:] + x[:, :, :, 1:] / r], 3)

    def _endpoint_loss(self, kv, state, a0, valid, keep) -> torch.Tensor:
        """MSE of the keypoint encoder's guess of where the chunk ends (normalised, relative),
        given the instruction; rows whose instruction was dropped are left out."""
        from backend.model.denoiser import pooled_context

        kp = self.denoiser.obs_keypoints
        last = valid.long().sum(1).clamp(min=1) - 1  # (B,) last valid step
        target = a0[torch.arange(len(a0), device=a0.device), last, :3]  # (B, 3)
        text = pooled_context(kv)
        pred = kp.predict_endpoint(kp.embed(kv.obs_points, state, text, kv.obs_features), text)
        err = ((pred.float() - target.float()) ** 2).mean(1)  # (B,)
        k = keep.float()
        return (err * k).sum() / k.sum().clamp(min=1.0)

    # ---- inference --------------------------------------------------------------------------

    def _observation(
        self, obs: Observation
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, CameraCalib]]:
        """images (1, V, 1, H, W, 3) uint8, state (1, 7), calibrations in view order."""
        names = list(self.cameras) or list(obs.images)
        missing = [n for n in names if n not in obs.images]
        if missing:
            raise ValueError(
                f"observation lacks cameras {missing}; the model was trained on {names}"
            )
        if len(names) > self.config.denoiser.num_views:
            raise ValueError(
                f"{len(names)} cameras, the model takes at most {self.config.denoiser.num_views}"
            )
        imgs = []
        for n in names:
            im = np.asarray(obs.images[n])
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"image {n!r} must be uint8 (H, W, 3), got {im.dtype} {im.shape}")
            imgs.append(torch.from_numpy(np.ascontiguousarray(im)))
        if len({tuple(i.shape) for i in imgs}) > 1:
            raise ValueError(f"camera images differ in size: {[tuple(i.shape) for i in imgs]}")
        state = np.asarray(obs.state, dtype=np.float32).reshape(-1)
        if state.shape != (ACTION_DIM,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be {ACTION_DIM} finite floats, got {state.tolist()}")
        given = obs.cameras or {}
        cams = {n: given.get(n) or self.cameras.get(n) for n in names}
        cams = {n: c for n, c in cams.items() if c is not None}
        images = torch.stack(imgs)[None, :, None]  # (1, V, 1, H, W, 3)
        return images, torch.from_numpy(state)[None].to(self.device), cams

    def _prepare(
        self,
        obs: Observation,
        instruction: str,
        mode: str,
        guidance: float,
        horizon: int,
        action_only: bool = False,
    ):
        """Everything both inference paths share, in the CFG batch layout [cond; uncond]."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        images, state_abs, cams = self._observation(obs)
        state = self.normalizer.normalize_state(state_abs)
        obs_lat = self.encode_video(images)  # (1, V, C, 1, h, w)
        n_lat = 1 if action_only else latent_frames(horizon + 1)
        cond = i2v_condition(obs_lat, n_lat)
        stills = None
        if self.config.video_residual and not action_only:  # the observation held still
            stills = self.encode_video(images.expand(-1, -1, horizon + 1, -1, -1, -1))
        ctx, ctx_mask = self.encode_text([instruction])
        timings["encode_s"] = time.perf_counter() - t0
        extra, proposal = None, None
        if mode == "unified":
            t1 = time.perf_counter()
            out = self.vlm(obs_lat[:, :, :, 0], [instruction], propose=True)
            extra, proposal = out.states, out.proposals[0]
            timings["vlm_s"] = time.perf_counter() - t1
        obs_frames = (
            self._resize(images[:, :, 0]).to(self.device)
            if self.config.denoiser.keypoints
            else None
        )
        use_cfg = guidance != 1.0
        if use_cfg:  # batch row 1: the same inputs without the instruction
            cond, state = cond.repeat(2, 1, 1, 1, 1, 1), state.repeat(2, 1)
            obs_frames = obs_frames.repeat(2, 1, 1, 1, 1) if obs_frames is not None else None
            ctx, ctx_mask = ctx.repeat(2, 1, 1), torch.cat([ctx_mask, torch.zeros_like(ctx_mask)])
            extra = extra.repeat(2, 1, 1) if extra is not None else None
        vmask = (
            self.view_mask([cams], n_lat, obs_lat.shape[1])
            if len(cams) == obs_lat.shape[1]
            else None
        )
        return dict(
            obs_lat=obs_lat,
            stills=stills,
            images=images,
            cond=cond,
            state=state,
            state_abs=state_abs,
            ctx=ctx,
            ctx_mask=ctx_mask,
            extra=extra,
            obs_frames=obs_frames,
            vmask=vmask,
            proposal=proposal,
            timings=timings,
            use_cfg=use_cfg,
            cams=cams,
        )

    def _resolve(
        self,
        instruction: str,
        mode: str,
        steps: int | None,
        guidance: float | None,
        horizon: int | None,
    ) -> tuple[str, int, float, int]:
        instruction = check_instruction(instruction, mode)
        if mode == "unified" and self.stage not in (None, "unified"):
            raise ValueError(
                f"unified mode needs a model trained through the 'unified' stage (its VLM); this one "
                f"stopped at stage {self.stage!r}: use event mode, or train --stage unified --init it"
            )
        steps = int(steps or self.config.sampling_steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        guidance = float(self.config.guidance_scale if guidance is None else guidance)
        horizon = int(horizon or self.default_horizon(mode))
        if horizon % 4 or not 4 <= horizon <= self.config.h_max:
            raise ValueError(
                f"horizon must be a multiple of 4 in [4, {self.config.h_max}], got {horizon}"
            )
        return instruction, steps, guidance, horizon

    def _finish(self, xa: torch.Tensor, mode: str, instruction: str, p: dict) -> Imagination:
        a = xa[:1].float()  # (1, H, 8)
        actions = self.normalizer.unnormalize_action(a[..., :ACTION_DIM])
        chunk = (
            from_model_actions(actions, p["state_abs"], self.config.relative_actions)[0]
            .cpu()
            .numpy()
        )
        validity = a[0, :, ACTION_DIM].cpu().numpy().astype(np.float32)
        length = len(validity) if mode == "unified" else chunk_length(validity)
        chunk = chunk.astype(np.float32)
        return Imagination(
            mode,
            instruction,
            chunk[:length],
            chunk,
            validity,
            length,
            None,
            p["proposal"],
            p["timings"],
        )

    def _initial_noise(
        self, obs_lat: torch.Tensor, horizon: int, seed: int, futures: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded noise for the future latents (futures, V, C, F, h, w) and the chunk (1, horizon, 8).

        Full imagination and the action-only path draw it the same way, so for a given seed both
        start from the same noise; the first future's is the same whatever `futures` is.
        """
        gen = torch.Generator().manual_seed(int(seed))
        _, V, C, _, h, w = obs_lat.shape
        shape = (1, V, C, latent_frames(horizon + 1), h, w)
        xv = torch.randn(shape, generator=gen)
        xa = torch.randn((1, horizon, ACTION_DIM + 1), generator=gen)
        if futures > 1:
            xv = torch.cat([xv, torch.randn((futures - 1, *shape[1:]), generator=gen)])
        return xv.to(self.device), xa.to(self.device)

    def _split(self, v: torch.Tensor, guidance: float, use_cfg: bool) -> torch.Tensor:
        """Rows [cond; uncond] -> the guided velocity (the rows as they are without guidance)."""
        n = v.shape[0] // 2
        return guided(v[:n], v[n:], guidance) if use_cfg else v

    @torch.no_grad()
    def imagine_stream(
        self,
        obs: Observation,
        instruction: str,
        mode: str = "event",
        steps: int | None = None,
        seed: int = 0,
        guidance: float | None = None,
        horizon: int | None = None,
        preview_every: int = 0,
        full_video: bool = False,
        futures: int | None = None,
    ) -> Iterator[dict]:
        """Joint video + action denoising, streamed.

        Yields {"type": "preview", "step", "steps", "actions" (H, 7), "validity" (H,), "latents"
        (1, V, C, F, h, w), "obs_latents" (1, V, C, 1, h, w)} after every step (clean estimates;
        the latents let a caller draw a cheap preview without the VAE decoder), plus "video"
        (cam -> frames) every `preview_every` steps when > 0,
        then {"type": "final", "result": Imagination}. The video covers the chunk's steps, or
        the whole horizon with `full_video` (also what is imagined past the event's end).
        `futures` futures (config `imagine_futures` when None) are denoised in one batch; the
        video is their per-pixel mean (`Imagination.video_futures` keeps each), the actions the
        first one's (its noise is the one a single-future call with this seed draws).
        """
        instruction, steps, guidance, horizon = self._resolve(
            instruction, mode, steps, guidance, horizon
        )
        k = self._futures(futures)
        t_start = time.perf_counter()
        p = self._prepare(obs, instruction, mode, guidance, horizon)
        obs_lat, use_cfg = p["obs_lat"], p["use_cfg"]
        rep = 2 if use_cfg else 1
        plan = track = None  # an action-conditioned future is imagined under the action-only chunk
        if self.config.denoiser.future_actions or self.config.denoiser.future_track:
            q = self._prepare(obs, instruction, mode, guidance, horizon, action_only=True)
            plan = self._action_only(q, horizon, steps, seed, guidance)
            chunk = self.normalizer.unnormalize_action(plan[..., :ACTION_DIM].float())
            chunk = from_model_actions(chunk, p["state_abs"], self.config.relative_actions)
            track = self._track(p["state_abs"], chunk, [p["cams"]], obs_lat.shape[1])
            plan = plan.repeat(rep * k, 1, 1)
            track = track.repeat(rep * k, 1, 1, 1, 1) if track is not None else None
        xv, xa = self._initial_noise(obs_lat, horizon, seed, futures=k)
        xa = xa.repeat(k, 1, 1)
        rows = self._rows(p, k)  # [cond x k; uncond x k]
        ts = sampling_schedule(steps, self.config.sampling_shift).tolist()
        t1 = time.perf_counter()
        for i in range(steps):
            t = torch.full((rep * k,), ts[i], device=self.device)
            vv, va = self.denoiser(
                xv.repeat(rep, 1, 1, 1, 1, 1),
                xa.repeat(rep, 1, 1),
                t,
                t,
                rows["ctx"],
                rows["ctx_mask"],
                rows["state"],
                rows["cond"],
                p["vmask"],
                rows["extra"],
                obs_frames=rows["obs_frames"],
                future_actions=plan,
                future_track=track,
            )
            vv, va = self._split(vv, guidance, use_cfg), self._split(va, guidance, use_cfg)
            preview = self._finish(predict_x0(xa, va, t[:1]), mode, instruction, p)
            x0v = self._absolute(predict_x0(xv, vv, t[:1]), p["stills"])  # clean-latent estimate
            msg = {
                "type": "preview",
                "step": i + 1,
                "steps": steps,
                "actions": preview.chunk,
                "validity": preview.validity,
                "latents": x0v.mean(0, keepdim=True),
                "obs_latents": obs_lat,
            }
            if preview_every > 0 and (i + 1) % preview_every == 0 and i + 1 < steps:
                msg["video"] = self._decode(x0v, p, preview.length)[0]
            yield msg
            xv, xa = euler_step(xv, vv, ts[i], ts[i + 1]), euler_step(xa, va, ts[i], ts[i + 1])
        p["timings"]["denoise_s"] = time.perf_counter() - t1
        result = self._finish(xa, mode, instruction, p)
        t2 = time.perf_counter()
        result.video, each = self._decode(
            self._absolute(xv, p["stills"]), p, horizon if full_video else result.length
        )
        result.video_futures = each if k > 1 else None
        result.timings["decode_s"] = time.perf_counter() - t2
        result.timings["total_s"] = time.perf_counter() - t_start
        yield {"type": "final", "result": result}

    def _futures(self, futures: int | None) -> int:
        k = int(futures or self.config.imagine_futures)
        if not 1 <= k <= MAX_FUTURES:
            raise ValueError(f"futures must be in [1, {MAX_FUTURES}], got {k}")
        return k

    @staticmethod
    def _rows(p: dict, k: int) -> dict:
        """The prepared per-row inputs ([cond; uncond] or [cond]) for k futures each."""
        names = ("ctx", "ctx_mask", "state", "cond", "extra", "obs_frames")
        if k == 1:
            return {n: p[n] for n in names}
        return {n: None if p[n] is None else p[n].repeat_interleave(k, 0) for n in names}

    def _decode(
        self, xv: torch.Tensor, p: dict, length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Latents (K, V, C, F, h, w) of K futures -> (cam -> their mean, (length + 1, H, W, 3)
        uint8; cam -> each, (K, length + 1, H, W, 3)). Frame 0 is the observation.

        A residual-video model's frames are the observed pixels plus the decoded change, the
        decoding of these latents minus that of the still clip (p["stills"]).
        """
        obs_lat, cams, stills = p["obs_lat"], p["cams"], p["stills"]
        k = xv.shape[0]
        needed = latent_frames(length + 1) + (
            1 if length % 4 else 0
        )  # latent frames covering frames 0..length
        obs = obs_lat.expand(k, -1, -1, -1, -1, -1)  # keep the clean observation latent
        z = torch.cat([obs, xv[:, :, :, 1:needed]], dim=3)
        video = self.vae.decode(
            z.flatten(0, 1)
        )  # (K V, 3, T, H, W); causal: a prefix decodes alone
        video = video.unflatten(0, (k, -1))  # (K, V, 3, T, H, W)
        if stills is not None:
            still = self.vae.decode(stills[0, :, :, :needed])
            observed = frames_to_video(
                self._resize(p["images"][0].to(self.device))
            )  # (V, 3, 1, H, W)
            video = observed + video - still
        video = video.clamp(-1, 1)
        mean = video_to_frames(video.mean(0)).cpu().numpy()  # (V, T, H, W, 3)
        each = video_to_frames(video.flatten(0, 1)).unflatten(0, (k, -1)).cpu().numpy()
        names = (
            list(cams) if len(cams) == mean.shape[0] else [f"view{i}" for i in range(mean.shape[0])]
        )
        return (
            {n: mean[i, : length + 1] for i, n in enumerate(names)},
            {n: each[:, i, : length + 1] for i, n in enumerate(names)},
        )

    def imagine(self, obs: Observation, instruction: str, **kwargs) -> Imagination:
        """The final result of `imagine_stream`."""
        for msg in self.imagine_stream(obs, instruction, **kwargs):
            if msg["type"] == "final":
                return msg["result"]
        raise RuntimeError("imagination ended without a result")

    @torch.no_grad()
    def predict_actions(
        self,
        obs: Observation,
        instruction: str,
        mode: str = "event",
        steps: int | None = None,
        seed: int = 0,
        guidance: float | None = None,
        horizon: int | None = None,
    ) -> Imagination:
        """Action-only fast path: one video-tower pass over the observation frame, actions denoised on its keys."""
        instruction, steps, guidance, horizon = self._resolve(
            instruction, mode, steps, guidance, horizon
        )
        t_start = time.perf_counter()
        p = self._prepare(obs, instruction, mode, guidance, horizon, action_only=True)
        t1 = time.perf_counter()
        xa = self._action_only(p, horizon, steps, seed, guidance)
        p["timings"]["denoise_s"] = time.perf_counter() - t1
        result = self._finish(xa, mode, instruction, p)
        result.timings["total_s"] = time.perf_counter() - t_start
        return result

    def _action_only(
        self, p: dict, horizon: int, steps: int, seed: int, guidance: float
    ) -> torch.Tensor:
        """The action-only path on prepared inputs: the chunk (1, horizon, 8) in model units."""
        use_cfg = p["use_cfg"]
        rep = 2 if use_cfg else 1
        xv, xa = self._initial_noise(p["obs_lat"], horizon, seed)
        xv = xv[:, :, :, :1].repeat(rep, 1, 1, 1, 1, 1)  # the observation's latent frame only
        kv = self.denoiser.encode_video(
            xv,
            torch.ones(rep, device=self.device),
            p["ctx"],
            p["ctx_mask"],
            p["cond"],
            p["vmask"],
            p["extra"],
            compute_video=False,
            obs_frames=p["obs_frames"],
        )
        ts = sampling_schedule(steps, self.config.sampling_shift).tolist()
        for i in range(steps):
            t = torch.full((rep,), ts[i], device=self.device)
            va = self.denoiser.denoise_actions(xa.repeat(rep, 1, 1), t, p["state"], kv)
            xa = euler_step(xa, self._split(va, guidance, use_cfg), ts[i], ts[i + 1])
        return xa

    @torch.no_grad()
    def propose_event(self, obs: Observation, task: str) -> str:
        """Unified mode's VLM proposal for the next event, as text."""
        task = check_instruction(task, "unified")
        images, _, _ = self._observation(obs)
        obs_lat = self.encode_video(images)
        return self.vlm(obs_lat[:, :, :, 0], [task], propose=True).proposals[0]
