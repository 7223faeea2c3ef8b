"""The MuJoCo tabletop, built as MJCF text from Python (no external assets).

The scene's *structure* (which bodies exist) depends on the task and its variation knobs and
is fixed for an environment; everything a seed changes (poses, colours, lights, camera jitter)
is written into the compiled model/data at reset, so one renderer serves every episode.

Frames: the table top is z = 0, x points away from the robot base (forward), y to the robot's
left, z up. The gripper frame sits at the grip point (between the fingertips, 1 cm above their
lower ends); with roll = pitch = yaw = 0 the fingers point straight down and open along y.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Physics: 2 ms steps, 50 per 10 Hz control period.
TIMESTEP = 0.002
CONTROL_HZ = 10
SUBSTEPS = round(1.0 / (CONTROL_HZ * TIMESTEP))

# Gripper geometry (m). Finger joints measure each inner face's distance from the centre line.
FINGER_OPEN = 0.04  # joint value when open: 8 cm between the pads
FINGER_SQUEEZE = -0.01  # actuator target when closed: pads keep squeezing what they hold
FINGER_HALF = (0.011, 0.006, 0.0275)  # finger box half-sizes (x, y thickness, z)
FINGER_Z = 0.0175  # finger box centre above the grip point
PALM_Z = 0.055
TOUCH_MARGIN = 0.001  # the gripper "touches" what is within 1 mm of it

# Workspace of the grip point (m); the robot clips targets to it.
WORKSPACE_MIN = np.array([-0.22, -0.22, 0.0], dtype=np.float64)
WORKSPACE_MAX = np.array([0.22, 0.22, 0.30], dtype=np.float64)
HOME = np.array([0.0, 0.0, 0.18, 0.0, 0.0, 0.0, 0.0], dtype=np.float64)

# Named colours. The `unseen` ones never appear on training seeds of generalization tasks.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "green": (0.10, 0.68, 0.16),
    "blue": (0.12, 0.26, 0.92),
    "yellow": (0.96, 0.84, 0.08),
    "purple": (0.56, 0.16, 0.78),
    "orange": (1.00, 0.50, 0.00),
    "cyan": (0.00, 0.80, 0.84),
    "pink": (1.00, 0.45, 0.72),
}
TRAIN_COLOURS = ("red", "green", "blue", "yellow")
UNSEEN_COLOURS = ("purple", "orange", "cyan", "pink")

TABLE_RGBA = (0.62, 0.58, 0.52, 1.0)
GRIPPER_RGBA = (0.22, 0.22, 0.25, 1.0)
FIXTURE_RGBA = (0.88, 0.88, 0.86, 1.0)

# Fixed cameras: position and look-at point (m), vertical field of view (deg). They all see the
# workspace centre from different sides, so their views overlap partly.
CAMERA_RIG: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    "front": ((0.46, 0.0, 0.50), (0.0, 0.0, 0.06), 42.0),
    "left": ((0.08, 0.46, 0.50), (0.0, 0.0, 0.06), 42.0),
    "right": ((0.08, -0.46, 0.50), (0.0, 0.0, 0.06), 42.0),
}
WRIST_CAMERA = "wrist"
MAX_RESOLUTION = 256
MAX_VIEWS = len(CAMERA_RIG) + 1  # views rendered side by side into one offscreen buffer


@dataclass(frozen=True)
class ObjectSpec:
    """A free (movable) object. `size` is the geom size in MJCF convention."""

    name: str
    shape: str  # "box" | "cylinder" | "sphere" | "capsule"
    size: tuple[float, ...]
    mass: float = 0.06


@dataclass(frozen=True)
class FixtureSpec:
    """A static fixture moved at reset by editing its body pose: bin, button, hole, target."""

    name: str
    kind: str  # "bin" | "button" | "hole" | "target"


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...] = ()
    fixtures: tuple[FixtureSpec, ...] = ()
    resolution: int = 64
    wrist: bool = False
    shadows: bool = False  # shadows cost ~5x render time with software GL
    antialias: bool = False  # 4x multisampling: smoother edges, ~4x render time with software GL
    lights: int = 2
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 16 <= self.resolution <= MAX_RESOLUTION:
            raise ValueError(f"resolution must be in [16, {MAX_RESOLUTION}], got {self.resolution}")
        names = [o.name for o in self.objects] + [f.name for f in self.fixtures]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate scene element names: {names}")
        for f in self.fixtures:
            if f.kind not in FIXTURE_KINDS:
                raise ValueError(
                    f"fixture {f.name!r}: unknown kind {f.kind!r}; kinds are {FIXTURE_KINDS}"
                )
        for o in self.objects:
            if o.shape not in ("box", "cylinder", "sphere", "capsule"):
                raise ValueError(f"object {o.name!r}: unknown shape {o.shape!r}")


# Fixture dimensions (m).
BIN_INNER_HALF = 0.05
BIN_WALL = 0.006
BIN_HEIGHT = 0.035
BUTTON_TRAVEL = 0.012  # the cap can go down this far
BUTTON_PRESSED = 0.008  # a press = depressed past this
BUTTON_RELEASED = 0.004  # ... after having come back above this (hysteresis)
BUTTON_CAP_RADIUS = 0.022
BUTTON_BASE_TOP = 0.012  # housing top above the table
BUTTON_CAP_HALF = 0.008
HOLE_HALF = 0.0135  # inner half-width of the square hole
HOLE_OUTER_HALF = 0.045
HOLE_HEIGHT = 0.04
PEG_HALF = (0.011, 0.011, 0.035)  # 2.2 cm square peg: 2.5 mm clearance per side
TARGET_RADIUS = 0.035

FIXTURE_KINDS = ("bin", "button", "hole", "target")


def look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z) looking from `pos` at `target`, world z up.

    A MuJoCo camera looks along its -z axis with +y up in the image.
    """
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    R = np.stack([x, y, -fwd], axis=1)  # columns: camera axes in world
    return mat_to_quat(R)


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=np.float64).reshape(9))
    return q


def _f(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.atleast_1d(v))


def _gripper_xml(wrist: bool) -> str:
    fx, fy, fz = FINGER_HALF
    cam = ""
    if wrist:
        # Behind and above the fingers, tilted to see between them.
        q = look_at_quat(np.array([-0.07, 0.0, 0.10]), np.array([0.0, 0.0, -0.05]))
        cam = f'<camera name="{WRIST_CAMERA}" pos="-0.07 0 0.10" quat="{_f(q)}" fovy="70"/>'
    finger = (
        '<body name="finger_{s}" pos="0 0 0">'
        '<joint name="finger_{s}" type="slide" axis="0 {a} 0" range="0 {open}" damping="2" armature="0.01"/>'
        '<geom name="finger_{s}" type="box" size="{fx} {fy} {fz}" pos="0 {py} {pz}" '
        'class="finger"/></body>'
    )
    fingers = "".join(
        finger.format(s=s, a=a, open=FINGER_OPEN, fx=fx, fy=fy, fz=fz, py=a * fy, pz=FINGER_Z)
        for s, a in (("left", 1), ("right", -1))
    )
    return (
        f'<body name="gripper" pos="{_f(HOME[:3])}" gravcomp="1">'
        '<freejoint name="gripper"/>'
        '<inertial pos="0 0 0.06" mass="0.4" diaginertia="0.002 0.002 0.002"/>'
        f'<geom name="palm" type="box" size="0.014 {FINGER_OPEN + 2 * fy + 0.004} 0.01" '
        f'pos="0 0 {PALM_Z}" class="gripper"/>'
        '<geom name="wrist" type="cylinder" size="0.016 0.03" pos="0 0 0.095" class="gripper"/>'
        '<site name="grip" pos="0 0 0" size="0.004" rgba="1 1 1 0" group="4"/>'
        f"{cam}{fingers}</body>"
    )


def _object_xml(o: ObjectSpec) -> str:
    return (
        f'<body name="{o.name}" pos="0 0 -1"><freejoint name="{o.name}"/>'
        f'<geom name="{o.name}" type="{o.shape}" size="{_f(o.size)}" mass="{o.mass}" class="object"/>'
        "</body>"
    )


def _fixture_xml(f: FixtureSpec) -> str:
    n = f.name
    if f.kind == "bin":
        h, w, z = BIN_INNER_HALF, BIN_WALL, BIN_HEIGHT / 2
        o = h + w  # wall centre offset
        walls = [
            (f"{o} 0 {z}", f"{w} {o + w} {z}"),
            (f"{-o} 0 {z}", f"{w} {o + w} {z}"),
            (f"0 {o} {z}", f"{h} {w} {z}"),
            (f"0 {-o} {z}", f"{h} {w} {z}"),
        ]
        geoms = "".join(
            f'<geom name="{n}_wall{i}" type="box" pos="{p}" size="{s}" class="fixture"/>'
            for i, (p, s) in enumerate(walls)
        )
        floor = f'<geom name="{n}_floor" type="box" pos="0 0 0.002" size="{h} {h} 0.002" class="fixture"/>'
        return f'<body name="{n}" pos="0 0 0">{floor}{geoms}</body>'
    if f.kind == "button":
        cap_z = BUTTON_BASE_TOP + BUTTON_CAP_HALF
        return (
            f'<body name="{n}" pos="0 0 0">'
            f'<geom name="{n}_base" type="cylinder" size="0.032 {BUTTON_BASE_TOP / 2}" '
            f'pos="0 0 {BUTTON_BASE_TOP / 2}" class="fixture"/>'
            f'<body name="{n}_cap" pos="0 0 {cap_z}" gravcomp="1">'
            f'<joint name="{n}" type="slide" axis="0 0 1" range="{-BUTTON_TRAVEL} 0" '
            'stiffness="250" springref="0" damping="3"/>'
            f'<geom name="{n}_cap" type="cylinder" size="{BUTTON_CAP_RADIUS} {BUTTON_CAP_HALF}" '
            'mass="0.02" class="object"/></body></body>'
        )
    if f.kind == "hole":
        a, o, z = HOLE_HALF, HOLE_OUTER_HALF, HOLE_HEIGHT / 2
        m = (a + o) / 2  # wall centre offset
        t = (o - a) / 2  # wall half thickness
        walls = [
            (f"{m} 0 {z}", f"{t} {o} {z}"),
            (f"{-m} 0 {z}", f"{t} {o} {z}"),
            (f"0 {m} {z}", f"{a} {t} {z}"),
            (f"0 {-m} {z}", f"{a} {t} {z}"),
        ]
        return (
            f'<body name="{n}" pos="0 0 0">'
            + "".join(
                f'<geom name="{n}_wall{i}" type="box" pos="{p}" size="{s}" class="fixture"/>'
                for i, (p, s) in enumerate(walls)
            )
            + "</body>"
        )
    # target: a flat disc drawn on the table, no collision.
    return (
        f'<body name="{n}" pos="0 0 0"><geom name="{n}" type="cylinder" '
        f'size="{TARGET_RADIUS} 0.0008" pos="0 0 0.0008" contype="0" conaffinity="0" '
        'rgba="0.1 0.6 0.2 1"/></body>'
    )


def build_mjcf(spec: SceneSpec) -> str:
    """The full MJCF for a scene spec; poses and colours are placeholders set at reset."""
    cams = []
    for name, (pos, target, fovy) in CAMERA_RIG.items():
        q = look_at_quat(np.array(pos), np.array(target))
        cams.append(f'<camera name="{name}" pos="{_f(pos)}" quat="{_f(q)}" fovy="{fovy}"/>')
    lights = [
        '<light name="key" pos="0.3 0.3 1.2" dir="-0.25 -0.25 -1" directional="true" '
        f'diffuse="0.65 0.65 0.65" specular="0.1 0.1 0.1" castshadow="{str(spec.shadows).lower()}"/>',
        '<light name="fill" pos="-0.4 -0.3 1.0" dir="0.4 0.3 -1" directional="true" '
        'diffuse="0.3 0.3 0.3" specular="0 0 0" castshadow="false"/>',
    ][: spec.lights]
    res = spec.resolution
    return f"""<mujoco model="wallwm_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" cone="elliptic" impratio="10" integrator="implicitfast"/>
  <visual>
    <global offwidth="{res * MAX_VIEWS}" offheight="{res}"/>
    <quality offsamples="{4 if spec.antialias else 0}" shadowsize="{2048 if spec.shadows else 0}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
  </visual>
  <default>
    <geom friction="1 0.005 0.0001" solref="0.004 1" solimp="0.95 0.99 0.001"/>
    <!-- margin = gap: contacts within 1 mm are reported (a stable "touching" flag) but exert no
         force until the surfaces meet. -->
    <default class="gripper"><geom rgba="{_f(GRIPPER_RGBA)}" condim="4" friction="1.2 0.01 0.0001"
      margin="{TOUCH_MARGIN}" gap="{TOUCH_MARGIN}"/></default>
    <default class="finger"><geom rgba="{_f(GRIPPER_RGBA)}" condim="4" friction="1.5 0.02 0.0002"
      mass="0.03" margin="{TOUCH_MARGIN}" gap="{TOUCH_MARGIN}"/></default>
    <default class="object"><geom condim="4" friction="1 0.01 0.0001" rgba="0.8 0.2 0.2 1"/></default>
    <default class="fixture"><geom rgba="{_f(FIXTURE_RGBA)}" friction="0.8 0.005 0.0001"/></default>
  </default>
  <worldbody>
    {"".join(lights)}
    <geom name="table" type="box" size="0.45 0.45 0.02" pos="0 0 -0.02" rgba="{_f(TABLE_RGBA)}"/>
    <!-- The floor collides: whatever is knocked off the table lands there and stays. -->
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.6" rgba="0.3 0.32 0.35 1"/>
    {"".join(cams)}
    <body name="mocap" mocap="true" pos="{_f(HOME[:3])}"/>
    {_gripper_xml(spec.wrist)}
    {"".join(_fixture_xml(f) for f in spec.fixtures)}
    {"".join(_object_xml(o) for o in spec.objects)}
  </worldbody>
  <equality>
    <weld body1="gripper" body2="mocap" relpose="0 0 0 1 0 0 0" solref="0.01 1"/>
  </equality>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
    {"".join(f'<exclude body1="{f.name}" body2="{f.name}_cap"/>' for f in spec.fixtures if f.kind == "button")}
  </contact>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="300" ctrlrange="{FINGER_SQUEEZE} {FINGER_OPEN}" forcerange="-12 12"/>
    <position name="finger_right" joint="finger_right" kp="300" ctrlrange="{FINGER_SQUEEZE} {FINGER_OPEN}" forcerange="-12 12"/>
  </actuator>
</mujoco>
"""
