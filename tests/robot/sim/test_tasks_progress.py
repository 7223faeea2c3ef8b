"""Task registry, generalization split and Task Progress (latched, in-order credit)."""

import mujoco
import numpy as np
import pytest

from robot.sim import scene as S
from robot.sim.env import SimEnv
from robot.sim.experts import run_expert
from robot.sim.progress import Stage, TaskProgress, success_rate, task_progress_percent
from robot.sim.tasks import (
    BUTTON_ORDERS,
    FAMILIES,
    HELD_OUT_ORDERS,
    TASKS,
    get_task,
    split,
    tasks_in,
)


def test_registry_covers_every_family():
    assert len(TASKS) >= 8
    for family in FAMILIES:
        assert tasks_in(family), family
    assert set(tasks_in("all")) == set(TASKS)
    for name in (
        "pick_place_bin",
        "push_to_target",
        "stack_blocks",
        "press_buttons_in_order",
        "sort_by_colour",
        "peg_insertion",
        "gen_press_buttons_unseen",
        "gen_pick_place_distractors",
    ):
        assert name in TASKS
    with pytest.raises(ValueError, match="did you mean 'stack_blocks'"):
        get_task("stack_block")
    with pytest.raises(ValueError, match="unknown family"):
        tasks_in("easy")


@pytest.mark.parametrize("task", list(TASKS))
def test_stages_weights_and_instruction(task):
    env = SimEnv(task, seed=2)
    try:
        stages = env.progress.stages
        assert sum(s.weight for s in stages) == 10 and all(s.weight > 0 for s in stages)
        assert len(env.instruction) > 10
        assert env.task_progress() == 0
    finally:
        env.close()


def test_split_is_deterministic_and_fixed():
    seeds = range(100)
    a = [split("pick_place_bin", s) for s in seeds]
    assert a == [split("pick_place_bin", s) for s in seeds]
    assert a.count("test") == 20
    assert split("pick_place_bin", 4) == "test" and split("pick_place_bin", 5) == "train"
    with pytest.raises(ValueError, match="non-negative"):
        split("pick_place_bin", -3)
    with pytest.raises(ValueError, match="non-negative"):
        split("pick_place_bin", "7")


def test_generalization_holds_out_colours_and_orders():
    env = SimEnv("gen_press_buttons_unseen")
    try:
        held_out = {tuple(BUTTON_ORDERS[i]) for i in HELD_OUT_ORDERS}
        for seed in range(15):
            env.reset(seed, render=False)
            colours = set(env.layout["colours"].values())
            order = tuple(int(b[-1]) for b in env.layout["order"])
            if env.split == "test":
                assert colours & set(S.UNSEEN_COLOURS) and order in held_out
            else:
                assert not colours & set(S.UNSEEN_COLOURS) and order not in held_out
    finally:
        env.close()
    env = SimEnv("gen_pick_place_distractors")
    try:
        for seed in range(10):
            env.reset(seed, render=False)
            shapes = {d["shape"] for d in env.layout["distractors"]}
            colours = {d["colour"] for d in env.layout["distractors"]}
            unseen = env.split == "test"
            assert (shapes <= {"sphere", "capsule"}) == unseen
            assert (colours <= set(S.UNSEEN_COLOURS)) == unseen
            assert len(env.layout["distractors"]) == 3
            assert env.layout["camera_jitter"] and env.layout["lighting"]["brightness"] != 1.0
    finally:
        env.close()


class _Flags:
    """A stand-in environment whose stage conditions are set by hand."""

    def __init__(self):
        self.on = set()


def test_task_progress_latches_in_order():
    stages = [Stage(n, w, lambda e, n=n: n in e.on) for n, w in (("a", 2), ("b", 3), ("c", 5))]
    tp, e = TaskProgress(stages), _Flags()
    e.on = {"b", "c"}  # later stages first: no credit
    assert tp.update(e) == 0
    e.on = {"a"}
    assert tp.update(e) == 2
    e.on = set()  # latched: credit stays
    assert tp.update(e) == 2
    e.on = {"c"}  # still out of order
    assert tp.update(e) == 2
    e.on = {"b", "c"}  # both hold now: credited together, in order
    assert tp.update(e) == 10 and tp.success
    with pytest.raises(ValueError, match="sum to 10"):
        TaskProgress([Stage("x", 4, lambda e: True)])


def test_task_progress_percent():
    assert task_progress_percent([10, 5, 0]) == 50.0
    assert success_rate([10, 10, 3, 0]) == 0.5
    with pytest.raises(ValueError):
        task_progress_percent([])
    with pytest.raises(ValueError):
        task_progress_percent([11])


def test_half_finished_expert_gets_partial_credit_in_order():
    env = SimEnv("pick_place_bin", seed=1)
    try:
        for step in run_expert(env):
            if step.primitive == 4:  # stop as soon as it starts carrying the block to the bin
                break
        assert env.progress.credited == ["grasp the block", "lift the block"]
        assert env.task_progress() == 4
    finally:
        env.close()


def test_block_teleported_into_bin_earns_nothing():
    env = SimEnv("pick_place_bin", seed=1)
    try:
        m, d = env.model, env.data
        adr = m.joint("block").qposadr[0]
        d.qpos[adr : adr + 3] = env.body_pos("bin") + np.array([0, 0, 0.03])
        d.qvel[:] = 0
        mujoco.mj_forward(m, d)
        for _ in range(5):
            env.step(env.target, render=False)
        assert env.progress.stages[3].check(env)  # the final condition holds...
        assert env.task_progress() == 0  # ...but earlier stages were never done
    finally:
        env.close()


def _press(env: SimEnv, button: str) -> None:
    xy = env.body_pos(button)[:2]
    for z in (0.08, 0.08, 0.045, 0.03, 0.02, 0.02, 0.08, 0.08):
        env.step(np.r_[xy, z, 0.0, 0.0, 0.0, 1.0], render=False)


def test_buttons_in_order_earn_full_credit():
    env = SimEnv("press_buttons_in_order", seed=0)
    try:
        first, second, third = env.layout["order"]
        _press(env, first)
        assert env.task_progress() == 3
        _press(env, second)
        _press(env, third)
        assert env.task_progress() == 10 and env.progress.ended is None
    finally:
        env.close()


def test_a_press_out_of_order_ends_credit_for_the_episode():
    """Regression: wrong presses used to cost nothing, so pressing everything scored 10/10."""
    env = SimEnv("press_buttons_in_order", seed=0)
    try:
        first, second, third = env.layout["order"]
        _press(env, first)
        assert env.task_progress() == 3
        _press(env, third)  # skipping the second one
        colour = env.layout["colours"][third]
        assert env.task_progress() == 3 and env.progress.ended == f"pressed {colour} out of order"
        _press(env, second)  # the right order from here on earns nothing: latched
        _press(env, third)
        assert env.task_progress() == 3 and not env.progress.success
        snap = env.progress.snapshot()
        assert [s["done"] for s in snap["stages"]] == [True, False, False] and snap["ended"]
    finally:
        env.close()
