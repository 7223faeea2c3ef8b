"""The robot server over real loopback sockets, driving the physics-free robot.

The same behaviours on the MuJoCo sim are in test_sim_link.py.
"""

import itertools
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zmq

from robot.client import LinkError, RejectedError, RobotClient
from robot.geometry import rotation_angle
from robot.kinematic import KinematicRobot
from robot.protocol import Mode, decode, encode, request
from robot.security import ClientKeys, load_client_keys, load_server_keys, make_keys
from robot.server import RobotServer, SafetyLimits, ServerConfig

HOME = np.array([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)


# ------------------------------------------------------------------ state machine


def _drive(link, mode: str):
    """A server, its robot and an armed-or-not controller client, brought to `mode`."""
    robot = KinematicRobot()
    server = link.server(robot)
    c = link.client(server)
    if mode == "IDLE":
        return server, robot, c
    if mode == "ESTOP":
        c.estop()
        return server, robot, c
    c.arm()
    if mode == "FAULT":
        c.heartbeat_enabled = False
        link.wait_mode(server, Mode.FAULT, 2)
        c.heartbeat_enabled = True
    elif mode in ("EXECUTING", "PAUSED"):
        c.execute_chunk(link.hold_chunk(HOME, 40))
        if mode == "PAUSED":
            c.pause()
    assert server.mode == mode
    return server, robot, c


def test_every_allowed_transition(link):
    robot = KinematicRobot()
    server = link.server(robot)
    c = link.client(server)
    seen = []

    def step(call, mode):
        assert call()["status"] in ("ok", "accepted"), call
        link.wait_mode(server, mode)
        seen.append(mode)

    assert server.mode == Mode.IDLE
    step(c.arm, Mode.ARMED)  # IDLE -arm-> ARMED
    h = c.execute_chunk(link.hold_chunk(HOME, 3))  # ARMED -execute_chunk-> EXECUTING
    assert server.mode == Mode.EXECUTING
    step(c.pause, Mode.PAUSED)  # EXECUTING -pause-> PAUSED
    step(c.resume, Mode.EXECUTING)  # PAUSED -resume-> EXECUTING
    assert h.result(3)["status"] == "done"  # EXECUTING -done-> ARMED
    link.wait_mode(server, Mode.ARMED)
    c.execute_chunk(link.hold_chunk(HOME, 30))
    step(c.stop, Mode.ARMED)  # EXECUTING -stop-> ARMED
    c.execute_chunk(link.hold_chunk(HOME, 30))
    c.pause()
    step(c.stop, Mode.ARMED)  # PAUSED -stop-> ARMED
    step(c.disarm, Mode.IDLE)  # ARMED -disarm-> IDLE
    step(c.estop, Mode.ESTOP)  # IDLE -estop-> ESTOP
    step(c.reset_fault, Mode.IDLE)  # ESTOP -reset_fault-> IDLE
    step(c.arm, Mode.ARMED)
    c.heartbeat_enabled = False  # ARMED -(no heartbeat)-> FAULT
    link.wait_mode(server, Mode.FAULT, 2)
    c.heartbeat_enabled = True
    assert "heartbeat timeout" in c.wait_telemetry(lambda t: t["mode"] == "FAULT")["faults"][0]
    step(c.estop, Mode.ESTOP)  # FAULT -estop-> ESTOP
    step(c.reset_fault, Mode.IDLE)
    assert c.wait_telemetry(lambda t: t["mode"] == "IDLE")["faults"] == []


@pytest.mark.parametrize("mode", ["ARMED", "EXECUTING", "PAUSED", "FAULT", "ESTOP"])
def test_estop_from_anywhere_latches(link, mode):
    server, _, c = _drive(link, mode)
    assert c.estop()["status"] == "ok" and server.mode == Mode.ESTOP
    assert c.estop()["status"] == "ok" and server.mode == Mode.ESTOP  # again: still latched


FORBIDDEN = {
    "IDLE": ["disarm", "pause", "resume", "stop", "reset_fault", "execute_chunk"],
    "ARMED": ["arm", "pause", "resume", "reset_fault", "reset"],
    "EXECUTING": ["arm", "disarm", "resume", "reset_fault", "execute_chunk", "reset"],
    "PAUSED": ["arm", "disarm", "pause", "reset_fault", "execute_chunk", "reset"],
    "FAULT": ["arm", "disarm", "pause", "resume", "stop", "execute_chunk", "reset"],
    "ESTOP": ["arm", "disarm", "pause", "resume", "stop", "execute_chunk", "reset"],
}


@pytest.mark.parametrize(("mode", "req"), [(m, r) for m, reqs in FORBIDDEN.items() for r in reqs])
def test_forbidden_transitions_are_rejected_with_a_reason(link, mode, req):
    server, robot, c = _drive(link, mode)
    sent_before = len(robot.sent)
    if req == "execute_chunk":
        reply = c.request(req, chunk_id="x", seq=10**6, actions=link.hold_chunk(HOME, 2), dt=0.1)
    else:
        reply = c.request(req)
    assert reply["status"] == "rejected"
    assert (
        mode in reply["reason"]
        or "disarm first" in reply["reason"]
        or "reset_fault" in reply["reason"]
    ), reply
    assert server.mode == mode
    if mode != "EXECUTING":
        assert len(robot.sent) == sent_before


def test_only_the_controller_may_start_motion(link):
    server = link.server()
    owner, other = link.client(server), link.client(server)
    owner.arm()
    with pytest.raises(RejectedError, match="armed by another client"):
        other.execute_chunk(link.hold_chunk(HOME, 2))
    owner.execute_chunk(link.hold_chunk(HOME, 30))
    other.pause()  # anyone may halt motion
    with pytest.raises(RejectedError, match="only the client that armed"):
        other.resume()
    other.stop()
    assert server.mode == Mode.ARMED


# ------------------------------------------------------------------ safety layer


def test_unsafe_chunks_are_rejected_and_nothing_moves(link):
    robot = KinematicRobot()
    server = link.server(robot, max_chunk_len=16)
    c = link.client(server)
    c.arm()

    def send(**kw):
        fields = {
            "chunk_id": "c",
            "seq": kw.pop("seq"),
            "actions": link.hold_chunk(HOME, 4),
            "dt": 0.1,
            **kw,
        }
        return c.request("execute_chunk", **fields)

    nan = link.hold_chunk(HOME, 4)
    nan[2, 4] = np.nan
    inf = link.hold_chunk(HOME, 4)
    inf[0, 0] = np.inf
    cases = [
        (dict(seq=1, actions=nan), "non-finite value in actions at step 2, pitch"),
        (dict(seq=2, actions=inf), "non-finite value in actions at step 0, x"),
        (dict(seq=3, actions=np.zeros((4, 6), np.float32)), r"shape (H, 7)"),
        (dict(seq=4, actions=np.zeros((4, 7, 1), np.float32)), r"shape (H, 7)"),
        (dict(seq=5, actions=link.hold_chunk(HOME, 17)), "max_chunk_len is 16"),
        (dict(seq=6, dt=0.05), "does not match the control period"),
        (dict(seq=7, expires_at_ns=time.time_ns() - 5_000_000), "chunk expired"),
    ]
    for kw, why in cases:
        reply = send(**kw)
        assert reply["status"] == "rejected" and why in reply["reason"], (why, reply)
    assert send(seq=100)["status"] == "accepted"
    c.stop()
    replay = send(seq=100)
    assert replay["status"] == "rejected" and "not above the last seq 100" in replay["reason"]
    assert send(seq=99)["status"] == "rejected"
    assert send(seq=101, expires_at_ns=time.time_ns() + 10**9)["status"] == "accepted"
    c.stop()
    assert server.stats.chunks_accepted == 2
    # Only the two accepted hold-chunks moved the robot, and only to where it already was.
    assert all(np.allclose(s, HOME) for s in robot.sent)


def test_workspace_clip_and_gripper_clip(link):
    robot = KinematicRobot()
    server = link.server(
        robot, workspace_min=(-0.1, -0.1, 0.05), workspace_max=(0.1, 0.1, 0.25), max_step_m=1.0
    )
    c = link.client(server)
    c.arm()
    far = np.array(
        [[0.5, -0.5, -1.0, 0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.2, 0.0, 0.0, 0.0, -1.0]], np.float32
    )
    done = c.execute_chunk(far).result(3)
    assert done["status"] == "done" and done["executed_steps"] == 2 and done["clipped_steps"] == 2
    np.testing.assert_allclose(robot.sent[0], [0.1, -0.1, 0.05, 0, 0, 0, 1.0])
    np.testing.assert_allclose(robot.sent[1], [0.0, 0.0, 0.2, 0, 0, 0, 0.0])


def test_a_jump_is_spread_over_capped_steps(link):
    robot = KinematicRobot()
    server = link.server(robot, max_step_m=0.02, max_rot_step_rad=0.1)
    c = link.client(server)
    c.arm()
    target = np.array([[0.1, 0.0, 0.2, 0.0, 0.0, 0.5, 0.0]], np.float32)  # 10 cm and 0.5 rad away
    done = c.execute_chunk(target).result(5)
    assert (
        done["status"] == "done" and done["executed_steps"] == 1 and done["interpolated_steps"] == 4
    )
    path = np.array([HOME, *robot.sent])  # (6, 7)
    assert len(robot.sent) == 5
    assert np.all(np.linalg.norm(np.diff(path[:, :3], axis=0), axis=1) <= 0.02 + 1e-6)
    assert all(rotation_angle(a[3:6], b[3:6]) <= 0.1 + 1e-6 for a, b in itertools.pairwise(path))
    np.testing.assert_allclose(path[-1], target[0], atol=1e-6)


def test_interpolation_takes_the_short_way_round():
    lim = SafetyLimits(np.full(3, -1.0), np.full(3, 1.0), max_step_m=0.01, max_rot_step_rad=0.1)
    a = np.array([0, 0, 0, 0, 0, 3.0, 0])
    b = np.array([0, 0, 0, 0, 0, -3.0, 0])  # 0.28 rad apart across +-pi, not 6 rad
    subs = lim.interpolate(a, b)
    assert len(subs) == 3
    assert all(rotation_angle(p[3:6], q[3:6]) <= 0.1 + 1e-9 for p, q in zip([a, *subs[:-1]], subs))


# ------------------------------------------------------------------ watchdog and e-stop


def test_watchdog_holds_and_faults_when_heartbeats_stop(link):
    robot = KinematicRobot()
    server = link.server(robot, heartbeat_timeout_s=0.3)
    c = link.client(server)
    c.arm()
    chunk = link.hold_chunk(HOME, 50)
    chunk[:, 0] = np.linspace(0.0, 0.1, 50)  # a slow move, so holding is visible
    h = c.execute_chunk(chunk)
    time.sleep(0.25)
    c.heartbeat_enabled = False
    t0 = time.monotonic()  # no message leaves this client after this instant
    c.wait_telemetry(lambda t: t["mode"] == "FAULT", timeout=2)
    latency = time.monotonic() - t0
    print(f"watchdog: FAULT seen {latency * 1e3:.0f} ms after the last heartbeat (timeout 300 ms)")
    assert latency <= 0.3 + 0.1
    final = h.result(2)
    assert final["status"] == "aborted" and "heartbeat timeout" in final["reason"]
    n, pose = len(robot.sent), robot.pose.copy()
    time.sleep(0.4)
    assert len(robot.sent) == n and np.array_equal(robot.pose, pose)  # held: nothing more sent
    assert server.mode == Mode.FAULT


def test_watchdog_fires_when_the_client_process_is_killed(link):
    robot = KinematicRobot()
    server = link.server(robot, heartbeat_timeout_s=0.3)
    watcher = link.client(server, heartbeat=False)
    code = textwrap.dedent(f"""
        import sys, time, numpy as np
        from robot.client import RobotClient
        c = RobotClient(cmd_port={link.port_of(server.cmd_endpoint)}, telemetry_port={link.port_of(server.telemetry_endpoint)}).connect()
        c.hello(); c.arm()
        c.execute_chunk(np.tile(np.array([0, 0, 0.2, 0, 0, 0, 0], np.float32), (60, 1)))
        print("running", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        watcher.wait_telemetry(lambda t: t["mode"] == "EXECUTING")
        time.sleep(0.2)
        t_kill = time.monotonic()
        proc.kill()  # SIGKILL: no goodbye, no more heartbeats
        t_fault = link.wait_mode(server, Mode.FAULT, 2)
    finally:
        proc.kill()
        proc.wait()
    latency = t_fault - t_kill
    print(f"killed client: FAULT {latency * 1e3:.0f} ms after SIGKILL (timeout 300 ms)")
    assert latency <= 0.3 + 0.1
    n = len(robot.sent)
    time.sleep(0.3)
    assert len(robot.sent) == n


def test_estop_from_a_second_connection_is_immediate_and_latched(link):
    robot = KinematicRobot()
    server = link.server(robot, heartbeat_timeout_s=1.0)
    driver, panel = link.client(server), link.client(server)
    driver.arm()
    h = driver.execute_chunk(link.hold_chunk(HOME, 60))
    time.sleep(0.35)
    assert server.mode == Mode.EXECUTING
    t0 = time.monotonic()
    assert panel.estop()["status"] == "ok"
    t_ack = time.monotonic()
    seen = driver.wait_telemetry(lambda t: t["mode"] == "ESTOP", timeout=1)
    t_seen = time.monotonic()
    n_sent = len(robot.sent)
    print(
        f"estop: ack {1e3 * (t_ack - t0):.1f} ms, ESTOP on telemetry {1e3 * (t_seen - t0):.1f} ms"
    )
    assert t_ack - t0 <= 0.05 and t_seen - t0 <= 0.05
    assert server.stats.last_estop_t - t0 <= 0.05
    assert seen["faults"] == ["estop"]
    assert h.result(2)["status"] == "aborted"
    with pytest.raises(RejectedError, match="reset_fault first"):
        driver.arm()
    with pytest.raises(RejectedError, match="needs ARMED"):
        driver.execute_chunk(link.hold_chunk(HOME, 2))
    time.sleep(0.3)
    assert server.mode == Mode.ESTOP and len(robot.sent) == n_sent  # nothing more executed
    panel.reset_fault()
    assert server.mode == Mode.IDLE


# ------------------------------------------------------------------ link


def test_telemetry_rate_and_fields(link):
    server = link.server(telemetry_hz=50)
    c = link.client(server)
    c.wait_telemetry()
    n0, t0 = c.telemetry_count, time.monotonic()
    time.sleep(1.0)
    rate = (c.telemetry_count - n0) / (time.monotonic() - t0)
    assert rate >= 20, rate
    t = c.telemetry
    assert set(t) >= {"seq", "t_ns", "mode", "ee_pose", "chunk_id", "step", "faults"}
    assert t["ee_pose"].dtype == np.float32 and t["ee_pose"].shape == (7,)


def test_hello_and_observation(link):
    server = link.server()
    c = link.client(server)
    info = c.info
    assert info["type"] == "hello" and info["action_space"] == "ee_pose_abs" and info["fps"] == 10
    assert info["action_names"] == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert set(info["limits"]) == {
        "workspace_min",
        "workspace_max",
        "max_step_m",
        "max_rot_step_rad",
    }
    assert np.shape(info["cameras"]["top"]["K"]) == (3, 3) and info["max_chunk_len"] == 64
    obs = c.get_observation()
    assert obs["images"]["top"].dtype == np.uint8 and obs["images"]["top"].shape == (32, 32, 3)
    assert obs["state"].dtype == np.float32 and obs["mode"] == "IDLE" and obs["ack_of"]


def test_malformed_input_is_answered_or_dropped_and_the_server_lives(link):
    server = link.server()
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(server.cmd_endpoint)
    s.send(b"\x00\xc1 not msgpack")  # dropped: no msg_id to answer
    s.send_multipart([encode(request("hello", client="x")), b"extra"])  # two frames
    s.send(
        encode(
            {
                "v": 1,
                "type": "arm",
                "msg_id": "m-bad",
                "actions": {"__ndarray__": True, "dtype": "|O", "data": b"", "shape": [0]},
            }
        )
    )
    s.send(encode(request("hello", client="x", msg_id="m-ok")))
    replies = [decode(s.recv()) for _ in range(3)]
    s.close()
    assert replies[0]["status"] == "rejected" and "one frame" in replies[0]["reason"]
    assert replies[1]["ack_of"] == "m-bad" and "not allowed" in replies[1]["reason"]
    assert replies[2]["type"] == "hello" and replies[2]["ack_of"] == "m-ok"
    assert server.stats.dropped == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_rides_through_a_robot_restart(link):
    cmd, tel = _free_port(), _free_port()
    cfg = dict(cmd_port=cmd, telemetry_port=tel, heartbeat_timeout_s=0.5)
    first = RobotServer(KinematicRobot(), ServerConfig(**cfg)).start()
    c = RobotClient(cmd_port=cmd, telemetry_port=tel, timeout_s=0.5).connect()
    link.clients.append(c)
    try:
        assert c.hello()["robot"] == "kinematic"
        c.wait_telemetry()
    finally:
        first.close()
    with pytest.raises(LinkError):
        c.request("get_observation")  # the request in flight while the robot is down
    second = RobotServer(KinematicRobot(), ServerConfig(**cfg)).start()
    link.servers.append(second)
    assert c.request("hello", timeout=3, client="t")["type"] == "hello"  # same client object
    assert c.arm()["status"] == "ok" and second.mode == Mode.ARMED
    c.wait_telemetry(lambda t: t["mode"] == "ARMED")


# ------------------------------------------------------------------ security


def test_non_loopback_bind_without_keys_is_refused(tmp_path):
    for host in ("0.0.0.0", "192.168.1.20", "robot.local", "*"):
        with pytest.raises(ValueError, match="without CURVE keys"):
            ServerConfig(host=host)
    ServerConfig(
        host="0.0.0.0", keys=load_server_keys(make_keys(tmp_path))
    )  # with keys it is allowed
    ServerConfig(host="::1")


def test_curve_only_allowed_clients_get_answers(link, tmp_path):
    keys_dir = make_keys(tmp_path / "keys", client_names=("workbench",))
    stranger_dir = make_keys(tmp_path / "stranger", client_names=("intruder",))
    robot = KinematicRobot()
    server = link.server(robot, keys=load_server_keys(keys_dir))

    good = link.client(server, keys=load_client_keys(keys_dir))
    assert good.info["robot"] == "kinematic"
    good.wait_telemetry()
    good.close()
    received = server.stats.received

    # A stranger with a key the robot does not know: the handshake fails, nothing arrives.
    bad_keys = load_client_keys(stranger_dir, name="intruder")
    stranger = link.client(
        server,
        hello=False,
        timeout_s=0.5,
        keys=ClientKeys(
            server_public=load_client_keys(keys_dir).server_public,
            public=bad_keys.public,
            secret=bad_keys.secret,
        ),
    )
    plain = link.client(server, hello=False, timeout_s=0.5)  # no CURVE at all
    for c in (stranger, plain):
        for req in ("hello", "arm", "estop"):
            with pytest.raises(LinkError):
                c.request(req, client="x") if req == "hello" else c.request(req)
        with pytest.raises(LinkError):
            c.execute_chunk(link.hold_chunk(HOME, 2), 0.1)
        assert c.telemetry is None
    assert server.mode == Mode.IDLE and robot.sent == [] and server.stats.received == received
