"""SimRobot behind the Robot contract the robot server drives (stepped mode: one control period
per send_action, deterministic; the real-time physics clock is in test_physics_clock.py)."""

import numpy as np
import pytest

from robot.robot import Robot
from robot.sim import scene as S
from robot.sim.robot import SimRobot


@pytest.fixture
def robot():
    r = SimRobot("press_buttons_in_order", seed=1, realtime=False)
    r.connect()
    yield r
    r.disconnect()


def test_conforms_to_the_robot_protocol(robot):
    assert isinstance(robot, Robot)
    assert robot.fps == 10 and robot.name == "sim"
    obs = robot.get_observation()
    feats = robot.observation_features
    for cam, img in obs["images"].items():
        shape, dtype = feats[f"observation.images.{cam}"]
        assert img.shape == shape and img.dtype == np.dtype(dtype)
    assert obs["state"].shape == feats["observation.state"][0]
    assert robot.action_features["action"] == ((7,), "float32")
    assert set(robot.cameras) == set(obs["images"])
    assert robot.task_progress() == 0


def test_send_action_returns_what_was_really_sent(robot):
    sent = robot.send_action(np.array([0.5, 0.0, 0.1, 0, 0, 0, 2.0], dtype=np.float32))
    assert sent.dtype == np.float32
    np.testing.assert_allclose(sent, [robot.workspace_max[0], 0.0, 0.1, 0, 0, 0, 1.0], atol=1e-6)
    for _ in range(4):  # a 30 cm jump takes the gripper a few control periods
        robot.send_action(sent)
    np.testing.assert_allclose(robot.get_state()[:3], sent[:3], atol=0.005)
    with pytest.raises(ValueError):
        robot.send_action(np.array([np.inf, 0, 0, 0, 0, 0, 0]))


def test_requires_connection():
    r = SimRobot("pick_place_bin")
    with pytest.raises(RuntimeError, match="not connected"):
        r.get_observation()
    with pytest.raises(ValueError, match="did you mean"):
        SimRobot("pick_place")


def test_reset_to_another_task_and_seed(robot):
    robot.send_action(np.array([0.1, 0.1, 0.1, 0, 0, 0, 1.0]))
    robot.reset(seed=1)
    np.testing.assert_allclose(robot.get_state()[:3], S.HOME[:3], atol=2e-3)
    first = robot.instruction
    robot.reset(task="peg_insertion", seed=3)
    assert robot.task == "peg_insertion" and robot.instruction != first
    assert robot.get_observation()["images"]["front"].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="did you mean"):
        robot.reset(task="peg_insert")
    assert robot.task == "peg_insertion"  # a bad reset leaves the robot as it was


def test_holding_the_measured_state_keeps_a_grasped_block():
    """The server arms by commanding the measured state; a held block must not drop."""
    from robot.sim.experts import run_expert

    r = SimRobot("pick_place_bin", seed=2, realtime=False)
    r.connect()
    try:
        for step in run_expert(r.env):
            if step.primitive == 4:  # lifted, about to carry
                break
        assert r.env.held("block")
        z = r.env.body_pos("block")[2]
        for _ in range(10):
            r.send_action(r.get_state())
        assert r.env.held("block") and abs(r.env.body_pos("block")[2] - z) < 0.01
    finally:
        r.disconnect()
