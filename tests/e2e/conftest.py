"""Browser tests of the studio: real processes, real sockets, Debian's Chromium driven by Playwright.

Each module starts one simulated robot (`wallwm sim-robot`) and one studio (`wallwm studio
--robot ...`) as separate processes, the way a user runs them, and drives the page by role and
label. The robot is the test's own process so a test can kill it and bring it back.

Screenshots: with WALLWM_SCREENSHOTS=DIR set, the tests write their PNGs there (the docs'
screenshots are made with `WALLWM_SCREENSHOTS=docs/screenshots`); otherwise to a temp dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 120_000  # software-rendered WebGL on a shared 2-core machine is slow
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
}


def _load_app_conftest():
    spec = importlib.util.spec_from_file_location(
        "studio_app_conftest", Path(__file__).parent.parent / "app" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port_pair() -> int:
    """A port P with P + 1 free too (the robot's command and telemetry ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port pair")


class SimRobotProcess:
    """`wallwm sim-robot` on fixed ports, killable and restartable by the test."""

    def __init__(
        self,
        port: int,
        task: str = "pick_place_bin",
        seed: int = 0,
        log: Path | None = None,
        args: tuple[str, ...] = (),
    ):
        self.port, self.task, self.seed, self.log = port, task, seed, log
        self.args = tuple(args)  # more `wallwm sim-robot` options, e.g. --heartbeat-timeout
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> SimRobotProcess:
        from robot.client import LinkError, RobotClient

        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "sim-robot",
                "--cmd-port",
                str(self.port),
                "--telemetry-port",
                str(self.port + 1),
                "--task",
                self.task,
                "--seed",
                str(self.seed),
                *self.args,
            ],
            stdout=out,
            stderr=out,
            env=ENV,
        )
        with RobotClient("127.0.0.1", self.port, self.port + 1, heartbeat=False) as c:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    c.hello()
                    return self
                except LinkError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("sim-robot did not start") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class StudioProcess:
    """`wallwm studio` as a user starts it; `url` once it printed its address."""

    def __init__(self, args: list[str], log: Path):
        self.port = free_port_pair()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> StudioProcess:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "studio", "--port", str(self.port), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        deadline = time.monotonic() + timeout
        while "WALL-WM Studio: http" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"studio did not start:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@contextlib.contextmanager
def running_robot(log_dir: Path, task: str, seed: int, *args: str) -> Iterator[SimRobotProcess]:
    """A module's simulated robot: started on free ports, stopped at the end."""
    sim = SimRobotProcess(free_port_pair(), task, seed, log_dir / "robot.log", args=args)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def running_studio(
    robot: SimRobotProcess, checkpoint: Path, log_dir: Path, task: str, seed: int, *args: str
) -> Iterator[StudioProcess]:
    """A module's studio on `robot`, with the test checkpoint and the scene `task`/`seed`."""
    proc = StudioProcess(
        ["--robot", f"tcp://127.0.0.1:{robot.port}", "--task", task, "--seed", str(seed),
         "--checkpoint", str(checkpoint), *args],
        log_dir / "studio.log",
    )  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def studio_page(browser, url: str) -> Iterator:
    """A module's page on the studio (`open_studio`), closed at the end."""
    page = open_studio(browser, url)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """The module's own session store."""
    return tmp_path_factory.mktemp("sessions")


@pytest.fixture(scope="module")
def recording_studio(robot, tiny_checkpoint, store_root, tmp_path_factory, request):
    """The studio of a module that defines TASK, SEED and a `robot` fixture, recording into
    the module's own session store."""
    m = request.module
    log_dir = tmp_path_factory.mktemp("studio")
    args = ("--sessions", str(store_root))
    with running_studio(robot, tiny_checkpoint, log_dir, m.TASK, m.SEED, *args) as proc:
        yield proc


@pytest.fixture(scope="module")
def recording_page(chromium, recording_studio):
    with studio_page(chromium, recording_studio.url) as page:
        yield page


@pytest.fixture(scope="session")
def drive():
    """These helpers (processes, page opening, idling), for test modules to use."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (make setup installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _load_app_conftest().build_tiny_checkpoint(
        tmp_path_factory.getbasetemp() / "studio-checkpoint"
    )


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("WALLWM_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_studio(browser, url: str, width: int = 1600, height: int = 1000, wait_plan: bool = True):
    """A new tab on the studio, once the page has loaded its task, plan and observation."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    page.goto(url)
    expect(page.get_by_label("Status")).not_to_have_value("")
    if wait_plan:
        plan = page.get_by_role("group").filter(has_text="Event plan").get_by_role("radio")
        expect(plan.first).to_be_visible()
    return page


def wait_idle(page, frames: int = 20, within_s: float = 3.0, timeout_s: float = 180.0) -> None:
    """Wait until the page renders `frames` animation frames within `within_s` (the Rerun viewer
    digests new data with software WebGL; clicks wait for it otherwise)."""
    deadline = time.monotonic() + timeout_s
    js = """([n, ms]) => new Promise(r => { let k = 0; const t0 = performance.now();
        function f() { k++; if (k >= n) r(performance.now() - t0); else requestAnimationFrame(f); }
        requestAnimationFrame(f); })"""
    while time.monotonic() < deadline:
        if page.evaluate(js, [frames, within_s * 1000]) <= within_s * 1000:
            return
    raise TimeoutError("the page did not become idle")
