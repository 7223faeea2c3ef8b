"""Caption templates for the four event tracks, with paraphrases picked by a seeded RNG.

`task` and `subtask` come from templates keyed by task kind / sub-goal; `action` from templates
keyed by motion primitive; `segment` is generated from the event's actual commanded motion
("descend 4 cm", "move 12 cm left and rotate 20 degrees clockwise"). Directions are in the robot
base frame: forward = +x (away from the robot), left = +y, up = +z.
"""

from __future__ import annotations

import numpy as np

TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick_place": (
        "put the {colour} block in the bin",
        "place the {colour} block into the bin",
        "pick up the {colour} block and drop it in the bin",
    ),
    "push": (
        "push the {colour} puck onto the target",
        "slide the {colour} puck to the target",
        "push the {colour} puck until it sits on the target",
    ),
    "stack": (
        "stack the {top} block on the {base} block",
        "put the {top} block on top of the {base} block",
        "place the {top} block onto the {base} block",
    ),
    "buttons": (
        "press {0}, then {1}, then {2}",
        "press the {0}, {1} and {2} buttons in that order",
        "first press {0}, then {1}, and finally {2}",
    ),
    "sort": (
        "put each block in the bin of its colour",
        "sort the blocks into the bins of matching colour",
        "place every block in the bin with the same colour",
    ),
    "peg": (
        "insert the peg into the square hole",
        "put the peg into the hole",
        "fit the peg into the square hole",
    ),
}

SUBTASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick": ("pick up the {obj}", "grasp the {obj}", "take the {obj}"),
    "place_bin": (
        "put the {obj} in the {target}",
        "place the {obj} into the {target}",
        "drop the {obj} in the {target}",
    ),
    "place_on": (
        "put the {obj} on the {target}",
        "place the {obj} on top of the {target}",
        "set the {obj} down on the {target}",
    ),
    "press": ("press the {obj}", "push the {obj}", "press down the {obj}"),
    "push": (
        "push the {obj} onto the {target}",
        "slide the {obj} to the {target}",
        "move the {obj} onto the {target}",
    ),
    "insert": (
        "insert the {obj} into the {target}",
        "put the {obj} into the {target}",
        "fit the {obj} into the {target}",
    ),
    "prepare": ("close the gripper", "make a fist with the gripper", "shut the fingers"),
}

ACTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "move_above": (
        "move above the {obj}",
        "go over the {obj}",
        "position the gripper above the {obj}",
    ),
    "descend_grasp": (
        "descend to grasp the {obj}",
        "lower the gripper around the {obj}",
        "go down to the {obj}",
    ),
    "close": ("close the gripper", "grasp", "close the fingers"),
    "open": ("open the gripper", "release", "let go"),
    "lift": ("lift the {obj}", "raise the {obj}", "pick the {obj} up"),
    "carry": (
        "carry the {obj} over the {target}",
        "bring the {obj} above the {target}",
        "move the {obj} over the {target}",
    ),
    "lower_into": (
        "lower the {obj} into the {target}",
        "put the {obj} down in the {target}",
        "bring the {obj} down into the {target}",
    ),
    "lower_onto": (
        "lower the {obj} onto the {target}",
        "bring the {obj} down onto the {target}",
        "set the {obj} on the {target}",
    ),
    "retreat": ("move the gripper up", "back away upward", "retract the gripper"),
    "descend_touch": (
        "descend onto the {obj}",
        "lower the gripper onto the {obj}",
        "go down until touching the {obj}",
    ),
    "push_down": ("push down", "press down", "push the {obj} down"),
    "move_behind": (
        "move behind the {obj}",
        "go to the far side of the {obj}",
        "get behind the {obj}",
    ),
    "lower_behind": (
        "lower the gripper behind the {obj}",
        "descend behind the {obj}",
        "go down behind the {obj}",
    ),
    "approach": (
        "move in until touching the {obj}",
        "approach the {obj}",
        "make contact with the {obj}",
    ),
    "push": (
        "push the {obj} to the {target}",
        "slide the {obj} toward the {target}",
        "keep pushing the {obj} to the {target}",
    ),
    "align": (
        "align the {obj} above the {target}",
        "line the {obj} up over the {target}",
        "center the {obj} over the {target}",
    ),
    "insert": (
        "push the {obj} into the {target}",
        "insert the {obj}",
        "slide the {obj} down into the {target}",
    ),
}

_UP = ("move up {n} cm", "rise {n} cm", "go up {n} cm")
_DOWN = ("descend {n} cm", "move down {n} cm", "lower {n} cm")
_SIDE = ("move {n} cm {dir}", "go {n} cm {dir}", "shift {n} cm {dir}")
_TURN = ("rotate {n} degrees {dir}", "turn {n} degrees {dir}", "twist {n} degrees {dir}")
_HOLD = ("hold still", "stay in place", "keep the pose")
_CLOSE = ("close the gripper", "close the fingers", "squeeze the fingers shut")
_OPEN = ("open the gripper", "open the fingers", "spread the fingers")
_DIRECTIONS = (
    "forward",
    "forward-left",
    "left",
    "back-left",
    "back",
    "back-right",
    "right",
    "forward-right",
)


class Captioner:
    """Picks paraphrases with a seeded RNG so an episode's captions are reproducible."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([int(seed), 271828])

    def pick(self, options: tuple[str, ...], **fields: object) -> str:
        return options[int(self.rng.integers(len(options)))].format(**fields)

    def task(self, kind: str, *args: object, **fields: object) -> str:
        t = TASK_TEMPLATES[kind][int(self.rng.integers(len(TASK_TEMPLATES[kind])))]
        return t.format(*args, **fields)

    def subtask(self, key: str, **fields: object) -> str:
        return self.pick(SUBTASK_TEMPLATES[key], **fields)

    def action(self, key: str, **fields: object) -> str:
        return self.pick(ACTION_TEMPLATES[key], **fields)

    def segment(self, start: np.ndarray, end: np.ndarray) -> str:
        """Describe the commanded motion from pose `start` to `end` (7,) in a few words."""
        g0, g1 = start[6] > 0.5, end[6] > 0.5
        parts = []
        if g1 != g0:
            parts.append(self.pick(_CLOSE if g1 else _OPEN))
        d = end[:3] - start[:3]
        horiz = float(np.linalg.norm(d[:2]))
        if horiz >= 0.01:
            sector = int(np.round(np.arctan2(d[1], d[0]) / (np.pi / 4))) % 8
            parts.append(self.pick(_SIDE, n=round(horiz * 100), dir=_DIRECTIONS[sector]))
        if abs(d[2]) >= 0.01:
            parts.append(self.pick(_UP if d[2] > 0 else _DOWN, n=round(abs(d[2]) * 100)))
        dyaw = float((end[5] - start[5] + np.pi) % (2 * np.pi) - np.pi)
        if abs(np.rad2deg(dyaw)) >= 5:
            turn = "counterclockwise" if dyaw > 0 else "clockwise"
            parts.append(self.pick(_TURN, n=round(abs(np.rad2deg(dyaw))), dir=turn))
        if not parts:
            parts.append(self.pick(_HOLD))
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]
