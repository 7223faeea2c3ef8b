"""`wallwm sim-robot`: the MuJoCo sim behind the robot server, as a real robot would be."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path


def register(sub: argparse._SubParsersAction, bench_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim-robot",
        help="serve the simulated robot over the robot link (ZeroMQ, protocol v1)",
        description="Run the MuJoCo tabletop in real time at its control rate behind the robot "
        "server: commands on a ROUTER, telemetry on a PUB (see docs/protocol.md).",
    )
    p.add_argument("--cmd-port", type=int, default=5555, help="command ROUTER port")
    p.add_argument("--telemetry-port", type=int, default=5556, help="telemetry PUB port")
    p.add_argument("--bind", default="127.0.0.1", help="address to bind; non-loopback needs --keys")
    p.add_argument("--task", default="pick_place_bin", help="sim task to load (see docs/sim.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=64, help="camera images are RES x RES")
    p.add_argument(
        "--heartbeat-timeout", type=float, default=0.5, help="seconds; armed and silent -> FAULT"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="sim seconds per wall-clock second (default 1: real time; 0.25: slow motion, "
        "every control period lasts 4x longer)",
    )
    p.add_argument(
        "--keys", type=Path, help="CURVE key directory: server.key_secret and clients/*.key"
    )
    p.add_argument(
        "--make-keys",
        type=Path,
        metavar="DIR",
        help="write server + 'workbench' client keys to DIR and exit",
    )
    p.set_defaults(func=_sim_robot)


SHUTDOWN_LIMIT_S = 15.0  # Ctrl-C ends the process within this, however the shutdown goes


def _interrupt_with_a_time_limit(signum: int, frame: object) -> None:
    """SIGINT: stop as usual (KeyboardInterrupt), but if the process is still alive
    SHUTDOWN_LIMIT_S later, print every thread's stack (where the shutdown hangs) and exit
    with status 1. A robot whose server hangs on its way out gets no more targets and holds;
    an operator's Ctrl-C must still end the process."""
    import faulthandler

    faulthandler.dump_traceback_later(SHUTDOWN_LIMIT_S, exit=True)
    raise KeyboardInterrupt


def _sim_robot(args: argparse.Namespace) -> int:
    import logging

    from robot.security import load_server_keys, make_keys
    from robot.server import RobotServer, ServerConfig, ServerDied

    if args.make_keys:
        d = make_keys(args.make_keys)
        print(
            f"wrote {d}/server.key (give to clients), {d}/server.key_secret, "
            f"{d}/workbench.key_secret and {d}/clients/workbench.key"
        )
        return 0
    config = ServerConfig(
        host=args.bind,
        cmd_port=args.cmd_port,
        telemetry_port=args.telemetry_port,
        heartbeat_timeout_s=args.heartbeat_timeout,
        keys=load_server_keys(args.keys) if args.keys else None,
    )
    from robot.sim.robot import SimRobot

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        robot = SimRobot(
            task=args.task, seed=args.seed, resolution=args.resolution, time_scale=args.time_scale
        )
    except ValueError as e:
        print(f"wallwm sim-robot: {e}")
        return 2
    server = RobotServer(robot, config)
    signal.signal(signal.SIGINT, _interrupt_with_a_time_limit)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except ServerDied as e:  # the robot was told to hold; a half-alive server must not linger
        logging.getLogger("robot.server").error("exiting: %s", e)
        return 1
    finally:
        robot.disconnect()
    return 0
