"""The `Backend` the studio calls (DESIGN §6): observe, propose a plan, imagine, cone overlap.

In-process by default. One model, one worker thread: every model request (imagination, plan
proposal, warm-up) is queued to the worker and runs alone, so the model, its caches and the
VLM are never touched by two threads at once, whatever the number of browser tabs. Callers
get a stream of partial results through a per-request queue; closing the stream (the tab
went away, the user pressed Stop) cancels the request at its next denoising step.

Previews are cheap: each denoising step's clean-latent estimate goes through a linear
latent-to-RGB map (one 8x8 RGB patch per latent pixel) fitted by least squares to the VAE
decoder when the model loads, instead of running the decoder every step. Only the final
result is decoded by the VAE.

The backend never imports the app or the viewers; the robot link it observes through is the
same `robot.client.RobotClient` any other client uses.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot.types import CameraCalib

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINT = REPO_ROOT / "assets" / "checkpoints" / "wallwm-tiny-event"
MAX_PLAN_EVENTS = 32  # a plan is a short list of next events, not a script
MAX_INSTRUCTION_CHARS = 500  # the tiny text encoder reads ~60 tokens; longer text is a mistake


class BackendError(RuntimeError):
    """A request the backend cannot serve; the message is written for the person at the page."""


@dataclass(frozen=True)
class CheckpointChoice:
    """Which checkpoint the studio loads, and why (shown on the page)."""

    path: Path | None
    reason: str


def resolve_checkpoint(
    given: str | Path | None = None, runs: str | Path = "runs"
) -> CheckpointChoice:
    """--checkpoint if given; else the shipped one; else the newest `checkpoint/` under runs/."""
    if given:
        return CheckpointChoice(Path(given), "given with --checkpoint")
    if (SHIPPED_CHECKPOINT / "config.json").is_file():
        return CheckpointChoice(SHIPPED_CHECKPOINT, "shipped checkpoint")
    runs = Path(runs)
    found = [p.parent for p in runs.glob("**/checkpoint/config.json")] if runs.is_dir() else []
    if found:
        newest = max(found, key=lambda p: p.stat().st_mtime)
        return CheckpointChoice(newest, f"no shipped checkpoint; newest trained one under {runs}/")
    return CheckpointChoice(
        None,
        f"no checkpoint: none shipped at {SHIPPED_CHECKPOINT} and none under {runs}/. Train one "
        "(README: wallwm train) or pass --checkpoint PATH",
    )


def check_plan(plan: Sequence[str], event_index: int) -> str:
    """The instruction of event `event_index`, or a BackendError saying what is wrong."""
    if len(plan) == 0:
        raise BackendError("the plan is empty: add at least one event (e.g. 'grasp the red block')")
    if len(plan) > MAX_PLAN_EVENTS:
        raise BackendError(
            f"the plan has {len(plan)} events; at most {MAX_PLAN_EVENTS}: split the task"
        )
    if not 0 <= event_index < len(plan):
        raise BackendError(
            f"event {event_index + 1} does not exist: the plan has {len(plan)} events"
        )
    text = str(plan[event_index]).strip()
    if not text:
        raise BackendError(f"event {event_index + 1} is empty: describe the next event in words")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise BackendError(
            f"event {event_index + 1} is {len(text)} characters; at most {MAX_INSTRUCTION_CHARS}: "
            "one event is one short sentence"
        )
    return text


class LatentPreview:
    """Linear latent -> RGB map, fitted to the VAE decoder: (C + 1) -> 8x8x3 per latent pixel."""

    def __init__(self, weight: np.ndarray, scale: int) -> None:
        self.weight = weight  # (C + 1, scale * scale * 3)
        self.scale = scale

    @classmethod
    def fit(cls, model: Any, frames: int = 5, seed: int = 0) -> LatentPreview:
        """Decode random standardised latents (the distribution the denoiser ends in) and fit."""
        import torch

        from backend.model.vae import video_to_frames

        cfg = model.config
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(
            2, cfg.vae.z_dim, frames, cfg.latent_size, cfg.latent_size, generator=gen
        )  # (B, C, F, h, w)
        with torch.no_grad():
            rgb = (
                video_to_frames(model.vae.decode(z.to(model.device))).cpu().numpy()
            )  # (B, T, H, W, 3)
        scale = rgb.shape[2] // cfg.latent_size
        target = _latent_frame_means(rgb)  # (B, F, H, W, 3)
        x = _features(z.numpy())  # (N, C + 1)
        y = _patches(target, scale)  # (N, scale * scale * 3)
        ridge = 1e-3 * np.eye(x.shape[1])
        weight = np.linalg.solve(x.T @ x + ridge, x.T @ y)
        return cls(weight.astype(np.float32), scale)

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        """Latents (V, C, F, h, w) -> uint8 (V, F, h * s, w * s, 3)."""
        v, _, f, h, w = latents.shape
        y = _features(latents) @ self.weight  # (V * F * h * w, s * s * 3)
        s = self.scale
        img = (
            y.reshape(v, f, h, w, s, s, 3)
            .transpose(0, 1, 2, 4, 3, 5, 6)
            .reshape(v, f, h * s, w * s, 3)
        )
        return np.clip(img, 0, 255).astype(np.uint8)


def _latent_frame_means(rgb: np.ndarray) -> np.ndarray:
    """(B, T, H, W, 3) with T = 1 + 4(F-1) -> (B, F, H, W, 3): frame 0, then each group of four."""
    first = rgb[:, :1].astype(np.float32)
    rest = rgb[:, 1:].astype(np.float32)
    b, t, h, w, c = rest.shape
    groups = rest.reshape(b, t // 4, 4, h, w, c).mean(axis=2)
    return np.concatenate([first, groups], axis=1)


def _features(z: np.ndarray) -> np.ndarray:
    """(B, C, F, h, w) -> (B * F * h * w, C + 1) with a bias column."""
    c = z.shape[1]
    flat = np.moveaxis(np.asarray(z, dtype=np.float32), 1, -1).reshape(-1, c)
    return np.concatenate([flat, np.ones((len(flat), 1), np.float32)], axis=1)


def _patches(rgb: np.ndarray, s: int) -> np.ndarray:
    """(B, F, H, W, 3) -> (B * F * (H/s) * (W/s), s * s * 3), in the order `_features` uses."""
    b, f, hh, ww, _ = rgb.shape
    h, w = hh // s, ww // s
    return (
        rgb.reshape(b, f, h, s, w, s, 3)
        .transpose(0, 1, 2, 4, 3, 5, 6)
        .reshape(b * f * h * w, s * s * 3)
    )


@dataclass
class _Job:
    """One queued model request; its results go to `out` (None marks the end)."""

    fn: Callable[[_Job], Iterator[dict]]
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)


def _release_freed_memory() -> None:
    """Hand the heap memory a request freed back to the OS (glibc's `malloc_trim`).

    Requests of different shapes (event lengths, views) leave the allocator's arenas holding
    freed blocks, and the process's resident set creeps up from one imagination to the next
    though nothing is kept. A no-op where there is no glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


class Backend:
    """One world action model behind a worker thread, and the robot link for observations."""

    def __init__(
        self, checkpoint: CheckpointChoice, robot: Any | None = None, threads: int = 1
    ) -> None:
        self.checkpoint = checkpoint
        self.robot = robot  # robot.client.RobotClient, connected (or None: dataset sources only)
        self.threads = threads
        self.model: Any | None = None
        self.preview: LatentPreview | None = None
        self.model_error: str | None = None
        self.caption_track = "subtask"  # the caption track the checkpoint's events were trained on
        self.last_timings: dict[str, float] = {}
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._ready = threading.Event()
        self._worker = threading.Thread(target=self._run, name="backend-model", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------ lifecycle

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded (or failed to load)."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(10)

    def _load(self) -> None:
        import torch

        from backend.model.checkpoint import read_config
        from backend.model.wam import WorldActionModel

        torch.set_num_threads(self.threads)
        path = self.checkpoint.path
        if path is None:
            self.model_error = self.checkpoint.reason
            return
        try:
            model = WorldActionModel.from_checkpoint(path)
            preview = LatentPreview.fit(model)
            train = read_config(path).get("train") or {}
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            self.model_error = f"cannot load checkpoint {path}: {e}"
            return
        self.model, self.preview = model, preview
        self.caption_track = str(train.get("caption_track") or "subtask")

    def _run(self) -> None:
        try:
            self._load()
        finally:
            self._ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                for item in job.fn(job):
                    job.out.put(item)
                    if job.cancelled.is_set():
                        break
            except BackendError as e:
                job.out.put({"type": "error", "message": str(e)})
            except (
                ValueError,
                RuntimeError,
            ) as e:  # the model refused the input: say so, keep serving
                job.out.put({"type": "error", "message": f"{type(e).__name__}: {e}"})
            finally:
                job.out.put(None)
                _release_freed_memory()

    def _submit(self, fn: Callable[[_Job], Iterator[dict]]) -> Iterator[dict]:
        """Queue a request and stream its results; closing the stream cancels it."""
        job = _Job(fn)
        self._jobs.put(job)
        try:
            while (item := job.out.get()) is not None:
                if item.get("type") == "error":
                    raise BackendError(item["message"])
                yield item
        finally:
            job.cancelled.set()

    def _require_model(self) -> Any:
        if not self._ready.is_set():
            raise BackendError("the model is still loading; try again in a few seconds")
        if self.model is None:
            raise BackendError(self.model_error or "no model loaded")
        return self.model

    # ------------------------------------------------------------ the interface

    def info(self) -> dict[str, Any]:
        """What the page shows about the model and the robot."""
        m = self.model
        return {
            "checkpoint": str(self.checkpoint.path) if self.checkpoint.path else None,
            "checkpoint_reason": self.checkpoint.reason,
            "loaded": m is not None,
            "loading": not self._ready.is_set(),
            "error": self.model_error,
            "preset": m.config.name if m is not None else None,
            "recipe": m.recipe if m is not None else None,
            "cameras": list(m.cameras) if m is not None else [],
            "sampling_steps": m.config.sampling_steps if m is not None else None,
            "h_max": m.config.h_max if m is not None else None,
            "caption_track": self.caption_track,
            "robot": (self.robot.info or {}).get("robot") if self.robot is not None else None,
            "last_timings": dict(self.last_timings),
        }

    def observe(self) -> tuple[Any, dict[str, Any]]:
        """The robot's current observation (with its calibration) and the raw reply."""
        from backend.model.wam import Observation
        from robot.client import LinkError, RejectedError

        if self.robot is None:
            raise BackendError(
                "no robot connected: pick a dataset source, or start the studio with --sim"
            )
        try:
            info = self.robot.info or self.robot.hello()
            reply = self.robot.get_observation()
        except (LinkError, RejectedError) as e:
            raise BackendError(f"robot not reachable at {self.robot.cmd_endpoint}: {e}") from None
        cams = {n: CameraCalib.from_dict(n, d) for n, d in info.get("cameras", {}).items()}
        obs = Observation(reply["images"], np.asarray(reply["state"], np.float32), cams)
        return obs, reply

    def propose_plan(self, obs: Any, task: str) -> list[str]:
        """Unified mode's VLM reads the observation and the task and proposes the next event.

        The VLM proposes one event at a time (it sees only the present); the studio inserts
        it at the active position of the plan, where the user can edit it.
        """
        task = str(task or "").strip()
        if not task:
            raise BackendError(
                "the task is empty: pick a task or type one, then ask for a proposal"
            )
        if len(task) > MAX_INSTRUCTION_CHARS:
            raise BackendError(
                f"the task is {len(task)} characters; at most {MAX_INSTRUCTION_CHARS}"
            )

        def work(job: _Job) -> Iterator[dict]:
            model = self._require_model()
            t0 = time.perf_counter()
            text = model.propose_event(obs, task)
            yield {
                "type": "proposal",
                "events": [text.strip() or "(the VLM proposed no text)"],
                "vlm_s": time.perf_counter() - t0,
            }

        for item in self._submit(work):
            return item["events"]
        raise BackendError("the VLM returned nothing")

    def imagine(
        self,
        obs: Any,
        plan: Sequence[str],
        event_index: int = 0,
        mode: str = "event",
        seed: int = 0,
        steps: int | None = None,
    ) -> Iterator[dict]:
        """Imagine event `event_index` of `plan`: previews while denoising, then the final result.

        Yields {"type": "preview", "event_index", "step", "steps", "actions" (H, 7), "validity"
        (H,), "video" {cam: uint8 (length + 1, H, W, 3)} (frame 0 observed, then the projected
        estimate per control step), "elapsed_s"}, then {"type": "final", "event_index", "result": Imagination, "timings",
        "elapsed_s"} where timings hold the model's own stage times and `queue_s`.
        In unified mode the plan's event is read as the task (the VLM picks the next event).
        """
        text = check_plan(plan, event_index)
        if mode not in ("event", "unified"):
            raise BackendError(f"mode must be 'event' or 'unified', got {mode!r}")
        if steps is not None and not 1 <= int(steps) <= 100:
            raise BackendError(f"denoising steps must be in [1, 100], got {steps}")

        def work(job: _Job) -> Iterator[dict]:
            model = self._require_model()
            started = time.perf_counter()
            queue_s = started - job.queued_at
            names = list(model.cameras) or list(obs.images)
            stream = model.imagine_stream(obs, text, mode=mode, steps=steps, seed=int(seed))
            try:
                for msg in stream:
                    elapsed = time.perf_counter() - job.queued_at
                    if msg["type"] == "preview":
                        yield {
                            "type": "preview",
                            "event_index": event_index,
                            "step": msg["step"],
                            "steps": msg["steps"],
                            "actions": msg["actions"],
                            "validity": msg["validity"],
                            "video": self._preview_video(msg, obs, names),
                            "elapsed_s": elapsed,
                        }
                        if job.cancelled.is_set():
                            return
                    else:
                        result = msg["result"]
                        timings = {**result.timings, "queue_s": queue_s}
                        self.last_timings = timings
                        yield {
                            "type": "final",
                            "event_index": event_index,
                            "result": result,
                            "timings": timings,
                            "elapsed_s": elapsed,
                        }
            finally:
                stream.close()

        return self._submit(work)

    def _preview_video(self, msg: dict, obs: Any, names: list[str]) -> dict[str, np.ndarray]:
        """Cheap per-view preview, frames 0..length like the final video: the observation, then
        the projected clean-latent estimate (latent frame f stands for control steps 4f-3..4f)."""
        from backend.model.wam import chunk_length

        z = msg["latents"][0, :, :, 1:].float().cpu().numpy()  # (V, C, F - 1, h, w)
        future = self.preview(z)  # (V, F - 1, H, W, 3)
        length = min(chunk_length(msg["validity"]), 4 * future.shape[1])
        latent_of_step = (np.arange(1, length + 1) - 1) // 4  # step t -> its latent frame - 1
        out = {}
        for i, name in enumerate(names):
            first = np.asarray(obs.images[name])
            if first.shape[:2] != future.shape[2:4]:
                first = _resize_nearest(first, future.shape[2:4])
            out[name] = np.concatenate(
                [first[None], future[i][latent_of_step]], axis=0
            )  # (length + 1, H, W, 3)
        return out

    def cone_overlap(self, cameras: dict[str, CameraCalib]) -> dict[str, Any]:
        """The model's sight-cone mask for these cameras: patch-level mask and view overlap."""
        from backend.model.presets import get_preset
        from backend.model.sight_cone import sight_cone_mask, view_overlap

        if not cameras:
            raise BackendError("no camera calibration: observe the robot or a dataset first")
        cfg = self.model.config if self.model is not None else get_preset("tiny")
        grid = (
            cfg.latent_size // cfg.denoiser.patch_size[1],
            cfg.latent_size // cfg.denoiser.patch_size[2],
        )
        cams = list(cameras.values())
        mask = sight_cone_mask(
            cams, grid, cfg.cone_d_min, cfg.cone_d_max, cfg.workspace_min, cfg.workspace_max
        )
        return {
            "names": list(cameras),
            "grid": grid,
            "patch_mask": mask,
            "overlap": view_overlap(mask, len(cams)),
            "sight_cone": bool(cfg.sight_cone),
        }


def _resize_nearest(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    ys = (np.arange(h) * img.shape[0] / h).astype(int)
    xs = (np.arange(w) * img.shape[1] / w).astype(int)
    return img[ys][:, xs]
