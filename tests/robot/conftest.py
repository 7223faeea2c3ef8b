"""Real robot servers and clients on loopback sockets (free ports), closed after each test."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot.client import RobotClient
from robot.kinematic import KinematicRobot
from robot.server import RobotServer, ServerConfig


class LinkFactory:
    def __init__(self) -> None:
        self.servers: list[RobotServer] = []
        self.clients: list[RobotClient] = []

    def server(self, robot=None, **cfg) -> RobotServer:
        cfg = {"cmd_port": 0, "telemetry_port": 0, "heartbeat_timeout_s": 0.3, **cfg}
        s = RobotServer(robot or KinematicRobot(), ServerConfig(**cfg)).start()
        self.servers.append(s)
        return s

    def client(self, server: RobotServer, hello: bool = True, **kw) -> RobotClient:
        c = RobotClient(
            cmd_port=self.port_of(server.cmd_endpoint), telemetry_port=self.port_of(server.telemetry_endpoint), **kw
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

    @staticmethod
    def hold_chunk(pose: np.ndarray, steps: int = 30) -> np.ndarray:
        """A chunk (steps, 7) that stays at `pose`: a long-running chunk that moves nothing."""
        return np.tile(np.asarray(pose, dtype=np.float32), (steps, 1))


@pytest.fixture
def link():
    f = LinkFactory()
    yield f
    f.close()
