"""The robot link in front of the real MuJoCo sim: safety checked on simulated state.

The sim runs on its own physics clock (real time), so states are sampled by the clock itself
(`RecordingSimRobot.trace`), not right after each send_action.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from robot.protocol import Mode
from robot.sim.robot import SimRobot


class RecordingSimRobot(SimRobot):
    """The sim robot, recording every target it is sent (with the wall-clock time) and, at each
    10 ms tick of its physics clock, the sim time, the commanded mocap pose and the measured state."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.states: list[np.ndarray] = []  # the target of every send_action
        self.sent_at: list[float] = []
        self.trace: list[tuple[float, np.ndarray, np.ndarray]] = []  # (sim t, mocap xyz, state)

    def send_action(self, action):
        sent = super().send_action(action)
        self.sent_at.append(time.monotonic())
        self.states.append(sent.copy())
        return sent

    def _tick(self):
        super()._tick()
        with self.paused() as env:
            self.trace.append((float(env.data.time), env.data.mocap_pos[0].copy(), env.state()))


def max_motion_per_period(trace, period: float = 0.1) -> tuple[float, float]:
    """Largest displacement of the mocap target and of the measured grip point over any
    `period` of sim time, from a clock trace."""
    t = np.array([s[0] for s in trace])
    mocap = np.array([s[1] for s in trace])
    state = np.array([s[2][:3] for s in trace])
    j = np.searchsorted(t, t + period - 1e-9)
    ok = j < len(t)
    i, j = np.flatnonzero(ok), j[ok]
    return (
        float(np.max(np.linalg.norm(mocap[j] - mocap[i], axis=1))),
        float(np.max(np.linalg.norm(state[j] - state[i], axis=1))),
    )


@pytest.fixture
def sim():
    r = RecordingSimRobot(task="pick_place_bin", seed=0)
    yield r
    r.disconnect()


def test_hello_observation_reset_and_progress(link, sim):
    server = link.server(sim)
    c = link.client(server)
    info = c.info
    assert info["robot"] == "sim" and info["fps"] == 10
    assert set(info["cameras"]) == {"front", "left", "right"}
    for cam in info["cameras"].values():
        assert (
            np.shape(cam["K"]) == (3, 3)
            and np.shape(cam["T_world_cam"]) == (4, 4)
            and cam["width"] == 64
        )
    np.testing.assert_allclose(info["limits"]["workspace_min"], sim.workspace_min)
    obs = c.get_observation()
    assert {k: v.shape for k, v in obs["images"].items()} == {
        c: (64, 64, 3) for c in ("front", "left", "right")
    }
    assert obs["state"].shape == (7,) and isinstance(obs["task_progress"], int)
    assert c.wait_telemetry(lambda t: t["task_progress"] is not None)["task_progress"] == 0

    img_before = obs["images"]["front"]
    assert c.reset(task="press_buttons_in_order", seed=3)["status"] == "ok"
    assert sim.task == "press_buttons_in_order" and sim.env.seed == 3
    assert not np.array_equal(c.get_observation()["images"]["front"], img_before)
    reply = c.request("reset", task="press_button")
    assert (
        reply["status"] == "rejected" and "did you mean 'press_buttons_in_order'" in reply["reason"]
    )
    c.arm()
    assert "disarm first" in c.request("reset", seed=1)["reason"]


def test_targets_outside_the_workspace_never_take_the_sim_outside(link, sim):
    server = link.server(sim)
    c = link.client(server)
    c.arm()
    lo, hi = sim.workspace_min, sim.workspace_max
    targets = np.array(
        [[0.6, 0.0, 0.2], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.5], [-0.6, 0.6, 0.25], [0.0, 0.0, 0.2]],
        np.float32,
    )
    chunk = np.zeros((len(targets) * 4, 7), np.float32)  # hold each far target for 4 steps
    chunk[:, :3] = np.repeat(targets, 4, axis=0)
    done = c.execute_chunk(chunk).result(15)
    assert done["status"] == "done" and done["clipped_steps"] == 16
    states = np.array(sim.states)  # (steps, 7) measured after every control period
    assert len(states) >= len(chunk)
    tol = 2e-3  # the gripper is welded to its mocap target with a stiff but soft constraint
    assert np.all(states[:, :3] >= lo - tol) and np.all(states[:, :3] <= hi + tol)
    # and it did go to the edges of the box, not stop short
    assert np.max(states[:, 0]) > hi[0] - 0.01 and np.min(states[:, 1]) < lo[1] + 0.01


def test_a_jump_is_spread_over_capped_sim_steps(link, sim):
    server = link.server(sim, max_step_m=0.03)
    c = link.client(server)
    c.arm()
    start = sim.get_state().copy()
    target = start.copy()
    target[0] += 0.15  # 15 cm in one action
    done = c.execute_chunk(target[None]).result(5)
    assert done["status"] == "done" and done["interpolated_steps"] == 4
    path = np.array([start, *sim.states])  # (6, 7) what the sim was sent
    steps = np.linalg.norm(np.diff(path[:, :3], axis=0), axis=1)
    assert np.all(steps <= 0.03 + 1e-6), steps
    time.sleep(0.3)
    mocap, measured = max_motion_per_period(sim.trace)
    assert mocap <= 0.03 + 1e-6 and measured <= 0.03 + 2e-3, (mocap, measured)
    np.testing.assert_allclose(sim.env.target, target, atol=1e-6)  # the commanded pose got there
    np.testing.assert_allclose(sim.get_state()[:3], target[:3], atol=5e-3)  # the body trails by mm


def test_watchdog_holds_the_sim_and_faults(link, sim):
    server = link.server(sim, heartbeat_timeout_s=0.3)
    c = link.client(server)
    c.arm()
    chunk = np.tile(sim.get_state(), (40, 1))
    chunk[:, 1] = np.linspace(0.0, 0.15, 40)
    h = c.execute_chunk(chunk)
    time.sleep(0.3)
    c.heartbeat_enabled = False
    t0 = time.monotonic()
    c.wait_telemetry(lambda t: t["mode"] == "FAULT", timeout=2)
    latency = time.monotonic() - t0
    assert latency <= 0.3 + 0.1, latency
    assert h.result(2)["status"] == "aborted"
    held, n = sim.get_state().copy(), len(sim.states)
    time.sleep(0.3)
    assert len(sim.states) == n  # nothing more sent after the hold
    np.testing.assert_allclose(
        sim.get_state(), held, atol=2e-3
    )  # settles onto the hold, mm at most
    assert 0.0 < held[1] < 0.15  # stopped part-way


def test_estop_on_the_sim_from_a_second_connection(link, sim):
    server = link.server(sim, heartbeat_timeout_s=1.0)
    driver, panel = link.client(server), link.client(server)
    driver.arm()
    chunk = np.tile(sim.get_state(), (40, 1))
    chunk[:, 0] = np.linspace(0.0, 0.15, 40)
    h = driver.execute_chunk(chunk)
    time.sleep(0.3)
    t0 = time.monotonic()
    panel.estop()
    driver.wait_telemetry(lambda t: t["mode"] == "ESTOP", timeout=1)
    latency = time.monotonic() - t0
    n, pose = len(sim.states), sim.get_state().copy()
    assert latency <= 0.05, latency
    assert h.result(2)["status"] == "aborted" and h.result(2)["executed_steps"] < 40
    time.sleep(0.3)
    assert len(sim.states) == n and server.mode == Mode.ESTOP
    np.testing.assert_allclose(sim.get_state(), pose, atol=2e-3)  # held where it was
    panel.reset_fault()
    assert server.mode == Mode.IDLE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wallwm_sim_robot_command(tmp_path):
    from robot.client import RobotClient

    cmd, tel = _free_port(), _free_port()
    wallwm = os.path.join(os.path.dirname(sys.executable), "wallwm")
    proc = subprocess.Popen(
        [
            wallwm,
            "sim-robot",
            "--cmd-port",
            str(cmd),
            "--telemetry-port",
            str(tel),
            "--task",
            "stack_blocks",
            "--seed",
            "2",
            "--resolution",
            "48",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with RobotClient(cmd_port=cmd, telemetry_port=tel, timeout_s=30) as c:
            info = c.hello()
            assert info["robot"] == "sim" and info["cameras"]["front"]["width"] == 48
            assert c.get_observation()["images"]["left"].shape == (48, 48, 3)
            c.arm()
            target = c.get_observation()["state"].copy()
            target[2] -= 0.05
            assert c.execute_chunk(np.tile(target, (3, 1))).result(5)["status"] == "done"
            t = c.wait_telemetry(lambda t: t["mode"] == "ARMED" and t["step"] == 3)
            assert abs(t["ee_pose"][2] - target[2]) < 5e-3
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out

    bad = subprocess.run(
        [wallwm, "sim-robot", "--bind", "0.0.0.0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "without CURVE keys" in bad.stderr

    keys = tmp_path / "keys"
    made = subprocess.run(
        [wallwm, "sim-robot", "--make-keys", str(keys)], capture_output=True, text=True, timeout=60
    )
    assert (
        made.returncode == 0
        and (keys / "server.key_secret").exists()
        and (keys / "clients" / "workbench.key").exists()
    )
