"""If a server thread dies anyway, the robot holds, telemetry says FAULT, the process exits non-zero.

No input can kill a thread any more (test_fuzz.py), so the death is a bug injected into the
server: the one fault these tests cannot cause otherwise.
"""

import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from robot.client import RejectedError, RobotClient
from robot.kinematic import KinematicRobot
from robot.protocol import Mode
from robot.server import RobotServer, ServerConfig, ServerDied

HOME = np.array([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0], np.float32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wallwm_sim_robot_exits_non_zero_with_fault_on_telemetry_when_the_control_thread_dies():
    cmd, tel = _free_port(), _free_port()
    code = textwrap.dedent(f"""
        import sys
        from robot.server import RobotServer
        from app.cli import main

        def injected_bug(self, chunk):
            raise RuntimeError("injected bug")

        RobotServer._run_chunk = injected_bug
        sys.exit(main(["sim-robot", "--cmd-port", "{cmd}", "--telemetry-port", "{tel}", "--resolution", "32"]))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        with RobotClient(cmd_port=cmd, telemetry_port=tel, timeout_s=30) as c:
            c.hello()
            c.arm()
            pose = c.get_observation()["state"]
            c.execute_chunk(np.tile(pose, (5, 1)))
            t = c.wait_telemetry(lambda t: t["mode"] == "FAULT", timeout=5)
            assert any(
                "server thread robot-control died: RuntimeError: injected bug" in f
                for f in t["faults"]
            )
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
        out = proc.communicate()[0]
    assert rc == 1, out
    assert "exiting: server thread robot-control died" in out


class HoldRecordingRobot(KinematicRobot):
    """The kinematic robot, with a hold() the server calls when it halts."""

    def __init__(self):
        super().__init__()
        self.holds = 0

    def hold(self):
        self.holds += 1
        return self.pose.astype(np.float32)


def test_a_dead_socket_loop_holds_the_robot_and_serve_forever_raises(monkeypatch):
    robot = HoldRecordingRobot()
    server = RobotServer(robot, ServerConfig(cmd_port=0, telemetry_port=0, heartbeat_timeout_s=5.0))
    calls = {"n": 0}
    original = RobotServer._check_watchdog

    def watchdog_with_a_bug(self):
        calls["n"] += 1
        if calls["n"] > 200 and self._mode == Mode.EXECUTING:
            raise RuntimeError("injected bug")
        return original(self)

    monkeypatch.setattr(RobotServer, "_check_watchdog", watchdog_with_a_bug)
    died: list[BaseException] = []

    def serve():
        try:
            server.serve_forever()
        except ServerDied as e:
            died.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    while not server.cmd_endpoint:
        time.sleep(0.01)
    port = int(server.cmd_endpoint.rsplit(":", 1)[1])
    tel = int(server.telemetry_endpoint.rsplit(":", 1)[1])
    with RobotClient(cmd_port=port, telemetry_port=tel, timeout_s=1.0) as c:
        c.hello()
        c.arm()
        chunk = np.tile(HOME, (60, 1))
        chunk[:, 0] = np.linspace(0.0, 0.1, 60)
        c.execute_chunk(chunk)
        t.join(10)
    assert not t.is_alive() and died, "serve_forever must end with ServerDied"
    assert "robot-link died: RuntimeError: injected bug" in str(died[0])
    assert server.mode == Mode.FAULT and robot.holds == 1
    n = len(robot.sent)
    time.sleep(0.3)
    assert len(robot.sent) == n  # held: nothing sent after the death


def test_after_a_thread_death_reset_fault_is_refused(link):
    server = link.server()
    c = link.client(server)
    server._thread_died("server thread robot-worker died: RuntimeError: injected bug")
    assert c.wait_telemetry(lambda t: t["mode"] == "FAULT")["faults"][-1].startswith(
        "server thread robot-worker"
    )
    with pytest.raises(RejectedError, match="restart the robot server"):
        c.reset_fault()
    assert server.died.is_set()
