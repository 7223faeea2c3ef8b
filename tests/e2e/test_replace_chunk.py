"""Replace running chunk, in a real browser: the operator swaps the chunk the robot is executing
for a new imagination, and the page follows the new chunk to its end.

The sim runs in slow motion (`wallwm sim-robot --time-scale 0.01`: each 10 Hz control period
lasts 10 s of wall time), so event 1's chunk is still running when the operator selects event 2
and presses Replace, even on a loaded machine; at real time the test model's chunks end within
a second. Both events are imagined before event 1 is sent (in slow motion the robot has barely
moved when event 2 replaces it, so event 2's imagination still starts where the robot is).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASK, SEED = "pick_place_bin", 2
TIME_SCALE = 0.01  # the slowest the sim allows


@pytest.fixture(scope="module")
def robot(drive, tmp_path_factory):
    args = ("--heartbeat-timeout", "2.0", "--time-scale", str(TIME_SCALE))
    with drive.running_robot(tmp_path_factory.mktemp("robot"), TASK, SEED, *args) as sim:
        yield sim


def status(page):
    return page.get_by_label("Status")


def plan_radios(page):
    return page.get_by_role("group").filter(has_text="Event plan").get_by_role("radio")


RECORDER = """() => { window.__statuses = []; setInterval(() => {
    const v = document.querySelector('#status textarea').value;
    if (v && window.__statuses[window.__statuses.length - 1] !== v) window.__statuses.push(v);
}, 20); }"""


def shown(page, pattern: str, timeout: float = 120_000) -> None:
    """Wait until the status line has shown a line matching `pattern` (a JS regex). The line is
    shared: while a chunk executes its progress replaces any other message within a second, so
    the page records every status it shows (`RECORDER`) and the test reads that record."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "(p) => window.__statuses.some(s => new RegExp(p).test(s))",
            arg=pattern,
            timeout=timeout,
        )
    except PlaywrightTimeout:
        seen = page.evaluate("() => window.__statuses")
        raise AssertionError(f"the page never showed {pattern!r}; it showed {seen}") from None


def test_replace_the_running_chunk_and_follow_the_new_one(recording_page, store_root) -> None:
    from sessions.store import SessionStore

    page = recording_page

    expect(plan_radios(page).first).to_be_visible(timeout=60_000)
    page.evaluate(RECORDER)
    page.get_by_label("Denoising steps").fill("2")
    for k in (2, 1):  # imagine both events first: the robot barely moves in slow motion
        plan_radios(page).nth(k - 1).check()
        page.get_by_role("button", name="Imagine", exact=True).click()
        shown(page, rf"^Imagined event {k} \(final\)")
    page.get_by_role("button", name="Approve & send").click()
    shown(page, r"^Executing event 1")
    expect(page.get_by_label("Robot mode")).to_have_value("EXECUTING")

    plan_radios(page).nth(1).check()  # the operator changes their mind: event 2 instead
    expect(page.get_by_label("Robot mode")).to_have_value("EXECUTING")  # event 1 still runs
    page.get_by_role("button", name="Replace running chunk").click()
    shown(page, r"^Executing event 2 in place of event 1")  # the page follows the replacement
    shown(page, r"^Event 2 done", timeout=300_000)
    expect(plan_radios(page).nth(2)).to_be_checked()  # the plan goes on after event 2
    assert not page.evaluate("() => window.__statuses.some(s => s.startsWith('Event 1 done'))")

    session_id = page.get_by_label("Session", exact=True).input_value().split(" ")[0]
    with SessionStore(store_root).open(session_id) as r:
        chunks = {c["event_index"]: c for c in r.chunks()}
        (correction,) = [c for c in r.records("correction") if c["data"]["type"] == "replace_chunk"]
    first, second = chunks[0], chunks[1]
    assert first["status"] == "aborted" and "replaced by chunk" in first["final_ack"]["reason"]
    assert second["replace"] == 1 and second["status"] == "done"
    assert correction["data"]["chunk_id"] == second["chunk_id"]
