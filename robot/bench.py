"""`wallwm bench link`: the robot link against the transport openpi uses, same run, same payload.

Measured: the round trip of `execute_chunk` (a 32x7 float32 chunk) -> `accepted` ack
(1) through `RobotClient`, what the workbench uses (I/O thread, futures, heartbeats on);
(2) through one plain DEALER socket, what a minimal client in another language would do;
(3) through a websocket + msgpack echo pair (`websockets` server, sync client, as in
openpi), whose server decodes the request and answers with the same ack.
Each server runs in its own process, as a robot would. The ZeroMQ server is the real
`RobotServer` with its full validation; after each accepted chunk the client sends `stop`
and waits for the chunk's `aborted` ack (not timed), so the robot is ARMED again for the
next one. Telemetry rate is what the
client's SUB socket received while all this ran.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.protocol import ack, decode, encode, request

CHUNK_SHAPE = (32, 7)


@dataclass
class LinkResult:
    """What `wallwm bench` writes: `numbers` to docs/bench/link.json, `markdown` to this target's
    section of docs/benchmarks.md (the writer is the CLI's: robot/ imports nothing of the rest)."""

    target: str
    numbers: dict  # flat, JSON-serialisable
    markdown: str
    command: str = ""
    extra: dict = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=5000, help="timed round trips per transport"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="untimed round trips first, per round"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds over the transports"
    )
    parser.add_argument(
        "--robot",
        choices=("kinematic", "sim"),
        default="kinematic",
        help="robot behind the server (the link is what is measured)",
    )


def _serve_zmq(robot_kind: str, ports: Any, stop: Any) -> None:
    from robot.server import RobotServer, ServerConfig

    if robot_kind == "sim":
        from robot.sim.robot import SimRobot

        robot = SimRobot()
    else:
        from robot.kinematic import KinematicRobot

        robot = KinematicRobot()
    server = RobotServer(
        robot, ServerConfig(cmd_port=0, telemetry_port=0, heartbeat_timeout_s=2.0)
    ).start()
    ports.put((server.cmd_endpoint, server.telemetry_endpoint))
    stop.wait()
    server.close()


def _serve_websocket(ports: Any, stop: Any) -> None:
    import asyncio

    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        async for frame in ws:
            msg = decode(frame)
            await ws.send(encode(ack(msg["msg_id"], "accepted", chunk_id=msg["chunk_id"])))

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            ports.put(server.sockets[0].getsockname()[1])
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


def _serve_zmq_echo(ports: Any, stop: Any) -> None:
    """The ZeroMQ twin of the websocket echo: decode the request, answer the same ack."""
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    ports.put(router.bind_to_random_port("tcp://127.0.0.1"))
    while not stop.is_set():
        if router.poll(100):
            identity, frame = router.recv_multipart()
            msg = decode(frame)
            router.send_multipart(
                [identity, encode(ack(msg["msg_id"], "accepted", chunk_id=msg["chunk_id"]))]
            )
    ctx.destroy()


def _percentiles(rtts: list[float]) -> tuple[float, float]:
    ms = np.asarray(rtts) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _chunk(rng: np.random.Generator) -> np.ndarray:
    a = np.zeros(CHUNK_SHAPE, dtype=np.float32)  # (32, 7): a small wiggle around home
    a[:, :3] = np.array([0.0, 0.0, 0.2]) + rng.uniform(-0.01, 0.01, (CHUNK_SHAPE[0], 3))
    return a


def _bench_client(
    cmd: str, tel: str, n: int, warmup: int, rng: np.random.Generator
) -> tuple[list[float], float]:
    from robot.client import RobotClient

    host, cmd_port = cmd.rsplit(":", 1)
    tel_port = int(tel.rsplit(":", 1)[1])
    with RobotClient(host.split("//")[1], int(cmd_port), tel_port) as c:
        info = c.hello()
        c.wait_telemetry(timeout=5)
        c.arm()
        dt = 1.0 / info["fps"]
        rtts = []
        count0, t0 = c.telemetry_count, time.monotonic()
        for i in range(warmup + n):
            a = _chunk(rng)
            t = time.perf_counter()
            h = c.execute_chunk(a, dt)
            if i >= warmup:
                rtts.append(time.perf_counter() - t)
            c.stop()
            h.result(5)  # the `aborted` ack: the robot is done with this chunk
        telemetry_hz = (c.telemetry_count - count0) / (time.monotonic() - t0)
        c.disarm()
    return rtts, telemetry_hz


def _bench_dealer(cmd: str, n: int, warmup: int, rng: np.random.Generator) -> list[float]:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(cmd)

    def call(msg: dict) -> dict:
        s.send(encode(msg))
        return wait(msg["msg_id"])

    def wait(msg_id: str) -> dict:
        while True:
            reply = decode(s.recv())
            if reply["ack_of"] == msg_id:
                return reply

    assert call(request("arm"))["status"] == "ok"
    rtts = []
    for i in range(warmup + n):
        msg = request("execute_chunk", chunk_id=f"c{i}", seq=i + 1, actions=_chunk(rng), dt=0.1)
        t = time.perf_counter()
        reply = call(msg)
        if i >= warmup:
            rtts.append(time.perf_counter() - t)
        if reply["status"] != "accepted":
            raise RuntimeError(f"chunk rejected during the benchmark: {reply['reason']}")
        stop = request("stop")
        s.send(encode(stop))
        wait(stop["msg_id"])
        wait(msg["msg_id"])  # then the chunk's `aborted` ack: the robot is done with it
    call(request("disarm"))
    ctx.destroy()
    return rtts


def _bench_zmq_echo(port: int, n: int, warmup: int, rng: np.random.Generator) -> list[float]:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(f"tcp://127.0.0.1:{port}")
    rtts = []
    for i in range(warmup + n):
        msg = request("execute_chunk", chunk_id=f"c{i}", seq=i + 1, actions=_chunk(rng), dt=0.1)
        t = time.perf_counter()
        s.send(encode(msg))
        reply = decode(s.recv())
        if i >= warmup:
            rtts.append(time.perf_counter() - t)
        assert reply["ack_of"] == msg["msg_id"]
    ctx.destroy()
    return rtts


def _bench_websocket(port: int, n: int, warmup: int, rng: np.random.Generator) -> list[float]:
    from websockets.sync.client import connect

    rtts = []
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        for i in range(warmup + n):
            msg = request("execute_chunk", chunk_id=f"c{i}", seq=i + 1, actions=_chunk(rng), dt=0.1)
            t = time.perf_counter()
            ws.send(encode(msg))
            reply = decode(ws.recv())
            if i >= warmup:
                rtts.append(time.perf_counter() - t)
            assert reply["ack_of"] == msg["msg_id"]
    return rtts


def run(args: argparse.Namespace) -> LinkResult:
    if args.requests < 1 or args.warmup < 0 or args.rounds < 1:
        raise ValueError("--requests and --rounds must be >= 1 and --warmup >= 0")
    ctx = mp.get_context("spawn")  # servers get a clean process: no inherited threads or sockets
    stop = ctx.Event()
    zmq_ports, ws_ports, echo_ports = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_serve_zmq, args=(args.robot, zmq_ports, stop), daemon=True),
        ctx.Process(target=_serve_websocket, args=(ws_ports, stop), daemon=True),
        ctx.Process(target=_serve_zmq_echo, args=(echo_ports, stop), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        cmd, tel = zmq_ports.get(timeout=120)
        ws_port = ws_ports.get(timeout=60)
        echo_port = echo_ports.get(timeout=60)
        rng = np.random.default_rng(0)
        numbers: dict[str, Any] = {
            "requests": args.requests,
            "chunk_shape": list(CHUNK_SHAPE),
            "robot": args.robot,
        }
        # Interleaved rounds: load that comes and goes on a shared machine hits every transport
        # alike, so the ratios compare like with like.
        rtts: dict[str, list[float]] = {
            "zmq": [],
            "zmq_dealer": [],
            "websocket": [],
            "zmq_echo": [],
        }
        rates, load_before = [], os.getloadavg()[0]
        per_round = -(-args.requests // args.rounds)
        for _ in range(args.rounds):
            client_rtts, rate = _bench_client(cmd, tel, per_round, args.warmup, rng)
            rtts["zmq"] += client_rtts
            rates.append(rate)
            rtts["zmq_dealer"] += _bench_dealer(cmd, per_round, args.warmup, rng)
            rtts["websocket"] += _bench_websocket(ws_port, per_round, args.warmup, rng)
            rtts["zmq_echo"] += _bench_zmq_echo(echo_port, per_round, args.warmup, rng)
        for name, values in rtts.items():
            numbers[f"{name}_rtt_p50_ms"], numbers[f"{name}_rtt_p99_ms"] = _percentiles(values)
        numbers["telemetry_hz"] = float(np.mean(rates))
        numbers["rounds"] = args.rounds
        numbers["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    numbers["client_over_floor_p50"] = numbers["zmq_rtt_p50_ms"] / numbers["zmq_echo_rtt_p50_ms"]
    numbers["client_over_floor_p99"] = numbers["zmq_rtt_p99_ms"] / numbers["zmq_echo_rtt_p99_ms"]
    numbers["websocket_over_zmq_p50"] = numbers["websocket_rtt_p50_ms"] / numbers["zmq_rtt_p50_ms"]
    numbers["websocket_over_zmq_p99"] = numbers["websocket_rtt_p99_ms"] / numbers["zmq_rtt_p99_ms"]
    numbers["websocket_over_zmq_echo_p50"] = (
        numbers["websocket_rtt_p50_ms"] / numbers["zmq_echo_rtt_p50_ms"]
    )
    numbers["websocket_over_zmq_echo_p99"] = (
        numbers["websocket_rtt_p99_ms"] / numbers["zmq_echo_rtt_p99_ms"]
    )
    n = numbers
    md = (
        f"`execute_chunk` ({CHUNK_SHAPE[0]}x{CHUNK_SHAPE[1]} float32) -> `accepted` round trip on loopback, "
        f"{args.requests} timed requests per transport in {args.rounds} interleaved rounds (each after "
        f"{args.warmup} warm-up), each server in its own process, robot `{args.robot}`; 1-minute load "
        f"average {n['load_avg_1min'][0]:.2f} before, {n['load_avg_1min'][1]:.2f} after.\n\n"
        "| transport | p50 (ms) | p99 (ms) |\n|---|---|---|\n"
        f"| ZeroMQ, `RobotClient` (workbench) | {n['zmq_rtt_p50_ms']:.3f} | {n['zmq_rtt_p99_ms']:.3f} |\n"
        f"| ZeroMQ, one DEALER socket | {n['zmq_dealer_rtt_p50_ms']:.3f} | {n['zmq_dealer_rtt_p99_ms']:.3f} |\n"
        f"| websocket + msgpack echo (openpi's transport) | {n['websocket_rtt_p50_ms']:.3f} | {n['websocket_rtt_p99_ms']:.3f} |\n"
        f"| ZeroMQ + msgpack echo (the same echo on our transport) | {n['zmq_echo_rtt_p50_ms']:.3f} | {n['zmq_echo_rtt_p99_ms']:.3f} |\n\n"
        f"`RobotClient` over the transport floor (the ZeroMQ echo): {n['client_over_floor_p50']:.2f}x at p50, "
        f"{n['client_over_floor_p99']:.2f}x at p99 (targets: 1.5x at p50, p99 <= 0.5 ms). "
        f"websocket / ZeroMQ (`RobotClient`, full robot server): {n['websocket_over_zmq_p50']:.2f}x at p50, "
        f"{n['websocket_over_zmq_p99']:.2f}x at p99. Transport alone (echo vs echo): "
        f"{n['websocket_over_zmq_echo_p50']:.2f}x at p50, {n['websocket_over_zmq_echo_p99']:.2f}x at p99. "
        f"Telemetry received: {n['telemetry_hz']:.1f} Hz (server publishes at 50 Hz; protocol floor 20 Hz)."
    )
    return LinkResult(target="link", numbers=numbers, markdown=md)
