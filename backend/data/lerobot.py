"""LeRobotDataset v3.0 writer and reader, with events, plans and camera calibration.

Layout (as LeRobot v3.0 writes it; one chunk/file each until files grow past LeRobot's size
limits, which our datasets do not reach):

    meta/info.json                               schema, fps, path templates, splits
    meta/tasks.parquet                           task (index) -> task_index
    meta/stats.json                              per-feature min/max/mean/std/count
    meta/episodes/chunk-000/file-000.parquet     one row per episode: length, offsets into
                                                 data and videos, per-episode stats, and ours:
                                                 calibration/<video_key> (JSON), task_name,
                                                 family, seed, split, variation (JSON),
                                                 events/boundary
    data/chunk-000/file-000.parquet              one row per control step
    videos/observation.images.<cam>/chunk-000/file-000.mp4

Per-step columns: observation.state, action (float32[7]), task_progress (int64, -1 when
unknown), intervention (bool), timestamp, frame_index, episode_index, index, task_index,
language_persistent, language_events (see backend/data/language.py).

`EventDataset` also opens v3.0 datasets written by LeRobot itself: it reads what they have
(any state/action width, video or image cameras, tasks, stats) and reports `has_events`
False when there are no subtask rows, in which case only fixed windows can be sampled.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backend.data import language
from backend.data.video import VideoWriter, decode_frames, video_info
from robot.types import ACTION_NAMES, STATE_NAMES, CameraCalib, Episode, Event

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
PROGRESS_KEY = "task_progress"
INTERVENTION_KEY = "intervention"

DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# Numeric per-step features whose statistics go to stats.json (images are added per camera).
_STATS_FEATURES = (
    STATE_KEY,
    ACTION_KEY,
    PROGRESS_KEY,
    "timestamp",
    "frame_index",
    "episode_index",
    "index",
    "task_index",
)


def video_key(camera: str) -> str:
    return IMAGE_PREFIX + camera


def camera_name(key: str) -> str:
    """`observation.images.front` -> `front`; LeRobot's single-camera `observation.image` -> `image`."""
    return key[len(IMAGE_PREFIX) :] if key.startswith(IMAGE_PREFIX) else key.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# statistics (LeRobot's layout: per feature min/max/mean/std with the feature's shape, count (1,))


def _array_stats(
    x: np.ndarray, axis: tuple[int, ...], keepdims: bool = False
) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    return {
        "min": x.min(axis=axis, keepdims=keepdims),
        "max": x.max(axis=axis, keepdims=keepdims),
        "mean": x.mean(axis=axis, keepdims=keepdims),
        "std": x.std(axis=axis, keepdims=keepdims),
        "count": np.array([x.shape[0]]),
    }


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of (T, H, W, 3) uint8 frames in [0, 1], shaped (3, 1, 1) as LeRobot does.

    Computed exactly from 256-bin histograms: much faster than float reductions over pixels.
    """
    pixels = frames.reshape(-1, 3)
    levels = np.arange(256) / 255.0
    hist = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)]).astype(
        np.float64
    )  # (3, 256)
    n = hist.sum(1)
    mean = hist @ levels / n
    var = (hist * (levels[None] - mean[:, None]) ** 2).sum(1) / n
    nonzero = hist > 0
    lo = levels[nonzero.argmax(1)]
    hi = levels[255 - nonzero[:, ::-1].argmax(1)]
    shape = (3, 1, 1)
    return {
        "min": lo.reshape(shape),
        "max": hi.reshape(shape),
        "mean": mean.reshape(shape),
        "std": np.sqrt(var).reshape(shape),
        "count": np.array([len(frames)]),
    }


def aggregate_stats(
    stats: Sequence[dict[str, dict[str, np.ndarray]]],
) -> dict[str, dict[str, np.ndarray]]:
    """Merge per-episode stats: count-weighted mean, pooled variance (within + between)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in {k for s in stats for k in s}:
        parts = [s[key] for s in stats if key in s]
        counts = np.array([float(p["count"][0]) for p in parts])
        w = (counts / counts.sum()).reshape((-1,) + (1,) * np.ndim(parts[0]["mean"]))
        means = np.stack([p["mean"] for p in parts])
        mean = (w * means).sum(0)
        var = (w * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0)
        out[key] = {
            "min": np.min(np.stack([p["min"] for p in parts]), axis=0),
            "max": np.max(np.stack([p["max"] for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([int(counts.sum())]),
        }
    return out


def _to_lists(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


# ---------------------------------------------------------------------------------------------
# writer


def _data_schema(state_dim: int, action_dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field(STATE_KEY, pa.list_(pa.float32(), state_dim)),
            pa.field(ACTION_KEY, pa.list_(pa.float32(), action_dim)),
            pa.field(PROGRESS_KEY, pa.int64()),
            pa.field(INTERVENTION_KEY, pa.bool_()),
            pa.field("timestamp", pa.float32()),
            pa.field("frame_index", pa.int64()),
            pa.field("episode_index", pa.int64()),
            pa.field("index", pa.int64()),
            pa.field("task_index", pa.int64()),
            pa.field(language.LANGUAGE_PERSISTENT, language.PERSISTENT_TYPE),
            pa.field(language.LANGUAGE_EVENTS, language.EVENTS_TYPE),
        ]
    )


class DatasetWriter:
    """Stream episodes into a LeRobot v3.0 dataset; `finalize()` writes the metadata.

    Episodes of one split must be added together (all train, then all test) so that
    `info.json` can describe the splits as LeRobot does, with contiguous "start:end" ranges.
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        robot_type: str = "wallwm_sim_ee",
        crf: int = 18,
        overwrite: bool = False,
        info_extra: dict | None = None,
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{self.root} is not empty; pass overwrite=True to replace it"
                )
            foreign = {p.name for p in self.root.iterdir()} - {"meta", "data", "videos", "images"}
            if foreign:  # only ever delete what looks like a (possibly half-written) dataset
                raise ValueError(
                    f"refusing to overwrite {self.root}: it holds {sorted(foreign)}, not a dataset"
                )
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fps, self.robot_type, self.crf = int(fps), robot_type, int(crf)
        self.info_extra = dict(info_extra or {})
        self._cameras: list[str] | None = None
        self._sizes: dict[str, tuple[int, int]] = {}
        self._videos: dict[str, VideoWriter] = {}
        self._data: pq.ParquetWriter | None = None
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict] = []
        self._stats: list[dict] = []
        self._splits: list[str] = []
        self._num_frames = 0
        self._finalized = False

    def add_episode(
        self,
        episode: Episode,
        split: str = "train",
        interjections: Sequence[language.Interjection] = (),
        plan_updates: Sequence[tuple[int, Sequence[str]]] = (),
        intervention: np.ndarray | None = None,
    ) -> int:
        """Append one episode; returns its episode_index."""
        if self._finalized:
            raise ValueError("the dataset is finalized; open a new writer to add episodes")
        episode.validate()
        if episode.fps != self.fps:
            raise ValueError(f"episode fps {episode.fps} != dataset fps {self.fps}")
        if self._splits and split != self._splits[-1] and split in self._splits:
            raise ValueError(
                f"split {split!r} was already closed; add the episodes of each split together"
            )
        cams = list(episode.frames)
        if self._cameras is None:
            if not cams:
                raise ValueError("an episode needs at least one camera")
            self._open(episode)
        elif cams != self._cameras:
            raise ValueError(f"episode cameras {cams} != dataset cameras {self._cameras}")
        T = episode.length
        index = len(self._episodes)
        flags = (
            np.zeros(T, dtype=bool)
            if intervention is None
            else np.asarray(intervention, dtype=bool)
        )
        if flags.shape != (T,):
            raise ValueError(f"intervention must be ({T},) bool, got {flags.shape}")
        for cam in cams:  # check everything before anything is written
            if episode.frames[cam].shape[1:3] != self._sizes[cam]:
                raise ValueError(
                    f"camera {cam!r}: frames are {episode.frames[cam].shape[1:3]}, dataset has {self._sizes[cam]}"
                )
        said = language.event_rows(T, interjections)
        late = [f for f, _ in plan_updates if not 0 <= f < T]
        if late:
            raise ValueError(f"plan updates at frames {late} are outside the episode [0, {T})")
        task_index = self._tasks.setdefault(episode.instruction, len(self._tasks))
        progress = (
            np.full(T, -1, np.int64)
            if episode.progress is None
            else np.asarray(episode.progress, np.int64)
        )

        # Per-step table: the persistent language list is the same on every frame of an episode.
        persistent = language.persistent_rows(episode.events, self.fps, episode.plan, plan_updates)
        columns = {
            STATE_KEY: episode.states.astype(np.float32),
            ACTION_KEY: episode.actions.astype(np.float32),
            PROGRESS_KEY: progress,
            INTERVENTION_KEY: flags,
            "timestamp": (np.arange(T) / self.fps).astype(np.float32),
            "frame_index": np.arange(T, dtype=np.int64),
            "episode_index": np.full(T, index, np.int64),
            "index": np.arange(self._num_frames, self._num_frames + T, dtype=np.int64),
            "task_index": np.full(T, task_index, np.int64),
        }
        schema = self._data.schema
        arrays = [
            pa.FixedSizeListArray.from_arrays(pa.array(columns[k].reshape(-1)), columns[k].shape[1])
            if k in (STATE_KEY, ACTION_KEY)
            else pa.array(columns[k], type=schema.field(k).type)
            for k in columns
        ]
        arrays.append(language.persistent_array([persistent] * T))
        arrays.append(language.events_array(said))
        self._data.write_table(pa.Table.from_arrays(arrays, schema=schema))

        ep_stats = {
            k: _array_stats(np.asarray(v).reshape(T, -1), axis=(0,)) for k, v in columns.items()
        }
        ep = {
            "episode_index": index,
            "tasks": [episode.instruction],
            "length": T,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": self._num_frames,
            "dataset_to_index": self._num_frames + T,
        }
        for cam in self._cameras:
            frames = episode.frames[cam]
            t0, t1 = self._videos[cam].add_episode(frames)
            key = video_key(cam)
            ep |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": t0,
                f"videos/{key}/to_timestamp": t1,
            }
            ep_stats[key] = image_stats(frames)
            calib = episode.cameras.get(cam)
            ep[f"calibration/{key}"] = json.dumps(calib.to_dict()) if calib is not None else None
        for feature, stats in ep_stats.items():
            for name, value in stats.items():
                ep[f"stats/{feature}/{name}"] = np.asarray(value).tolist()
        ep |= {
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
            "task_name": episode.task,
            "family": episode.family,
            "seed": int(episode.seed),
            "split": split,
            "variation": json.dumps(episode.variation, sort_keys=True, default=_json_default),
            "events/boundary": [e.boundary for e in episode.events],
        }
        self._episodes.append(ep)
        self._stats.append(ep_stats)
        if not self._splits or self._splits[-1] != split:
            self._splits.append(split)
        self._num_frames += T
        return index

    def _open(self, episode: Episode) -> None:
        self._cameras = list(episode.frames)
        for cam in self._cameras:
            _, h, w, _ = episode.frames[cam].shape
            self._sizes[cam] = (h, w)
            path = self.root / VIDEO_PATH.format(
                video_key=video_key(cam), chunk_index=0, file_index=0
            )
            self._videos[cam] = VideoWriter(path, self.fps, w, h, crf=self.crf)
        path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._data = pq.ParquetWriter(
            path, _data_schema(episode.states.shape[1], episode.actions.shape[1])
        )

    def finalize(self) -> Path:
        """Close the files and write meta/ (info, tasks, episodes, stats). Idempotent."""
        if self._finalized:
            return self.root
        if not self._episodes:
            raise ValueError("no episodes were added; nothing to write")
        for w in self._videos.values():
            w.close()
        self._data.close()
        self._finalized = True

        (self.root / "meta").mkdir(exist_ok=True)
        tasks = pd.DataFrame(
            {"task_index": list(self._tasks.values())},
            index=pd.Index(list(self._tasks), name="task"),
        )
        tasks.to_parquet(self.root / TASKS_PATH)
        ep_path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episodes), ep_path)
        stats = aggregate_stats(self._stats)
        (self.root / STATS_PATH).write_text(json.dumps(_to_lists(stats), indent=4))
        (self.root / INFO_PATH).write_text(json.dumps(self._info(), indent=4))
        return self.root

    def _info(self) -> dict:
        splits, start = {}, 0
        for name in self._splits:
            n = sum(1 for e in self._episodes if e["split"] == name)
            splits[name] = f"{start}:{start + n}"
            start += n
        first = self._episodes[0]
        features: dict[str, dict] = {}
        for cam in self._cameras:
            h, w = self._sizes[cam]
            path = self.root / VIDEO_PATH.format(
                video_key=video_key(cam), chunk_index=0, file_index=0
            )
            features[video_key(cam)] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": video_info(path),
            }
        state_dim = len(first[f"stats/{STATE_KEY}/mean"])
        action_dim = len(first[f"stats/{ACTION_KEY}/mean"])
        features[STATE_KEY] = {
            "dtype": "float32",
            "shape": [state_dim],
            "names": list(STATE_NAMES) if state_dim == len(STATE_NAMES) else None,
        }
        features[ACTION_KEY] = {
            "dtype": "float32",
            "shape": [action_dim],
            "names": list(ACTION_NAMES) if action_dim == len(ACTION_NAMES) else None,
        }
        features[PROGRESS_KEY] = {"dtype": "int64", "shape": [1], "names": None}
        features[INTERVENTION_KEY] = {"dtype": "bool", "shape": [1], "names": None}
        features |= DEFAULT_FEATURES
        for key in features:
            if features[key]["dtype"] != "video":
                features[key]["fps"] = self.fps
        features[language.LANGUAGE_PERSISTENT] = {"dtype": "language", "shape": [1], "names": None}
        features[language.LANGUAGE_EVENTS] = {"dtype": "language", "shape": [1], "names": None}
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self._num_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": self.fps,
            "splits": splits,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
            "wallwm": {
                "calibration": "episodes parquet, column calibration/<video_key>: JSON {K, T_world_cam, width, height}",
                "caption_styles": language.TRACK_STYLES,
                **self.info_extra,
            },
        }

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.finalize()
        else:  # leave no half-open files behind; the partial dataset is not readable
            for w in self._videos.values():
                w.close()
            if self._data is not None:
                self._data.close()


def _json_default(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"variation value {value!r} is not JSON-serialisable")


def write_dataset(
    root: str | Path,
    episodes: Iterable[Episode],
    fps: int | None = None,
    splits: Sequence[str] | None = None,
    **kwargs,
) -> Path:
    """Write episodes (all of one fps) to `root` in one go; `splits` labels each episode."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError("write_dataset needs at least one episode")
    labels = list(splits) if splits is not None else ["train"] * len(episodes)
    if len(labels) != len(episodes):
        raise ValueError(f"{len(labels)} split labels for {len(episodes)} episodes")
    with DatasetWriter(root, fps or episodes[0].fps, **kwargs) as writer:
        for ep, split in zip(episodes, labels):
            writer.add_episode(ep, split=split)
    return Path(root)


# ---------------------------------------------------------------------------------------------
# reader


class EventDataset:
    """Read a LeRobot v3.0 dataset: episodes, frames, calibration, events, stats.

    Datasets this project wrote carry events, plans and calibration; datasets LeRobot wrote
    carry what they have (`has_events` False, `cameras(i)` empty) and can be sampled in
    fixed windows only.
    """

    def __init__(self, root: str | Path, cache_episodes: int = 16) -> None:
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.exists():
            raise FileNotFoundError(f"{self.root} is not a LeRobot dataset: {INFO_PATH} is missing")
        self.info: dict = json.loads(info_path.read_text())
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v3."):
            raise ValueError(
                f"{self.root}: codebase_version {version!r} is not v3.x; convert it with LeRobot's "
                "convert_dataset_v21_to_v30 first"
            )
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] == "image"]
        self.camera_keys = self.video_keys + self.image_keys
        self.camera_names = [camera_name(k) for k in self.camera_keys]
        self._tasks = self._load_tasks()
        paths = sorted((self.root / EPISODES_DIR).glob("*/*.parquet"))
        if not paths:
            raise FileNotFoundError(f"{self.root}: no episode table under {EPISODES_DIR}/")
        table = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")
        self._episodes = table.to_pandas().sort_values("episode_index").reset_index(drop=True)
        stats_path = self.root / STATS_PATH
        raw = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        self.stats: dict[str, dict[str, np.ndarray]] = {
            k: {s: np.asarray(v) for s, v in d.items()} for k, d in raw.items()
        }
        self._tables: dict[str, pa.Table] = {}
        self._cache: OrderedDict[int, Episode] = OrderedDict()
        self._cache_size = cache_episodes
        # LeRobot datasets have no subtask rows (or no language columns at all).
        self.has_events = bool(
            language.LANGUAGE_PERSISTENT in self.features and self.num_episodes and self.events(0)
        )

    # -- metadata --------------------------------------------------------------------------

    def _load_tasks(self) -> dict[int, str]:
        path = self.root / TASKS_PATH
        if not path.exists():
            return {}
        df = pd.read_parquet(path)
        # LeRobot keeps the task string as the index: named "task" in 0.6, unnamed in 0.4.
        tasks = df["task"] if "task" in df.columns else df.index
        return {int(i): str(t) for i, t in zip(df["task_index"], tasks)}

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return int(self._episodes["length"].sum())

    def __len__(self) -> int:
        return self.num_episodes

    def _check(self, i: int) -> int:
        if not 0 <= i < self.num_episodes:
            raise IndexError(
                f"episode {i} out of range: the dataset has {self.num_episodes} episodes"
            )
        return int(i)

    def meta(self, i: int) -> dict:
        """The episode's row of the episodes table (without the per-episode stats)."""
        row = self._episodes.iloc[self._check(i)]
        return {k: v for k, v in row.items() if not str(k).startswith("stats/")}

    def length(self, i: int) -> int:
        return int(self._episodes.at[self._check(i), "length"])

    def task(self, i: int) -> str:
        """The episode's natural-language task (LeRobot's `tasks`)."""
        tasks = self._episodes.at[self._check(i), "tasks"] if "tasks" in self._episodes else None
        if tasks is not None and len(tasks):
            return str(tasks[0])
        col = self._column(i, "task_index")
        return self._tasks.get(int(col[0]), "") if col is not None else ""

    def split(self, i: int) -> str:
        """ "train"/"test" from our split column, else from info.json's `splits` ranges."""
        self._check(i)
        if "split" in self._episodes and isinstance(self._episodes.at[i, "split"], str):
            return self._episodes.at[i, "split"]
        for name, span in self.info.get("splits", {}).items():
            a, b = (int(x) for x in str(span).split(":"))
            if a <= i < b:
                return name
        return "train"

    def episodes_in_split(self, split: str) -> list[int]:
        return [i for i in range(self.num_episodes) if self.split(i) == split]

    def cameras(self, i: int) -> dict[str, CameraCalib]:
        """Per-camera calibration of episode i ({} when the dataset has none)."""
        out = {}
        for key in self.camera_keys:
            col = f"calibration/{key}"
            if col in self._episodes:
                value = self._episodes.at[self._check(i), col]
                if isinstance(value, str) and value:
                    out[camera_name(key)] = CameraCalib.from_dict(
                        camera_name(key), json.loads(value)
                    )
        return out

    # -- per-step data --------------------------------------------------------------------

    def _table(self, i: int) -> pa.Table:
        """The rows of episode i (cached per data file)."""
        row = self._episodes.iloc[self._check(i)]
        chunk = int(row.get("data/chunk_index", 0))
        file = int(row.get("data/file_index", 0))
        path = self.root / self.info.get("data_path", DATA_PATH).format(
            chunk_index=chunk, file_index=file
        )
        if str(path) not in self._tables:
            if not path.exists():
                raise FileNotFoundError(f"data file missing: {path}")
            self._tables[str(path)] = pq.read_table(path)
        table = self._tables[str(path)]
        ep_col = table.column("episode_index").to_numpy()
        rows = np.flatnonzero(ep_col == i)
        if len(rows) != int(row["length"]):
            raise ValueError(
                f"episode {i}: {len(rows)} rows in {path.name}, the episode table says {int(row['length'])}"
            )
        return table.slice(int(rows[0]), len(rows))

    def _column(self, i: int, name: str) -> np.ndarray | None:
        table = self._table(i)
        if name not in table.column_names:
            return None
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
            return np.stack(col.to_numpy(zero_copy_only=False)) if len(col) else np.zeros((0, 0))
        return col.to_numpy(zero_copy_only=False)

    def states(self, i: int) -> np.ndarray:
        x = self._column(i, STATE_KEY)
        return (x if x is not None else np.zeros((self.length(i), 0))).astype(np.float32)

    def actions(self, i: int) -> np.ndarray:
        x = self._column(i, ACTION_KEY)
        return (x if x is not None else np.zeros((self.length(i), 0))).astype(np.float32)

    def _persistent(self, i: int) -> list[dict]:
        table = self._table(i)
        if language.LANGUAGE_PERSISTENT not in table.column_names:
            return []
        return table.column(language.LANGUAGE_PERSISTENT)[0].as_py() or []

    def events(self, i: int) -> list[Event]:
        """Events rebuilt from the subtask rows ([] when the episode has none)."""
        bounds = None
        if "events/boundary" in self._episodes:
            value = self._episodes.at[self._check(i), "events/boundary"]
            bounds = list(value) if value is not None else None
        styles = self.info.get("wallwm", {}).get("caption_styles")  # as written; None for LeRobot's
        return language.events_from_rows(
            self._persistent(i), self.fps, self.length(i), self.task(i), bounds, styles
        )

    def plan(self, i: int) -> list[str]:
        """The plan at the start of the episode: the first assistant `plan` row, else subtask order."""
        plans = language.plans_from_rows(self._persistent(i), role="assistant")
        return plans[0][1] if plans else [e.subtask for e in self.events(i)]

    def plan_updates(self, i: int) -> list[tuple[int, list[str]]]:
        """Plans an operator set during the episode (`user` plan rows), as (frame, instructions).

        LeRobot's annotator re-states the remaining plan at every subtask boundary as an
        assistant row; those are not operator edits.
        """
        plans = language.plans_from_rows(self._persistent(i), role="user")
        return [(round(t * self.fps), p) for t, p in plans]

    def interjections(self, i: int) -> list[language.Interjection]:
        table = self._table(i)
        if language.LANGUAGE_EVENTS not in table.column_names:
            return []
        return language.interjections_from_column(
            table.column(language.LANGUAGE_EVENTS).to_pylist()
        )

    def intervention(self, i: int) -> np.ndarray:
        """(T,) bool: True where an operator had taken over."""
        x = self._column(i, INTERVENTION_KEY)
        return np.zeros(self.length(i), bool) if x is None else x.astype(bool)

    def progress(self, i: int) -> np.ndarray | None:
        x = self._column(i, PROGRESS_KEY)
        return None if x is None or (x < 0).all() else x.astype(np.int64)

    # -- frames ---------------------------------------------------------------------------

    def frames(self, i: int, camera: str) -> np.ndarray:
        """All frames of one camera of episode i: (T, H, W, 3) uint8."""
        keys = {camera_name(k): k for k in self.camera_keys}
        if camera not in keys:
            raise KeyError(f"unknown camera {camera!r}; the dataset has {self.camera_names}")
        key = keys[camera]
        if key in self.image_keys:
            from PIL import Image

            cells = self._table(i).column(key).to_pylist()
            return np.stack(
                [np.asarray(Image.open(io.BytesIO(c["bytes"])).convert("RGB")) for c in cells]
            )
        row = self._episodes.iloc[self._check(i)]
        path = self.root / self.info["video_path"].format(
            video_key=key,
            chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]),
        )
        ts = self._column(i, "timestamp")
        ts = np.arange(self.length(i)) / self.fps if ts is None else ts.astype(np.float64)
        return decode_frames(path, float(row[f"videos/{key}/from_timestamp"]) + ts)

    def episode(self, i: int) -> Episode:
        """Episode i with decoded frames (an LRU cache keeps the last few)."""
        i = self._check(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        meta = self.meta(i)
        variation = meta.get("variation")
        ep = Episode(
            task=str(meta.get("task_name") or self.task(i)),
            family=str(meta.get("family") or ""),
            seed=int(meta["seed"])
            if meta.get("seed") is not None and not pd.isna(meta.get("seed"))
            else -1,
            fps=self.fps,
            frames={cam: self.frames(i, cam) for cam in self.camera_names},
            states=self.states(i),
            actions=self.actions(i),
            events=self.events(i),
            cameras=self.cameras(i),
            instruction=self.task(i),
            progress=self.progress(i),
            variation=json.loads(variation) if isinstance(variation, str) and variation else {},
        )
        self._cache[i] = ep
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ep

    def norm_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """mean/std/min/max of state and action: what the model's normaliser needs."""
        missing = [k for k in (STATE_KEY, ACTION_KEY) if k not in self.stats]
        if missing:
            raise ValueError(f"{self.root}: meta/stats.json has no stats for {missing}")
        return {
            k: {s: self.stats[k][s].astype(np.float32) for s in ("mean", "std", "min", "max")}
            for k in (STATE_KEY, ACTION_KEY)
        }
