"""The sim keeps its own physics clock: the world goes on while the arm holds.

Regression for v1.0, where physics only advanced inside send_action: after stop, pause,
FAULT or ESTOP a released block hung in mid-air, and nothing stopped a knocked-off object from
falling forever.
"""

import time

import mujoco
import numpy as np
import pytest

from robot.protocol import Mode
from robot.sim.robot import SimRobot
from robot.sim.tasks import BLOCK_HALF

FLOOR_Z = -0.6


def _drop(sim: SimRobot, xyz) -> float:
    """Put the block at rest at `xyz` (released there); return the sim time of the release."""
    with sim.paused() as env:
        adr = env.model.joint("block").qposadr[0]
        env.data.qpos[adr : adr + 3] = xyz
        env.data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)
        env.data.qvel[
            env.model.joint("block").dofadr[0] : env.model.joint("block").dofadr[0] + 6
        ] = 0
        mujoco.mj_forward(env.model, env.data)
        return float(env.data.time)


def _landing_time(sim: SimRobot, released: float, rest_z: float, timeout: float = 5.0) -> float:
    """Sim seconds from the release until the block rests within 2 mm of rest_z."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sim.paused() as env:
            z = float(env.body_pos("block")[2])
            v = float(np.linalg.norm(env.data.qvel[env.model.joint("block").dofadr[0] :][:3]))
            t = float(env.data.time)
        if abs(z - rest_z) < 2e-3 and v < 0.01:
            return t - released
        time.sleep(0.02)
    raise AssertionError(f"block at z={z:.3f} m, v={v:.3f} m/s {t - released:.2f} s after release")


@pytest.mark.parametrize("halt", ["stop", "pause", "estop", "fault"])
def test_a_block_released_in_mid_air_after_a_halt_lands_within_one_second(link, halt):
    sim = SimRobot("pick_place_bin", seed=0)
    try:
        server = link.server(sim, heartbeat_timeout_s=0.3)
        c = link.client(server)
        c.arm()
        pose = sim.get_state()
        chunk = np.tile(pose, (30, 1))
        chunk[:, 1] = np.linspace(pose[1], pose[1] + 0.1, 30)
        c.execute_chunk(chunk)
        time.sleep(0.3)
        if halt == "fault":
            c.heartbeat_enabled = False
            link.wait_mode(server, Mode.FAULT, 2)
        else:
            getattr(c, halt)()
        n_sent = server.stats.actions_sent
        xy = -0.12 * np.sign(sim.env.body_pos("bin")[:2])  # the table corner away from the bin
        released = _drop(sim, [*xy, 0.15])
        landed = _landing_time(sim, released, BLOCK_HALF)
        print(f"after {halt}: the block landed {landed:.2f} s of sim time after its release")
        assert landed <= 1.0
        assert server.stats.actions_sent == n_sent  # the arm held: nothing more was sent
    finally:
        sim.disconnect()


def test_an_object_knocked_off_the_table_lands_on_the_floor_and_stays():
    sim = SimRobot("pick_place_bin", seed=0)
    sim.connect()
    try:
        released = _drop(sim, [0.6, 0.0, 0.05])  # beyond the table's edge (0.45 m)
        landed = _landing_time(sim, released, FLOOR_Z + BLOCK_HALF)
        with sim.paused() as env:
            z, t = env.body_pos("block")[2], env.data.time
        time.sleep(0.5)
        with sim.paused() as env:
            assert env.data.time > t + 0.3 and abs(env.body_pos("block")[2] - z) < 1e-3  # it stays
        assert landed < 1.5
    finally:
        sim.disconnect()


def test_the_clock_follows_wall_time_and_holds_the_gripper_pose():
    sim = SimRobot("pick_place_bin", seed=0)
    sim.connect()
    try:
        t0, w0, pose = sim.sim_time, time.monotonic(), sim.get_state()
        time.sleep(1.0)
        ratio = (sim.sim_time - t0) / (time.monotonic() - w0)
        print(f"sim time / wall time: {ratio:.2f}")
        assert 0.5 < ratio < 1.1  # below 1 only when the shared machine starves the clock
        np.testing.assert_allclose(sim.get_state(), pose, atol=1e-3)
    finally:
        sim.disconnect()
