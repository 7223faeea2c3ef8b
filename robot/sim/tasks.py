"""The task registry: scenes, seeded initial states, instructions and Task Progress stages.

Four families mirror the paper's suites: **diverse** (pick-place into a bin, push to a target,
stack), **reasoning** (press buttons in a given colour order, sort by colour), **dexterous**
(peg insertion with 2.5 mm clearance per side) and **generalization**: the same task code with
variation knobs (randomised instruction order, unseen colours and distractor objects, lighting,
camera jitter) and a fixed train/test split of seeds (`split`). Test seeds draw the held-out
values (unseen colours, distractor shapes, button orders, lighting) when `unseen` is on.
"""

from __future__ import annotations

import difflib
import itertools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from robot.sim import scene as S
from robot.sim.progress import Stage, TaskProgress, Watch

if TYPE_CHECKING:
    from robot.sim.env import SimEnv

FAMILIES = ("diverse", "reasoning", "dexterous", "generalization")

# Variation knobs and their defaults; a task's own defaults override these.
VARIATION_DEFAULTS: dict[str, Any] = {
    "order": "random",  # "fixed" | "random": the order named in the instruction (buttons)
    "unseen": False,  # test seeds draw held-out colours, distractor shapes, orders, lighting
    "distractors": 0,  # number of distractor objects on the table (0..4)
    "lighting": 0.0,  # 0..1: strength of random light brightness, tint and direction
    "camera_jitter": 0.0,  # std (m) of fixed-camera position jitter, 0..0.05
}

TEST_EVERY = 5  # seeds with seed % 5 == 4 are the test split (20 %)
SPLIT_RULE = {"train": "seed % 5 != 4", "test": "seed % 5 == 4"}
PLACE_HALF = 0.15  # objects and fixtures are placed in [-0.15, 0.15]^2
DISTRACTOR_SHAPES = {  # train shapes vs shapes only test seeds see
    "train": (("cylinder", (0.018, 0.02)), ("box", (0.025, 0.015, 0.012))),
    "unseen": (("sphere", (0.02,)), ("capsule", (0.014, 0.016))),
}
BUTTON_ORDERS = list(itertools.permutations(range(3)))
HELD_OUT_ORDERS = (2, 5)  # indices into BUTTON_ORDERS seen only by test seeds when `unseen`
PARK_Z = -0.3  # unused distractor slots float under the table, out of view
BLOCK_HALF = 0.02


def split(task: str, seed: int) -> str:
    """Deterministic train/test split of seeds: every fifth seed (seed % 5 == 4) is "test"."""
    get_task(task)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return "test" if int(seed) % TEST_EVERY == TEST_EVERY - 1 else "train"


def next_seed(task: str, split_name: str, after: int = -1) -> int:
    """The smallest seed above `after` that belongs to the split (what `reset(split=...)` picks)."""
    if split_name not in SPLIT_RULE:
        raise ValueError(f"split must be one of {tuple(SPLIT_RULE)}, got {split_name!r}")
    seed = max(int(after) + 1, 0)
    while split(task, seed) != split_name:
        seed += 1
    return seed


def apply_variation_defaults(task: Task, variation: dict | None) -> dict[str, Any]:
    """Merge a user's variation dict over the task's defaults, validating every knob."""
    out = {**VARIATION_DEFAULTS, **task.variation}
    for key, value in (variation or {}).items():
        if key not in VARIATION_DEFAULTS:
            close = difflib.get_close_matches(key, VARIATION_DEFAULTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown variation knob {key!r}{hint} Knobs: {sorted(VARIATION_DEFAULTS)}"
            )
        out[key] = value
    if out["order"] not in ("fixed", "random"):
        raise ValueError(f"variation 'order' must be 'fixed' or 'random', got {out['order']!r}")
    if not isinstance(out["distractors"], int) or not 0 <= out["distractors"] <= 4:
        raise ValueError(
            f"variation 'distractors' must be an int in [0, 4], got {out['distractors']!r}"
        )
    if not 0.0 <= float(out["lighting"]) <= 1.0:
        raise ValueError(f"variation 'lighting' must be in [0, 1], got {out['lighting']!r}")
    if not 0.0 <= float(out["camera_jitter"]) <= 0.05:
        raise ValueError(
            f"variation 'camera_jitter' must be in [0, 0.05] m, got {out['camera_jitter']!r}"
        )
    out["unseen"] = bool(out["unseen"])
    return out


# ---------------------------------------------------------------------- privileged geometry


def in_region(env: SimEnv, obj: str, fixture: str, half: float) -> bool:
    """Is the object's centre within `half` of the fixture centre, in the fixture's frame?"""
    p = env.body_pos(obj) - env.body_pos(fixture)
    yaw = env.body_yaw(fixture)
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([c * p[0] + s * p[1], -s * p[0] + c * p[1]])
    return bool(np.all(np.abs(local) <= half))


def in_bin(env: SimEnv, obj: str, bin_name: str) -> bool:
    """Resting inside the bin (below its rim) and not held."""
    return (
        in_region(env, obj, bin_name, S.BIN_INNER_HALF - 0.008)
        and env.body_pos(obj)[2] < S.BIN_HEIGHT
        and not env.gripper_touches(obj)
    )


def lifted(env: SimEnv, obj: str, height: float = 0.05) -> bool:
    return env.held(obj) and env.body_pos(obj)[2] > height


def yaw_error(a: float, b: float, period: float = np.pi / 2) -> float:
    """Smallest angle between two yaws of a shape with the given rotational symmetry."""
    d = (a - b + period / 2) % period - period / 2
    return float(abs(d))


class PlacementError(RuntimeError):
    """A layout did not fit; `Task.sample` retries with fresh draws."""


class Placer:
    """Rejection-samples non-overlapping positions on the table for round footprints."""

    def __init__(self, rng: np.random.Generator, half: float = PLACE_HALF) -> None:
        self.rng, self.half, self.placed = rng, half, []

    def __call__(self, radius: float, gap: float = 0.035) -> np.ndarray:
        lim = self.half - radius * 0.5
        for _ in range(2000):
            p = self.rng.uniform(-lim, lim, size=2)
            if all(np.linalg.norm(p - q) >= radius + r + gap for q, r in self.placed):
                self.placed.append((p, radius))
                return p
        raise PlacementError(f"could not place an object of radius {radius} m on the table")


def pick_colours(rng: np.random.Generator, n: int, unseen: bool) -> list[str]:
    """n distinct colours; held-out ones (at least one) when `unseen`."""
    if not unseen:
        return [str(c) for c in rng.choice(S.TRAIN_COLOURS, size=n, replace=False)]
    first = str(rng.choice(S.UNSEEN_COLOURS))
    rest = [c for c in (*S.TRAIN_COLOURS, *S.UNSEEN_COLOURS) if c != first]
    return [first, *(str(c) for c in rng.choice(rest, size=n - 1, replace=False))]


# ---------------------------------------------------------------------- tasks


class Task(ABC):
    """A task: scene structure, seeded layout, instruction and its Task Progress rubric."""

    kind: str = ""
    template: str = ""  # the instruction, with {fields} filled from the layout

    def __init__(
        self, name: str, family: str, variation: dict | None = None, description: str = ""
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"task {name!r}: family must be one of {FAMILIES}, got {family!r}")
        self.name, self.family, self.description = name, family, description
        self.variation = dict(variation or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, family={self.family!r})"

    def scene_spec(
        self,
        variation: dict,
        resolution: int = 64,
        wrist: bool = False,
        shadows: bool = False,
        antialias: bool = False,
    ) -> S.SceneSpec:
        objects, fixtures = self.elements(variation)
        for i in range(variation["distractors"]):
            for group in ("train", "unseen"):
                shape, size = DISTRACTOR_SHAPES[group][i % 2]
                objects.append(S.ObjectSpec(f"distractor_{group}{i}", shape, size, mass=0.05))
        return S.SceneSpec(
            tuple(objects),
            tuple(fixtures),
            resolution=resolution,
            wrist=wrist,
            shadows=shadows,
            antialias=antialias,
        )

    @abstractmethod
    def elements(self, variation: dict) -> tuple[list[S.ObjectSpec], list[S.FixtureSpec]]:
        """The task's own objects and fixtures (distractors are added by `scene_spec`)."""

    @abstractmethod
    def layout(
        self, rng: np.random.Generator, place: Placer, unseen: bool, variation: dict
    ) -> dict:
        """Poses and colours of the task's objects/fixtures, plus task facts (order, targets)."""

    @abstractmethod
    def stages(self, layout: dict) -> list[Stage]:
        """Ordered Task Progress stages (weights sum to 10) for this layout."""

    def watch(self, layout: dict) -> Watch | None:
        """What ends credit early (a wrong order or identity); None where nothing does."""
        return None

    def progress(self, layout: dict) -> TaskProgress:
        """A fresh scorer for one episode of this layout."""
        return TaskProgress(self.stages(layout), self.watch(layout))

    @abstractmethod
    def instruction_fields(self, layout: dict) -> dict[str, str]:
        """The values of the template's fields for this layout."""

    def instruction(self, layout: dict) -> str:
        """The canonical task-level instruction for this layout."""
        return self.template.format(**self.instruction_fields(layout))

    def describe(self) -> dict[str, Any]:
        """What a task picker shows: name, family, description, instruction template, split."""
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "instruction_template": self.template,
            "split_rule": dict(SPLIT_RULE),
            "variation": {**VARIATION_DEFAULTS, **self.variation},
        }

    def sample(self, rng: np.random.Generator, split_name: str, variation: dict) -> dict:
        """A seed's initial state: task layout, then distractors around it."""
        unseen = variation["unseen"] and split_name == "test"
        n = variation["distractors"]
        for _ in range(100):
            place = Placer(rng)
            try:
                out = self.layout(rng, place, unseen, variation)
                spots = [place(0.03) for _ in range(n)]
                break
            except PlacementError:
                continue
        else:
            raise PlacementError(f"task {self.name!r}: no layout fits the table")
        out["split"] = split_name
        if n:
            group = "unseen" if unseen else "train"
            used = [c.get("colour") for c in (*out["objects"].values(), *out["fixtures"].values())]
            palette = [
                c for c in (S.UNSEEN_COLOURS if unseen else S.TRAIN_COLOURS) if c not in used
            ]
            colours = [str(c) for c in rng.choice(palette, size=n, replace=len(palette) < n)]
            for i in range(n):
                for g in ("train", "unseen"):
                    if g == group:
                        item = {
                            "pos": [*spots[i], 0.03],
                            "yaw": float(rng.uniform(-np.pi, np.pi)),
                            "colour": colours[i],
                        }
                    else:  # parked under the table
                        item = {
                            "pos": [0.15 * i - 0.2, 0.1 if g == "train" else -0.1, PARK_Z],
                            "yaw": 0.0,
                            "colour": None,
                            "parked": True,
                        }
                    out["objects"][f"distractor_{g}{i}"] = item
            out["distractors"] = [
                {"shape": DISTRACTOR_SHAPES[group][i % 2][0], "colour": colours[i]}
                for i in range(n)
            ]
        out["instruction"] = self.instruction(out)
        return out


class PickPlace(Task):
    kind = "pick_place"
    template = "put the {colour} block in the bin"

    def elements(self, variation):
        return [S.ObjectSpec("block", "box", (BLOCK_HALF,) * 3)], [S.FixtureSpec("bin", "bin")]

    def layout(self, rng, place, unseen, variation):
        bin_xy = place(0.075)
        block_xy = place(0.03)
        colour = str(rng.choice(S.TRAIN_COLOURS))
        return {
            "objects": {
                "block": {
                    "pos": [*block_xy, BLOCK_HALF],
                    "yaw": float(rng.uniform(-np.pi / 4, np.pi / 4)),
                    "colour": colour,
                }
            },
            "fixtures": {
                "bin": {
                    "pos": [*bin_xy, 0.0],
                    "yaw": float(rng.uniform(-np.pi / 4, np.pi / 4)),
                    "colour": None,
                }
            },
            "colour": colour,
        }

    def stages(self, layout):
        return [
            Stage("grasp the block", 2, lambda e: e.held("block")),
            Stage("lift the block", 2, lambda e: lifted(e, "block")),
            Stage(
                "carry it over the bin", 2, lambda e: in_region(e, "block", "bin", S.BIN_INNER_HALF)
            ),
            Stage("release it in the bin", 4, lambda e: in_bin(e, "block", "bin")),
        ]

    def watch(self, layout):
        # Identity: with distractors on the table, one of them in the bin ends credit.
        distractors = [
            n
            for n, o in layout["objects"].items()
            if n.startswith("distractor") and not o.get("parked")
        ]
        if not distractors:
            return None

        def watch(e: SimEnv, reached: int) -> str | None:
            wrong = [n for n in distractors if in_bin(e, n, "bin")]
            return f"a distractor ({wrong[0]}) was put in the bin" if wrong else None

        return watch

    def instruction_fields(self, layout):
        return {"colour": layout["colour"]}


class PushToTarget(Task):
    kind = "push"
    template = "push the {colour} puck onto the target"

    def elements(self, variation):
        return [S.ObjectSpec("puck", "cylinder", (0.025, 0.015), mass=0.08)], [
            S.FixtureSpec("target", "target")
        ]

    def layout(self, rng, place, unseen, variation):
        for _ in range(100):
            p = Placer(rng)
            target = p(S.TARGET_RADIUS, gap=0.0)
            puck = p(0.025, gap=0.06)
            dist = float(np.linalg.norm(target - puck))
            # The pusher must fit behind the puck, inside the workspace.
            behind = puck - (target - puck) / dist * 0.06
            if 0.10 <= dist <= 0.22 and np.all(np.abs(behind) < 0.2):
                break
        place.placed.extend(p.placed)
        colour = str(rng.choice(S.TRAIN_COLOURS))
        return {
            "objects": {"puck": {"pos": [*puck, 0.015], "yaw": 0.0, "colour": colour}},
            "fixtures": {
                "target": {
                    "pos": [*target, 0.0],
                    "yaw": 0.0,
                    "colour": "green" if colour != "green" else "yellow",
                }
            },
            "colour": colour,
            "initial_distance": dist,
        }

    def stages(self, layout):
        d0 = layout["initial_distance"]

        def dist(e: SimEnv) -> float:
            return float(np.linalg.norm((e.body_pos("puck") - e.body_pos("target"))[:2]))

        return [
            Stage("touch the puck", 1, lambda e: "puck" in e.gripper_contacts()),
            Stage("push it halfway", 3, lambda e: dist(e) <= 0.5 * d0),
            Stage("push it close", 3, lambda e: dist(e) <= 0.04),
            Stage("push it onto the target", 3, lambda e: dist(e) <= 0.02),
        ]

    def instruction_fields(self, layout):
        return {"colour": layout["colour"]}


class Stack(Task):
    kind = "stack"
    template = "stack the {top} block on the {base} block"

    def elements(self, variation):
        return [
            S.ObjectSpec("top", "box", (BLOCK_HALF,) * 3),
            S.ObjectSpec("base", "box", (BLOCK_HALF,) * 3),
        ], []

    def layout(self, rng, place, unseen, variation):
        top_c, base_c = pick_colours(rng, 2, unseen)
        objs = {}
        for name, c in (("top", top_c), ("base", base_c)):
            objs[name] = {
                "pos": [*place(0.03, gap=0.06), BLOCK_HALF],
                "yaw": float(rng.uniform(-np.pi / 4, np.pi / 4)),
                "colour": c,
            }
        return {"objects": objs, "fixtures": {}, "top": top_c, "base": base_c}

    def stages(self, layout):
        def above(e: SimEnv) -> bool:
            d = e.body_pos("top") - e.body_pos("base")
            return bool(np.linalg.norm(d[:2]) < 0.015 and d[2] > 0.035)

        def stacked(e: SimEnv) -> bool:
            d = e.body_pos("top") - e.body_pos("base")
            return bool(
                np.linalg.norm(d[:2]) < 0.015
                and abs(d[2] - 2 * BLOCK_HALF) < 0.006
                and not e.gripper_touches("top")
                and e.body_pos("base")[2] < BLOCK_HALF + 0.003
            )

        return [
            Stage("grasp the top block", 2, lambda e: e.held("top")),
            Stage("lift it", 2, lambda e: lifted(e, "top", 0.07)),
            Stage("hold it above the other block", 2, above),
            Stage("release it on the other block", 4, stacked),
        ]

    def instruction_fields(self, layout):
        return {"top": layout["top"], "base": layout["base"]}


class PressButtons(Task):
    kind = "buttons"
    template = "press {first}, then {second}, then {third}"

    def elements(self, variation):
        return [], [S.FixtureSpec(f"button{i}", "button") for i in range(3)]

    def layout(self, rng, place, unseen, variation):
        colours = pick_colours(rng, 3, unseen) if variation["unseen"] else ["red", "green", "blue"]
        if variation["order"] == "fixed":
            order = (0, 1, 2)
        elif variation["unseen"]:
            pool = HELD_OUT_ORDERS if unseen else [i for i in range(6) if i not in HELD_OUT_ORDERS]
            order = BUTTON_ORDERS[int(rng.choice(pool))]
        else:
            order = BUTTON_ORDERS[int(rng.integers(6))]
        fixtures = {
            f"button{i}": {"pos": [*place(0.035, gap=0.05), 0.0], "yaw": 0.0, "colour": c}
            for i, c in enumerate(colours)
        }
        return {
            "objects": {},
            "fixtures": fixtures,
            "order": [f"button{i}" for i in order],
            "colours": {f"button{i}": c for i, c in enumerate(colours)},
        }

    def stages(self, layout):
        def pressed(name: str):
            return lambda e: e.button_depth(name) > S.BUTTON_PRESSED

        names = ("press the first button in the order", "press the second", "press the third")
        return [Stage(n, w, pressed(b)) for n, w, b in zip(names, (3, 3, 4), layout["order"])]

    def watch(self, layout):
        # A press is a cap going past BUTTON_PRESSED after having come back above
        # BUTTON_RELEASED (hysteresis: a cap held down or bouncing is one press). A press of
        # any button but the next one in the order ends credit: pressing everything in a fixed
        # order must not pass a test of reading the order.
        order, colours = list(layout["order"]), layout["colours"]
        down = dict.fromkeys(sorted(colours), False)

        def watch(e: SimEnv, reached: int) -> str | None:
            wrong = None
            for b in down:
                depth = e.button_depth(b)
                if not down[b] and depth > S.BUTTON_PRESSED:
                    down[b] = True
                    if b != order[reached]:
                        wrong = b
                elif down[b] and depth < S.BUTTON_RELEASED:
                    down[b] = False
            return None if wrong is None else f"pressed {colours[wrong]} out of order"

        return watch

    def instruction_fields(self, layout):
        first, second, third = (layout["colours"][b] for b in layout["order"])
        return {"first": first, "second": second, "third": third}


class SortByColour(Task):
    kind = "sort"
    template = "put each block in the bin of its colour ({a} and {b})"

    def elements(self, variation):
        return (
            [S.ObjectSpec(f"block{i}", "box", (BLOCK_HALF,) * 3) for i in range(2)],
            [S.FixtureSpec(f"bin{i}", "bin") for i in range(2)],
        )

    def layout(self, rng, place, unseen, variation):
        colours = pick_colours(rng, 2, unseen)
        fixtures = {
            f"bin{i}": {
                "pos": [*place(0.075, gap=0.01), 0.0],
                "yaw": float(rng.uniform(-0.3, 0.3)),
                "colour": c,
            }
            for i, c in enumerate(colours)
        }
        perm = rng.permutation(2)  # which block has which colour is independent of the bins
        objects = {
            f"block{i}": {
                "pos": [*place(0.03, gap=0.04), BLOCK_HALF],
                "yaw": float(rng.uniform(-np.pi / 4, np.pi / 4)),
                "colour": colours[perm[i]],
            }
            for i in range(2)
        }
        match = {f"block{i}": f"bin{perm[i]}" for i in range(2)}
        return {"objects": objects, "fixtures": fixtures, "match": match, "colours": colours}

    def progress(self, layout):
        # Identity: a block that comes to rest in the wrong bin is latched as missorted; it
        # never counts as lifted or sorted again, so the stages that need it (the other lift,
        # sorting both) can no longer be credited.
        match = layout["match"]
        missorted: set[str] = set()

        def ok(b: str) -> bool:
            return b not in missorted

        def n_sorted(e: SimEnv) -> int:
            return sum(in_bin(e, b, match[b]) for b in match if ok(b))

        def lift_next(e: SimEnv) -> bool:
            return n_sorted(e) >= 1 and any(
                lifted(e, b) for b in match if ok(b) and not in_bin(e, b, match[b])
            )

        def watch(e: SimEnv, reached: int) -> None:
            for b in match:
                if ok(b) and any(in_bin(e, b, other) for other in set(match.values()) - {match[b]}):
                    missorted.add(b)

        stages = [
            Stage("lift a block", 2, lambda e: any(lifted(e, b) for b in match if ok(b))),
            Stage("sort one block", 3, lambda e: n_sorted(e) >= 1),
            Stage("lift the other block", 2, lift_next),
            Stage("sort both blocks", 3, lambda e: n_sorted(e) == 2),
        ]
        return TaskProgress(stages, watch)

    def stages(self, layout):
        return list(self.progress(layout).stages)

    def instruction_fields(self, layout):
        a, b = layout["colours"]
        return {"a": a, "b": b}


class PegInsertion(Task):
    kind = "peg"
    template = "insert the peg into the square hole"

    def elements(self, variation):
        return [S.ObjectSpec("peg", "box", S.PEG_HALF, mass=0.04)], [S.FixtureSpec("hole", "hole")]

    def layout(self, rng, place, unseen, variation):
        hole = place(0.065, gap=0.05)
        peg = place(0.03, gap=0.05)
        return {
            "objects": {
                "peg": {
                    "pos": [*peg, S.PEG_HALF[2]],
                    "yaw": float(rng.uniform(-np.pi / 4, np.pi / 4)),
                    "colour": "yellow",
                }
            },
            "fixtures": {
                "hole": {
                    "pos": [*hole, 0.0],
                    "yaw": float(rng.uniform(-np.pi / 4, np.pi / 4)),
                    "colour": None,
                }
            },
        }

    def stages(self, layout):
        def bottom(e: SimEnv) -> float:
            return float(e.body_pos("peg")[2] - S.PEG_HALF[2])

        def xy_err(e: SimEnv) -> float:
            return float(np.linalg.norm((e.body_pos("peg") - e.body_pos("hole"))[:2]))

        def aligned(e: SimEnv) -> bool:
            return (
                xy_err(e) < 0.004
                and yaw_error(e.body_yaw("peg"), e.body_yaw("hole")) < np.deg2rad(8)
                and bottom(e) < S.HOLE_HEIGHT + 0.03
            )

        def inserted(e: SimEnv) -> bool:
            return xy_err(e) < S.HOLE_HALF and bottom(e) < S.HOLE_HEIGHT - 0.02

        return [
            Stage("grasp the peg", 2, lambda e: e.held("peg")),
            Stage("lift the peg", 2, lambda e: e.held("peg") and bottom(e) > 0.03),
            Stage("align it above the hole", 2, aligned),
            Stage("insert it", 4, inserted),
        ]

    def instruction_fields(self, layout):
        return {}


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        PickPlace("pick_place_bin", "diverse", description="pick a block and place it in a bin"),
        PushToTarget("push_to_target", "diverse", description="push a puck onto a target disc"),
        Stack("stack_blocks", "diverse", description="stack one block on another"),
        PressButtons(
            "press_buttons_in_order",
            "reasoning",
            description="press three buttons in the named colour order",
        ),
        SortByColour(
            "sort_by_colour", "reasoning", description="put each block in the bin of its colour"
        ),
        PegInsertion(
            "peg_insertion",
            "dexterous",
            description="insert a square peg into a hole, 2.5 mm clearance per side",
        ),
        PressButtons(
            "gen_press_buttons_unseen",
            "generalization",
            {"unseen": True, "lighting": 0.6, "camera_jitter": 0.015},
            description="button order task; test seeds: unseen colours, held-out orders and lighting",
        ),
        PickPlace(
            "gen_pick_place_distractors",
            "generalization",
            {"distractors": 3, "unseen": True, "lighting": 0.6, "camera_jitter": 0.015},
            description="pick-place among distractors; test seeds: unseen distractor shapes, colours and lighting",
        ),
        SortByColour(
            "gen_sort_unseen_colours",
            "generalization",
            {"unseen": True, "lighting": 0.6, "camera_jitter": 0.015},
            description="sort by colour; test seeds: unseen colours and lighting",
        ),
    )
}


def get_task(name: str) -> Task:
    """Look a task up by name, with a "did you mean" hint on a typo."""
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(str(name), TASKS, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown task {name!r}{hint} Tasks: {', '.join(TASKS)}")


def tasks_in(family: str) -> list[str]:
    """Task names of one family (or every task for "all")."""
    if family == "all":
        return list(TASKS)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families are {FAMILIES} or 'all'")
    return [n for n, t in TASKS.items() if t.family == family]
