"""Scripted experts that solve every task and cut their trajectories into semantic events.

An expert is a sequence of motion primitives ("move above the red block", "close the gripper",
"push down"), each a closed-loop target on privileged state with an end condition: arriving,
a contact beginning, a button going down. A primitive is one event, so event boundaries sit
exactly where the gripper command changes or a contact/press is detected; primitives longer
than `H_MAX` steps are cut into equal parts. Every event carries the four caption tracks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from robot.sim import scene as S
from robot.sim.captions import Captioner
from robot.sim.env import SimEnv
from robot.sim.tasks import BLOCK_HALF, yaw_error
from robot.types import Episode, Event

H_MAX = 32  # longest event, control steps (3.2 s at 10 Hz)
MIN_EVENT = 3  # shortest event
MAX_EPISODE = 400  # safety cap on an expert rollout

FAST, SLOW, CREEP = 0.025, 0.012, 0.006  # m per control step
TURN = np.deg2rad(12.0)  # rad per control step
HOVER = 0.12  # grip-point height for moving between objects
FINGERTIP_BELOW_GRIP = S.FINGER_HALF[2] - S.FINGER_Z  # fingertips are 1 cm below the grip point


@dataclass
class Primitive:
    """One motion primitive = one candidate event."""

    subtask: str
    action: str
    target: Callable[[SimEnv], np.ndarray]  # -> (4,) x, y, z, yaw; re-evaluated every step
    gripper: float
    # What changes at its end: "arrive" | "grasp" | "release" | "contact" | "press" | "end".
    boundary: str
    until: Callable[[SimEnv], bool] | None = None  # semantic end condition; default: target reached
    speed: float = FAST
    min_steps: int = MIN_EVENT
    max_steps: int = 60
    tol: float = 0.004


@dataclass
class ExpertStep:
    """One executed control step of an expert rollout."""

    t: int
    obs: dict  # the observation the action was chosen on
    action: np.ndarray  # (7,) command sent
    progress: int  # Task Progress after the step
    contacts: frozenset[str]  # bodies the gripper touches after the step
    primitive: int  # index of the primitive (before long ones are split)


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def grasp_yaw(object_yaw: float, period: float = np.pi / 2) -> float:
    """Gripper yaw aligned with a symmetric object, chosen closest to zero."""
    return float((object_yaw + period / 2) % period - period / 2)


def _toward(cmd: np.ndarray, target: np.ndarray, speed: float) -> np.ndarray:
    """Step the commanded (x, y, z, yaw) toward the target at bounded speeds."""
    out = cmd.copy()
    d = target[:3] - cmd[:3]
    n = float(np.linalg.norm(d))
    out[:3] = target[:3] if n <= speed else cmd[:3] + d * (speed / n)
    dy = _wrap(target[3] - cmd[3])
    out[3] = cmd[3] + float(np.clip(dy, -TURN, TURN))
    return out


class ExpertRollout:
    """Runs a task's expert on `env`, one step per iteration; `events` is complete at the end."""

    def __init__(self, env: SimEnv, render: bool = False, caption_seed: int | None = None) -> None:
        self.env = env
        self.render = render
        self.say = Captioner(env.seed if caption_seed is None else caption_seed)
        self.events: list[Event] = []
        self.task_caption = ""
        self.actions: list[np.ndarray] = []  # (7,) commands sent, one per step
        self._spans: list[tuple[int, int, Primitive]] = []

    def __iter__(self) -> Iterator[ExpertStep]:
        env = self.env
        obs = env.observe(render=self.render)
        self._initial = env.target
        cmd = np.r_[env.target[:3], env.target[5]]  # x, y, z, yaw
        t = 0
        for k, prim in enumerate(PLANS[env.task.kind](env, self)):
            start, n = t, 0
            while True:
                goal = np.asarray(prim.target(env), dtype=np.float64)
                cmd = _toward(cmd, goal, prim.speed)
                nxt = env.step(np.r_[cmd[:3], 0.0, 0.0, cmd[3], prim.gripper], render=self.render)
                self.actions.append(env.target)
                n += 1
                yield ExpertStep(
                    t, obs, env.target, env.task_progress(), frozenset(env.gripper_contacts()), k
                )
                obs, t = nxt, t + 1
                if n >= prim.max_steps or t >= MAX_EPISODE:
                    break
                if n < prim.min_steps:
                    continue
                if prim.until is not None:
                    if prim.until(env):
                        break
                elif (
                    np.allclose(cmd, goal, atol=1e-6)
                    and np.linalg.norm(env.state()[:3] - goal[:3]) < prim.tol
                ):
                    break
            self._spans.append((start, t, prim))
            if t >= MAX_EPISODE:
                break
        self.events = self._cut_events()

    def _cut_events(self) -> list[Event]:
        """Primitives -> events; long primitives split into equal parts of at most H_MAX."""
        events = []
        for start, end, prim in self._spans:
            parts = -(-(end - start) // H_MAX)
            bounds = np.linspace(start, end, parts + 1).round().astype(int)
            for i in range(parts):
                a, b = int(bounds[i]), int(bounds[i + 1])
                before = self.actions[a - 1] if a > 0 else self._initial
                events.append(
                    Event(
                        start=a,
                        end=b,
                        task=self.task_caption,
                        subtask=prim.subtask,
                        action=prim.action,
                        segment=self.say.segment(before, self.actions[b - 1]),
                        boundary=prim.boundary if i == parts - 1 else "arrive",
                    )
                )
        return events


def run_expert(env: SimEnv, render: bool = False) -> ExpertRollout:
    """The expert for env's task from its current (reset) state; iterate it to run."""
    return ExpertRollout(env, render=render)


# ---------------------------------------------------------------------- shared primitive recipes


def _pose_of(
    env: SimEnv, body: str, z: float, yaw: float | None = None
) -> Callable[[SimEnv], np.ndarray]:
    """Closed-loop target above a body at height z (yaw fixed at plan time)."""
    y0 = grasp_yaw(env.body_yaw(body)) if yaw is None else yaw
    return lambda e: np.r_[e.body_pos(body)[:2], z, y0]


def _hold(e: SimEnv) -> np.ndarray:
    return np.r_[e.target[:3], e.target[5]]


def _at(xyz: Sequence[float], yaw: float) -> Callable[[SimEnv], np.ndarray]:
    p = np.r_[np.asarray(xyz, float), yaw]
    return lambda e: p


def _gripper_closed(e: SimEnv) -> bool:
    return e.state()[6] > 0.97


def pick(
    r: ExpertRollout, obj: str, name: str, subtask: str, grip_z: float, lift_z: float = 0.15
) -> Iterator[Primitive]:
    """Move above, descend, close, lift."""
    env, say = r.env, r.say
    yaw = grasp_yaw(env.body_yaw(obj))
    yield Primitive(
        subtask, say.action("move_above", obj=name), _pose_of(env, obj, HOVER, yaw), 0.0, "arrive"
    )
    yield Primitive(
        subtask,
        say.action("descend_grasp", obj=name),
        _pose_of(env, obj, grip_z, yaw),
        0.0,
        "grasp",
        speed=SLOW,
    )
    yield Primitive(
        subtask,
        say.action("close"),
        _hold,
        1.0,
        "contact",
        until=lambda e: e.held(obj) and _settled(e),
        min_steps=4,
        max_steps=10,
    )
    yield Primitive(
        subtask,
        say.action("lift", obj=name),
        lambda e: np.r_[e.target[:2], lift_z, e.target[5]],
        1.0,
        "arrive",
    )


def _settled(e: SimEnv) -> bool:
    """Finger joints have stopped moving."""
    dofs = [e.model.joint(f"finger_{side}").dofadr[0] for side in ("left", "right")]
    return bool(np.all(np.abs(e.data.qvel[dofs]) < 0.01))


def close_fingers(r: ExpertRollout) -> Primitive:
    """Shut the empty gripper first: a closed hand pushes and presses with its fingertips."""
    return Primitive(
        r.say.subtask("prepare"),
        r.say.action("close"),
        _hold,
        1.0,
        "arrive",
        min_steps=3,
        until=_gripper_closed,
        max_steps=6,
    )


def release(r: ExpertRollout, subtask: str, retreat_z: float = 0.15) -> Iterator[Primitive]:
    """Open the gripper, then move straight up."""
    say = r.say
    yield Primitive(
        subtask,
        say.action("open"),
        _hold,
        0.0,
        "release",
        min_steps=3,
        max_steps=5,
        until=lambda e: e.state()[6] < 0.2,
    )
    yield Primitive(
        subtask,
        say.action("retreat"),
        lambda e: np.r_[e.target[:2], retreat_z, e.target[5]],
        0.0,
        "end",
    )


def _over(env: SimEnv, obj: str, place: str, z: float) -> Callable[[SimEnv], np.ndarray]:
    """Grip-point target that puts the held object's centre over `place`, correcting grasp offset."""

    def f(e: SimEnv) -> np.ndarray:
        offset = e.body_pos(obj)[:2] - e.state()[:2]
        return np.r_[e.body_pos(place)[:2] - offset, z, e.target[5]]

    return f


# ---------------------------------------------------------------------- per-task plans


def plan_pick_place(env: SimEnv, r: ExpertRollout) -> Iterator[Primitive]:
    c = env.layout["colour"]
    r.task_caption = r.say.task("pick_place", colour=c)
    block, bin_ = f"{c} block", "bin"
    sub1 = r.say.subtask("pick", obj=block)
    sub2 = r.say.subtask("place_bin", obj=block, target=bin_)
    yield from pick(r, "block", block, sub1, grip_z=BLOCK_HALF)
    yield Primitive(
        sub2,
        r.say.action("carry", obj=block, target=bin_),
        _over(env, "block", "bin", 0.15),
        1.0,
        "arrive",
    )
    yield Primitive(
        sub2,
        r.say.action("lower_into", obj=block, target=bin_),
        _over(env, "block", "bin", BLOCK_HALF + 0.012),
        1.0,
        "release",
        speed=SLOW,
    )
    yield from release(r, sub2)


def plan_push(env: SimEnv, r: ExpertRollout) -> Iterator[Primitive]:
    c = env.layout["colour"]
    r.task_caption = r.say.task("push", colour=c)
    puck, target = f"{c} puck", "target"
    sub = r.say.subtask("push", obj=puck, target=target)
    pad = 0.025 + S.FINGER_HALF[0] + 0.004  # puck radius + half finger width + margin

    def direction(e: SimEnv) -> np.ndarray:
        d = (e.body_pos("target") - e.body_pos("puck"))[:2]
        return d / max(np.linalg.norm(d), 1e-6)

    def face_yaw(u: np.ndarray, near: float) -> float:
        """Gripper yaw whose closed-finger face is normal to u, the one of the two (180 deg
        apart) nearest to `near`, so the face never swings around mid-push."""
        a = float(np.arctan2(u[1], u[0]))
        return near + float((a - near + np.pi / 2) % np.pi - np.pi / 2)

    def dist(e: SimEnv) -> float:
        return float(np.linalg.norm((e.body_pos("puck") - e.body_pos("target"))[:2]))

    u0 = direction(env)
    behind = env.body_pos("puck")[:2] - u0 * (pad + 0.03)
    yield close_fingers(r)
    yield Primitive(
        sub,
        r.say.action("move_behind", obj=puck),
        _at([*behind, HOVER], face_yaw(u0, 0.0)),
        1.0,
        "arrive",
    )
    yield Primitive(
        sub,
        r.say.action("lower_behind", obj=puck),
        _at([*behind, 0.012], face_yaw(u0, 0.0)),
        1.0,
        "arrive",
        speed=SLOW,
    )

    def push_point(advance: float) -> Callable[[SimEnv], np.ndarray]:
        """Behind the puck on the line to the target, `advance` into it (never past the target)."""

        def f(e: SimEnv) -> np.ndarray:
            u = direction(e)
            p = e.body_pos("puck")[:2] - u * (pad - min(advance, dist(e)))
            return np.r_[p, 0.012, face_yaw(u, e.target[5])]

        return f

    yield Primitive(
        sub,
        r.say.action("approach", obj=puck),
        push_point(0.01),
        1.0,
        "contact",
        speed=SLOW,
        until=lambda e: e.gripper_touches("puck"),
        max_steps=12,
    )
    yield Primitive(
        sub,
        r.say.action("push", obj=puck, target=target),
        push_point(0.012),
        1.0,
        "contact",
        speed=0.008,
        until=lambda e: dist(e) < 0.008,
        max_steps=50,
    )
    away = np.r_[env.target[:2] - direction(env) * 0.02, HOVER, env.target[5]]
    yield Primitive(sub, r.say.action("retreat"), lambda e: away, 1.0, "end")


def plan_stack(env: SimEnv, r: ExpertRollout) -> Iterator[Primitive]:
    top, base = f"{env.layout['top']} block", f"{env.layout['base']} block"
    r.task_caption = r.say.task("stack", top=env.layout["top"], base=env.layout["base"])
    sub1 = r.say.subtask("pick", obj=top)
    sub2 = r.say.subtask("place_on", obj=top, target=base)
    yield from pick(r, "top", top, sub1, grip_z=BLOCK_HALF)
    yaw = grasp_yaw(env.body_yaw("base"))
    yield Primitive(
        sub2,
        r.say.action("carry", obj=top, target=base),
        lambda e: np.r_[_over(e, "top", "base", 0.15)(e)[:3], yaw],
        1.0,
        "arrive",
    )
    yield Primitive(
        sub2,
        r.say.action("lower_onto", obj=top, target=base),
        lambda e: np.r_[
            _over(e, "top", "base", 0.0)(e)[:2], 2 * BLOCK_HALF + BLOCK_HALF - 0.004, yaw
        ],
        1.0,
        "contact",
        speed=SLOW,
        until=lambda e: "base" in e.contacts("top"),
    )
    yield from release(r, sub2)


def plan_buttons(env: SimEnv, r: ExpertRollout) -> Iterator[Primitive]:
    colours = [env.layout["colours"][b] for b in env.layout["order"]]
    r.task_caption = r.say.task("buttons", *colours)
    cap_top = S.BUTTON_BASE_TOP + 2 * S.BUTTON_CAP_HALF
    touch_z = cap_top + FINGERTIP_BELOW_GRIP  # grip point when the fingertips touch the cap
    yield close_fingers(r)
    for b, c in zip(env.layout["order"], colours):
        name = f"{c} button"
        sub = r.say.subtask("press", obj=name)
        xy = env.body_pos(b)[:2]
        yield Primitive(
            sub, r.say.action("move_above", obj=name), _at([*xy, 0.08], 0.0), 1.0, "arrive"
        )
        yield Primitive(
            sub,
            r.say.action("descend_touch", obj=name),
            _at([*xy, touch_z - 0.01], 0.0),
            1.0,
            "contact",
            speed=SLOW,
            until=lambda e, b=b: e.gripper_touches(f"{b}_cap"),
        )
        yield Primitive(
            sub,
            r.say.action("push_down", obj=name),
            _at([*xy, touch_z - S.BUTTON_TRAVEL - 0.004], 0.0),
            1.0,
            "press",
            speed=0.005,
            until=lambda e, b=b: e.button_depth(b) > S.BUTTON_PRESSED + 0.001,
            max_steps=12,
        )
        yield Primitive(sub, r.say.action("retreat"), _at([*xy, 0.08], 0.0), 1.0, "arrive")


def plan_sort(env: SimEnv, r: ExpertRollout) -> Iterator[Primitive]:
    r.task_caption = r.say.task("sort")
    match = env.layout["match"]
    colour = {b: env.layout["objects"][b]["colour"] for b in match}
    # Nearest block to the gripper first.
    order = sorted(
        match, key=lambda b: float(np.linalg.norm(env.body_pos(b)[:2] - env.state()[:2]))
    )
    for b in order:
        name, bin_name = f"{colour[b]} block", f"{colour[b]} bin"
        sub1 = r.say.subtask("pick", obj=name)
        sub2 = r.say.subtask("place_bin", obj=name, target=bin_name)
        yield from pick(r, b, name, sub1, grip_z=BLOCK_HALF)
        yield Primitive(
            sub2,
            r.say.action("carry", obj=name, target=bin_name),
            _over(env, b, match[b], 0.15),
            1.0,
            "arrive",
        )
        yield Primitive(
            sub2,
            r.say.action("lower_into", obj=name, target=bin_name),
            _over(env, b, match[b], BLOCK_HALF + 0.012),
            1.0,
            "release",
            speed=SLOW,
        )
        yield from release(r, sub2)


def plan_peg(env: SimEnv, r: ExpertRollout) -> Iterator[Primitive]:
    r.task_caption = r.say.task("peg")
    peg, hole = "peg", "square hole"
    sub1 = r.say.subtask("pick", obj=peg)
    sub2 = r.say.subtask("insert", obj=peg, target=hole)
    top = 2 * S.PEG_HALF[2]
    grip_z = top - 0.018  # grasp near the top so the fingers stay above the hole's rim
    yield from pick(r, "peg", peg, sub1, grip_z=grip_z, lift_z=grip_z + S.HOLE_HEIGHT + 0.05)
    hover = grip_z + S.HOLE_HEIGHT + 0.05

    def aligned_target(z_bottom: float | None) -> Callable[[SimEnv], np.ndarray]:
        def f(e: SimEnv) -> np.ndarray:
            offset = e.body_pos("peg")[:2] - e.state()[:2]
            turn = _wrap(grasp_yaw(e.body_yaw("hole") - e.body_yaw("peg")))
            below = e.state()[2] - (
                e.body_pos("peg")[2] - S.PEG_HALF[2]
            )  # grip point above peg bottom
            z = hover if z_bottom is None else z_bottom + below
            return np.r_[e.body_pos("hole")[:2] - offset, z, e.target[5] + turn]

        return f

    def aligned(e: SimEnv) -> bool:
        err = np.linalg.norm((e.body_pos("peg") - e.body_pos("hole"))[:2])
        return bool(
            err < 0.0015 and yaw_error(e.body_yaw("peg"), e.body_yaw("hole")) < np.deg2rad(2)
        )

    yield Primitive(
        sub2,
        r.say.action("carry", obj=peg, target=hole),
        aligned_target(None),
        1.0,
        "arrive",
        tol=0.003,
    )
    yield Primitive(
        sub2,
        r.say.action("align", obj=peg, target=hole),
        aligned_target(S.HOLE_HEIGHT + 0.006),
        1.0,
        "arrive",
        speed=SLOW,
        until=lambda e: (
            aligned(e) and e.state()[2] < aligned_target(S.HOLE_HEIGHT + 0.006)(e)[2] + 0.003
        ),
        max_steps=30,
    )
    yield Primitive(
        sub2,
        r.say.action("insert", obj=peg, target=hole),
        aligned_target(0.008),
        1.0,
        "release",
        speed=CREEP,
        max_steps=30,
    )
    yield from release(r, sub2)


PLANS: dict[str, Callable[[SimEnv, ExpertRollout], Iterator[Primitive]]] = {
    "pick_place": plan_pick_place,
    "push": plan_push,
    "stack": plan_stack,
    "buttons": plan_buttons,
    "sort": plan_sort,
    "peg": plan_peg,
}


# ---------------------------------------------------------------------- recording and baselines


def record_episode(
    task: str,
    seed: int,
    resolution: int = 64,
    cameras: Sequence[str] = ("front", "left", "right"),
    wrist: bool = False,
    variation: dict | None = None,
    env: SimEnv | None = None,
) -> Episode:
    """Run the task's expert with rendering and return the recorded, event-annotated episode.

    Pass an `env` built for the same task, resolution and cameras to reuse its renderer across
    episodes (the fast path for dataset generation); it is reset to `seed`.
    """
    if env is None:
        env = SimEnv(
            task,
            seed=seed,
            resolution=resolution,
            cameras=cameras,
            wrist=wrist,
            variation=variation,
        )
        own = True
    else:
        if env.task.name != task:
            raise ValueError(f"env is for task {env.task.name!r}, asked to record {task!r}")
        env.reset(seed, render=False)
        own = False
    try:
        rollout = run_expert(env, render=True)
        frames: dict[str, list[np.ndarray]] = {c: [] for c in env.camera_names}
        states, actions, progress = [], [], []
        for st in rollout:
            for c in env.camera_names:
                frames[c].append(st.obs["images"][c])
            states.append(st.obs["state"])
            actions.append(st.action)
            progress.append(st.progress)
        variation_used = {
            **env.variation,
            "split": env.split,
            "layout": {k: v for k, v in env.layout.items() if k not in ("objects", "fixtures")},
        }
        ep = Episode(
            task=task,
            family=env.task.family,
            seed=int(seed),
            fps=env.fps,
            frames={c: np.stack(f) for c, f in frames.items()},
            states=np.stack(states).astype(np.float32),
            actions=np.stack(actions).astype(np.float32),
            events=rollout.events,
            cameras=env.cameras,
            instruction=env.instruction,
            progress=np.asarray(progress, dtype=np.int64),
            variation=variation_used,
        )
        ep.validate()
        return ep
    finally:
        if own:
            env.close()


def random_action(env: SimEnv, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random absolute target in the workspace with a random gripper command."""
    xyz = rng.uniform(env.workspace_min, env.workspace_max)
    yaw = rng.uniform(-np.pi / 2, np.pi / 2)
    return np.r_[xyz, 0.0, 0.0, yaw, float(rng.integers(2))]


def run_policy(env: SimEnv, policy: Callable[[SimEnv], np.ndarray], steps: int) -> list[int]:
    """Roll out `policy(env) -> action` without rendering; returns Task Progress after each step."""
    out = []
    for _ in range(steps):
        env.step(policy(env), render=False)
        out.append(env.task_progress())
    return out


def ignore_instruction(env: SimEnv) -> None:
    """Make the next expert rollout on `env` ignore the instruction, from a reset state.

    The expert then acts on a fixed guess for what only the instruction says: the buttons
    are pressed in a fixed order (every button, three rounds), each block goes to the bin of
    the same index. Everything else (seeing where things are, grasping) stays expert, so the
    score measures what reading the instruction is worth. Task Progress still scores the real
    instruction: the scorer keeps its own copy of the layout.
    """
    lay = env.layout
    if env.task.kind == "buttons":
        env.layout = {**lay, "order": sorted(lay["colours"]) * 3}
    elif env.task.kind == "sort":
        env.layout = {**lay, "match": {b: f"bin{b[-1]}" for b in sorted(lay["match"])}}


def blind_score(task: str, seed: int, env: SimEnv | None = None) -> int:
    """Final Task Progress score of the instruction-ignoring expert (`ignore_instruction`);
    the rollout stops once no further credit is possible."""
    own = env is None
    env = SimEnv(task, seed=seed) if env is None else env
    try:
        env.reset(seed, render=False)
        ignore_instruction(env)
        assert env.progress is not None
        for _ in run_expert(env):
            if env.progress.final:
                break
        return env.task_progress()
    finally:
        if own:
            env.close()


@dataclass
class RolloutStats:
    """Per-rollout summary used by tests and docs."""

    task: str
    seed: int
    score: int
    steps: int
    events: int
    event_lengths: list[int] = field(default_factory=list)


def expert_score(
    task: str, seed: int, variation: dict | None = None, env: SimEnv | None = None
) -> RolloutStats:
    """Run the expert without rendering and report its final Task Progress score.

    Pass an `env` of the same task to reuse it across seeds (its variation is kept)."""
    if env is None:
        env = SimEnv(task, seed=seed, variation=variation)
    elif env.task.name != task:
        raise ValueError(f"env is for task {env.task.name!r}, asked to score {task!r}")
    env.reset(seed, render=False)
    rollout = run_expert(env)
    steps = sum(1 for _ in rollout)
    return RolloutStats(
        task,
        seed,
        env.task_progress(),
        steps,
        len(rollout.events),
        [e.length for e in rollout.events],
    )
