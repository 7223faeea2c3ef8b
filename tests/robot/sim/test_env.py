"""SimEnv: observations, actions, determinism, rendering and camera calibration (real MuJoCo)."""

import threading

import mujoco
import numpy as np
import pytest

from robot.sim import scene as S
from robot.sim.env import SimEnv
from robot.sim.tasks import TASKS

FIXED = ("front", "left", "right")


@pytest.fixture(scope="module")
def env():
    e = SimEnv("pick_place_bin", seed=0)
    yield e
    e.close()


def test_observation_format(env):
    obs = env.reset(0)
    assert set(obs["images"]) == set(FIXED)
    for img in obs["images"].values():
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer
    assert obs["state"].shape == (7,) and obs["state"].dtype == np.float32
    assert isinstance(obs["task_progress"], int) and obs["task_progress"] == 0
    np.testing.assert_allclose(obs["state"][:3], S.HOME[:3], atol=2e-3)
    assert obs["state"][6] < 0.05  # open


def test_views_differ(env):
    imgs = env.reset(0)["images"]
    assert np.abs(imgs["front"].astype(int) - imgs["left"].astype(int)).mean() > 5
    assert np.abs(imgs["left"].astype(int) - imgs["right"].astype(int)).mean() > 5


def test_step_moves_the_gripper_to_the_target(env):
    env.reset(0, render=False)
    target = np.array([0.05, -0.04, 0.15, 0.0, 0.0, 0.3, 1.0])
    for _ in range(5):
        obs = env.step(target, render=False)
    np.testing.assert_allclose(obs["state"][:3], target[:3], atol=3e-3)
    assert abs(obs["state"][5] - 0.3) < 0.02
    assert obs["state"][6] > 0.95  # closed on nothing


def test_actions_are_clipped_and_validated(env):
    env.reset(0, render=False)
    a = env.clip_action(np.array([1.0, -1.0, -0.5, 0.0, 0.0, 4.0, 3.0]))
    np.testing.assert_allclose(
        a[:3], [env.workspace_max[0], env.workspace_min[1], env.workspace_min[2]]
    )
    assert a[6] == 1.0 and -np.pi <= a[5] < np.pi
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0, 0.0]))
    with pytest.raises(ValueError, match="7 values"):
        env.step(np.zeros(6))


def test_same_seed_same_episode_other_seed_other_layout():
    a, b = SimEnv("stack_blocks", seed=3), SimEnv("stack_blocks", seed=3)
    try:
        assert a.layout == b.layout and a.instruction == b.instruction
        for _ in range(3):
            sa = a.step(np.array([0.05, 0.05, 0.1, 0, 0, 0, 0.0]), render=False)["state"]
            sb = b.step(np.array([0.05, 0.05, 0.1, 0, 0, 0, 0.0]), render=False)["state"]
        np.testing.assert_array_equal(sa, sb)
        a.reset(4, render=False)
        assert a.layout["objects"]["top"]["pos"] != b.layout["objects"]["top"]["pos"]
    finally:
        a.close()
        b.close()


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="did you mean 'pick_place_bin'"):
        SimEnv("pick_place_bni")
    with pytest.raises(ValueError, match="resolution"):
        SimEnv("pick_place_bin", resolution=1000)
    with pytest.raises(ValueError, match="unknown camera"):
        SimEnv("pick_place_bin", cameras=("top",))
    with pytest.raises(ValueError, match="did you mean 'distractors'"):
        SimEnv("pick_place_bin", variation={"distractor": 2})
    with pytest.raises(ValueError, match="seed"):
        SimEnv("pick_place_bin", seed=-1)


def test_wrist_camera_and_resolution():
    e = SimEnv("peg_insertion", resolution=96, wrist=True)
    try:
        obs = e.reset(1)
        assert set(obs["images"]) == {*FIXED, "wrist"}
        assert obs["images"]["wrist"].shape == (96, 96, 3)
        before = e.cameras["wrist"].center
        e.step(np.array([0.1, 0.0, 0.15, 0, 0, 0, 0.0]), render=False)
        assert (
            np.linalg.norm(e.cameras["wrist"].center - before) > 0.05
        )  # it moves with the gripper
    finally:
        e.close()


def test_render_from_another_thread(env):
    out = {}

    def worker():
        out["img"] = env.observe()["images"]["front"]

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    np.testing.assert_array_equal(out["img"], env.observe()["images"]["front"])


def _segmentation(env: SimEnv, camera: str) -> np.ndarray:
    """(H, W) geom id per pixel (-1 for background), top row first."""
    r = mujoco.Renderer(env.model, env.resolution, env.resolution)
    try:
        r.enable_segmentation_rendering()
        r.update_scene(env.data, camera=camera)
        seg = r.render()
    finally:
        r.close()
    ids = seg[..., 0].copy()
    ids[seg[..., 1] != mujoco.mjtObj.mjOBJ_GEOM] = -1
    return ids


@pytest.mark.parametrize("resolution", [64, 128])
def test_projection_matches_rendering(resolution):
    """A sphere's centre projected with K and T_world_cam lands on its rendered pixels' centroid."""
    e = SimEnv(
        "pick_place_bin",
        seed=4,
        resolution=resolution,
        variation={"distractors": 1, "unseen": True, "camera_jitter": 0.02},
    )
    try:
        assert e.split == "test"
        sphere = "distractor_unseen0"
        assert e.model.geom(sphere).type == mujoco.mjtGeom.mjGEOM_SPHERE
        m, d = e.model, e.data
        # Clear the table so nothing occludes the sphere.
        d.qpos[m.joint("block").qposadr[0] + 2] = -0.3
        m.body_pos[m.body("bin").id] = [2.0, 2.0, 0.0]
        adr = m.joint(sphere).qposadr[0]
        cams = e.cameras
        worst = 0.0
        for x in (-0.1, 0.0, 0.1):
            for y in (-0.1, 0.0, 0.1):
                p = np.array([x, y, 0.04])
                d.qpos[adr : adr + 3] = p
                mujoco.mj_forward(m, d)
                gid = m.geom(sphere).id
                for cam in FIXED:
                    vs, us = np.nonzero(_segmentation(e, cam) == gid)
                    assert len(us) >= 4, f"sphere at {p} not visible in {cam}"
                    centroid = np.array([us.mean() + 0.5, vs.mean() + 0.5])
                    uv, depth = cams[cam].project(p[None])
                    assert depth[0] > 0
                    err = float(np.linalg.norm(uv[0] - centroid))
                    worst = max(worst, err)
                    assert err < 2.0, (
                        f"{cam}: projected {uv[0]}, rendered {centroid} ({err:.2f} px)"
                    )
        print(f"worst reprojection error at {resolution}px: {worst:.2f} px")
    finally:
        e.close()


def test_calibration_is_opencv_and_views_overlap(env):
    env.reset(0, render=False)
    for name, cam in env.cameras.items():
        R = cam.T_world_cam[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) > 0
        np.testing.assert_allclose(cam.center, S.CAMERA_RIG[name][0], atol=1e-9)
        # OpenCV: +z looks at the workspace, +y points down in the world.
        assert R[:, 2] @ (np.zeros(3) - cam.center) > 0
        assert R[2, 1] < 0
        # All fixed cameras see the workspace centre and a margin around it.
        for p in ([0, 0, 0.05], [0.12, 0.12, 0.0], [-0.12, -0.12, 0.0], [0.0, 0.0, 0.2]):
            uv, depth = cam.project(np.array([p]))
            assert depth[0] > 0 and np.all((uv[0] > 0) & (uv[0] < 64)), f"{name} misses {p}"


@pytest.mark.parametrize("task", list(TASKS))
def test_task_objects_visible_at_64px(task):
    """Every object and fixture is visible (>= 3 pixels) in every fixed view."""
    e = SimEnv(task, seed=1)
    try:
        m = e.model
        names = [n for n, o in e.layout["objects"].items() if not o.get("parked")] + list(
            e.layout["fixtures"]
        )
        roots = m.body_rootid[m.geom_bodyid]  # top-level body of each geom
        counts = {n: 0 for n in names}
        for cam in FIXED:
            seg = _segmentation(e, cam)
            for n in names:
                pixels = np.isin(seg, np.flatnonzero(roots == m.body(n).id)).sum()
                counts[n] += pixels >= 3
        assert all(c == 3 for c in counts.values()), counts
    finally:
        e.close()
