"""What the studio needs from the link (v1.1, additive): tasks, a reset that says what the episode
is, progress on observations and telemetry, replacing a running chunk, jogging, and who may
clear an E-STOP."""

import itertools
import time

import numpy as np
import pytest

from robot.client import RejectedError
from robot.kinematic import KinematicRobot
from robot.protocol import Mode
from robot.sim.robot import SimRobot
from robot.types import CAPTION_TRACKS

HOME = np.array([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0], np.float32)


@pytest.fixture
def sim():
    r = SimRobot("pick_place_bin", seed=0, resolution=32)
    yield r
    r.disconnect()


def test_tasks_and_a_reset_that_says_what_the_episode_is(link, sim):
    server = link.server(sim)
    c = link.client(server)
    tasks = c.tasks()
    assert len(tasks) == 9 and {t["family"] for t in tasks} == {
        "diverse",
        "reasoning",
        "dexterous",
        "generalization",
    }
    press = next(t for t in tasks if t["name"] == "press_buttons_in_order")
    assert press["instruction_template"] == "press {first}, then {second}, then {third}"
    assert (
        press["split_rule"] == {"train": "seed % 5 != 4", "test": "seed % 5 == 4"}
        and press["description"]
    )
    assert c.request("tasks")["current"]["task"] == "pick_place_bin"

    r = c.reset(task="press_buttons_in_order", split="test")  # the next test seed after 0
    assert (r["task"], r["seed"], r["split"], r["family"]) == (
        "press_buttons_in_order",
        4,
        "test",
        "reasoning",
    )
    assert r["instruction"].startswith("press ") and r["variation"]["layout"]["order"]
    assert set(r["cameras"]) == {"front", "left", "right"} and np.shape(
        r["cameras"]["front"]["K"]
    ) == (3, 3)
    assert c.info["cameras"] == r["cameras"]  # the client's calibration follows the reset
    plan = r["expert_plan"]
    assert plan[0]["start"] == 0 and all(
        a["end"] == b["start"] for a, b in itertools.pairwise(plan)
    )
    assert all(e[track] for e in plan for track in CAPTION_TRACKS)
    assert sum(e["boundary"] == "press" for e in plan) == 3
    assert r["progress"]["score"] == 0 and [s["weight"] for s in r["progress"]["stages"]] == [
        3,
        3,
        4,
    ]

    assert c.reset(seed=7)["seed"] == 7 and c.reset(split="test")["seed"] == 9
    with pytest.raises(RejectedError, match="seed 3 is a train seed"):
        c.reset(seed=3, split="test")
    with pytest.raises(RejectedError, match="'split' must be one of"):
        c.call("reset", split="validation")


def test_observations_and_telemetry_carry_step_progress_and_stages(link, sim):
    server = link.server(sim)
    c = link.client(server)
    c.reset(task="press_buttons_in_order", seed=0)
    obs = c.get_observation()
    assert obs["control_step"] == 0 and obs["task_progress"] == 0 and obs["success"] is False
    assert obs["stages"][0]["name"] == "press the first button in the order"
    assert not any(s["done"] for s in obs["stages"]) and obs["intervention"] is False
    c.arm()
    pose = c.get_observation()["state"]
    c.execute_chunk(np.tile(pose, (3, 1))).result(5)
    t = c.wait_telemetry(lambda t: t["control_step"] == 3)
    assert t["task_progress"] == 0 and len(t["stages"]) == 3 and t["success"] is False
    assert t["step"] == 3 and t["intervention"] is False and t["progress_ended"] is None


def test_a_robot_without_tasks_lists_none_and_refuses_a_split(link):
    server = link.server()
    c = link.client(server)
    assert c.tasks() == []
    with pytest.raises(RejectedError, match="takes no"):
        c.reset(split="test")
    t = c.wait_telemetry()
    assert t["task_progress"] is None and t["stages"] == [] and t["control_step"] == 0


def test_replace_swaps_the_running_chunk_at_the_next_step_boundary(link):
    robot = KinematicRobot()
    server = link.server(robot, max_step_m=0.02)
    c, other = link.client(server), link.client(server)
    c.arm()
    first = np.tile(HOME, (30, 1))
    first[:, 0] = np.linspace(0.0, 0.1, 30)
    h1 = c.execute_chunk(first, chunk_id="plan-a")
    time.sleep(0.35)
    with pytest.raises(RejectedError, match="armed by another client"):
        other.execute_chunk(np.tile(HOME, (2, 1)), replace=True)
    second = np.tile(HOME, (4, 1))
    second[:, 1] = 0.05  # a corrected plan, 5 cm to the side
    h2 = c.execute_chunk(second, chunk_id="plan-b", replace=True)
    assert server.mode == Mode.EXECUTING  # no stop in between
    a1 = h1.result(2)
    assert (
        a1["status"] == "aborted"
        and "replaced by chunk 'plan-b'" in a1["reason"]
        and a1["executed_steps"] >= 2
    )
    assert h2.result(5)["status"] == "done"
    np.testing.assert_allclose(robot.pose[:2], [0.0, 0.05], atol=1e-6)  # where plan b ends
    path = np.array(robot.sent)  # every step within the cap, across the swap too
    assert np.all(np.linalg.norm(np.diff(path[:, :3], axis=0), axis=1) <= 0.02 + 1e-6)
    c.execute_chunk(np.tile(HOME, (30, 1)))
    c.pause()
    with pytest.raises(
        RejectedError, match=r"needs ARMED \(or EXECUTING with replace: true\), robot is PAUSED"
    ):
        c.execute_chunk(np.tile(HOME, (2, 1)), replace=True)


def test_jog_at_20_hz_moves_through_the_same_safety_path_and_is_flagged(link):
    robot = KinematicRobot()
    server = link.server(robot, max_step_m=0.01, workspace_max=(0.3, 0.3, 0.4))
    c, other = link.client(server), link.client(server)
    with pytest.raises(RejectedError, match="jog needs an armed robot"):
        c.jog(dxyz=(0.005, 0, 0))
    c.arm()
    h = c.execute_chunk(np.tile(HOME, (40, 1)))
    with pytest.raises(RejectedError, match="only the client that armed"):
        other.jog(dxyz=(0.005, 0, 0))
    with pytest.raises(RejectedError, match="above max_step_m"):
        c.jog(dxyz=(0.05, 0, 0))
    sent0 = len(robot.sent)
    t0, acks = time.monotonic(), []
    for i in range(20):  # 20 Hz for one second, 5 mm up each time
        acks.append(c.jog(dxyz=(0, 0, 0.005), gripper=1.0))
        time.sleep(max(0.0, t0 + (i + 1) * 0.05 - time.monotonic()))
    rate = 20 / (time.monotonic() - t0)
    assert h.result(2)["reason"] == "taken over by jog"
    assert all(a["status"] == "ok" for a in acks) and rate >= 10
    t = c.wait_telemetry(lambda t: t["intervention"] and t["chunk_id"].startswith("jog-"))
    time.sleep(0.3)
    moved = robot.pose[2] - HOME[2]
    print(f"jog: {rate:.1f} commands/s, moved {moved * 1e3:.0f} mm in ~1 s (cap 10 mm per 100 ms)")
    # Asked for 100 mm; the cap allows 10 mm per period, and a jog runs at most one step ahead.
    assert 0.04 <= moved <= 0.1 + 1e-6 and robot.pose[6] == 1.0
    np.testing.assert_allclose(acks[-1]["target"][2], robot.pose[2], atol=1e-6)
    path = np.array(robot.sent[sent0 - 1 :])
    assert np.all(np.linalg.norm(np.diff(path[:, :3], axis=0), axis=1) <= 0.01 + 1e-6)
    assert not any(a["clipped"] for a in acks)
    for _ in range(25):  # the workspace clip applies to jogs too
        last = c.jog(dxyz=(0, 0, 0.01))
        time.sleep(0.1)
    assert last["clipped"] and abs(robot.pose[2] - 0.4) < 1e-6
    assert t["mode"] in ("ARMED", "EXECUTING")


def test_only_a_connection_that_pressed_the_estop_may_clear_it(link):
    server = link.server()
    panel, other = link.client(server), link.client(server)
    panel.estop()
    with pytest.raises(RejectedError, match="only a connection that pressed it"):
        other.reset_fault()
    other.estop()  # now both pressed: both must release
    with pytest.raises(RejectedError, match="still latched by 1 other"):
        panel.reset_fault()
    assert server.mode == Mode.ESTOP
    other.reset_fault()
    assert server.mode == Mode.IDLE
    other.arm()  # a FAULT (not an E-STOP) may be cleared by anyone
    other.heartbeat_enabled = False
    link.wait_mode(server, Mode.FAULT)
    panel.reset_fault()
    assert server.mode == Mode.IDLE


class HoldRecordingRobot(KinematicRobot):
    def __init__(self):
        super().__init__()
        self.holds = 0

    def hold(self):
        self.holds += 1
        return self.pose.astype(np.float32)


@pytest.mark.parametrize("halt", ["stop", "pause", "estop"])
def test_a_halt_commands_a_hold_of_the_current_pose(link, halt):
    robot = HoldRecordingRobot()
    server = link.server(robot)
    c = link.client(server)
    c.arm()
    c.execute_chunk(np.tile(HOME, (30, 1)))
    time.sleep(0.15)
    getattr(c, halt)()
    assert robot.holds == 1
    plain = KinematicRobot()  # without hold(): the server sends the measured pose itself
    server2 = link.server(plain)
    c2 = link.client(server2)
    c2.arm()
    chunk = np.tile(HOME, (30, 1))
    chunk[:, 0] = np.linspace(0.0, 0.05, 30)
    c2.execute_chunk(chunk)
    time.sleep(0.25)
    n = len(plain.sent)
    getattr(c2, halt)()
    assert len(plain.sent) == n + 1 and np.allclose(plain.sent[-1], plain.sent[-2])
