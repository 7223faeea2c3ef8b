"""Scripted experts: success, events (tiling, lengths, boundaries, captions), recording."""

import itertools
import json

import numpy as np
import pytest

from robot.sim.captions import Captioner
from robot.sim.env import SimEnv
from robot.sim.experts import (
    H_MAX,
    MIN_EVENT,
    ExpertRollout,
    Primitive,
    expert_score,
    random_action,
    record_episode,
    run_expert,
    run_policy,
)
from robot.sim.progress import task_progress_percent
from robot.sim.tasks import TASKS
from robot.types import CAPTION_TRACKS


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds_on_95_percent_of_20_seeds(task):
    env = SimEnv(task)
    try:
        scores = [expert_score(task, seed, env=env).score for seed in range(20)]
    finally:
        env.close()
    print(f"{task}: Task Progress {task_progress_percent(scores):.1f}, scores {scores}")
    assert sum(s == 10 for s in scores) >= 19, scores


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds_on_a_test_seed(task):
    stats = expert_score(task, seed=9)
    assert stats.score == 10
    assert all(MIN_EVENT <= n <= H_MAX for n in stats.event_lengths)


def test_random_actions_score_low():
    rng = np.random.default_rng(0)
    scores = []
    for task in TASKS:
        env = SimEnv(task)
        try:
            for seed in range(2):
                env.reset(seed, render=False)
                scores.append(run_policy(env, lambda e: random_action(e, rng), steps=60)[-1])
        finally:
            env.close()
    print(f"random actions: Task Progress {task_progress_percent(scores):.1f}, scores {scores}")
    assert task_progress_percent(scores) < 30


def _rollout(task: str, seed: int):
    env = SimEnv(task, seed=seed)
    r = run_expert(env)
    steps = list(r)
    env.close()
    return r, steps


@pytest.mark.parametrize("task", list(TASKS))
def test_events_tile_and_cut_at_gripper_and_contact_changes(task):
    r, steps = _rollout(task, seed=3)
    events = r.events
    assert events[0].start == 0 and events[-1].end == len(steps)
    for a, b in itertools.pairwise(events):
        assert a.end == b.start
    starts = {e.start for e in events}
    for e in events:
        assert MIN_EVENT <= e.length <= H_MAX
        for track in CAPTION_TRACKS:
            assert e.caption(track).strip(), (track, e)
    # The gripper command changes only where an event starts.
    g = np.array([s.action[6] for s in steps])
    changes = np.flatnonzero(np.diff(g) != 0) + 1
    assert set(changes.tolist()) <= starts
    # Every change of what the gripper touches (privileged contact flags) falls within two
    # steps of an event boundary: contacts begin/end at the semantic cuts, not mid-event.
    boundaries = np.array(sorted(starts | {len(steps)}))
    prev = frozenset()
    for s in steps:
        if s.contacts != prev:
            t = s.t + 1  # the contact is observed in the next frame
            assert np.min(np.abs(boundaries - t)) <= 2, (t, sorted(prev), sorted(s.contacts))
        prev = s.contacts


def test_grasp_boundary_is_where_the_gripper_closes():
    r, steps = _rollout("pick_place_bin", seed=5)
    close = next(e for e in r.events if e.boundary == "contact" and steps[e.start].action[6] == 1.0)
    assert (
        steps[close.start - 1].action[6] == 0.0
    )  # open before, closed from the event's first step
    assert "block" not in steps[close.start - 1].contacts  # no contact yet ...
    assert "block" in steps[close.end - 1].contacts  # ... and held at its end


def test_press_events_end_when_the_button_goes_down():
    env = SimEnv("press_buttons_in_order", seed=2)
    r = run_expert(env)
    depth_at = {}
    for s in r:
        depth_at[s.t] = max(env.button_depth(b) for b in env.layout["order"])
    env.close()
    presses = [e for e in r.events if e.boundary == "press"]
    assert len(presses) == 3
    for e in presses:
        assert depth_at[e.end - 1] > 0.008 and depth_at[e.start - 1] < 0.008


def test_captions_paraphrase_and_describe_motion():
    tasks = {_rollout("press_buttons_in_order", seed)[0].events[0].task for seed in range(6)}
    assert len(tasks) >= 2  # several paraphrases of the task template
    say = Captioner(0)
    assert say.segment(np.array([0, 0, 0.10, 0, 0, 0, 0]), np.array([0, 0, 0.06, 0, 0, 0, 0])) in (
        "descend 4 cm",
        "move down 4 cm",
        "lower 4 cm",
    )
    seg = say.segment(np.array([0, 0, 0.1, 0, 0, 0, 0]), np.array([0, 0.12, 0.1, 0, 0, 0, 0]))
    assert "12 cm left" in seg
    assert say.segment(np.zeros(7), np.r_[np.zeros(6), 1.0]) in (
        "close the gripper",
        "close the fingers",
        "squeeze the fingers shut",
    )
    assert say.segment(np.zeros(7), np.zeros(7)) in ("hold still", "stay in place", "keep the pose")


def test_long_primitives_are_split_into_events_of_at_most_h_max():
    env = SimEnv("pick_place_bin", seed=0)
    r = ExpertRollout(env)
    r.actions = [np.r_[0.0, 0.001 * t, 0.2, 0, 0, 0, 0] for t in range(70)]
    r._initial = env.target
    prim = Primitive("sub", "act", lambda e: np.zeros(4), 0.0, "arrive")
    r._spans = [(0, 70, prim)]
    events = r._cut_events()
    env.close()
    assert [e.length for e in events] == [23, 24, 23]
    assert events[0].start == 0 and events[-1].end == 70


def test_record_episode_renders_a_valid_event_annotated_episode():
    ep = record_episode("stack_blocks", seed=7, resolution=64)
    ep.validate()
    T = ep.length
    assert set(ep.frames) == {"front", "left", "right"}
    assert ep.frames["front"].shape == (T, 64, 64, 3)
    assert ep.progress.shape == (T,) and ep.progress[-1] == 10 and np.all(np.diff(ep.progress) >= 0)
    assert ep.family == "diverse" and ep.fps == 10 and ep.instruction.startswith("stack the")
    assert ep.variation["split"] == "train" and "layout" in ep.variation
    json.dumps(ep.variation)  # stored in dataset metadata as JSON
    assert set(ep.cameras) == set(ep.frames)
    assert len(ep.plan) == len(ep.events) >= 6
    # Frames move: the gripper is seen doing something.
    assert np.abs(ep.frames["front"][-1].astype(int) - ep.frames["front"][0].astype(int)).mean() > 1
    # The recorded state follows the recorded actions.
    np.testing.assert_allclose(ep.states[1:, :3], ep.actions[:-1, :3], atol=0.01)


def test_record_episode_reuses_an_env():
    env = SimEnv("press_buttons_in_order", resolution=64)
    try:
        a = record_episode("press_buttons_in_order", seed=1, env=env)
        b = record_episode("press_buttons_in_order", seed=2, env=env)
        assert (a.seed, b.seed) == (1, 2)
        assert a.variation["layout"] != b.variation["layout"]
        with pytest.raises(ValueError, match="env is for task"):
            record_episode("stack_blocks", seed=1, env=env)
    finally:
        env.close()
