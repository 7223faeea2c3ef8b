"""Unified mode with the shipped model, in the browser: the VLM reads the task and the views and
proposes the next event into the plan, and unified mode imagines a fixed 16-step chunk."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from backend.service import SHIPPED_CHECKPOINT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASK, SEED = "pick_place_bin", 4


@pytest.fixture(scope="module")
def page(drive, chromium, tmp_path_factory):
    if not (SHIPPED_CHECKPOINT / "config.json").is_file():
        pytest.skip(f"no checkpoint shipped at {SHIPPED_CHECKPOINT}")
    logs = tmp_path_factory.mktemp("unified")
    with (
        drive.running_robot(logs, TASK, SEED) as robot,
        drive.running_studio(robot, SHIPPED_CHECKPOINT, logs, TASK, SEED) as studio,
        drive.studio_page(chromium, studio.url) as page,
    ):
        yield page


def test_propose_plan_then_imagine_in_unified_mode(page, drive) -> None:
    status = page.get_by_label("Status")
    plan = page.get_by_role("group").filter(has_text="Event plan").get_by_role("radio")
    before = plan.count()
    page.get_by_text("Task instruction and VLM proposal").click()
    task = page.get_by_label("Task instruction")
    expect(task).to_have_value(re.compile(r"\w"))  # the scene's instruction, filled in
    page.get_by_role("button", name="Propose plan").click()
    expect(status).to_have_value(re.compile(r"proposes event 1: '[a-z]|⚠"))
    proposed = re.search(r"proposes event 1: '([^']+)'", status.input_value())
    assert proposed, status.input_value()
    expect(plan).to_have_count(before + 1)  # inserted at the active position
    expect(plan.first).to_have_accessible_name(re.compile(re.escape(proposed.group(1))))

    page.get_by_role("radio", name="unified", exact=True).check()
    page.get_by_label("Denoising steps").fill("4")
    drive.wait_idle(page)
    page.get_by_role("button", name="Imagine", exact=True).click()
    expect(status).to_have_value(re.compile(r"\(final\)|⚠"))
    assert "⚠" not in status.input_value(), status.input_value()
    for cam in ("front", "left", "right"):  # unified mode: the whole fixed chunk, 16 steps
        expect(page.get_by_text(re.compile(f"{cam}: 16 imagined steps"))).to_be_visible()
