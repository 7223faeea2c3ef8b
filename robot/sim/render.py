"""Multi-view offscreen rendering: every camera into one framebuffer, read back once.

With software GL (no GPU) the costs that matter are shadow passes, multisampling and the
read-back; rendering the views side by side and reading them with one `mjr_readPixels` call
saves a read per extra view. The GL context is made current only while rendering and released
afterwards, so an environment may be rendered from whichever thread holds it (the robot server
reads observations from its own threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import mujoco
import numpy as np


class MultiViewRenderer:
    """Renders the named cameras of `model` at `size` x `size` pixels each."""

    def __init__(
        self, model: mujoco.MjModel, size: int, cameras: Sequence[str], shadows: bool = False
    ) -> None:
        from mujoco import gl_context

        if gl_context.GLContext is None:
            raise RuntimeError(
                "no OpenGL backend: set MUJOCO_GL=egl (or osmesa) for headless rendering"
            )
        n = len(cameras)
        if size * n > model.vis.global_.offwidth or size > model.vis.global_.offheight:
            raise ValueError(
                f"{n} views of {size}px need a {size * n}x{size} framebuffer, model has "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}"
            )
        self.model, self.size, self.cameras = model, size, tuple(cameras)
        self._cam_ids = [model.camera(c).id for c in self.cameras]
        self._gl = gl_context.GLContext(size * n, size)
        with self._gl.as_current():
            self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._scene = mujoco.MjvScene(model, maxgeom=2000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._buf = np.empty((size, size * n, 3), dtype=np.uint8)  # (H, n*W, 3), rows bottom-up

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """{camera: uint8 (H, W, 3)} for every camera, top row first."""
        if self._ctx is None:
            raise RuntimeError("renderer is closed")
        s = self.size
        with self._gl.as_current():
            for i, cid in enumerate(self._cam_ids):
                self._cam.fixedcamid = cid
                mujoco.mjv_updateScene(
                    self.model,
                    data,
                    self._opt,
                    None,
                    self._cam,
                    mujoco.mjtCatBit.mjCAT_ALL,
                    self._scene,
                )
                mujoco.mjr_render(mujoco.MjrRect(i * s, 0, s, s), self._scene, self._ctx)
            mujoco.mjr_readPixels(
                self._buf, None, mujoco.MjrRect(0, 0, s * len(self._cam_ids), s), self._ctx
            )
        img = self._buf[::-1]  # OpenGL rows are bottom-up
        return {
            c: np.ascontiguousarray(img[:, i * s : (i + 1) * s]) for i, c in enumerate(self.cameras)
        }

    def close(self) -> None:
        if self._ctx is not None:
            with self._gl.as_current():
                self._ctx.free()
            self._gl.free()
            self._ctx = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: GL may already be gone
            self.close()
