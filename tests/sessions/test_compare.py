"""The Sessions tab's Compare on two recorded sim sessions: B replays A's steps but its path
leaves A's by 5 cm from step K on; Compare draws both Task Progress curves and names step K."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from app.studio.sessions_tab import compare
from sessions.store import SessionStore

K, OFFSET_M = 12, 0.05


def _diverted_copy(root, session_id: str) -> str:
    store = SessionStore(root)
    with store.open(session_id) as a:
        w = store.create({**a.meta, "note": f"A with its path moved {OFFSET_M} m from step {K}"})
        w.plan(a.plan_versions()[0]["plan"], "scene", "A's plan")
        for i in range(len(a.frames)):
            f = a.frames.frame(i)
            state = f.state.copy()
            if i >= K:
                state[1] += OFFSET_M
            w.step(state, f.images, event_index=f.event_index, task_progress=f.task_progress)
        w.close("diverted copy")
    return w.id


def test_compare_names_where_the_executed_paths_parted(sim_session) -> None:
    b = _diverted_copy(sim_session.root, sim_session.id)
    studio = SimpleNamespace(store=SessionStore(sim_session.root))
    fig, _table, text = compare(studio, sim_session.id, b)
    assert f"parted at step {K} (5.0 cm apart)" in text
    assert sim_session.id in text and b in text
    a_curve, b_curve = (np.asarray(t.y) for t in fig.data)
    assert len(a_curve) == len(b_curve) == sim_session.steps
    assert a_curve[-1] == 100 and np.array_equal(a_curve, b_curve)  # the expert finished the task
    assert np.all(np.diff(a_curve) >= 0)


def test_compare_asks_for_two_sessions_and_reports_a_missing_one(sim_session) -> None:
    studio = SimpleNamespace(store=SessionStore(sim_session.root))
    assert "pick two sessions" in compare(studio, sim_session.id, None)[2]
    assert "no-such" in compare(studio, sim_session.id, "no-such")[2]
