"""The per-tab plan editor: ordered next-event instructions, and what an edit forgets."""

import numpy as np
import pytest

from app.studio.handlers import _pad_video, link_html, progress_html
from app.studio.session import PlanError, Session, label_index, new_session, parse_plan
from backend.service import MAX_PLAN_EVENTS


def test_add_edit_move_delete_keep_order_and_drop_stale_imaginations() -> None:
    s = new_session()
    s.set_plan(["approach the block", "grasp it", "lift it"])
    s.imagined = {0: "im0", 1: "im1", 2: "im2"}
    s.edit_event(1, "  grasp   the block ")
    assert s.plan[1] == "grasp the block"
    assert set(s.imagined) == {0}  # event 1 changed: it and everything after it are stale
    s.add_event("put it in the bin")
    assert s.active == 3 and s.plan[-1] == "put it in the bin"
    s.move_event(3, -1)
    assert (
        s.plan == ["approach the block", "grasp the block", "put it in the bin", "lift it"]
        and s.active == 2
    )
    s.delete_event(0)
    assert s.plan == ["grasp the block", "put it in the bin", "lift it"] and s.imagined == {}
    s.insert_event(1, "open the gripper")
    assert s.plan[1] == "open the gripper" and s.active == 1
    assert s.choices()[1] == "2. open the gripper" and label_index(s.choices()[1]) == 1


def test_bad_edits_are_refused_with_a_reason() -> None:
    s = Session()
    with pytest.raises(PlanError, match="empty"):
        s.add_event("   ")
    with pytest.raises(PlanError, match="10000 characters; at most 500"):
        s.add_event("x" * 10_000)
    with pytest.raises(PlanError, match="plan is empty"):
        s.delete_event(0)
    s.set_plan(["a"])
    with pytest.raises(PlanError, match="already first"):
        s.move_event(0, -1)
    with pytest.raises(PlanError, match="50 events; at most 32"):
        parse_plan("\n".join(f"event {i}" for i in range(50)))
    with pytest.raises(PlanError, match="empty"):
        parse_plan("\n \n")
    s.set_plan([f"e{i}" for i in range(MAX_PLAN_EVENTS)])
    with pytest.raises(PlanError, match="already has 32 events"):
        s.add_event("one more")


def test_sessions_are_independent_and_the_log_is_newest_first() -> None:
    a, b = new_session(), new_session()
    a.add_event("only in a")
    assert b.plan == [] and a.id != b.id
    a.note("armed")
    a.note("sent chunk")
    assert a.log_text().splitlines()[0].endswith("sent chunk")


def test_top_bar_pieces() -> None:
    assert "link ok" in link_html(0.01, True) and "link down" in link_html(float("inf"), True)
    assert "no robot" in link_html(0.0, False)
    html = progress_html(
        {
            "task_progress": 3,
            "stages": [
                {"name": "press the first", "weight": 3, "done": True},
                {"name": "press the second", "weight": 3, "done": False},
            ],
        }
    )
    assert 'aria-valuenow="30"' in html and "✓ press the first" in html
    assert 'aria-valuenow="0"' in progress_html(None)


def test_final_video_is_padded_to_the_longest_preview() -> None:
    v = {"front": np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)}
    out = _pad_video(v, 5)["front"]
    assert (
        out.shape == (5, 2, 2, 3)
        and (out[3] == v["front"][-1]).all()
        and (out[4] == v["front"][-1]).all()
    )
    assert _pad_video(v, 2)["front"] is v["front"]


def test_trace_marks_go_to_the_file_named_by_the_environment(tmp_path, monkeypatch) -> None:
    import json
    import time

    from app.studio.handlers import trace

    monkeypatch.delenv("WALLWM_TRACE", raising=False)
    trace("imagine_start", session="s")  # off: writes nothing anywhere
    path = tmp_path / "marks.jsonl"
    monkeypatch.setenv("WALLWM_TRACE", str(path))
    before = time.time()
    trace("imagine_start", session="a")
    trace("imagine_preview", session="a", step=1, video=True)
    marks = [json.loads(line) for line in path.read_text().splitlines()]
    assert [m["mark"] for m in marks] == ["imagine_start", "imagine_preview"]
    assert marks[1]["step"] == 1 and marks[1]["video"] is True
    assert before <= marks[0]["t"] <= marks[1]["t"] <= time.time()


def test_finished_viewer_streams_are_dropped_but_the_newest() -> None:
    """Gradio keeps every streamed chunk until the tab closes; a tab keeps its last few."""
    from types import SimpleNamespace

    from gradio.route_utils import MediaStream

    from app.studio.handlers import Studio

    def run(ended: bool) -> dict:
        stream = MediaStream()
        if ended:
            stream.end_stream()
        return {7: stream}

    runs = {f"r{i}": run(ended=i != 5) for i in range(6)}  # r5 is still streaming
    other = {"x": run(ended=True)}
    studio = Studio.__new__(Studio)
    studio.blocks = SimpleNamespace(pending_streams={"tab": runs, "other": other})
    studio.prune_streams(SimpleNamespace(session_hash="tab"), keep=2)
    assert list(runs) == ["r3", "r4", "r5"]  # the two newest finished ones and the live one
    assert list(other) == ["x"]  # other tabs are left alone
    studio.prune_streams(None)  # no request (a call from code): nothing to do


def test_approve_waits_for_the_running_imagination_of_its_event() -> None:
    from app.studio.handlers import Studio
    from backend.service import BackendError

    studio = Studio(backend=None, robot=object(), tasks={})  # _send checks before any robot call
    s = new_session()
    s.set_plan(["reach the red block", "grasp it"])
    s.imagining = 0  # a re-imagination of event 1 is on its way: its older chunk must not go
    with pytest.raises(BackendError, match="being imagined again"):
        studio._send(s, 0)
    s.imagining = None
    with pytest.raises(BackendError, match="not imagined yet"):
        studio._send(s, 0)


def test_a_replaced_chunk_names_its_successor() -> None:
    s = new_session()
    s.replacements["tab-e2-r1"] = ("handle-2", 1)
    assert s.successor({"status": "aborted", "reason": "replaced by chunk 'tab-e2-r1'"}) == (
        "handle-2",
        1,
    )
    assert s.successor({"status": "aborted", "reason": "replaced by chunk 'other'"}) is None
    assert s.successor({"status": "aborted", "reason": "stopped"}) is None
    assert s.successor({"status": "done", "reason": ""}) is None
