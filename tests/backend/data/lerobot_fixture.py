"""A LeRobot v3.0 dataset written the way LeRobot writes one (we cannot download a real one).

Mirrors `lerobot.datasets` v3.0: `meta/info.json` from `create_empty_dataset_info` plus the
per-video `info` block, `meta/tasks.parquet` as a DataFrame indexed by task, the episodes
table with `data/...`, `videos/<key>/...`, `dataset_from/to_index`, flattened
`stats/<feature>/<stat>` and `meta/episodes/...` columns, data rows with fixed-size float
lists and the `huggingface` schema metadata that `datasets` writes, and videos encoded as
LeRobot's `encode_video_frames` does (libsvtav1, yuv420p, g=2, crf=30), episodes
concatenated in one file per camera with continuous timestamps. Optionally, subtask rows in
`language_persistent` as LeRobot's annotation pipeline writes them.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
CAMS = ["observation.images.front", "observation.images.wrist"]
FPS = 30
H, W = 48, 64
TASKS = ["Grab the black cube", "Put the cube in the box"]


def _frames(ep: int, T: int) -> np.ndarray:
    f = np.full((T, H, W, 3), (90, 110, 130), np.uint8)
    for t in range(T):
        x = (3 * t + 7 * ep) % (W - 12)
        f[t, 16:28, x : x + 12] = (20, 20, 20)
    return f


def _stats(x: np.ndarray) -> dict:
    x = x.reshape(len(x), -1).astype(np.float64)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}


def write_lerobot_dataset(root: Path, lengths=(40, 25, 33), with_subtasks: bool = False) -> dict:
    """Write the dataset; return the ground truth (actions, states, frames per episode)."""
    rng = np.random.default_rng(0)
    root = Path(root)
    truth = {"actions": [], "states": [], "frames": []}
    rows = []
    episodes = []
    index = 0
    t_video = 0.0
    containers = {}
    for key in CAMS:
        path = root / f"videos/{key}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        out = av.open(str(path), "w")
        stream = out.add_stream("libsvtav1", FPS, options={"g": "2", "crf": "30"})
        stream.pix_fmt, stream.width, stream.height = "yuv420p", W, H
        containers[key] = (out, stream)
    pts = 0
    for ep, T in enumerate(lengths):
        actions = rng.normal(0, 30, (T, 6)).astype(np.float32)
        states = rng.normal(0, 30, (T, 6)).astype(np.float32)
        frames = {key: _frames(ep + 3 * c, T) for c, key in enumerate(CAMS)}
        truth["actions"].append(actions)
        truth["states"].append(states)
        truth["frames"].append(frames)
        task_index = ep % 2
        for t in range(T):
            row = {
                "action": actions[t].tolist(),
                "observation.state": states[t].tolist(),
                "timestamp": np.float32(t / FPS),
                "frame_index": t,
                "episode_index": ep,
                "index": index + t,
                "task_index": task_index,
            }
            if with_subtasks:
                row["language_persistent"] = [
                    {"role": "assistant", "content": "reach the cube", "style": "subtask", "timestamp": 0.0, "camera": None, "tool_calls": None},
                    {"role": "assistant", "content": "grasp the cube", "style": "subtask", "timestamp": float(np.float32((T // 2) / FPS)), "camera": None, "tool_calls": None},
                ]
                row["language_events"] = []
            rows.append(row)
        for key in CAMS:
            out, stream = containers[key]
            for t, img in enumerate(frames[key]):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = pts + t, Fraction(1, FPS)
                for packet in stream.encode(frame):
                    out.mux(packet)
        pts += T
        ep_stats = {"action": _stats(actions), "observation.state": _stats(states)}
        for key in CAMS:
            s = _stats(frames[key].reshape(-1, 3) / 255.0)
            ep_stats[key] = {k: (v if k == "count" else v.reshape(3, 1, 1)) for k, v in s.items()}
        episode = {
            "episode_index": ep,
            "tasks": [TASKS[task_index]],
            "length": T,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": index,
            "dataset_to_index": index + T,
        }
        for key in CAMS:
            episode |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": t_video,
                f"videos/{key}/to_timestamp": t_video + T / FPS,
            }
        for feat, st in ep_stats.items():
            for name, value in st.items():
                episode[f"stats/{feat}/{name}"] = np.asarray(value).tolist()
        episode |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        episodes.append(episode)
        index += T
        t_video += T / FPS
    for out, stream in containers.values():
        for packet in stream.encode():
            out.mux(packet)
        out.close()

    features = {
        "action": {"dtype": "float32", "shape": [6], "names": [f"{m}.pos" for m in MOTORS]},
        "observation.state": {"dtype": "float32", "shape": [6], "names": [f"{m}.pos" for m in MOTORS]},
    }
    for key in CAMS:
        features[key] = {
            "dtype": "video",
            "shape": [H, W, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": H, "video.width": W, "video.codec": "av1", "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False, "video.fps": FPS, "video.channels": 3, "has_audio": False,
            },
        }
    features |= {
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if with_subtasks:
        features["language_persistent"] = {"dtype": "language", "shape": [1], "names": None}
        features["language_events"] = {"dtype": "language", "shape": [1], "names": None}

    # data/: what `datasets` writes: fixed-size lists, plus its features in the schema metadata.
    fields = [
        pa.field("action", pa.list_(pa.float32(), 6)),
        pa.field("observation.state", pa.list_(pa.float32(), 6)),
        pa.field("timestamp", pa.float32()),
        pa.field("frame_index", pa.int64()),
        pa.field("episode_index", pa.int64()),
        pa.field("index", pa.int64()),
        pa.field("task_index", pa.int64()),
    ]
    hf = {
        "action": {"feature": {"dtype": "float32", "_type": "Value"}, "length": 6, "_type": "Sequence"},
        "observation.state": {"feature": {"dtype": "float32", "_type": "Value"}, "length": 6, "_type": "Sequence"},
        **{k: {"dtype": d, "_type": "Value"} for k, d in [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")]},
    }
    if with_subtasks:
        row_fields = [
            pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string()), pa.field("style", pa.string()),
            pa.field("timestamp", pa.float32(), nullable=False), pa.field("camera", pa.string()), pa.field("tool_calls", pa.list_(pa.string())),
        ]
        fields.append(pa.field("language_persistent", pa.list_(pa.struct(row_fields))))
        fields.append(pa.field("language_events", pa.list_(pa.struct([f for f in row_fields if f.name != "timestamp"]))))
    schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})
    path = root / "data/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    (root / "meta").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(TASKS, name="task")).to_parquet(root / "meta/tasks.parquet")
    ep_path = root / "meta/episodes/chunk-000/file-000.parquet"
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(ep_path, pa.Table.from_pylist(episodes).schema, compression="snappy", use_dictionary=True) as w:
        w.write_table(pa.Table.from_pylist(episodes))
    all_actions = np.concatenate(truth["actions"])
    all_states = np.concatenate(truth["states"])
    stats = {"action": _stats(all_actions), "observation.state": _stats(all_states)}
    (root / "meta/stats.json").write_text(json.dumps({k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}, indent=4))
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so101_follower",
        "total_episodes": len(lengths),
        "total_frames": int(sum(lengths)),
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": FPS,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return truth
