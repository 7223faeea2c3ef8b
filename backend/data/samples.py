"""Training samples: event-cut (the WALL-WM recipe) and fixed windows (the baseline).

Both kinds share one layout (numpy, no torch), for V cameras and horizon H:

    video        uint8   (V, H+1, h, w, 3)  frames t0 .. t0+H; index 0 is the current observation
    video_valid  bool    (H+1,)             frame belongs to the chunk (t0 .. t0+L, inside the episode)
    actions      float32 (H, 7)             a_t0 .. a_t0+L-1, then the last valid action repeated
    valid        bool    (H,)               True for the chunk's L steps
    state        float32 (7,)               proprio state at t0
    caption      str                        the conditioning text
    caption_track str                       which caption track `caption` came from
    task         str                        the task track (the whole instruction)
    cameras      dict[str, CameraCalib]     calibration of the V views, in video order
    episode_index, event_index, length (L), start (t0)

Padding repeats the last valid frame/action, so a model never sees made-up content.

Event samples (H = H_max, default 32): one per event, cut at the event's boundaries; the
caption is the next-event instruction (subtask track by default, or a track drawn per
sample from given probabilities). An event longer than H_max is cut into consecutive
pieces of at most H_max steps that keep its captions. The video runs one frame past the
chunk (t0+L: the observation after its last action) when the episode has it.

Event suffixes (`EventSamples.suffix`): the same event cut from a later step to its end, so
the mid-event states a closed-loop policy replans from are in the training distribution.

Fixed windows (H = 16): every `stride` steps, caption = the task instruction only (the
`fixed` recipe), or with `caption_track` the next-event caption of the event the window
starts in (what unified mode's VLM learns to propose).

Clips (`ClipSamples`, the VAE stage): `frames` consecutive frames from any step of an
episode, so the autoencoder's temporal compression sees whole clips, not short events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from robot.types import CAPTION_TRACKS, Episode, Event

H_MAX = 32
FIXED_HORIZON = 16


@dataclass(frozen=True)
class SampleRef:
    """Where a sample comes from: steps [start, stop) of an episode."""

    episode_index: int
    event_index: int  # -1 when the window is not tied to an event
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


class EpisodeList:
    """In-memory episodes behind the same small interface as `EventDataset`."""

    def __init__(self, episodes: Sequence[Episode]) -> None:
        self._episodes = list(episodes)
        self.has_events = bool(self._episodes) and all(ep.events for ep in self._episodes)

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def episode(self, i: int) -> Episode:
        return self._episodes[i]

    def events(self, i: int) -> list[Event]:
        return self._episodes[i].events

    def length(self, i: int) -> int:
        return self._episodes[i].length

    def task(self, i: int) -> str:
        return self._episodes[i].instruction


class _LazyFrames(Mapping):
    """cam -> (T, H, W, 3) frames of one dataset episode, decoded on access, never kept."""

    def __init__(self, dataset, index: int) -> None:
        self._dataset, self._index = dataset, index

    def __getitem__(self, camera: str) -> np.ndarray:
        return self._dataset.frames(self._index, camera)

    def __contains__(self, camera: object) -> bool:  # Mapping's default would decode the video
        return camera in self._dataset.camera_names

    def __iter__(self):
        return iter(self._dataset.camera_names)

    def __len__(self) -> int:
        return len(self._dataset.camera_names)


def frameless(dataset) -> EpisodeList:
    """Every episode of a dataset in memory without its frames (decoded only when a sample asks).

    A trainer that reads cached latents touches states, actions and captions at every step and
    frames almost never; this keeps the former in memory for hundreds of episodes.
    """
    episodes = []
    for i in range(dataset.num_episodes):
        episodes.append(
            Episode(
                task=dataset.task(i),
                family="",
                seed=-1,
                fps=dataset.fps,
                frames=_LazyFrames(dataset, i),
                states=dataset.states(i),
                actions=dataset.actions(i),
                events=dataset.events(i),
                cameras=dataset.cameras(i),
                instruction=dataset.task(i),
            )
        )
    return EpisodeList(episodes)


def _as_source(source):
    return EpisodeList(source) if isinstance(source, Sequence) else source


def cut(
    episode: Episode,
    start: int,
    stop: int,
    horizon: int,
    cameras: Sequence[str],
    video: bool = True,
) -> dict[str, np.ndarray]:
    """Video, actions and validity of steps [start, stop) padded to `horizon` steps.

    `video=False` leaves the frames out (a trainer that reads cached latents needs none).
    """
    T = episode.length
    L = stop - start
    if not 0 <= start < stop <= T:
        raise ValueError(f"bad window [{start}, {stop}) for an episode of {T} steps")
    if horizon < L:
        raise ValueError(f"window of {L} steps does not fit horizon {horizon}")
    k = np.arange(horizon + 1)
    frame_idx = start + k
    video_valid = (k <= L) & (frame_idx < T)
    step = np.arange(horizon)
    action_idx = start + np.minimum(step, L - 1)  # repeat the last action
    out = {
        "video_valid": video_valid,
        "actions": episode.actions[action_idx].astype(np.float32),  # (H, 7)
        "valid": step < L,
        "state": episode.states[start].astype(np.float32),
    }
    if video:
        frame_idx = np.where(
            video_valid, frame_idx, frame_idx[video_valid][-1]
        )  # repeat the last frame
        views = [episode.frames[c][frame_idx] for c in cameras]
        sizes = {v.shape[1:3] for v in views}
        if len(sizes) > 1:
            raise ValueError(
                f"views {list(cameras)} differ in size {sorted(sizes)}; select cameras of one size"
            )
        out["video"] = np.stack(views)  # (V, H+1, h, w, 3)
    return out


class _Samples:
    """Shared machinery: a list of `SampleRef`s and how to turn one into a sample."""

    horizon: int
    refs: list[SampleRef]

    def __init__(
        self, source, cameras: Sequence[str] | None, episodes: Sequence[int] | None
    ) -> None:
        self.source = _as_source(source)
        self.episode_indices = (
            list(range(self.source.num_episodes)) if episodes is None else list(episodes)
        )
        self._cameras = list(cameras) if cameras is not None else None

    def __len__(self) -> int:
        return len(self.refs)

    def cameras_of(self, episode: Episode) -> list[str]:
        names = self._cameras or list(episode.frames)
        missing = [c for c in names if c not in episode.frames]
        if missing:
            raise KeyError(f"cameras {missing} not in the episode (it has {list(episode.frames)})")
        return names

    def video(self, sample: dict) -> np.ndarray:
        """The frames (V, H+1, h, w, 3) of a sample built without them."""
        ep = self.source.episode(int(sample["episode_index"]))
        start = int(sample["start"])
        return cut(ep, start, start + int(sample["length"]), self.horizon, self.cameras_of(ep))[
            "video"
        ]

    def _build(self, ref: SampleRef, caption: str, track: str, video: bool = True) -> dict:
        ep = self.source.episode(ref.episode_index)
        cams = self.cameras_of(ep)
        sample = cut(ep, ref.start, ref.stop, self.horizon, cams, video)
        sample |= {
            "caption": caption,
            "caption_track": track,
            "task": ep.events[max(ref.event_index, 0)].task if ep.events else ep.instruction,
            "cameras": {c: ep.cameras[c] for c in cams if c in ep.cameras},
            "episode_index": ref.episode_index,
            "event_index": ref.event_index,
            "length": ref.length,
            "start": ref.start,
        }
        return sample


class EventSamples(_Samples):
    """One sample per event (pieces of at most `h_max` steps), caption = next-event instruction.

    `caption_track` is a track name, or {track: probability} to draw a track per sample
    (from a generator seeded with `seed`).
    """

    def __init__(
        self,
        source,
        h_max: int = H_MAX,
        caption_track: str | Mapping[str, float] = "subtask",
        cameras: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(source, cameras, episodes)
        if h_max < 1:
            raise ValueError(f"h_max must be >= 1, got {h_max}")
        if not self.source.has_events:
            root = getattr(self.source, "root", "these episodes")
            raise ValueError(
                f"{root} has no events (no `subtask` rows in language_persistent, as in datasets "
                "LeRobot writes): event samples cannot be cut; use FixedWindowSamples (recipe 'fixed')"
            )
        self.horizon = h_max
        self.tracks, self.track_probs = _track_distribution(caption_track)
        self._rng = np.random.default_rng(seed)
        self.refs = []
        self._events: list[Event] = []
        for i in self.episode_indices:
            for k, e in enumerate(self.source.events(i)):
                for s in range(e.start, e.end, h_max):
                    self.refs.append(SampleRef(i, k, s, min(s + h_max, e.end)))
                    self._events.append(e)

    def captions(self, track: str | Mapping[str, float] | None = None) -> list[str]:
        """The caption of every sample on one track (default, or given a track mix: its most likely track)."""
        if track is None or isinstance(track, Mapping):
            tracks, probs = (
                (self.tracks, self.track_probs) if track is None else _track_distribution(track)
            )
            track = tracks[int(np.argmax(probs))]
        return [e.caption(track) for e in self._events]

    def __getitem__(self, i: int) -> dict:
        return self.sample(i)

    def sample(
        self, i: int, track: str | None = None, start: int | None = None, video: bool = True
    ) -> dict:
        """Sample i; `start` cuts the event piece from that step on (a suffix); `video=False`: no frames."""
        ref = self.refs[i]
        if start is not None:
            if not ref.start <= start < ref.stop:
                raise ValueError(
                    f"start {start} outside sample {i}'s steps [{ref.start}, {ref.stop})"
                )
            ref = SampleRef(ref.episode_index, ref.event_index, start, ref.stop)
        if track is None:
            track = (
                self.tracks[0]
                if len(self.tracks) == 1
                else str(self._rng.choice(self.tracks, p=self.track_probs))
            )
        return self._build(ref, self._events[i].caption(track), track, video)

    def suffix(
        self, i: int, rng: np.random.Generator, track: str | None = None, video: bool = True
    ) -> dict:
        """Sample i cut from a uniformly drawn step of its piece to the piece's end."""
        ref = self.refs[i]
        return self.sample(i, track, start=int(rng.integers(ref.start, ref.stop)), video=video)


class FixedWindowSamples(_Samples):
    """Fixed windows of `horizon` steps every `stride` steps.

    Caption: the task instruction (`caption_track=None`, the `fixed` recipe), or the caption on
    `caption_track` of the event the window starts in (unified mode's next-event target).
    """

    def __init__(
        self,
        source,
        horizon: int = FIXED_HORIZON,
        stride: int = 1,
        cameras: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        caption_track: str | None = None,
    ) -> None:
        super().__init__(source, cameras, episodes)
        if horizon < 1 or stride < 1:
            raise ValueError(f"horizon and stride must be >= 1, got {horizon}, {stride}")
        if caption_track is not None:
            if caption_track not in CAPTION_TRACKS:
                raise ValueError(
                    f"unknown caption track {caption_track!r}; tracks are {CAPTION_TRACKS}"
                )
            if not self.source.has_events:
                raise ValueError("next-event captions need events; this dataset has none")
        self.caption_track = caption_track
        self.horizon = horizon
        self.refs = []
        for i in self.episode_indices:
            T = self.source.length(i)
            starts_of_events = (
                [e.start for e in self.source.events(i)] if self.source.has_events else []
            )
            for s in range(0, T, stride):
                k = (
                    int(np.searchsorted(starts_of_events, s, side="right")) - 1
                    if starts_of_events
                    else -1
                )
                self.refs.append(SampleRef(i, k, s, min(s + horizon, T)))

    def captions(self, track: str | None = None) -> list[str]:
        return [self._caption(r)[0] for r in self.refs]

    def _caption(self, ref: SampleRef) -> tuple[str, str]:
        if self.caption_track is None:
            return self.source.task(ref.episode_index), "task"
        event = self.source.events(ref.episode_index)[ref.event_index]
        return event.caption(self.caption_track), self.caption_track

    def __getitem__(self, i: int) -> dict:
        return self.sample(i)

    def sample(self, i: int, video: bool = True) -> dict:
        ref = self.refs[i]
        return self._build(ref, *self._caption(ref), video=video)


class ClipSamples(_Samples):
    """Clips of `frames` consecutive frames starting at any step (the VAE stage's samples).

    A sample carries only `video` (V, frames, h, w, 3) uint8 and its provenance: the
    autoencoder needs no actions or captions, and every clip is whole (no padding).
    """

    def __init__(
        self,
        source,
        frames: int,
        cameras: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(source, cameras, episodes)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames = frames
        self.refs = [
            SampleRef(i, -1, s, s + frames)
            for i in self.episode_indices
            for s in range(self.source.length(i) - frames + 1)
        ]
        if not self.refs:
            raise ValueError(f"no episode has {frames} frames for a clip")

    def __getitem__(self, i: int) -> dict:
        ref = self.refs[i]
        ep = self.source.episode(ref.episode_index)
        video = np.stack([ep.frames[c][ref.start : ref.stop] for c in self.cameras_of(ep)])
        return {"video": video, "episode_index": ref.episode_index, "start": ref.start}


def _track_distribution(caption_track: str | Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    spec = {caption_track: 1.0} if isinstance(caption_track, str) else dict(caption_track)
    unknown = [t for t in spec if t not in CAPTION_TRACKS]
    if unknown:
        raise ValueError(f"unknown caption tracks {unknown}; tracks are {CAPTION_TRACKS}")
    p = np.array(list(spec.values()), dtype=np.float64)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"track probabilities must be >= 0 with a positive sum, got {spec}")
    return list(spec), p / p.sum()


def collate(samples: Sequence[dict]) -> dict:
    """Stack samples into torch tensors (strings and calibrations stay lists).

    Adds `K` (B, V, 3, 3) and `T_world_cam` (B, V, 4, 4) float32 when every sample has a
    calibration for every view.
    """
    import torch

    if not samples:
        raise ValueError("collate needs at least one sample")
    out: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        elif isinstance(values[0], (bool, int, float, np.integer, np.floating)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    if "cameras" not in samples[0]:
        return out
    V = samples[0]["video"].shape[0] if "video" in samples[0] else len(samples[0]["cameras"])
    if all(len(s["cameras"]) == V for s in samples):
        out["K"] = torch.from_numpy(
            np.stack([[c.K for c in s["cameras"].values()] for s in samples]).astype(np.float32)
        )
        out["T_world_cam"] = torch.from_numpy(
            np.stack([[c.T_world_cam for c in s["cameras"].values()] for s in samples]).astype(
                np.float32
            )
        )
    return out
