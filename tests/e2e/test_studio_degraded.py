"""A studio with a corrupt checkpoint and no robot answering: it starts, says why on the page,
refuses what it cannot do in words, and keeps serving."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def studio(drive, tmp_path_factory):
    root = tmp_path_factory.mktemp("degraded")
    corrupt = root / "corrupt-checkpoint"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{ this is not json")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    nobody = drive.free_port_pair()  # nothing listens there
    proc = drive.StudioProcess(
        ["--checkpoint", str(corrupt), "--robot", f"tcp://127.0.0.1:{nobody}"], root / "studio.log"
    )
    proc.start()
    yield proc
    proc.stop()


def test_corrupt_checkpoint_and_absent_robot_are_explained_on_the_page(
    drive, chromium, studio
) -> None:
    page = drive.open_studio(chromium, studio.url, wait_plan=False)
    status = page.get_by_label("Status")
    try:
        expect(status).to_have_value(re.compile("⚠ robot not reachable"))
        expect(status).to_have_value(
            re.compile("No model: cannot load checkpoint .*corrupt-checkpoint")
        )
        expect(page.get_by_role("status", name="Robot link")).to_contain_text("link down")

        page.get_by_label("Event text").fill("grasp the block")
        page.get_by_role("button", name="Add event").click()
        expect(page.get_by_role("radio", name="1. grasp the block")).to_be_checked()
        page.get_by_role("button", name="Imagine", exact=True).click()
        expect(status).to_have_value(re.compile("⚠ robot not reachable"))
        page.get_by_role("button", name="Approve & send").click()
        expect(status).to_have_value(re.compile("⚠ event 1 is not imagined yet"))
        page.get_by_role("button", name="Reset scene").click()
        expect(status).to_have_value(re.compile("⚠ (robot not reachable|unknown task)"))
        page.get_by_role("button", name="E-STOP").click()
        expect(status).to_have_value(re.compile("⚠ E-STOP not confirmed by the robot"))
        assert studio.proc.poll() is None  # still serving
        page.reload()
        expect(status).to_have_value(re.compile("No model"))
    finally:
        page.close()
