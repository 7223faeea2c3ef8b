"""`wallwm studio` on the command line: refusals in one line, children stopped with the studio."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import build_parser, main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_studio_and_its_bench_are_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "studio" in sub.choices
    bench = next(a for a in sub.choices["bench"]._actions if a.dest == "bench_target")
    assert "studio" in bench.choices


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without --auth"),
        (["--host", "0.0.0.0", "--auth", "admin"], "--auth must be USER:PASS"),
        (["--robot", "localhost:5555"], "--robot must look like tcp://HOST:PORT"),
        (["--port", "0"], "--port must be in 1..65535"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(args, message, capsys) -> None:
    assert main(["studio", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_busy_port_is_reported_in_one_line(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["studio", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is busy" in err and err.count("\n") == 1


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


@pytest.mark.slow
def test_the_studio_starts_the_sim_robot_and_stops_it_when_stopped(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "studio.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:  # no checkpoint: starts fast, says why on the page
        studio = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "studio",
                "--port",
                str(port),
                "--checkpoint",
                str(tmp_path / "missing"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 240
        while "WALL-WM Studio: http" not in log.read_text():
            assert studio.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        text = log.read_text()
        assert f"WALL-WM Studio: http://127.0.0.1:{port}" in text and "does not exist" in text
        kids = [
            k
            for k in _children(studio.pid)
            if b"sim-robot" in Path(f"/proc/{k}/cmdline").read_bytes()
        ]
        assert len(kids) == 1

        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "studio", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert second.returncode == 2 and second.stderr.count("\n") == 1 and "busy" in second.stderr

        studio.send_signal(signal.SIGTERM)
        studio.wait(60)
        deadline = time.monotonic() + 20
        while (
            Path(f"/proc/{kids[0]}").exists()
            and b"sim-robot" in Path(f"/proc/{kids[0]}/cmdline").read_bytes()
        ):
            assert time.monotonic() < deadline, "the sim robot outlived the studio"
            time.sleep(0.2)
    finally:
        if studio.poll() is None:
            studio.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_malloc_arenas_are_capped_in_a_fresh_process() -> None:
    """The studio caps glibc's arenas (its resident memory crept up with one per thread); the
    cap takes in a process that did not set MALLOC_ARENA_MAX, and threads still allocate."""
    code = (
        "import threading\n"
        "from app.studio_cli import limit_malloc_arenas\n"
        "assert limit_malloc_arenas()\n"
        "out = []\n"
        "ts = [threading.Thread(target=lambda: out.append(bytearray(1 << 20))) for _ in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(len(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "8"
