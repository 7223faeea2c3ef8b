"""A persistent cache of frozen-VAE latents, so that training never encodes a frame twice.

The denoiser trains on latents of a frozen autoencoder; encoding is the most expensive part
of a training step on a CPU, and a run visits every sample many times. The store keeps two
kinds of latents, standardised and in float16, on disk under one directory per (dataset,
autoencoder) pair:

    obs/<episode>.npy            (T, V, C, h, w)     every frame of an episode encoded alone
    clip/<episode>_<start>_<H>.npy  (V, C, F, h, w)  a sample's whole clip of H + 1 frames
    still/<episode>_<start>_<H>.npy (V, C, F, h, w)  its observation held still for H + 1 frames
    pixels/<episode>.npy         (T, V, H, W, 3)     uint8 frames, for models with keypoints

(`still` is what the autoencoder makes of no motion at all: the zero of a video tower that
predicts the change from it, `ModelConfig.video_residual`. `pixels` holds the decoded frames themselves, for a model whose action tower also looks at the
observation in pixels, `DenoiserConfig.keypoints`; they are read memory-mapped.)

The autoencoder is causal and encodes the first frame of any clip alone, so `obs` row t is
exactly latent frame 0 of a clip that starts at t: the action-only training steps (and the
closed-loop policy) need nothing else. Clips are encoded when a joint step first asks for
them. Files are written atomically, so parallel ranks and interrupted runs never leave a
half-written entry. Values are rounded to float16 before first use, so a run gives the same
numbers whether it encoded a latent or read it back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

MANIFEST = "manifest.json"


def vae_fingerprint(model) -> str:
    """A hash of the autoencoder's weights and standardisation (what the latents depend on)."""
    h = hashlib.sha256()
    for name, t in sorted(model.vae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(model.config.image_size).encode())
    return h.hexdigest()[:16]


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


class LatentStore:
    """Latents of one dataset under one autoencoder, on disk and in memory."""

    def __init__(
        self, root: str | Path, model, dataset_id: str, cameras: Sequence[str] | None = None
    ) -> None:
        self.model = model
        self.cameras = list(cameras) if cameras is not None else None
        key = hashlib.sha256(
            f"{dataset_id}|{vae_fingerprint(model)}|{self.cameras}".encode()
        ).hexdigest()[:16]
        self.root = Path(root) / key
        (self.root / "obs").mkdir(parents=True, exist_ok=True)
        (self.root / "clip").mkdir(parents=True, exist_ok=True)
        (self.root / "still").mkdir(parents=True, exist_ok=True)
        (self.root / "pixels").mkdir(parents=True, exist_ok=True)
        manifest = self.root / MANIFEST
        if not manifest.exists():
            tmp = manifest.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"dataset": dataset_id, "cameras": self.cameras}) + "\n")
            os.replace(tmp, manifest)
        self._obs: dict[int, np.ndarray] = {}
        self._clips: dict[tuple[str, int, int, int], np.ndarray] = {}

    @torch.no_grad()
    def _encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B, V, T, H, W, 3) -> float16 standardised latents (B, V, C, F, h, w)."""
        z = self.model.encode_video(torch.from_numpy(np.ascontiguousarray(frames)))
        return z.to(torch.float16).cpu().numpy()

    def obs(self, source, episode_index: int, t: int) -> np.ndarray:
        """Latent (V, C, 1, h, w) of frame t of an episode, encoding the episode on first use."""
        if episode_index not in self._obs:
            path = self.root / "obs" / f"{episode_index:06d}.npy"
            if path.exists():
                self._obs[episode_index] = np.load(path)
            else:
                frames = np.array(self._decode(source, episode_index))[
                    :, :, None
                ]  # (T, V, 1, H, W, 3)
                rows = [
                    self._encode(frames[s : s + 32])[:, :, :, 0] for s in range(0, len(frames), 32)
                ]
                array = np.concatenate(rows)  # (T, V, C, h, w)
                _save(path, array)
                self._obs[episode_index] = array
        return self._obs[episode_index][t][:, :, None]

    def _decode(self, source, episode_index: int) -> np.ndarray:
        """An episode's frames (T, V, H, W, 3), decoded once and kept under pixels/."""
        path = self.root / "pixels" / f"{episode_index:06d}.npy"
        if not path.exists():
            ep = source.episode(episode_index)
            cams = self.cameras or list(ep.frames)
            _save(path, np.stack([ep.frames[c] for c in cams], axis=1))
        return np.load(path, mmap_mode="r")  # not kept open: a run reads thousands of episodes

    def frames(self, source, episode_index: int, t: int) -> np.ndarray:
        """Frame t of an episode in pixels, (V, H, W, 3) uint8, decoding the episode on first use."""
        return np.asarray(self._decode(source, episode_index)[t])

    def clips(self, samples: Sequence[dict], video_of) -> list[np.ndarray]:
        """Latents (V, C, F, h, w) of each sample's clip; `video_of(sample)` gives its frames when missing."""
        return self._clip_latents("clip", samples, video_of)

    def stills(self, samples: Sequence[dict], source) -> list[np.ndarray]:
        """Latents (V, C, F, h, w) of each sample's observation frame held still for the length
        of its clip (H + 1 frames): no motion, as the autoencoder renders it."""

        def held(s: dict) -> np.ndarray:
            frame = self.frames(source, int(s["episode_index"]), int(s["start"]))  # (V, H, W, 3)
            return np.repeat(frame[:, None], len(s["valid"]) + 1, axis=1)

        return self._clip_latents("still", samples, held)

    def _clip_latents(self, kind: str, samples: Sequence[dict], frames_of) -> list[np.ndarray]:
        keys = [(kind, int(s["episode_index"]), int(s["start"]), len(s["valid"])) for s in samples]
        missing = []
        for k, s in zip(keys, samples):
            if k in self._clips:
                continue
            path = self._clip_path(k)
            if path.exists():
                self._clips[k] = np.load(path)
            elif k not in {m[0] for m in missing}:
                missing.append((k, s))
        if missing:
            fresh = self._encode(np.stack([frames_of(s) for _, s in missing]))
            for (k, _), z in zip(missing, fresh):
                _save(self._clip_path(k), z)
                self._clips[k] = z
        return [self._clips[k] for k in keys]

    def _clip_path(self, key: tuple[str, int, int, int]) -> Path:
        kind, *rest = key
        return self.root / kind / "{:06d}_{:05d}_{:03d}.npy".format(*rest)

    def fill(
        self,
        samples,
        source,
        progress=None,
        clips: bool = True,
        pixels: bool = False,
        stills: bool = False,
        clip_samples: Sequence[int] | None = None,
    ) -> None:
        """Encode everything a run on `samples` can ask for: every frame of their episodes,
        (`pixels`) those frames decoded, and (`clips`) the clip of every sample (at its first
        step; only of `clip_samples` if given) and (`stills`) its still clip, in batches;
        `progress(n)` after each. A run with only action-only steps reads observation frames
        and never a clip."""
        for i in sorted({r.episode_index for r in samples.refs}):
            self.obs(source, i, 0)
            if pixels:
                self.frames(source, i, 0)
            if progress is not None:
                progress(1)
        if not clips:
            return
        picks = list(range(len(samples)) if clip_samples is None else clip_samples)
        for start in range(0, len(picks), 16):
            rows = [samples.sample(i, video=False) for i in picks[start : start + 16]]
            self.clips(rows, samples.video)
            if stills:
                self.stills(rows, source)
            if progress is not None:
                progress(len(rows))
