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

Fixed windows (H = 16): every `stride` steps, caption = the task instruction only.
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


def _as_source(source):
    return EpisodeList(source) if isinstance(source, Sequence) else source


def cut(
    episode: Episode, start: int, stop: int, horizon: int, cameras: Sequence[str]
) -> dict[str, np.ndarray]:
    """Video, actions and validity of steps [start, stop) padded to `horizon` steps."""
    T = episode.length
    L = stop - start
    if not 0 <= start < stop <= T:
        raise ValueError(f"bad window [{start}, {stop}) for an episode of {T} steps")
    if horizon < L:
        raise ValueError(f"window of {L} steps does not fit horizon {horizon}")
    sizes = {episode.frames[c].shape[1:3] for c in cameras}
    if len(sizes) > 1:
        raise ValueError(f"views {list(cameras)} differ in size {sorted(sizes)}; select cameras of one size")
    k = np.arange(horizon + 1)
    frame_idx = start + k
    video_valid = (k <= L) & (frame_idx < T)
    frame_idx = np.where(video_valid, frame_idx, frame_idx[video_valid][-1])  # repeat the last frame
    step = np.arange(horizon)
    action_idx = start + np.minimum(step, L - 1)  # repeat the last action
    return {
        "video": np.stack([episode.frames[c][frame_idx] for c in cameras]),  # (V, H+1, h, w, 3)
        "video_valid": video_valid,
        "actions": episode.actions[action_idx].astype(np.float32),  # (H, 7)
        "valid": step < L,
        "state": episode.states[start].astype(np.float32),
    }


class _Samples:
    """Shared machinery: a list of `SampleRef`s and how to turn one into a sample."""

    horizon: int
    refs: list[SampleRef]

    def __init__(self, source, cameras: Sequence[str] | None, episodes: Sequence[int] | None) -> None:
        self.source = _as_source(source)
        self.episode_indices = list(range(self.source.num_episodes)) if episodes is None else list(episodes)
        self._cameras = list(cameras) if cameras is not None else None

    def __len__(self) -> int:
        return len(self.refs)

    def cameras_of(self, episode: Episode) -> list[str]:
        names = self._cameras or list(episode.frames)
        missing = [c for c in names if c not in episode.frames]
        if missing:
            raise KeyError(f"cameras {missing} not in the episode (it has {list(episode.frames)})")
        return names

    def _build(self, ref: SampleRef, caption: str, track: str) -> dict:
        ep = self.source.episode(ref.episode_index)
        cams = self.cameras_of(ep)
        sample = cut(ep, ref.start, ref.stop, self.horizon, cams)
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
            tracks, probs = (self.tracks, self.track_probs) if track is None else _track_distribution(track)
            track = tracks[int(np.argmax(probs))]
        return [e.caption(track) for e in self._events]

    def __getitem__(self, i: int) -> dict:
        return self.sample(i)

    def sample(self, i: int, track: str | None = None) -> dict:
        ref = self.refs[i]
        if track is None:
            track = self.tracks[0] if len(self.tracks) == 1 else str(self._rng.choice(self.tracks, p=self.track_probs))
        return self._build(ref, self._events[i].caption(track), track)


class FixedWindowSamples(_Samples):
    """Fixed windows of `horizon` steps every `stride` steps, caption = task instruction only."""

    def __init__(
        self,
        source,
        horizon: int = FIXED_HORIZON,
        stride: int = 1,
        cameras: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(source, cameras, episodes)
        if horizon < 1 or stride < 1:
            raise ValueError(f"horizon and stride must be >= 1, got {horizon}, {stride}")
        self.horizon = horizon
        self.refs = []
        for i in self.episode_indices:
            T = self.source.length(i)
            starts_of_events = [e.start for e in self.source.events(i)] if self.source.has_events else []
            for s in range(0, T, stride):
                k = int(np.searchsorted(starts_of_events, s, side="right")) - 1 if starts_of_events else -1
                self.refs.append(SampleRef(i, k, s, min(s + horizon, T)))

    def captions(self, track: str | None = None) -> list[str]:
        return [self.source.task(r.episode_index) for r in self.refs]

    def __getitem__(self, i: int) -> dict:
        ref = self.refs[i]
        return self._build(ref, self.source.task(ref.episode_index), "task")


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
    V = samples[0]["video"].shape[0]
    if all(len(s["cameras"]) == V for s in samples):
        out["K"] = torch.from_numpy(np.stack([[c.K for c in s["cameras"].values()] for s in samples]).astype(np.float32))
        out["T_world_cam"] = torch.from_numpy(
            np.stack([[c.T_world_cam for c in s["cameras"].values()] for s in samples]).astype(np.float32)
        )
    return out
