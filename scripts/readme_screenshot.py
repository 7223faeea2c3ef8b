"""The README's first screenshot: the studio as `make run` opens it, with the shipped event
checkpoint, after one imagined and executed event, in headless Chromium.

    python scripts/readme_screenshot.py --out docs/screenshots/studio-shipped.png

(The browser tests' screenshots use the tests' tiny untrained model; this one shows what a user
sees.) Starts `wallwm studio` on a free port with its defaults (simulated robot, shipped
checkpoint) and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_idle(page, timeout_s: float = 120.0) -> None:
    """Until 20 animation frames render within 3 s (the Rerun viewer has digested its data)."""
    js = """() => new Promise(r => { let k = 0; const t0 = performance.now();
        function f() { if (++k >= 20) r(performance.now() - t0); else requestAnimationFrame(f); }
        requestAnimationFrame(f); })"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and page.evaluate(js) > 3000:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/screenshots/studio-shipped.png"))
    args = p.parse_args()
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    studio = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "studio", "--port", str(port)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            expect.set_options(timeout=180_000)
            deadline = time.monotonic() + 180
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(2)
            status = page.get_by_label("Status")
            plan = page.get_by_role("group").filter(has_text="Event plan").get_by_role("radio")
            expect(plan.first).to_be_visible()
            page.get_by_role("button", name="Imagine", exact=True).click()
            expect(status).to_have_value(
                re.compile(r"^Imagined event 1 \(final\)"), timeout=180_000
            )
            page.get_by_role("button", name="Approve & send").click()
            expect(status).to_have_value(re.compile(r"^Event 1 done"))
            page.get_by_role("tab", name="Video grid").click()
            _wait_idle(page)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True, timeout=300_000)
            browser.close()
    finally:
        os.killpg(studio.pid, signal.SIGTERM)
        studio.wait(30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
