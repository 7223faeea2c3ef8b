"""The step caps hold per control period of wall-clock time, whatever else the robot is doing.

Regression for v1.0: an observation render held the robot lock, the control thread ran late,
then sent the capped sub-targets it owed back to back (a burst several caps long).
"""

import itertools
import threading
import time

import numpy as np

from robot.kinematic import KinematicRobot

CAP = 0.02  # max_step_m for these tests


class SlowCameraRobot(KinematicRobot):
    """A kinematic robot whose camera takes 250 ms to read (a real USB camera can), recording
    the wall-clock time of every target."""

    def __init__(self):
        super().__init__()
        self.sent_at: list[float] = []

    def get_observation(self):
        time.sleep(0.25)
        return super().get_observation()

    def send_action(self, action):
        self.sent_at.append(time.monotonic())
        return super().send_action(action)


def moving_chunk(start: np.ndarray, n: int) -> np.ndarray:
    chunk = np.tile(np.asarray(start, np.float32), (n, 1))
    chunk[:, 0] = start[0] + CAP * np.arange(1, n + 1)  # every action one full cap further
    return chunk


def test_a_slow_camera_never_makes_control_burst(link):
    robot = SlowCameraRobot()
    server = link.server(robot, max_step_m=CAP, heartbeat_timeout_s=2.0)
    c = link.client(server)
    c.arm()
    stop, n_obs = threading.Event(), [0]
    hammer = threading.Thread(
        target=link.hammer_observations, args=(server, stop, n_obs), daemon=True
    )
    hammer.start()
    time.sleep(0.3)
    start = robot.pose.copy()
    done = c.execute_chunk(moving_chunk(start, 12)).result(20)
    stop.set()
    hammer.join(10)
    assert done["status"] == "done" and n_obs[0] >= 3
    link.check_capped_sends(
        np.array([start, *robot.sent]), np.array([-np.inf, *robot.sent_at]), CAP, 0.1
    )


def test_a_paused_then_resumed_chunk_steps_within_the_caps_from_the_hold(link):
    robot = SlowCameraRobot()
    server = link.server(robot, max_step_m=CAP)
    c = link.client(server)
    c.arm()
    start = robot.pose.copy()
    h = c.execute_chunk(moving_chunk(start, 8))
    time.sleep(0.35)
    c.pause()
    time.sleep(0.25)
    c.resume()
    assert h.result(10)["status"] == "done"
    path = np.array([start, *robot.sent])
    assert all(np.linalg.norm(b[:3] - a[:3]) <= CAP + 1e-6 for a, b in itertools.pairwise(path))
    # Only the hold commanded at the pause (the pose the robot is at) comes sooner than a period.
    close = np.flatnonzero(np.diff(robot.sent_at) < 0.05)
    assert all(np.allclose(robot.sent[i], robot.sent[i + 1], atol=1e-6) for i in close)
