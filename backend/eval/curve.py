"""Learning curves: open-loop action error and closed-loop Task Progress against training hours.

A run trained with `--keep-every K` leaves step-numbered checkpoints (`checkpoint-0001000/`)
next to its latest one. Each is scored on held-out data:

- open loop: the action-only path from the first frame of held-out events with their captions;
  end-effector position error (m) over the event's steps, next to holding the current position;
- closed loop: event-mode Task Progress on the sim's test seeds (backend.eval.closed_loop).

Training hours come from the run's `log.jsonl`: its `elapsed_s` restarts with every resumed
process, so the hours add the segments up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.train import LOG_FILE, iterate_log

STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


def training_hours(log_path: str | Path) -> dict[int, float]:
    """step -> cumulative training hours, over resumed segments of one run."""
    hours: dict[int, float] = {}
    offset, last = 0.0, 0.0
    for row in iterate_log(log_path):
        elapsed = float(row["elapsed_s"])
        if elapsed < last:  # a resumed process: its clock restarted
            offset += last
        last = elapsed
        hours[int(row["step"])] = (offset + elapsed) / 3600
    return hours


def training_losses(log_path: str | Path) -> list[dict]:
    """The logged training loss of a run against its training hours: {hours, step, loss}."""
    hours = training_hours(log_path)
    return [
        {"hours": hours[int(r["step"])], "step": int(r["step"]), "loss": float(r["loss"])}
        for r in iterate_log(log_path)
        if "loss" in r
    ]


def kept_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of the step-numbered checkpoints of a run, in training order."""
    found = []
    for d in Path(run).iterdir():
        m = STEP_DIR.match(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    if not found:
        raise FileNotFoundError(
            f"{run} has no step-numbered checkpoints; train with --keep-every K"
        )
    return sorted(found)


def open_loop_error(
    model,
    dataset,
    caption_track: str,
    max_events: int = 40,
    steps: int | None = None,
    task_caption: bool = False,
) -> dict:
    """Mean end-effector position error (m) of action-only chunks on held-out events, and of holding still.

    `task_caption`: condition on the episode's task instruction instead of the event's caption
    (a fixed-recipe model is trained on that; the truth is the same next event's steps)."""
    from backend.data.samples import EventSamples
    from backend.eval.imagination import held_out_episodes
    from backend.model.wam import Observation

    samples = EventSamples(
        dataset,
        h_max=model.config.h_max,
        caption_track=caption_track,
        cameras=list(model.cameras) or None,
        episodes=held_out_episodes(dataset, "test", None),
    )
    if len(samples) == 0:
        raise ValueError(f"{dataset.root}: no held-out events")
    chosen = np.unique(
        np.linspace(0, len(samples) - 1, min(max_events, len(samples))).round().astype(int)
    )
    model_err, hold_err = [], []
    for i in chosen:
        s = samples[int(i)]
        images = {c: s["video"][v, 0] for v, c in enumerate(s["cameras"])}
        text = dataset.task(int(s["episode_index"])) if task_caption else s["caption"]
        im = model.predict_actions(
            Observation(images, s["state"], s["cameras"]), text, steps=steps, seed=int(i)
        )
        n = int(s["length"])
        truth = s["actions"][:n, :3]
        model_err.append(float(np.linalg.norm(im.chunk[:n, :3] - truth, axis=1).mean()))
        hold_err.append(float(np.linalg.norm(s["state"][None, :3] - truth, axis=1).mean()))
    return {
        "action_l2": float(np.mean(model_err)),
        "action_l2_hold": float(np.mean(hold_err)),
        "events": len(chosen),
    }


def learning_curve(
    run: str | Path,
    dataset: str | Path,
    tasks: Sequence[str],
    episodes: int,
    max_events: int = 40,
    steps: int | None = None,
    progress: Callable[[dict], None] | None = None,
    done: Sequence[dict] = (),
    guidance: float | None = None,
) -> list[dict]:
    """One row per kept checkpoint: step, hours, open-loop errors, closed-loop Task Progress per task.

    Rows in `done` (an earlier curve.json of the same run and settings) are kept, not re-scored:
    a curve grows with its run, and each checkpoint costs minutes of closed loop.
    """
    from backend.data.lerobot import EventDataset
    from backend.eval.closed_loop import ClosedLoop, caption_track_of, episode_specs
    from backend.model.checkpoint import read_config
    from backend.model.wam import WorldActionModel

    hours = training_hours(Path(run) / LOG_FILE)
    data = EventDataset(dataset)
    settings = {"dataset": str(Path(dataset).resolve()), "episodes": episodes, "steps": steps}
    settings |= {"max_events": max_events, "tasks": list(tasks), "guidance": guidance}
    earlier = {r["step"]: r for r in done if r.get("settings") == settings}
    rows = []
    for step, path in kept_checkpoints(run):
        config = read_config(path)
        # each recipe on its own protocol: a fixed-recipe model reads the task instruction and
        # replans every chunk (closed loop `fixed`), an event model reads next-event captions
        method = "fixed" if config.get("recipe") == "fixed" else "event"
        if step in earlier and earlier[step].get("method", "event") == method:
            rows.append(earlier[step] | {"hours": hours.get(step, earlier[step]["hours"])})
            continue
        model = WorldActionModel.from_checkpoint(path)
        if guidance is not None:
            model.config = replace(model.config, guidance_scale=guidance)
        track = caption_track_of(config)
        row = {
            "step": step,
            "hours": hours.get(step),
            "checkpoint": str(path),
            "settings": settings,
            "method": method,
            **open_loop_error(model, data, track, max_events, steps, method == "fixed"),
        }
        with ClosedLoop(
            method, model, caption_track=track, steps=steps, checkpoint=str(path)
        ) as runner:
            for task in tasks:
                records = [runner.run(t, seed) for t, seed in episode_specs(None, task, episodes)]
                row[f"task_progress/{task}"] = float(np.mean([r.task_progress for r in records]))
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def plot_curve(
    rows: Sequence[dict],
    path: str | Path,
    hold_tp: dict[str, float] | None = None,
    losses: Sequence[dict] = (),
) -> Path:
    """Panels against training hours: the training loss (with `losses`), open-loop error
    (model vs hold) and closed-loop Task Progress."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["hours"] for r in rows]
    panels = 3 if losses else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), constrained_layout=True)
    if losses:
        loss_ax, a, b = axes
        h, v = np.array([r["hours"] for r in losses]), np.array([r["loss"] for r in losses])
        loss_ax.plot(h, v, color="lightgrey", lw=0.8, label="logged")
        n = min(20, len(v))  # a running mean over 20 logged steps
        loss_ax.plot(h[n - 1 :], np.convolve(v, np.ones(n) / n, "valid"), label=f"mean of {n}")
        loss_ax.set(xlabel="training hours", ylabel="loss", yscale="log", title="Training loss")
        loss_ax.legend()
    else:
        a, b = axes
    a.plot(x, [r["action_l2"] * 100 for r in rows], "o-", label="model (action-only path)")
    a.plot(x, [r["action_l2_hold"] * 100 for r in rows], "--", color="grey", label="hold position")
    a.set(
        xlabel="training hours",
        ylabel="end-effector error (cm)",
        title="Open loop, held-out events",
    )
    a.legend()
    for key in sorted(k for k in rows[0] if k.startswith("task_progress/")):
        task = key.split("/", 1)[1]
        line = b.plot(x, [r[key] for r in rows], "o-", label=task)[0]
        if hold_tp and task in hold_tp:
            b.axhline(hold_tp[task], ls="--", color=line.get_color(), alpha=0.6)
    b.set(
        xlabel="training hours",
        ylabel="Task Progress",
        ylim=(-2, 102),
        title=f"Closed loop, test seeds ({rows[0].get('method', 'event')} method)",
    )
    b.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_curve(rows: Sequence[dict], out: str | Path, run: str | Path | None = None) -> Path:
    """OUT/curve.json and OUT/curve.png (with the training loss of `run`'s log when given)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(list(rows), indent=2) + "\n")
    log = Path(run) / LOG_FILE if run is not None else None
    losses = training_losses(log) if log is not None and log.is_file() else []
    return plot_curve(rows, out / "curve.png", losses=losses)
