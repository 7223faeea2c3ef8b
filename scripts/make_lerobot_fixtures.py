"""Write the tiny LeRobot datasets under tests/fixtures/ with the real `lerobot` package.

The reader tests must open datasets that LeRobot itself wrote, not our imitation of its
layout, and nothing can be downloaded here. So this script records them with LeRobot's own
recording API (`LeRobotDataset.create` -> `add_frame` -> `save_episode` -> `finalize`), in
a virtual environment that has that LeRobot release, outside the repository (each is
~5 GB with torch):

    $(pyenv root)/versions/3.11.7/bin/python -m venv /work/venvs/lerobot044
    /work/venvs/lerobot044/bin/pip install lerobot==0.4.4
    /work/venvs/lerobot044/bin/python scripts/make_lerobot_fixtures.py   # -> tests/fixtures/lerobot-0.4.4/

    $(pyenv root)/versions/3.12.1/bin/python -m venv /work/venvs/lerobot061   # 0.6 needs Python 3.12
    /work/venvs/lerobot061/bin/pip install lerobot==0.6.1
    /work/venvs/lerobot061/bin/python scripts/make_lerobot_fixtures.py   # -> tests/fixtures/lerobot-0.6.1/

The output folder is named after the installed LeRobot version. Every value written comes
from `episode_truth`, which needs only numpy, so the tests import this file to get the
ground truth without LeRobot. Videos use LeRobot's default codec (AV1 via libsvtav1,
crf 30). Where the release has language columns (0.6), each episode also carries
`subtask` rows, as `lerobot-annotate` writes them, so the tests can read events from it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FPS = 30
SIZE = 32  # frames are SIZE x SIZE
CAMERAS = ("front", "wrist")
MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
LENGTHS = (12, 9)  # two episodes of different lengths, so offsets into shared files matter
TASKS = ("Grab the black cube", "Put the cube in the box")
# Subtasks of each episode: (first frame, text); the first starts at frame 0.
SUBTASKS = (
    ((0, "reach the cube"), (5, "grasp the cube")),
    ((0, "lift the cube"), (4, "place it in the box")),
)
COLOURS = {"front": (200, 60, 40), "wrist": (40, 90, 210)}
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def episode_truth(episode: int) -> dict:
    """What episode `episode` holds: states/actions (T, 6) float32, frames {cam: (T, S, S, 3) uint8}.

    Frames are a flat background with one 10x10 block moving 3 pixels per frame (no
    position repeats within an episode), so a frame decoded at the wrong time is told
    apart from AV1's loss (crf 30: a mean error of a few grey levels).
    """
    T = LENGTHS[episode]
    t = np.arange(T, dtype=np.float32)[:, None]
    joint = np.arange(len(MOTORS), dtype=np.float32)[None]
    states = (10.0 * episode + 2.0 * joint + 0.5 * t).astype(np.float32)  # (T, 6)
    actions = (states + 0.25).astype(np.float32)
    frames = {}
    for c, cam in enumerate(CAMERAS):
        f = np.empty((T, SIZE, SIZE, 3), np.uint8)
        f[:] = (120 + 40 * c, 130, 110 + 20 * episode)
        for k in range(T):
            x = 2 + (3 * k + 5 * episode) % (SIZE - 12)
            f[k, 11:21, x : x + 10] = COLOURS[cam]
        frames[cam] = f
    return {
        "task": TASKS[episode],
        "states": states,
        "actions": actions,
        "frames": frames,
        "subtasks": SUBTASKS[episode],
    }


def _features() -> dict:
    names = [f"{m}.pos" for m in MOTORS]
    features = {
        "observation.state": {"dtype": "float32", "shape": (len(MOTORS),), "names": names},
        "action": {"dtype": "float32", "shape": (len(MOTORS),), "names": names},
    }
    for cam in CAMERAS:
        features[f"observation.images.{cam}"] = {
            "dtype": "video",
            "shape": (SIZE, SIZE, 3),
            "names": ["height", "width", "channels"],
        }
    return features


def write(root: Path) -> None:
    """Record the episodes with LeRobot's API into `root` (which must not exist)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create(
        repo_id="wallwm/lerobot_fixture",
        fps=FPS,
        features=_features(),
        root=root,
        robot_type="so101_follower",
        use_videos=True,
    )
    for episode in range(len(LENGTHS)):
        truth = episode_truth(episode)
        for k in range(LENGTHS[episode]):
            frame = {f"observation.images.{cam}": truth["frames"][cam][k] for cam in CAMERAS}
            frame |= {
                "observation.state": truth["states"][k],
                "action": truth["actions"][k],
                "task": truth["task"],
            }
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()


def annotate(root: Path, staging: Path) -> bool:
    """Add subtask and plan rows the way `lerobot-annotate` does; False if the release cannot.

    LeRobot fills the language columns after recording (values given to `add_frame` are
    dropped): its annotation modules stage rows per episode, then its validator and its
    parquet writer run. Here the rows come from `SUBTASKS` instead of a VLM; validation,
    writing and the info.json update are LeRobot's own. As LeRobot's plan module does, a
    `plan` row (the subtasks still to do) is stamped at every subtask boundary.
    """
    try:
        from lerobot.annotations.steerable_pipeline.executor import Executor
        from lerobot.annotations.steerable_pipeline.reader import iter_episodes, snap_to_frame
        from lerobot.annotations.steerable_pipeline.staging import EpisodeStaging
        from lerobot.annotations.steerable_pipeline.validator import StagingValidator
        from lerobot.annotations.steerable_pipeline.writer import LanguageColumnsWriter
    except ImportError:
        return False
    records = list(iter_episodes(root))
    for record in records:
        subtasks = SUBTASKS[record.episode_index]
        rows = []
        for k, (frame, text) in enumerate(subtasks):
            t = snap_to_frame(frame / FPS, record.frame_timestamps)
            todo = "\n".join(f"{i + 1}. {s}" for i, (_, s) in enumerate(subtasks[k:]))
            rows.append(
                {
                    "role": "assistant",
                    "content": text,
                    "style": "subtask",
                    "timestamp": t,
                    "tool_calls": None,
                }
            )
            rows.append(
                {
                    "role": "assistant",
                    "content": todo,
                    "style": "plan",
                    "timestamp": t,
                    "tool_calls": None,
                }
            )
        EpisodeStaging(staging, record.episode_index).write("plan", rows)
    report = StagingValidator().validate(records, staging)
    if not report.ok:
        raise RuntimeError(f"LeRobot's validator refused the staged rows: {report.summary()}")
    LanguageColumnsWriter().write_all(records, staging, root)
    Executor._ensure_annotation_metadata_in_info(root)
    return True


def main() -> None:
    from importlib.metadata import version

    out = FIXTURES / f"lerobot-{version('lerobot')}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dataset"
        write(root)
        annotated = annotate(root, Path(tmp) / "staging")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(root, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {out} ({size / 1024:.0f} KiB): {len(LENGTHS)} episodes, {sum(LENGTHS)} frames, cameras {list(CAMERAS)}, subtask rows: {annotated}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
