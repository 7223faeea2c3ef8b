"""The robot link as the workbench uses it: requests with futures, heartbeats, telemetry.

The DEALER socket is shared under a lock by whichever thread needs it (ZeroMQ allows a
socket to move between threads behind a full memory barrier): a caller sends its request
and waits for the reply itself, so a round trip costs no thread hand-off. A background
thread owns the SUB socket, sends the heartbeats and, when no caller is waiting, collects
asynchronous replies (the `done`/`aborted` acks of chunks), so the robot's watchdog sees a
live client even while the caller is busy (model inference, UI).

Reconnection: ZeroMQ reconnects by itself when the robot restarts; requests are only
queued on a live connection (ZMQ_IMMEDIATE), so nothing stale reaches a restarted robot.
The request in flight during a restart fails with `LinkError`; the next one works.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import select
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from robot.protocol import ProtocolError, decode, encode, request
from robot.security import ClientKeys


class LinkError(ConnectionError):
    """The robot did not answer (down, restarting, unreachable or refusing our key)."""


class RejectedError(RuntimeError):
    """The robot answered `rejected`; `reason` says why."""

    def __init__(self, type_: str, reason: str, reply: dict[str, Any]):
        super().__init__(f"{type_} rejected: {reason}")
        self.reason = reason
        self.reply = reply


@dataclass
class ChunkHandle:
    """An accepted chunk; `finished` resolves to the final ack (done or aborted)."""

    chunk_id: str
    msg_id: str
    seq: int
    accepted: dict[str, Any]
    finished: Future
    client: RobotClient = field(repr=False)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the final ack: status "done" or "aborted", executed_steps, clipped_steps.

        The caller collects the reply from the socket itself, so it returns as soon as the ack
        arrives rather than at the background thread's next turn.
        """
        try:
            return self.client.wait(self.finished, math.inf if timeout is None else timeout)
        except FutureTimeout:
            raise LinkError(f"chunk {self.chunk_id!r} not finished after {timeout} s") from None


@dataclass
class _Pending:
    type_: str
    first: Future
    final: Future | None = None  # execute_chunk only: done/aborted


class RobotClient:
    """Connect to a robot server. Use as a context manager, or `connect()` / `close()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        cmd_port: int = 5555,
        telemetry_port: int = 5556,
        *,
        timeout_s: float = 2.0,
        heartbeat: bool = True,
        heartbeat_period_s: float = 0.1,
        keys: ClientKeys | None = None,
        name: str = "wallwm",
    ):
        if timeout_s <= 0 or heartbeat_period_s <= 0:
            raise ValueError("timeout_s and heartbeat_period_s must be positive")
        h = f"[{host}]" if ":" in host else host
        self.cmd_endpoint = f"tcp://{h}:{cmd_port}"
        self.telemetry_endpoint = f"tcp://{h}:{telemetry_port}"
        self.timeout_s = timeout_s
        self.heartbeat_enabled = heartbeat  # set False to let the robot's watchdog fire
        self.heartbeat_period_s = heartbeat_period_s
        self.keys = keys
        self.name = name
        self.info: dict[str, Any] | None = None  # the robot's hello reply
        self.telemetry_count = 0
        self._telemetry: dict[str, Any] | None = None
        self._telemetry_t = 0.0
        self._telemetry_cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._io_lock = threading.Lock()  # guards the DEALER, `_unsent` and `_waiters`
        self._unsent: list[
            tuple[str, bytes]
        ] = []  # no connection yet; kept until the caller gives up
        self._waiters = 0  # callers waiting for a reply (they collect replies themselves)
        self._seq = itertools.count(1)
        self._ctx: zmq.Context | None = None
        self._dealer: zmq.Socket | None = None
        self._fd = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def connect(self) -> RobotClient:
        self._ctx = zmq.Context()
        d = self._dealer = self._ctx.socket(zmq.DEALER)
        d.linger = 0
        d.routing_id = (
            uuid.uuid4().bytes
        )  # stable across reconnects: one connection for seq/watchdog
        d.immediate = True  # never queue a request for a robot that is not there
        d.setsockopt(zmq.RECONNECT_IVL, 50)
        d.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        d.setsockopt(zmq.HEARTBEAT_IVL, 500)  # notice a dead TCP peer within ~2 s
        d.setsockopt(zmq.HEARTBEAT_TIMEOUT, 2000)
        self._set_keys(d)
        d.connect(self.cmd_endpoint)
        self._fd = d.getsockopt(zmq.FD)
        self._stop.clear()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._background, args=(ready,), name="robot-client", daemon=True
        )
        self._thread.start()
        ready.wait(5)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._io_lock:
            if self._dealer is not None:
                self._dealer.close()
                self._dealer = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            for f in (p.first, p.final):
                if f is not None and not f.done():
                    f.set_exception(LinkError("client closed"))

    def __enter__(self) -> RobotClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_keys(self, s: zmq.Socket) -> None:
        if self.keys is not None:
            s.curve_serverkey = self.keys.server_public
            s.curve_publickey = self.keys.public
            s.curve_secretkey = self.keys.secret

    # ------------------------------------------------------------ requests

    def send(self, msg: dict[str, Any]) -> _Pending:
        """Send a request map (from `robot.protocol.request`) now; return its futures."""
        if self._dealer is None:
            raise LinkError("client is not connected: call connect() first")
        p = _Pending(msg["type"], Future(), Future() if msg["type"] == "execute_chunk" else None)
        with self._pending_lock:
            self._pending[msg["msg_id"]] = p
        frame = encode(msg)
        with self._io_lock:
            self._unsent.append((msg["msg_id"], frame))
            self._flush()
        return p

    def wait(self, fut: Future, timeout: float | None = None) -> dict[str, Any]:
        """Wait for a reply future, collecting replies from the socket meanwhile."""
        deadline = time.monotonic() + (timeout or self.timeout_s)
        with self._io_lock:
            self._waiters += 1
        try:
            while not fut.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FutureTimeout
                with self._io_lock:
                    if self._dealer is None:
                        raise LinkError("client closed")
                    self._flush()
                    self._pump()
                if not fut.done():
                    # The socket's FD turns readable when ZeroMQ has news; the short timeout
                    # covers news another thread collected first.
                    select.select([self._fd], [], [], min(remaining, 0.002))
            return fut.result()
        finally:
            with self._io_lock:
                self._waiters -= 1

    def request(self, type_: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and return the robot's first reply, whatever its status."""
        msg = request(type_, **fields)
        p = self.send(msg)
        try:
            return self.wait(p.first, timeout)
        except FutureTimeout:
            self._forget(msg["msg_id"])
            raise LinkError(f"no reply to {type_} within {timeout or self.timeout_s} s") from None

    def call(self, type_: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Like `request`, but a rejected reply raises RejectedError."""
        reply = self.request(type_, timeout, **fields)
        if reply.get("status") == "rejected":
            raise RejectedError(type_, reply.get("reason", ""), reply)
        return reply

    def hello(self) -> dict[str, Any]:
        self.info = self.call("hello", client=self.name)
        self.heartbeat_period_s = min(self.heartbeat_period_s, self.info["heartbeat_timeout_s"] / 5)
        return self.info

    def get_observation(self, timeout: float = 10.0) -> dict[str, Any]:
        """{"t_ns", "images": {cam: uint8 (H, W, 3)}, "state": float32 (7,), "mode", ...}."""
        return self.call("get_observation", timeout)

    def arm(self) -> dict[str, Any]:
        return self.call("arm")

    def disarm(self) -> dict[str, Any]:
        return self.call("disarm")

    def pause(self) -> dict[str, Any]:
        return self.call("pause")

    def resume(self) -> dict[str, Any]:
        return self.call("resume")

    def stop(self) -> dict[str, Any]:
        return self.call("stop")

    def estop(self) -> dict[str, Any]:
        return self.call("estop")

    def reset_fault(self) -> dict[str, Any]:
        return self.call("reset_fault")

    def tasks(self) -> list[dict[str, Any]]:
        """The robot's tasks: name, family, description, instruction_template, split_rule,
        variation (empty on a robot without tasks)."""
        return self.call("tasks")["tasks"]

    def reset(
        self,
        task: str | None = None,
        seed: int | None = None,
        split: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Reset the (simulated) scene; the robot must be disarmed.

        `split` ("train" or "test") without a seed picks the next seed of that split. The reply
        says what the episode is: task, family, seed, split, instruction, variation, progress,
        cameras (the calibration after this reset: no need to send `hello` again) and, on the
        sim, expert_plan (the scripted expert's events with their four caption tracks).
        """
        reply = self.call("reset", timeout, task=task, seed=seed, split=split)
        if self.info is not None and "cameras" in reply:
            self.info["cameras"] = reply["cameras"]
        return reply

    def jog(
        self,
        dxyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
        drpy: tuple[float, float, float] = (0.0, 0.0, 0.0),
        gripper: float | None = None,
    ) -> dict[str, Any]:
        """Take over: move the end effector by a small relative step (m, rad; at most one
        control period's caps) and optionally set the gripper (0 open .. 1 closed).

        Only the controller may jog; a running chunk is aborted ("taken over by jog"). The ack
        carries `target`, the absolute pose the robot will hold next. Send at >= 10 Hz for smooth
        motion; the steps are flagged as intervention in telemetry.
        """
        return self.call(
            "jog",
            dxyz=[float(v) for v in dxyz],
            drpy=[float(v) for v in drpy],
            gripper=None if gripper is None else float(gripper),
        )

    def execute_chunk(
        self,
        actions: np.ndarray,
        dt: float | None = None,
        *,
        chunk_id: str | None = None,
        expires_at_ns: int | None = None,
        event_index: int | None = None,
        timeout: float | None = None,
        replace: bool = False,
        intervention: bool = False,
    ) -> ChunkHandle:
        """Send a chunk (H, 7) of absolute targets; return once the robot accepted it.

        `dt` defaults to the robot's control period (from `hello`). `replace=True` swaps the
        running chunk for this one at the next step boundary (the old one ends `aborted`);
        `intervention=True` flags its steps as a take-over. Raises RejectedError with the
        robot's reason if it refused the chunk.
        """
        if dt is None:
            if self.info is None:
                self.hello()
            dt = 1.0 / self.info["fps"]
        seq = next(self._seq)
        chunk_id = chunk_id or f"chunk-{seq}"
        msg = request(
            "execute_chunk",
            chunk_id=chunk_id,
            seq=seq,
            actions=np.ascontiguousarray(actions, dtype=np.float32),
            dt=float(dt),
            expires_at_ns=expires_at_ns,
            event_index=event_index,
            replace=replace or None,
            intervention=intervention or None,
        )
        p = self.send(msg)
        try:
            first = self.wait(p.first, timeout)
        except FutureTimeout:
            self._forget(msg["msg_id"])
            raise LinkError(
                f"no reply to execute_chunk within {timeout or self.timeout_s} s"
            ) from None
        if first.get("status") != "accepted":
            raise RejectedError("execute_chunk", first.get("reason", ""), first)
        return ChunkHandle(chunk_id, msg["msg_id"], seq, first, p.final, self)

    # ------------------------------------------------------------ telemetry

    @property
    def telemetry(self) -> dict[str, Any] | None:
        """The latest `state` message: seq, t_ns, mode, ee_pose (7,), chunk_id, event_index,
        step, faults, control_step, task_progress, stages [{name, weight, done}], success,
        progress_ended, intervention."""
        return self._telemetry

    @property
    def telemetry_age_s(self) -> float:
        """Seconds since the last telemetry message (inf before the first)."""
        return time.monotonic() - self._telemetry_t if self._telemetry is not None else float("inf")

    def wait_telemetry(self, predicate=lambda t: True, timeout: float = 2.0) -> dict[str, Any]:
        """Block until a telemetry message satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        with self._telemetry_cond:
            while True:
                t = self._telemetry
                if t is not None and predicate(t):
                    return t
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LinkError(
                        f"no matching telemetry within {timeout} s (last: {t and t.get('mode')})"
                    )
                self._telemetry_cond.wait(remaining)

    # ------------------------------------------------------------ socket work

    def _forget(self, msg_id: str) -> None:
        with self._pending_lock:
            self._pending.pop(msg_id, None)

    def _flush(self) -> None:
        """Send queued requests in order (io lock held); abandoned ones are never sent late."""
        while self._unsent:
            msg_id, frame = self._unsent[0]
            if msg_id in self._pending:
                try:
                    self._dealer.send(frame, zmq.NOBLOCK)
                except zmq.Again:  # no connection (yet): keep it until its caller gives up
                    return
            self._unsent.pop(0)

    def _pump(self) -> None:
        """Dispatch every reply waiting on the DEALER (io lock held)."""
        while self._dealer.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._on_reply(self._dealer.recv(zmq.NOBLOCK))

    def _background(self, ready: threading.Event) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.RECONNECT_IVL, 50)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._set_keys(sub)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.telemetry_endpoint)
        ready.set()
        hb_ids = itertools.count()
        next_hb = time.monotonic()
        try:
            while not self._stop.is_set():
                if sub.poll(max(0.0, min(0.005, next_hb - time.monotonic())) * 1000):
                    while True:
                        try:
                            self._on_telemetry(sub.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                # Non-blocking: a caller holding the socket is collecting replies anyway.
                if not self._io_lock.acquire(blocking=False):
                    continue
                try:
                    if self._dealer is None:
                        return
                    now = time.monotonic()
                    if now >= next_hb:
                        next_hb = now + self.heartbeat_period_s
                        if self.heartbeat_enabled:
                            # Not connected: dropped; the robot's watchdog decides what that means.
                            with contextlib.suppress(zmq.Again):
                                self._dealer.send(
                                    encode(request("heartbeat", msg_id=f"hb-{next(hb_ids)}")),
                                    zmq.NOBLOCK,
                                )
                    if not self._waiters:
                        self._flush()
                        self._pump()
                finally:
                    self._io_lock.release()
        finally:
            sub.close()

    def _on_reply(self, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except ProtocolError:
            return
        ack_of = msg.get("ack_of")
        if not isinstance(ack_of, str):
            return
        with self._pending_lock:
            p = self._pending.get(ack_of)
            if p is None:
                return
            status = msg.get("status")
            if p.first.done() or p.final is None or status == "rejected":
                del self._pending[ack_of]
        if not p.first.done():
            p.first.set_result(msg)
            if p.final is not None and status == "rejected":
                p.final.set_result(msg)
        elif p.final is not None and not p.final.done():
            p.final.set_result(msg)

    def _on_telemetry(self, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except ProtocolError:
            return
        if msg.get("type") != "state":
            return
        with self._telemetry_cond:
            self._telemetry = msg
            self._telemetry_t = time.monotonic()
            self.telemetry_count += 1
            self._telemetry_cond.notify_all()
