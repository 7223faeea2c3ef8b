"""Real robot servers and clients on loopback sockets (free ports), closed after each test."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from robot.client import RobotClient
from robot.kinematic import KinematicRobot
from robot.server import RobotServer, ServerConfig
from robot.sim.robot import SimRobot


class LinkFactory:
    def __init__(self) -> None:
        self.servers: list[RobotServer] = []
        self.clients: list[RobotClient] = []

    def server(self, robot=None, **cfg) -> RobotServer:
        # 1 s of silence before the watchdog trips: a loaded 2-core machine can stall a 60 ms
        # heartbeat past 0.3 s (it once aborted a chunk mid-suite); tests of the watchdog's
        # timing pass their own timeout.
        cfg = {"cmd_port": 0, "telemetry_port": 0, "heartbeat_timeout_s": 1.0, **cfg}
        s = RobotServer(robot or KinematicRobot(), ServerConfig(**cfg)).start()
        self.servers.append(s)
        return s

    def client(self, server: RobotServer, hello: bool = True, **kw) -> RobotClient:
        c = RobotClient(
            cmd_port=self.port_of(server.cmd_endpoint),
            telemetry_port=self.port_of(server.telemetry_endpoint),
            **kw,
        ).connect()
        self.clients.append(c)
        if hello:
            c.hello()
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.servers:
            s.close()

    @staticmethod
    def port_of(endpoint: str) -> int:
        return int(endpoint.rsplit(":", 1)[1])

    @staticmethod
    def wait_mode(server: RobotServer, mode: str, timeout: float = 2.0) -> float:
        """Poll the server's mode; return the monotonic time it was first seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.mode == mode:
                return time.monotonic()
            time.sleep(0.001)
        raise AssertionError(f"server mode is {server.mode}, expected {mode} within {timeout} s")

    def hammer_observations(
        self, server: RobotServer, stop: threading.Event, counter: list[int]
    ) -> None:
        """From a connection of its own, ask for observations back to back until `stop`."""
        with RobotClient(
            cmd_port=self.port_of(server.cmd_endpoint),
            telemetry_port=self.port_of(server.telemetry_endpoint),
            heartbeat=False,
            timeout_s=10,
        ) as c:
            while not stop.is_set():
                c.get_observation(timeout=10)
                counter[0] += 1

    @staticmethod
    def check_capped_sends(targets: np.ndarray, sent_at: np.ndarray, cap: float, dt: float) -> None:
        """Consecutive targets (n, 7) differ by at most `cap` and are at least ~one period apart."""
        steps = np.linalg.norm(np.diff(targets[:, :3], axis=0), axis=1)
        gaps = np.diff(sent_at)
        print(
            f"{len(targets)} targets: largest step {steps.max() * 1e3:.1f} mm (cap {cap * 1e3:.0f}), "
            f"shortest gap {gaps.min() * 1e3:.1f} ms (period {dt * 1e3:.0f})"
        )
        assert np.all(steps <= cap + 1e-6)
        # A late tick stretches, it never catches up: the server spaces targets by at least a
        # period on its own clock; seen from the robot, a thread preempted for a few ms between
        # the two clocks shortens one gap by as much, so half a period is the bound tested here
        # (a burst sends them within a millisecond).
        assert np.all(gaps >= 0.5 * dt), np.sort(gaps)[:5]

    @staticmethod
    def hold_chunk(pose: np.ndarray, steps: int = 30) -> np.ndarray:
        """A chunk (steps, 7) that stays at `pose`: a long-running chunk that moves nothing."""
        return np.tile(np.asarray(pose, dtype=np.float32), (steps, 1))


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

    def max_motion_per_period(self, period: float = 0.1) -> tuple[float, float]:
        """Largest displacement of the mocap target and of the measured grip point over one
        `period` of sim time, from the clock trace (windows span the first sample at least a
        period later; a longer window is scaled back to one period)."""
        trace = list(self.trace)
        t = np.array([s[0] for s in trace])
        mocap = np.array([s[1] for s in trace])
        state = np.array([s[2][:3] for s in trace])
        j = np.searchsorted(t, t + period - 1e-9)
        ok = j < len(t)
        i, j = np.flatnonzero(ok), j[ok]
        scale = period / (t[j] - t[i])  # (windows,) <= 1
        return (
            float(np.max(scale * np.linalg.norm(mocap[j] - mocap[i], axis=1))),
            float(np.max(scale * np.linalg.norm(state[j] - state[i], axis=1))),
        )


@pytest.fixture
def recording_sim():
    """Factory of RecordingSimRobot (real-time MuJoCo sim), disconnected after the test."""
    made: list[RecordingSimRobot] = []

    def make(**kw) -> RecordingSimRobot:
        made.append(RecordingSimRobot(**kw))
        return made[-1]

    yield make
    for r in made:
        r.disconnect()


@pytest.fixture
def link():
    f = LinkFactory()
    yield f
    f.close()
