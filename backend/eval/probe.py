"""Does the model look? Move an object in the scene and see whether the predicted target follows.

A policy that ignores the images predicts the same motion wherever the object is (with
relative actions: the same offset from the gripper). One that grounds the instruction in the
views moves its target with the object. `target_follow` measures it on the real sim: the
first event of the scripted expert's plan ("go over the blue block"), imagined from the
initial scene and from the same scene with the object moved on the table; the projection of
the target's displacement onto the object's, divided by the object's, is 1 for a model that
follows exactly and 0 for one that does not look.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import mujoco
import numpy as np


def _move_object(env, name: str, shift_xy: Sequence[float]) -> None:
    """Slide a free object across the table and let it settle."""
    m, d = env.model, env.data
    adr = m.joint(name).qposadr[0]
    d.qpos[adr : adr + 2] += np.asarray(shift_xy, dtype=float)
    d.qvel[m.joint(name).dofadr[0] : m.joint(name).dofadr[0] + 6] = 0.0
    mujoco.mj_forward(m, d)
    for _ in range(50):
        mujoco.mj_step(m, d)


def target_follow(
    model,
    seed: int = 4,
    shift_xy: Sequence[float] = (0.04, 0.0),
    caption_track: str = "action",
    task: str = "pick_place_bin",
    obj: str = "block",
    steps: int | None = None,
) -> dict:
    """Predicted end-effector target (last step of the chunk) before and after moving `obj`."""
    from backend.model.wam import Observation
    from robot.sim.env import SimEnv
    from robot.sim.experts import record_episode

    first = record_episode(task, seed, resolution=16).events[0]
    caption = first.caption(caption_track)
    cams = list(model.cameras) or ["front", "left", "right"]
    with SimEnv(task, seed=seed, cameras=cams) as env:
        targets, positions = [], []
        for move in (False, True):
            env.reset(seed, render=False)
            if move:
                _move_object(env, obj, shift_xy)
            o = env.observe(render=True)
            im = model.predict_actions(
                Observation(o["images"], o["state"], env.cameras), caption, steps=steps, seed=seed
            )
            targets.append(im.actions[-1, :2].astype(np.float64))
            positions.append(env.body_pos(obj)[:2].astype(np.float64))
    moved = positions[1] - positions[0]
    followed = targets[1] - targets[0]
    return {
        "caption": caption,
        "object_shift": moved.tolist(),
        "target_shift": followed.tolist(),
        "follow_ratio": float(followed @ moved / (moved @ moved)),
    }


COLOURS = ("red", "green", "blue")
_COLOUR_WORD = re.compile("|".join(COLOURS))


def button_events(ep, caption_track: str = "action") -> tuple:
    """(first "over the <colour> button" event, {colour: where the expert's event over it ended})."""
    over = [
        e
        for e in ep.events
        if "button" in (c := e.caption(caption_track))
        and ("over" in c or "above" in c)
        and _COLOUR_WORD.search(c)
    ]
    truth = {
        _COLOUR_WORD.search(e.caption(caption_track)).group(0): ep.states[e.end - 1, :2]
        for e in over
    }
    return (over[0] if over else None), truth


def ask_each_colour(model, ep, event, caption: str, steps=None, seed: int = 0) -> dict:
    """{colour: predicted end-effector x, y} for `caption` with each colour word, from `event`'s start."""
    from backend.model.wam import Observation

    obs = Observation(
        {c: f[event.start] for c, f in ep.frames.items()}, ep.states[event.start], ep.cameras
    )
    return {
        c: model.predict_actions(obs, _COLOUR_WORD.sub(c, caption), steps=steps, seed=seed)
        .actions[-1, :2]
        .astype(np.float64)
        for c in COLOURS
    }


def colour_targets(
    model, seed: int = 4, caption_track: str = "action", steps: int | None = None
) -> dict:
    """Does the colour word choose the button? One scene, the same event asked per colour.

    The scripted expert's first "over the <colour> button" event of a `press_buttons_in_order`
    episode is asked three times from its start, once per colour word (the rest of the caption
    unchanged). Each colour's true target is where the expert's own event over that button
    ended. A policy that ignores the word predicts one target for all three.
    """
    from robot.sim.experts import record_episode

    ep = record_episode("press_buttons_in_order", seed, cameras=list(model.cameras) or None)
    first, truth = button_events(ep, caption_track)
    if set(truth) != set(COLOURS):
        raise ValueError(f"seed {seed}: the scene does not have the three colours {COLOURS}")
    caption = first.caption(caption_track)
    predicted = ask_each_colour(model, ep, first, caption, steps=steps, seed=seed)
    nearest = {
        c: min(COLOURS, key=lambda b: float(np.linalg.norm(predicted[c] - truth[b])))
        for c in COLOURS
    }
    return {
        "caption": caption,
        "predicted": {c: v.tolist() for c, v in predicted.items()},
        "true": {c: np.asarray(v, np.float64).tolist() for c, v in truth.items()},
        "error_m": float(np.mean([np.linalg.norm(predicted[c] - truth[c]) for c in COLOURS])),
        "nearest": nearest,  # colour asked -> button its target is nearest to
    }
