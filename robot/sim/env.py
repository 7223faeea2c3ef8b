"""`SimEnv`: the simulated tabletop robot at 10 Hz, with privileged state for scoring and experts.

One environment = one task's scene structure (compiled once) and one reused renderer; `reset`
writes a seed's layout (poses, colours, lights, camera jitter) into the model and data.
Actions are absolute end-effector targets (`ee_pose_abs`); the mocap target is interpolated
over the control period so the gripper moves smoothly under 50 physics steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np

from robot.geometry import quat_to_rpy, rpy_to_quat, slerp
from robot.sim import scene as S
from robot.sim.progress import TaskProgress
from robot.sim.render import MultiViewRenderer
from robot.sim.tasks import Task, apply_variation_defaults, get_task, split
from robot.types import ACTION_DIM, CameraCalib

# MuJoCo cameras look along -z with +y up; OpenCV looks along +z with +y down.
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


class SimEnv:
    """A MuJoCo tabletop task with multi-view rendering and Task Progress."""

    fps = S.CONTROL_HZ

    def __init__(
        self,
        task: str,
        seed: int = 0,
        resolution: int = 64,
        cameras: Sequence[str] = ("front", "left", "right"),
        wrist: bool = False,
        variation: dict | None = None,
        shadows: bool = False,
        antialias: bool = False,
    ) -> None:
        self.task: Task = get_task(task)
        self.variation = apply_variation_defaults(self.task, variation)
        cams = tuple(cameras)
        for c in cams:
            if c not in S.CAMERA_RIG and c != S.WRIST_CAMERA:
                raise ValueError(f"unknown camera {c!r}; fixed cameras are {tuple(S.CAMERA_RIG)}")
        if S.WRIST_CAMERA in cams:
            wrist = True
        elif wrist:
            cams = (*cams, S.WRIST_CAMERA)
        if not cams:
            raise ValueError("need at least one camera")
        self.camera_names = cams
        self.resolution = int(resolution)
        self.spec = self.task.scene_spec(
            self.variation,
            resolution=self.resolution,
            wrist=wrist,
            shadows=shadows,
            antialias=antialias,
        )
        self.model = mujoco.MjModel.from_xml_string(S.build_mjcf(self.spec))
        self.data = mujoco.MjData(self.model)
        self._renderer: MultiViewRenderer | None = None
        self._defaults = {
            "cam_pos": self.model.cam_pos.copy(),
            "cam_quat": self.model.cam_quat.copy(),
            "light_diffuse": self.model.light_diffuse.copy(),
            "light_dir": self.model.light_dir.copy(),
            "headlight": self.model.vis.headlight.ambient.copy(),
        }
        self._bid = {self.model.body(i).name: i for i in range(self.model.nbody)}
        self._finger_q = [self.model.joint(f"finger_{s}").qposadr[0] for s in ("left", "right")]
        self._gripper_ids = np.array(
            [self._bid[n] for n in ("gripper", "finger_left", "finger_right")]
        )
        self._names = [self.model.body(i).name for i in range(self.model.nbody)]
        self.workspace_min = S.WORKSPACE_MIN.copy()
        self.workspace_max = S.WORKSPACE_MAX.copy()
        self.seed = int(seed)
        self.layout: dict[str, Any] = {}
        self.progress: TaskProgress | None = None
        self._target = S.HOME.copy()
        self._seg_k = S.SUBSTEPS
        self._seg_pos: list[np.ndarray] = []
        self._seg_quat = np.zeros((0, 4))
        self.steps = 0
        self.reset(seed, render=False)

    # ------------------------------------------------------------------ episode control

    def reset(self, seed: int | None = None, render: bool = True) -> dict[str, Any]:
        """Start a new episode from the seed's randomised initial state; returns the observation."""
        seed = self.seed if seed is None else seed
        self.split = split(self.task.name, seed)  # validates the seed first
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 7919])
        self.layout = self.task.sample(rng, self.split, self.variation)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._apply_layout(rng)
        home = S.HOME.copy()
        d.mocap_pos[0] = home[:3]
        d.mocap_quat[0] = rpy_to_quat(home[3:6])
        adr = m.joint("gripper").qposadr[0]
        d.qpos[adr : adr + 3] = home[:3]
        d.qpos[adr + 3 : adr + 7] = d.mocap_quat[0]
        for a in self._finger_q:
            d.qpos[a] = S.FINGER_OPEN
        d.ctrl[:] = S.FINGER_OPEN
        mujoco.mj_forward(m, d)
        # Let objects settle on the table before the first observation.
        for _ in range(100):
            mujoco.mj_step(m, d)
        self._target = home
        self._seg_k = S.SUBSTEPS  # no commanded motion under way
        self.steps = 0
        self.instruction: str = self.layout["instruction"]
        self.progress = self.task.progress(self.layout)
        self.progress.update(self)
        return self.observe(render=render)

    def _apply_layout(self, rng: np.random.Generator) -> None:
        m, d = self.model, self.data
        for name, item in self.layout["objects"].items():
            adr = m.joint(name).qposadr[0]
            d.qpos[adr : adr + 3] = np.asarray(item["pos"], float)
            d.qpos[adr + 3 : adr + 7] = rpy_to_quat((0.0, 0.0, float(item.get("yaw", 0.0))))
            self._set_rgba(name, item.get("colour"))
            # A parked (unused) slot floats out of sight without gravity or collisions.
            parked = bool(item.get("parked", False))
            b = self._bid[name]
            m.body_gravcomp[b] = 1.0 if parked else 0.0
            geoms = np.flatnonzero(m.geom_bodyid == b)
            m.geom_contype[geoms] = 0 if parked else 1
            m.geom_conaffinity[geoms] = 0 if parked else 1
        kinds = {f.name: f.kind for f in self.spec.fixtures}
        for name, item in self.layout["fixtures"].items():
            b = self._bid[name]
            m.body_pos[b] = np.asarray(item["pos"], float)
            m.body_quat[b] = rpy_to_quat((0.0, 0.0, float(item.get("yaw", 0.0))))
            colour = item.get("colour")
            if colour is None:
                continue
            if kinds[name] == "button":  # the cap carries the colour, the housing stays grey
                self._set_rgba(f"{name}_cap", colour)
            else:  # bins and targets: a paler tint on every geom of the fixture
                for g in np.flatnonzero(m.geom_bodyid == b):
                    m.geom_rgba[g] = self._colour_rgba(colour, light=kinds[name] == "bin")
        self._apply_lighting(rng)
        self._apply_camera_jitter(rng)

    @staticmethod
    def _colour_rgba(colour: str, light: bool = False) -> np.ndarray:
        rgb = np.array(S.COLOURS[colour])
        if light:  # a paler tint for large surfaces such as bins
            rgb = 0.55 * rgb + 0.45
        return np.r_[rgb, 1.0]

    def _set_rgba(self, body: str, colour: str | None) -> None:
        if colour is None:
            return
        b = self._bid[body]
        for g in np.flatnonzero(self.model.geom_bodyid == b):
            self.model.geom_rgba[g] = self._colour_rgba(colour)

    def _apply_lighting(self, rng: np.random.Generator) -> None:
        m = self.model
        m.light_diffuse[:] = self._defaults["light_diffuse"]
        m.light_dir[:] = self._defaults["light_dir"]
        m.vis.headlight.ambient[:] = self._defaults["headlight"]
        amount = float(self.variation["lighting"])
        light = {"brightness": 1.0, "tint": [1.0, 1.0, 1.0], "tilt": [0.0, 0.0]}
        if amount > 0:
            # Train seeds see brightness in [0.85, 1.15]; test seeds outside it (unseen lighting).
            if self.split == "test" and self.variation["unseen"]:
                off = 0.25 * amount * rng.uniform(0.2, 1.0)
                b = 0.85 - off if rng.random() < 0.5 else 1.15 + off
            else:
                b = rng.uniform(0.85, 1.15)
            tint = 1.0 - rng.uniform(0.0, 0.2 * amount, size=3)
            tilt = rng.uniform(-0.5 * amount, 0.5 * amount, size=2)
            m.light_diffuse[:] = self._defaults["light_diffuse"] * b * tint
            m.light_dir[0, :2] = self._defaults["light_dir"][0, :2] + tilt
            m.vis.headlight.ambient[:] = self._defaults["headlight"] * b
            light = {"brightness": float(b), "tint": tint.tolist(), "tilt": tilt.tolist()}
        self.layout["lighting"] = light

    def _apply_camera_jitter(self, rng: np.random.Generator) -> None:
        m = self.model
        m.cam_pos[:] = self._defaults["cam_pos"]
        m.cam_quat[:] = self._defaults["cam_quat"]
        jitter = float(self.variation["camera_jitter"])
        offsets = {}
        if jitter > 0:
            for name, (pos, target, _) in S.CAMERA_RIG.items():
                dp = np.clip(rng.normal(0.0, jitter, 3), -2 * jitter, 2 * jitter)
                dt = np.clip(rng.normal(0.0, jitter / 2, 3), -jitter, jitter)
                cid = m.camera(name).id
                p = np.asarray(pos) + dp
                m.cam_pos[cid] = p
                m.cam_quat[cid] = S.look_at_quat(p, np.asarray(target) + dt)
                offsets[name] = dp.tolist()
        self.layout["camera_jitter"] = offsets

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ control

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """The action the robot really executes: finite, workspace-clipped, gripper in [0, 1]."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(
                f"action must have {ACTION_DIM} values (x y z roll pitch yaw gripper), got {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        out = a.copy()
        out[:3] = np.clip(a[:3], self.workspace_min, self.workspace_max)
        out[3:6] = (a[3:6] + np.pi) % (2 * np.pi) - np.pi
        out[6] = np.clip(a[6], 0.0, 1.0)
        return out

    def command(self, action: np.ndarray) -> np.ndarray:
        """Start moving to an absolute target over the next control period; return it clipped.

        The mocap target moves linearly (orientation by slerp) over SUBSTEPS physics steps from
        the previous target, or from where it is now if that motion was not finished.
        """
        a = self.clip_action(action)
        d = self.data
        if self._seg_k >= S.SUBSTEPS:
            p0, q0 = self._target[:3], rpy_to_quat(self._target[3:6])
        else:
            p0, q0 = d.mocap_pos[0].copy(), d.mocap_quat[0].copy()
        ts = np.arange(1, S.SUBSTEPS + 1) / S.SUBSTEPS  # (SUBSTEPS,) fractions of the way
        self._seg_pos = [p0 + t * (a[:3] - p0) for t in ts]
        self._seg_quat = slerp(q0, rpy_to_quat(a[3:6]), ts)  # (SUBSTEPS, 4)
        self._seg_k = 0
        d.ctrl[:] = S.FINGER_OPEN + (S.FINGER_SQUEEZE - S.FINGER_OPEN) * a[6]
        self._target = a
        return a

    @property
    def moving(self) -> bool:
        """True while the last commanded motion is still under way."""
        return self._seg_k < S.SUBSTEPS

    def hold(self) -> np.ndarray:
        """Stop the commanded motion where the mocap is now (gripper command kept); return it."""
        d = self.data
        self._seg_k = S.SUBSTEPS
        self._target = np.r_[d.mocap_pos[0], quat_to_rpy(d.mocap_quat[0]), self._target[6]]
        return self._target.copy()

    def advance(self, n: int) -> None:
        """Run n physics steps (2 ms each), moving the mocap along the commanded motion."""
        m, d = self.model, self.data
        for _ in range(n):
            if self._seg_k < S.SUBSTEPS:
                d.mocap_pos[0] = self._seg_pos[self._seg_k]
                d.mocap_quat[0] = self._seg_quat[self._seg_k]
                self._seg_k += 1
            mujoco.mj_step(m, d)

    def step(self, action: np.ndarray, render: bool = True) -> dict[str, Any]:
        """Move to the absolute target over one control period (50 physics steps)."""
        self.command(action)
        self.advance(S.SUBSTEPS)
        self.steps += 1
        assert self.progress is not None
        self.progress.update(self)
        return self.observe(render=render)

    # ------------------------------------------------------------------ observation

    def state(self) -> np.ndarray:
        """(7,) float32: grip point x, y, z, roll, pitch, yaw, gripper closure (0 open .. 1 closed)."""
        b = self._bid["gripper"]
        rpy = quat_to_rpy(self.data.xquat[b])
        opening = float(np.mean([self.data.qpos[a] for a in self._finger_q]))
        g = np.clip(1.0 - opening / S.FINGER_OPEN, 0.0, 1.0)
        return np.r_[self.data.xpos[b], rpy, g].astype(np.float32)

    @property
    def target(self) -> np.ndarray:
        """The last commanded (clipped) action, (7,)."""
        return self._target.copy()

    def render(self) -> dict[str, np.ndarray]:
        """{camera: uint8 (H, W, 3)} for every observed camera (one renderer, reused)."""
        if self._renderer is None:
            self._renderer = MultiViewRenderer(
                self.model, self.resolution, self.camera_names, self.spec.shadows
            )
        return self._renderer.render(self.data)

    def observe(self, render: bool = True) -> dict[str, Any]:
        """{"images": {cam: uint8 (H, W, 3)}, "state": float32 (7,), "task_progress": int}."""
        images = self.render() if render else {}
        return {"images": images, "state": self.state(), "task_progress": self.task_progress()}

    def task_progress(self) -> int:
        assert self.progress is not None
        return self.progress.score

    @property
    def cameras(self) -> dict[str, CameraCalib]:
        """OpenCV-convention calibration of every observed camera (the wrist one moves)."""
        out = {}
        for name in self.camera_names:
            cam = self.model.camera(name)
            fovy = np.deg2rad(self.model.cam_fovy[cam.id])
            f = 0.5 * self.resolution / np.tan(fovy / 2)
            K = np.array([[f, 0, self.resolution / 2], [0, f, self.resolution / 2], [0, 0, 1.0]])
            T = np.eye(4)
            T[:3, :3] = self.data.cam_xmat[cam.id].reshape(3, 3) @ _MJ_TO_CV
            T[:3, 3] = self.data.cam_xpos[cam.id]
            out[name] = CameraCalib(name, K, T, self.resolution, self.resolution)
        return out

    # ------------------------------------------------------------------ privileged state

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self._bid[name]].copy()

    def body_yaw(self, name: str) -> float:
        return float(quat_to_rpy(self.data.xquat[self._bid[name]])[2])

    def body_zaxis(self, name: str) -> np.ndarray:
        return self.data.xmat[self._bid[name]].reshape(3, 3)[:, 2].copy()

    def _contact_bodies(self) -> np.ndarray:
        """(ncon, 2) body ids of the current contacts."""
        d = self.data
        return self.model.geom_bodyid[d.contact.geom[: d.ncon]].reshape(-1, 2)

    def contacts(self, name: str) -> set[str]:
        """Names of the bodies in contact with body `name`."""
        b = self._bid[name]
        pairs = self._contact_bodies()
        other = np.r_[pairs[pairs[:, 0] == b, 1], pairs[pairs[:, 1] == b, 0]]
        return {self._names[i] for i in other}

    def gripper_contacts(self) -> set[str]:
        """Bodies (other than the table) touched by the palm or fingers."""
        pairs = self._contact_bodies()
        g = np.isin(pairs, self._gripper_ids)
        other = np.r_[pairs[g[:, 0] & ~g[:, 1], 1], pairs[g[:, 1] & ~g[:, 0], 0]]
        return {self._names[i] for i in other if i != 0}

    def gripper_touches(self, name: str) -> bool:
        return name in self.gripper_contacts()

    def held(self, name: str) -> bool:
        """True when both fingers touch the object (a grasp)."""
        c = self.contacts(name)
        return "finger_left" in c and "finger_right" in c

    def button_depth(self, name: str) -> float:
        """How far (m) a button's cap is pushed down."""
        return float(-self.data.qpos[self.model.joint(name).qposadr[0]])

    def gripper_opening(self) -> float:
        """Distance (m) between the finger pads."""
        return float(sum(self.data.qpos[a] for a in self._finger_q))
