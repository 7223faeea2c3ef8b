"""The robot link in front of the real MuJoCo sim: safety checked on simulated state.

The sim runs on its own physics clock (real time), so states are sampled by the clock itself
(`RecordingSimRobot.trace`), not right after each send_action.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from robot.protocol import Mode


@pytest.fixture
def sim(recording_sim):
    return recording_sim(task="pick_place_bin", seed=0)


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
    mocap, measured = sim.max_motion_per_period()
    assert mocap <= 0.03 + 1e-6 and measured <= 0.03 + 2e-3, (mocap, measured)
    np.testing.assert_allclose(sim.env.target, target, atol=1e-6)  # the commanded pose got there
    np.testing.assert_allclose(sim.get_state()[:3], target[:3], atol=5e-3)  # the body trails by mm


def test_slow_motion_stretches_the_control_period_and_the_world_alike(link, recording_sim):
    """time_scale 0.25: a 4-step chunk lasts 4 x 0.4 s of wall time, each step still 0.1 s of
    sim time, and the caps hold per control period of sim time."""
    sim = recording_sim(task="pick_place_bin", seed=0, time_scale=0.25)
    server = link.server(sim, max_step_m=0.03)
    c = link.client(server)
    assert c.info["time_scale"] == 0.25 and c.info["fps"] == 10
    c.arm()
    start = sim.get_state().copy()
    targets = np.repeat(start[None], 4, axis=0)
    targets[:, 0] += 0.02 * np.arange(1, 5)  # 2 cm per step
    t0 = time.monotonic()
    done = c.execute_chunk(targets).result(10)
    wall = time.monotonic() - t0
    assert done["status"] == "done" and done["interpolated_steps"] == 0
    assert 1.4 <= wall <= 3.0, wall  # real time: 0.4 s
    gaps = np.diff(sim.sent_at)
    assert np.all(gaps >= 0.35), gaps  # one target per 0.4 s of wall time
    sim_t = [t for t, _, _ in sim.trace]
    assert 0.2 <= (sim_t[-1] - sim_t[0]) / wall <= 0.3  # the world ran at a quarter speed
    time.sleep(0.5)
    mocap, _ = sim.max_motion_per_period()
    assert mocap <= 0.02 + 1e-6
    np.testing.assert_allclose(sim.env.target, targets[-1], atol=1e-6)


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


@pytest.mark.slow
def test_observations_hammered_from_another_connection_leave_the_sim_within_the_caps(
    link, recording_sim
):
    """Must-show: while a chunk runs, another connection renders 128x128 observations as fast
    as it can; the targets sent and the sim's own state both move at most one cap per period."""
    cap = 0.02
    sim = recording_sim(task="pick_place_bin", seed=0, resolution=128)
    server = link.server(sim, max_step_m=cap, heartbeat_timeout_s=2.0)
    c = link.client(server)
    c.arm()
    stop, n_obs = threading.Event(), [0]
    hammer = threading.Thread(
        target=link.hammer_observations, args=(server, stop, n_obs), daemon=True
    )
    hammer.start()
    time.sleep(0.3)
    start = sim.get_state().copy()
    chunk = np.tile(start, (10, 1))  # 20 cm forward ...
    chunk[:, 0] = start[0] + cap * np.arange(1, 11)
    chunk = np.concatenate([chunk, chunk[::-1]])  # ... and back
    sim.trace.clear()
    done = c.execute_chunk(chunk).result(30)
    time.sleep(0.3)
    stop.set()
    hammer.join(20)
    assert done["status"] == "done" and n_obs[0] >= 10
    link.check_capped_sends(
        np.array([start, *sim.states]), np.array([-np.inf, *sim.sent_at]), cap, 0.1
    )
    mocap, measured = sim.max_motion_per_period()
    print(
        f"{n_obs[0]} observations rendered meanwhile; per 0.1 s of sim time the mocap moved "
        f"at most {mocap * 1e3:.2f} mm, the grip point {measured * 1e3:.2f} mm"
    )
    assert mocap <= cap + 1e-6 and measured <= cap + 2e-3


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
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"sim-robot still running 30 s after SIGINT:\n{proc.communicate()[0]}")
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
