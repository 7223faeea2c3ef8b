"""`wallwm studio` and `wallwm bench studio` (heavy imports inside the handlers).

The studio serves the Gradio workbench on 127.0.0.1:7860 by default. With no `--robot` it
starts the simulated robot (`wallwm sim-robot`) as a child process on two free ports; the
child dies with the studio (SIGTERM from the kernel if the studio dies first). Analytics are
off and there is no share link. Binding a non-loopback host needs `--auth USER:PASS`.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time
from pathlib import Path

DEFAULT_TASK = "pick_place_bin"


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="open the workbench: imagine, inspect and execute plan events in the browser",
        description="Serve the WALL-WM Studio (Gradio) with the simulated robot (default) or a "
        "robot server, and the shipped checkpoint (else the newest under runs/).",
    )
    p.add_argument("--port", type=int, default=7860, help="HTTP port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; non-loopback needs --auth")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint directory (default: shipped, else newest in runs/)",
    )
    robot = p.add_mutually_exclusive_group()
    robot.add_argument(
        "--robot",
        metavar="tcp://HOST:PORT",
        help="a running robot server: its command port (telemetry on PORT+1)",
    )
    robot.add_argument(
        "--sim", action="store_true", help="start the simulated robot as a child (the default)"
    )
    p.add_argument("--auth", metavar="USER:PASS", help="require this login (needed off loopback)")
    p.add_argument(
        "--task",
        help=f"sim task the page opens with (default {DEFAULT_TASK}; "
        "with --robot the scene is reset only when given)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that task")
    p.add_argument(
        "--dataset", type=Path, help="dataset for the 'Dataset episode' source (default runs/demo)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model")
    p.add_argument(
        "--sessions", type=Path, default=Path("runs/sessions"), help="session store (recordings)"
    )
    p.add_argument(
        "--demo", action="store_true", help="run the scripted showcase when the page opens"
    )
    p.set_defaults(func=_studio)

    b = bench_sub.add_parser(
        "studio", help="click-to-pixels latency and memory of the studio in a browser"
    )
    from app.bench import DOCS

    b.add_argument("--docs", type=Path, default=DOCS, help="where to write the results")
    b.add_argument(
        "--checkpoint", type=Path, help="checkpoint (default: as the studio resolves it)"
    )
    b.add_argument(
        "--imaginations", type=int, default=20, help="imaginations for the memory figure"
    )
    b.add_argument("--port", type=int, default=7871, help="port of the studio under test")
    b.set_defaults(func=_bench)


# ------------------------------------------------------------------ argument checks


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASS, both non-empty")
    return user, password


def parse_robot(url: str) -> tuple[str, int]:
    """tcp://HOST:PORT -> (host, command port)."""
    if not url.startswith("tcp://"):
        raise ValueError(f"--robot must look like tcp://HOST:PORT, got {url!r}")
    host, sep, port = url[len("tcp://") :].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise ValueError(
            f"--robot must look like tcp://HOST:PORT with a port in 1..65534, got {url!r}"
        )
    return host.strip("[]"), int(port)


def check_port_free(host: str, port: int) -> None:
    """One clear line instead of a traceback when another program holds the port."""
    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the server will: a port left in TIME_WAIT by a studio that just stopped is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(
                f"port {port} on {host} is busy ({e.strerror}); another studio? "
                "Stop it or pass --port N"
            ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the sim child


def _die_with_parent() -> None:
    """In the child: ask the kernel for SIGTERM when the studio dies (Linux)."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_sim(task: str, seed: int) -> tuple[object, int]:
    """`wallwm sim-robot` as a child process on free ports; returns (Popen, command port)."""
    import subprocess

    cmd_port, tel_port = free_port(), free_port()
    while tel_port == cmd_port:
        tel_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "app.cli",
        "sim-robot",
        "--cmd-port",
        str(cmd_port),
        "--telemetry-port",
        str(tel_port),
        "--task",
        task,
        "--seed",
        str(seed),
    ]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    return child, (cmd_port, tel_port)


def stop_child(child) -> None:
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(10)
    except Exception:
        child.kill()
        child.wait(5)


def connect_robot(host: str, cmd_port: int, tel_port: int, wait_s: float, child=None):
    """A connected RobotClient; waits up to `wait_s` for the robot's hello (None if silent)."""
    from robot.client import LinkError, RobotClient

    client = RobotClient(host, cmd_port, tel_port, timeout_s=2.0, name="wallwm-studio").connect()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.hello()
            return client
        except LinkError:
            if child is not None and child.poll() is not None:
                raise RuntimeError(
                    f"the simulated robot exited with code {child.returncode}"
                ) from None
            if time.monotonic() > deadline:
                return client  # not there: the page says so, the link reconnects when it comes
            time.sleep(0.2)


# ------------------------------------------------------------------ wallwm studio


MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (what MALLOC_ARENA_MAX does), unless the
    environment already sets it; True when the cap is in force.

    Each request thread of the server (Gradio's worker pool, the recording and telemetry
    threads) otherwise gets an arena of its own, up to 8 per core, and the memory an imagination
    frees in one arena is not reused by the next imagination running on another thread: the
    studio's resident memory crept up by ~2.5 MB per imagination (+5.6 % over 20, `wallwm bench
    studio`); with two arenas it grows about half as fast. Without glibc (macOS, musl) nothing
    is changed.
    """
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_ARENA_MAX" in os.environ:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError, TypeError):
        return False


def _studio(args: argparse.Namespace) -> int:
    import signal

    if not is_loopback(args.host) and not args.auth:
        raise ValueError(
            f"refusing to serve on {args.host} without --auth USER:PASS: anyone on the "
            "network could move the robot"
        )
    auth = parse_auth(args.auth)
    check_port_free(args.host, args.port)
    limit_malloc_arenas()
    robot_url = parse_robot(args.robot) if args.robot else None

    child = None
    robot = backend = demo = studio = None

    def terminate(signum, frame):  # SIGTERM: leave through `finally`, stopping the children
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    try:
        task = args.task or DEFAULT_TASK
        if robot_url is None:
            print(f"starting the simulated robot ({task}, seed {args.seed})…", flush=True)
            child, (cmd_port, tel_port) = start_sim(task, args.seed)
            robot = connect_robot("127.0.0.1", cmd_port, tel_port, 120.0, child)
        else:
            host, cmd_port = robot_url
            robot = connect_robot(host, cmd_port, cmd_port + 1, 5.0)
            if robot.info is None:
                print(
                    f"warning: no robot answers at {args.robot}; the page will show the link down",
                    flush=True,
                )
        demo, backend, studio = _serve(
            args, robot, auth, reset=robot_url is None or args.task is not None
        )
        url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
        print(
            f"WALL-WM Studio: {url}   (Ctrl-C stops the studio and its simulated robot)", flush=True
        )
        while True:
            time.sleep(1.0)
            if child is not None and child.poll() is not None:
                print(
                    f"the simulated robot exited (code {child.returncode}); the page shows the link down",
                    flush=True,
                )
                child = None
    except KeyboardInterrupt:
        return 0
    finally:
        if demo is not None:
            demo.close()
        if studio is not None:
            studio.close_all()
        if robot is not None:
            robot.close()
        stop_child(child)
        if backend is not None:
            backend.close()


def _serve(args: argparse.Namespace, robot, auth, reset: bool):
    """Load the model, reset the scene, build and launch the page (non-blocking)."""
    from app.studio.recording import RecordingStudio
    from app.studio.ui import CSS, build_ui
    from backend.service import Backend, BackendError, resolve_checkpoint
    from robot.sim.tasks import TASKS

    choice = resolve_checkpoint(args.checkpoint)
    print(f"loading the model: {choice.path or '-'} ({choice.reason})…", flush=True)
    backend = Backend(choice, robot, threads=args.threads)
    backend.wait_ready()
    if backend.model_error:
        print(f"warning: {backend.model_error}; the studio runs without imagination", flush=True)
    dataset = args.dataset or (
        Path("runs/demo") if Path("runs/demo/meta/info.json").is_file() else ""
    )
    studio = RecordingStudio(
        backend,
        robot,
        {n: t.description for n, t in TASKS.items()},
        str(dataset),
        sessions=args.sessions,
    )
    studio.autodemo = args.demo
    if reset and robot.info is not None:
        try:
            studio.reset_scene(args.task or DEFAULT_TASK, args.seed)
        except BackendError as e:
            print(f"warning: {e}", flush=True)
    demo = build_ui(studio)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            auth=auth,
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,
            css=CSS,
            footer_links=[],
        )
    except OSError as e:
        backend.close()
        raise ValueError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    return demo, backend, studio


# ------------------------------------------------------------------ wallwm bench studio


def _bench(args: argparse.Namespace) -> int:
    import importlib

    from app.bench import run_bench

    return run_bench(importlib.import_module("app.studio.bench"), args)
