"""The robot server: protocol v1 over ZeroMQ, the state machine, the safety layer, the watchdog.

Safety lives here, never only in the UI: whatever a client sends, the robot only ever gets
finite targets inside the workspace box, reached by steps no larger than the caps, at most one
step per control period of wall-clock time (a late control loop stretches, never catches up).

Threads (ZeroMQ sockets are never shared between them):
- the socket loop owns the command ROUTER and the telemetry PUB; it answers every request
  at once, publishes telemetry and runs the heartbeat watchdog, so an e-stop never waits
  behind a running chunk or an observation render;
- the control thread executes chunks and jogs, one `send_action` per control period, and
  refreshes the measured pose and Task Progress between them;
- the worker thread runs the slow robot reads (observation render, arm, scene reset). It
  never holds a lock the control thread needs: rendering cannot stall control.
Both other threads hand their replies to the loop through an inproc PUSH/PULL pair. Each
thread runs under a supervisor: if one dies anyway, the robot is told to hold, the mode
becomes FAULT (on telemetry while the socket loop lives), `fatal` says why and
`serve_forever` raises `ServerDied`, so `wallwm sim-robot` exits non-zero instead of lingering.

Locks, always taken in this order: motion lock (held around check-mode-then-send_action)
-> state lock (mode, chunk, controller). A handler that halts motion (stop, pause, estop,
watchdog) sets the mode under the state lock, releases it, then takes the motion lock and
commands a hold of the current pose: when its ack leaves, no further target can reach the
robot.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq
import zmq.auth.thread

from robot.geometry import quat_mul, quat_to_rpy, rotation_angle, rpy_to_quat, slerp
from robot.protocol import (
    PROTOCOL_VERSION,
    Mode,
    ProtocolError,
    ack,
    decode,
    encode,
    validate_request,
)
from robot.robot import Robot
from robot.security import ServerKeys, is_loopback
from robot.types import ACTION_DIM, ACTION_NAMES, STATE_NAMES

log = logging.getLogger(__name__)

ARMED_MODES = (Mode.ARMED, Mode.EXECUTING, Mode.PAUSED)
MAX_QUEUED_JOBS = 8  # observation/arm/reset requests waiting for the worker
MAX_MESSAGE_BYTES = 1 << 20  # a 64-step chunk is 1.8 kB; larger frames drop the connection
CLOSE_TIMEOUT_S = 5.0  # all server threads together; one still busy is left behind


class ServerDied(RuntimeError):
    """A server thread died; the robot was told to hold and left in FAULT."""


@dataclass
class ServerConfig:
    """How the robot is exposed and how cautious the server is."""

    host: str = "127.0.0.1"  # a non-loopback host requires CURVE keys
    cmd_port: int = 5555  # ROUTER; 0 picks a free port (tests)
    telemetry_port: int = 5556  # PUB; 0 picks a free port
    heartbeat_timeout_s: float = 0.5  # armed and silent this long -> hold -> FAULT
    max_chunk_len: int = 64  # H_max is 32 at 10 Hz; twice that leaves room, bounds memory
    telemetry_hz: float = 50.0  # >= 20 Hz by contract
    max_step_m: float = 0.05  # per control period: 0.5 m/s at 10 Hz
    max_rot_step_rad: float = 0.3  # per control period: ~170 deg/s at 10 Hz
    workspace_min: tuple[float, float, float] | None = None  # default: the robot's own box
    workspace_max: tuple[float, float, float] | None = None
    keys: ServerKeys | None = None  # CURVE: server key pair + allowed client keys

    def __post_init__(self) -> None:
        if self.keys is None and not is_loopback(self.host):
            raise ValueError(
                f"refusing to bind {self.host!r} without CURVE keys: anyone on that network could "
                "move the robot; bind 127.0.0.1 or give server and client keys (--keys DIR)"
            )
        for name in ("heartbeat_timeout_s", "telemetry_hz", "max_step_m", "max_rot_step_rad"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.telemetry_hz < 20:
            raise ValueError(f"telemetry_hz must be >= 20 (protocol v1), got {self.telemetry_hz}")
        if not 1 <= self.max_chunk_len <= 4096:
            raise ValueError(f"max_chunk_len must be in [1, 4096], got {self.max_chunk_len}")
        for port in (self.cmd_port, self.telemetry_port):
            if not 0 <= port < 65536:
                raise ValueError(f"bad port {port}")


# ---------------------------------------------------------------- safety geometry


@dataclass(frozen=True)
class SafetyLimits:
    workspace_min: np.ndarray  # (3,) m
    workspace_max: np.ndarray  # (3,) m
    max_step_m: float
    max_rot_step_rad: float

    def clip(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        """Clip a target (7,) to the workspace box and the gripper to [0, 1]; say if it changed."""
        a = np.asarray(action, dtype=np.float64)
        out = a.copy()
        out[:3] = np.clip(a[:3], self.workspace_min, self.workspace_max)
        out[6] = min(max(a[6], 0.0), 1.0)
        return out, bool(np.any(out != a))

    def interpolate(self, current: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Sub-targets (n, 7) from `current` to `target`, each step within both caps.

        Position and gripper move linearly, orientation along the great circle (slerp);
        the last row is exactly `target`.
        """
        cur, tgt = np.asarray(current, dtype=np.float64), np.asarray(target, dtype=np.float64)
        dist = float(np.linalg.norm(tgt[:3] - cur[:3]))
        angle = rotation_angle(cur[3:6], tgt[3:6])
        n = max(
            1,
            math.ceil(dist / self.max_step_m - 1e-6),
            math.ceil(angle / self.max_rot_step_rad - 1e-6),
        )
        if n == 1:
            return tgt[None]
        s = np.arange(1, n + 1) / n  # (n,) fractions of the way
        out = cur[None] + s[:, None] * (tgt - cur)[None]  # (n, 7): linear for xyz and gripper
        quats = slerp(rpy_to_quat(cur[3:6]), rpy_to_quat(tgt[3:6]), s)  # (n, 4)
        out[:, 3:6] = [quat_to_rpy(q) for q in quats]
        out[-1] = tgt
        return out


# ---------------------------------------------------------------- server


@dataclass
class _Chunk:
    msg_id: str
    identity: bytes
    chunk_id: str
    actions: np.ndarray  # (H, 7) float64
    dt: float  # wall-clock seconds per step: the message's dt over the robot's time scale
    event_index: int | None
    intervention: bool = False  # a take-over (jog or flagged chunk): recordings mark its steps
    jog: bool = False  # a jog: no final ack
    started: bool = False
    step: int = 0  # actions completed
    clipped: int = 0  # actions changed by the workspace/gripper clip
    interpolated: int = 0  # extra control periods inserted by the step caps
    abort_reason: str | None = None
    t_next: float = 0.0  # monotonic time of the next control tick (at the earliest)

    def final_ack(self, done: bool) -> dict[str, Any]:
        return ack(
            self.msg_id,
            "done" if done else "aborted",
            "" if done else self.abort_reason or "aborted",
            chunk_id=self.chunk_id,
            executed_steps=self.step,
            clipped_steps=self.clipped,
            interpolated_steps=self.interpolated,
        )


@dataclass
class ServerStats:
    """Counters tests and benchmarks read (never sent on the wire)."""

    received: int = 0
    rejected: int = 0
    dropped: int = 0
    errors: int = 0  # requests that raised inside the server (answered `rejected`, never fatal)
    chunks_accepted: int = 0
    actions_sent: int = 0  # calls of robot.send_action, holds included
    telemetry_sent: int = 0
    last_fault_t: float | None = None
    last_estop_t: float | None = None
    extra: dict = field(default_factory=dict)


class RobotServer:
    """Serve one robot over protocol v1. `start()` returns at once; `close()` stops everything."""

    def __init__(self, robot: Robot, config: ServerConfig | None = None):
        self.robot = robot
        self.config = config or ServerConfig()
        cfg = self.config
        lo = (
            cfg.workspace_min
            if cfg.workspace_min is not None
            else getattr(robot, "workspace_min", None)
        )
        hi = (
            cfg.workspace_max
            if cfg.workspace_max is not None
            else getattr(robot, "workspace_max", None)
        )
        if lo is None or hi is None:
            raise ValueError("no workspace box: give workspace_min/max or use a robot that has one")
        lo, hi = (
            np.asarray(lo, dtype=np.float64).reshape(3),
            np.asarray(hi, dtype=np.float64).reshape(3),
        )
        if not np.all(lo < hi):
            raise ValueError(f"workspace_min {lo} must be below workspace_max {hi}")
        self.limits = SafetyLimits(lo, hi, float(cfg.max_step_m), float(cfg.max_rot_step_rad))
        # A simulated robot may run slower (or faster) than the wall clock: one control period
        # of its time then lasts 1 / (fps * time_scale) wall seconds. Real robots have none (1).
        self.time_scale = float(getattr(robot, "time_scale", 1.0))
        self.stats = ServerStats()

        self._lock = threading.Lock()  # state lock
        self._cond = threading.Condition(self._lock)
        self._motion_lock = threading.Lock()
        self._mode = Mode.IDLE
        self._faults: list[str] = []
        self._controller: bytes | None = None  # the identity that armed the robot
        self._estop_by: set[bytes] = set()  # connections whose E-STOP is latched
        self._last_heard = 0.0  # monotonic time of the controller's last valid request
        self._last_seq: dict[bytes, int] = {}
        self._chunk: _Chunk | None = None  # the chunk being executed (or paused)
        self._next: _Chunk | None = None  # its replacement, started at the next step boundary
        self._last_chunk: _Chunk | None = None  # for telemetry after it ends
        self._orphans: list[_Chunk] = []  # aborted before they started: final acks to send
        self._target: np.ndarray | None = None  # (7,) float64, the last target commanded
        self._last_send_t = -math.inf  # monotonic time of the last send_action
        self._control_step = 0  # targets sent since the last reset
        self._jogs = itertools.count()
        self._ee_pose = np.zeros(ACTION_DIM, dtype=np.float32)
        self._progress: dict[str, Any] | None = None
        self.fatal: str | None = None  # why a server thread died, if one did
        self.died = threading.Event()

        self._ctx: zmq.Context | None = None
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._outbox_addr = f"inproc://robot-outbox-{id(self)}"
        self._hello: dict[str, Any] | None = None
        self._tasks: list[dict[str, Any]] = []
        self._episode: dict[str, Any] | None = None
        self.cmd_endpoint = ""
        self.telemetry_endpoint = ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> RobotServer:
        cfg = self.config
        if not self.robot.is_connected:
            self.robot.connect()
        state = self._read_state()
        self._target = state
        self._ee_pose = state.astype(np.float32)
        self._refresh()
        self._hello = self._hello_fields()
        self._tasks = list(_call_optional(self.robot, "tasks") or [])
        self._episode = _call_optional(self.robot, "episode")

        self._ctx = zmq.Context()
        router, pub = self._ctx.socket(zmq.ROUTER), self._ctx.socket(zmq.PUB)
        for s in (router, pub):
            s.linger = 0
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        router.rcvhwm = router.sndhwm = 10000
        pub.sndhwm = 100  # slow subscribers lose old states, never slow the robot
        if cfg.keys is not None:
            self._auth = zmq.auth.thread.ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve_callback(
                "*", credentials_provider=_AllowList(cfg.keys.allowed_clients)
            )
            for s in (router, pub):
                s.curve_server = True
                s.curve_publickey = cfg.keys.public
                s.curve_secretkey = cfg.keys.secret
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        try:
            self.cmd_endpoint = _bind(router, host, cfg.cmd_port)
            self.telemetry_endpoint = _bind(pub, host, cfg.telemetry_port)
        except zmq.ZMQError:
            router.close()
            pub.close()
            self._shutdown_context()
            raise
        outbox = self._ctx.socket(zmq.PULL)
        outbox.linger = 0
        outbox.bind(self._outbox_addr)

        self._threads = [
            self._supervised("robot-link", self._serve, router, pub, outbox),
            self._supervised("robot-control", self._control_loop),
            self._supervised("robot-worker", self._worker_loop),
        ]
        for t in self._threads:
            t.start()
        log.info(
            "robot server: commands %s, telemetry %s", self.cmd_endpoint, self.telemetry_endpoint
        )
        return self

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._jobs.put(None)
        start = time.monotonic()
        deadline = start + CLOSE_TIMEOUT_S
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        if stuck:  # busy in a slow robot call: term() would wait for its socket forever, and
            # closing a socket under a running thread aborts libzmq; the context is left to exit
            log.warning("closing with %s still busy; their sockets go with the process", stuck)
        self._shutdown_context(terminate=not stuck)
        log.info("robot server closed in %.1f s", time.monotonic() - start)

    def _shutdown_context(self, terminate: bool = True) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            if terminate:
                self._ctx.term()
            self._ctx = None

    def serve_forever(self) -> None:
        """Start and block until interrupted (Ctrl-C) or `close()` from another thread.

        Raises ServerDied if a server thread died: the robot holds in FAULT, and the caller
        should exit non-zero rather than linger half alive.
        """
        self.start()
        try:
            while not self._stop.wait(0.1):
                if self.died.is_set():
                    time.sleep(0.1)  # let the FAULT reach the telemetry stream
                    break
        finally:
            self.close()
        if self.fatal is not None:
            raise ServerDied(self.fatal)

    def __enter__(self) -> RobotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def faults(self) -> list[str]:
        with self._lock:
            return list(self._faults)

    # ------------------------------------------------------------ supervision

    def _supervised(self, name: str, fn: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as e:  # anything: a dead thread must never go unnoticed
                log.exception("robot server thread %s died", name)
                self._thread_died(f"server thread {name} died: {type(e).__name__}: {e}")
                return
            if not self._stop.is_set():
                self._thread_died(f"server thread {name} exited")

        return threading.Thread(target=run, name=name, daemon=True)

    def _thread_died(self, reason: str) -> None:
        """Hold the robot, enter FAULT (ESTOP stays ESTOP), and mark the server dead."""
        with self._cond:
            if self.fatal is None:
                self.fatal = reason
            was = self._mode
            if self._mode != Mode.ESTOP:
                self._mode = Mode.FAULT
            self._faults.append(reason)
            self._abort_chunk(reason)
            self._controller = None
            self.stats.last_fault_t = time.monotonic()
            self._cond.notify_all()
        self._hold(was in ARMED_MODES)
        self.died.set()

    # ------------------------------------------------------------ robot reads

    def _read_state(self) -> np.ndarray:
        """The measured end-effector state (7,): cheap `get_state()` if the robot has one."""
        get_state = getattr(self.robot, "get_state", None)
        state = get_state() if callable(get_state) else self.robot.get_observation()["state"]
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (ACTION_DIM,) or not np.all(np.isfinite(state)):
            raise RuntimeError(f"robot returned a bad state {state!r}")
        return state

    def _refresh(self) -> None:
        """Measured pose and Task Progress, for telemetry (cheap reads only)."""
        get_state = getattr(self.robot, "get_state", None)
        if callable(get_state):
            self._ee_pose = np.asarray(get_state(), dtype=np.float32)
        progress = _call_optional(self.robot, "progress")
        if progress is None:
            score = _call_optional(self.robot, "task_progress")
            if score is not None:
                progress = {
                    "score": int(score),
                    "stages": [],
                    "success": int(score) == 10,
                    "ended": None,
                }
        self._progress = progress

    def _hello_fields(self) -> dict[str, Any]:
        cfg, r = self.config, self.robot
        return {
            "robot": r.name,
            "protocol": PROTOCOL_VERSION,
            "action_space": "ee_pose_abs",
            "action_names": list(ACTION_NAMES),
            "state_names": list(STATE_NAMES),
            "fps": int(r.fps),
            "time_scale": self.time_scale,
            "cameras": {name: c.to_dict() for name, c in r.cameras.items()},
            "limits": {
                "workspace_min": self.limits.workspace_min.tolist(),
                "workspace_max": self.limits.workspace_max.tolist(),
                "max_step_m": self.limits.max_step_m,
                "max_rot_step_rad": self.limits.max_rot_step_rad,
            },
            "heartbeat_timeout_s": float(cfg.heartbeat_timeout_s),
            "max_chunk_len": int(cfg.max_chunk_len),
            "telemetry_hz": float(cfg.telemetry_hz),
        }

    def _progress_fields(self) -> dict[str, Any]:
        """What telemetry and observations say about Task Progress (state lock held)."""
        p, chunk = self._progress, self._chunk or self._last_chunk
        return {
            "control_step": self._control_step,
            "task_progress": None if p is None else p["score"],
            "stages": [] if p is None else p["stages"],
            "success": None if p is None else p["success"],
            "progress_ended": None if p is None else p.get("ended"),
            "intervention": bool(chunk and chunk.intervention),
        }

    # ------------------------------------------------------------ socket loop

    def _serve(self, router: zmq.Socket, pub: zmq.Socket, outbox: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(outbox, zmq.POLLIN)
        period = 1.0 / self.config.telemetry_hz
        next_pub = time.monotonic()
        telemetry_seq = itertools.count()
        published_mode = self._mode
        try:
            while not self._stop.is_set():
                timeout_ms = max(0.0, min(next_pub - time.monotonic(), 0.01)) * 1000
                events = dict(poller.poll(timeout_ms))
                if router in events:
                    for _ in range(256):  # bounded so telemetry and the watchdog keep their pace
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(router, frames)
                if outbox in events:
                    while True:
                        try:
                            router.send_multipart(outbox.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                self._check_watchdog()
                self._send_orphan_acks(router)
                now = time.monotonic()
                # Safety stops go out on telemetry at once; other changes ride the periodic stream.
                stopped = self._mode != published_mode and self._mode in (Mode.FAULT, Mode.ESTOP)
                if stopped or now >= next_pub:
                    msg = self._telemetry(next(telemetry_seq))
                    pub.send(encode(msg))
                    published_mode = msg["mode"]
                    self.stats.telemetry_sent += 1
                    next_pub = max(next_pub + period, now) if now >= next_pub else next_pub
        finally:
            router.close()
            pub.close()
            outbox.close()

    def _send_orphan_acks(self, router: zmq.Socket) -> None:
        with self._lock:
            orphans, self._orphans = self._orphans, []
        for c in orphans:
            if not c.jog:
                router.send_multipart([c.identity, encode(c.final_ack(done=False))])

    def _telemetry(self, seq: int) -> dict[str, Any]:
        with self._lock:
            chunk = self._chunk or self._last_chunk
            return {
                "v": PROTOCOL_VERSION,
                "type": "state",
                "seq": seq,
                "t_ns": time.time_ns(),
                "mode": str(self._mode),
                "ee_pose": self._ee_pose,
                "chunk_id": chunk.chunk_id if chunk else None,
                "event_index": chunk.event_index if chunk else None,
                "step": chunk.step if chunk else 0,
                "faults": list(self._faults),
                **self._progress_fields(),
            }

    def _handle(self, router: zmq.Socket, frames: list[bytes]) -> None:
        """Answer one incoming message; nothing a client sends may raise out of here."""
        self.stats.received += 1
        identity = frames[0]

        def reply(msg: dict[str, Any]) -> None:
            router.send_multipart([identity, encode(msg)])

        msg: Any = None
        try:
            if len(frames) != 2:
                msg = decode(frames[1]) if len(frames) > 2 else {}
                raise ProtocolError(
                    f"a message is one frame, got {len(frames) - 1}", _msg_id_of(msg)
                )
            msg = validate_request(decode(frames[1]))
            self._dispatch(identity, msg, reply)
        except ProtocolError as e:
            if e.msg_id is None:
                self.stats.dropped += 1
            else:
                self.stats.rejected += 1
                reply(ack(e.msg_id, "rejected", e.reason))
        except Exception as e:  # a server bug met by odd input: answer it, stay up
            log.exception("request failed")
            self.stats.errors += 1
            msg_id = _msg_id_of(msg)
            if msg_id is None:
                self.stats.dropped += 1
            else:
                reply(ack(msg_id, "rejected", f"robot server error: {type(e).__name__}: {e}"))

    def _dispatch(
        self, identity: bytes, msg: dict[str, Any], reply: Callable[[dict[str, Any]], None]
    ) -> None:
        type_, msg_id = msg["type"], msg["msg_id"]
        with self._lock:
            if identity == self._controller:
                self._last_heard = time.monotonic()
        if type_ == "hello":
            reply(
                {
                    "v": PROTOCOL_VERSION,
                    "type": "hello",
                    "ack_of": msg_id,
                    **self._hello,
                    "mode": str(self._mode),
                }
            )
        elif type_ == "heartbeat":
            reply(ack(msg_id, "ok"))
        elif type_ == "tasks":
            reply(
                {
                    "v": PROTOCOL_VERSION,
                    "type": "tasks",
                    "ack_of": msg_id,
                    "tasks": self._tasks,
                    "current": self._episode,
                }
            )
        elif type_ in ("get_observation", "arm", "reset"):
            if self._jobs.qsize() >= MAX_QUEUED_JOBS:
                reply(
                    ack(msg_id, "rejected", f"busy: {MAX_QUEUED_JOBS} robot reads already queued")
                )
            elif type_ == "reset" and self._mode != Mode.IDLE:
                reply(
                    ack(
                        msg_id,
                        "rejected",
                        f"reset moves the scene: disarm first (robot is {self._mode})",
                    )
                )
            elif type_ == "arm" and self._mode != Mode.IDLE:
                reply(ack(msg_id, "rejected", _arm_refusal(self._mode)))
            else:
                self._jobs.put((identity, msg))
        elif type_ in ("execute_chunk", "jog"):
            if type_ == "execute_chunk":
                status, reason = self._on_execute(identity, msg)
                reply(ack(msg_id, status, reason, chunk_id=msg["chunk_id"]))
            else:
                status, reason, fields = self._on_jog(identity, msg)
                reply(ack(msg_id, status, reason, **fields))
            if status in ("accepted", "ok"):  # wake the control thread only once the ack is out
                with self._cond:
                    self._cond.notify_all()
        else:
            status, reason = getattr(self, f"_on_{type_}")(identity)
            reply(ack(msg_id, status, reason))

    # ------------------------------------------------------------ transitions

    def _halt(self, mode: Mode, reason: str, identity: bytes | None = None) -> None:
        """Enter FAULT or ESTOP: abort the chunk, then command a hold of the current pose."""
        with self._cond:
            if mode == Mode.ESTOP and identity is not None:
                self._estop_by.add(identity)
            if mode == Mode.FAULT and self._mode in (Mode.ESTOP, Mode.FAULT):
                return
            was = self._mode
            self._mode = mode
            self._faults.append(reason)
            self._abort_chunk(reason)
            self._controller = None
            now = time.monotonic()
            if mode == Mode.ESTOP:
                self.stats.last_estop_t = now
            else:
                self.stats.last_fault_t = now
            self._cond.notify_all()
        self._hold(was in ARMED_MODES)

    def _hold(self, moving: bool) -> None:
        """Wait out a target in flight; if the robot was being commanded, tell it to hold where
        it is now (its gripper command kept), not merely stop sending."""
        with self._motion_lock:
            if not moving:
                return
            try:
                hold = getattr(self.robot, "hold", None)
                if callable(hold):
                    pose = np.asarray(hold(), dtype=np.float64)
                else:
                    state = self._read_state()
                    pose, _ = self.limits.clip(np.r_[state[:6], self._target[6]])
                    self.robot.send_action(pose.astype(np.float32))
                self._target = pose
                self._last_send_t = time.monotonic()
                self.stats.actions_sent += 1
            except Exception as e:
                log.exception("hold failed")
                with self._cond:
                    self._faults.append(f"hold failed: {type(e).__name__}: {e}")

    def _abort_chunk(self, reason: str) -> None:
        """Abort the running chunk and any replacement waiting for it (state lock held)."""
        if self._chunk is not None and self._chunk.abort_reason is None:
            self._chunk.abort_reason = reason
        if self._next is not None:
            self._next.abort_reason = reason
            self._orphans.append(self._next)
            self._next = None

    def _on_estop(self, identity: bytes) -> tuple[str, str]:
        self._halt(Mode.ESTOP, "estop", identity)
        return "ok", ""

    def _on_reset_fault(self, identity: bytes) -> tuple[str, str]:
        with self._cond:
            if self.fatal is not None:
                return "rejected", f"{self.fatal}: restart the robot server"
            if self._mode not in (Mode.FAULT, Mode.ESTOP):
                return "rejected", f"reset_fault needs FAULT or ESTOP, robot is {self._mode}"
            if self._mode == Mode.ESTOP:
                # An E-STOP is latched for a reason: any connection may press it, only one that
                # pressed it may release it (all of them, if several did).
                if identity not in self._estop_by:
                    return (
                        "rejected",
                        "ESTOP was pressed by another connection: only a connection that pressed it may reset it",
                    )
                self._estop_by.discard(identity)
                if self._estop_by:
                    return (
                        "rejected",
                        f"your E-STOP is released; still latched by {len(self._estop_by)} other connection(s)",
                    )
            self._mode = Mode.IDLE
            self._faults.clear()
            self._cond.notify_all()
        return "ok", ""

    def _on_disarm(self, identity: bytes) -> tuple[str, str]:
        with self._cond:
            if self._mode != Mode.ARMED:
                return "rejected", _disarm_refusal(self._mode)
            self._mode = Mode.IDLE
            self._controller = None
        return "ok", ""

    def _on_pause(self, identity: bytes) -> tuple[str, str]:
        with self._cond:
            if self._mode != Mode.EXECUTING:
                return "rejected", f"pause needs a running chunk (EXECUTING), robot is {self._mode}"
            self._mode = Mode.PAUSED
            self._cond.notify_all()
        self._hold(True)
        return "ok", ""

    def _on_resume(self, identity: bytes) -> tuple[str, str]:
        with self._cond:
            if self._mode != Mode.PAUSED:
                return "rejected", f"resume needs PAUSED, robot is {self._mode}"
            if identity != self._controller:
                return "rejected", "only the client that armed the robot may resume motion"
            self._mode = Mode.EXECUTING
            self._cond.notify_all()
        return "ok", ""

    def _on_stop(self, identity: bytes) -> tuple[str, str]:
        with self._cond:
            if self._mode == Mode.ARMED:
                return "ok", "nothing running; holding"
            if self._mode not in (Mode.EXECUTING, Mode.PAUSED):
                return "rejected", f"stop needs an armed robot, robot is {self._mode}"
            self._abort_chunk("stopped")
            self._mode = Mode.ARMED
            self._cond.notify_all()
        self._hold(True)
        return "ok", ""

    def _check_chunk(self, identity: bytes, msg: dict[str, Any]) -> str | None:
        """The checks that need no state: why the chunk is refused, or None."""
        actions: np.ndarray = msg["actions"]  # (H, 7) float32, shape checked by the protocol
        horizon, cfg = actions.shape[0], self.config
        if horizon > cfg.max_chunk_len:
            return f"chunk has {horizon} steps, max_chunk_len is {cfg.max_chunk_len}"
        if not np.isfinite(actions).all():
            bad = np.argwhere(~np.isfinite(actions))[0]
            return f"non-finite value in actions at step {bad[0]}, {ACTION_NAMES[bad[1]]}"
        period = 1.0 / self.robot.fps
        if abs(msg["dt"] - period) > 1e-3 * period:
            return f"dt {msg['dt']} s does not match the control period {period} s ({self.robot.fps} Hz)"
        return None

    def _on_execute(self, identity: bytes, msg: dict[str, Any]) -> tuple[str, str]:
        why = self._check_chunk(identity, msg)
        if why is not None:
            return "rejected", why
        replace = msg.get("replace", False)
        with self._cond:
            last = self._last_seq.get(identity)
            if last is not None and msg["seq"] <= last:
                return (
                    "rejected",
                    f"seq {msg['seq']} is not above the last seq {last} of this connection (replay?)",
                )
            self._last_seq[identity] = msg["seq"]
            expires = msg.get("expires_at_ns")
            if expires is not None and time.time_ns() > expires:
                return "rejected", f"chunk expired {(time.time_ns() - expires) / 1e6:.1f} ms ago"
            if not (self._mode == Mode.ARMED or (replace and self._mode == Mode.EXECUTING)):
                need = "ARMED (or EXECUTING with replace: true)" if replace else "ARMED"
                return "rejected", f"execute_chunk needs {need}, robot is {self._mode}"
            if identity != self._controller:
                return "rejected", "the robot is armed by another client"
            chunk = _Chunk(
                msg_id=msg["msg_id"],
                identity=identity,
                chunk_id=msg["chunk_id"],
                actions=msg["actions"].astype(np.float64),
                dt=float(msg["dt"]) / self.time_scale,
                event_index=msg.get("event_index"),
                intervention=msg.get("intervention", False),
            )
            self._start(chunk, f"replaced by chunk {chunk.chunk_id!r}")
            self.stats.chunks_accepted += 1
        return "accepted", ""

    def _start(self, chunk: _Chunk, reason: str) -> None:
        """Run `chunk` now (ARMED) or at the next step boundary in place of the running one
        (state lock held; the caller wakes the control thread once its ack is out). A
        replacement that never started is aborted with `reason`."""
        if self._mode == Mode.ARMED or self._chunk is None:
            self._chunk = chunk
        else:
            if self._next is not None:
                self._next.abort_reason = reason
                self._orphans.append(self._next)
            if self._chunk.abort_reason is None:
                self._chunk.abort_reason = reason
            self._next = chunk
        self._mode = Mode.EXECUTING

    def _on_jog(self, identity: bytes, msg: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        lim = self.limits
        dxyz = np.asarray(msg.get("dxyz", (0.0, 0.0, 0.0)), dtype=np.float64)
        drpy = np.asarray(msg.get("drpy", (0.0, 0.0, 0.0)), dtype=np.float64)
        if np.linalg.norm(dxyz) > lim.max_step_m + 1e-9:
            return (
                "rejected",
                f"jog of {np.linalg.norm(dxyz):.4f} m is above max_step_m {lim.max_step_m} m",
                {},
            )
        if rotation_angle(np.zeros(3), drpy) > lim.max_rot_step_rad + 1e-9:
            return (
                "rejected",
                f"jog rotation is above max_rot_step_rad {lim.max_rot_step_rad} rad",
                {},
            )
        with self._cond:
            if self._mode not in ARMED_MODES:
                return "rejected", f"jog needs an armed robot, robot is {self._mode}", {}
            if identity != self._controller:
                return "rejected", "only the client that armed the robot may jog", {}
            # Jogs chain from the last jog still to run, but never more than one capped step
            # ahead of the last target sent: releasing the keys stops the robot within a period.
            running = self._next or self._chunk
            base = (
                running.actions[-1]
                if running and running.jog and running.abort_reason is None
                else self._target
            )
            goal = base.copy()
            goal[:3] += dxyz
            goal[3:6] = quat_to_rpy(quat_mul(rpy_to_quat(drpy), rpy_to_quat(base[3:6])))
            if msg.get("gripper") is not None:
                goal[6] = msg["gripper"]
            goal, clipped = lim.clip(goal)
            goal[:6] = lim.interpolate(self._target, goal)[0][:6]
            chunk = _Chunk(
                msg_id=msg["msg_id"],
                identity=identity,
                chunk_id=f"jog-{next(self._jogs)}",
                actions=goal[None],
                dt=1.0 / self.robot.fps / self.time_scale,
                event_index=None,
                intervention=True,
                jog=True,
            )
            self._start(chunk, "taken over by jog")
        return "ok", "", {"target": goal.astype(np.float32), "clipped": clipped}

    def _check_watchdog(self) -> None:
        timeout = self.config.heartbeat_timeout_s
        with self._lock:
            if self._mode not in ARMED_MODES:
                return
            silent = time.monotonic() - self._last_heard
        if silent > timeout:
            self._halt(
                Mode.FAULT, f"heartbeat timeout: controller silent {silent:.3f} s > {timeout} s"
            )

    # ------------------------------------------------------------ worker (slow robot reads)

    def _worker_loop(self) -> None:
        out = self._ctx.socket(zmq.PUSH)
        out.linger = 0
        out.connect(self._outbox_addr)
        try:
            while True:
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    return
                identity, msg = job
                try:
                    reply = getattr(self, f"_job_{msg['type']}")(identity, msg)
                except Exception as e:  # a robot error is an answer, not a dead server
                    log.exception("robot %s failed", msg["type"])
                    reply = ack(msg["msg_id"], "rejected", f"robot error: {type(e).__name__}: {e}")
                out.send_multipart([identity, encode(reply)])
        finally:
            out.close()

    def _job_get_observation(self, identity: bytes, msg: dict[str, Any]) -> dict[str, Any]:
        obs = self.robot.get_observation()  # no lock the control thread needs is held here
        with self._lock:
            fields = self._progress_fields()
            mode = str(self._mode)
        if isinstance(obs.get("progress"), dict):  # measured with the images
            p = obs["progress"]
            fields |= {
                "task_progress": p["score"],
                "stages": p["stages"],
                "success": p["success"],
                "progress_ended": p.get("ended"),
            }
        return {
            "v": PROTOCOL_VERSION,
            "type": "observation",
            "ack_of": msg["msg_id"],
            "t_ns": time.time_ns(),
            "images": {cam: np.asarray(img, dtype=np.uint8) for cam, img in obs["images"].items()},
            "state": np.asarray(obs["state"], dtype=np.float32),
            "mode": mode,
            **fields,
        }

    def _job_arm(self, identity: bytes, msg: dict[str, Any]) -> dict[str, Any]:
        # Hold where the robot really is (it may have been moved while disarmed).
        state = self._read_state()
        with self._cond:
            if self._mode != Mode.IDLE:
                return ack(msg["msg_id"], "rejected", _arm_refusal(self._mode))
            self._target = state
            self._ee_pose = state.astype(np.float32)
            self._mode = Mode.ARMED
            self._controller = identity
            self._last_heard = time.monotonic()
        return ack(msg["msg_id"], "ok")

    def _job_reset(self, identity: bytes, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._mode != Mode.IDLE:
                return ack(
                    msg["msg_id"],
                    "rejected",
                    f"reset moves the scene: disarm first (robot is {self._mode})",
                )
        kwargs = {k: msg[k] for k in ("task", "seed", "split") if k in msg}
        try:
            info = self.robot.reset(**kwargs)
        except TypeError:
            return ack(
                msg["msg_id"], "rejected", f"reset refused: this robot takes no {sorted(kwargs)}"
            )
        except (ValueError, KeyError, NotImplementedError) as e:
            return ack(msg["msg_id"], "rejected", f"reset refused: {e}")
        state = self._read_state()
        plan = _call_optional(self.robot, "expert_plan")
        with self._lock:
            self._target = state
            self._ee_pose = state.astype(np.float32)
            self._control_step = 0
            self._last_chunk = None
            self._hello = self._hello_fields()  # cameras may change with the seed (jitter)
            self._episode = _call_optional(self.robot, "episode")
        self._refresh()
        fields = dict(info) if isinstance(info, dict) else {}
        fields["cameras"] = self._hello["cameras"]
        if plan is not None:
            fields["expert_plan"] = plan
        return ack(msg["msg_id"], "ok", **fields)

    # ------------------------------------------------------------ control thread

    def _control_loop(self) -> None:
        out = self._ctx.socket(zmq.PUSH)
        out.linger = 0
        out.connect(self._outbox_addr)
        idle_period = 1.0 / self.config.telemetry_hz
        try:
            while not self._stop.is_set():
                with self._cond:
                    chunk = self._chunk
                    if chunk is None or chunk.started:
                        self._cond.wait(idle_period)
                        chunk = None
                    else:
                        chunk.started = True
                if chunk is None:
                    self._refresh()  # the world moves on while the arm holds
                    continue
                done = self._run_chunk(chunk)
                with self._cond:
                    if self._chunk is chunk:
                        self._chunk, self._next = self._next, None
                        if self._chunk is None and done and self._mode == Mode.EXECUTING:
                            self._mode = Mode.ARMED
                    self._last_chunk = chunk
                    self._cond.notify_all()
                if not chunk.jog:
                    out.send_multipart([chunk.identity, encode(chunk.final_ack(done))])
        finally:
            out.close()

    def _wait_tick(self, chunk: _Chunk) -> bool:
        """Sleep until the chunk's next control tick; False if it was aborted meanwhile.

        A tick is never less than one control period after the last target sent, whichever
        chunk, jog or hold sent it: a late loop stretches the schedule, it never bursts."""
        with self._cond:
            while True:
                if chunk.abort_reason is not None or self._stop.is_set():
                    return False
                if self._mode == Mode.PAUSED:
                    self._cond.wait(0.1)
                    chunk.t_next = time.monotonic()
                    continue
                remaining = max(chunk.t_next, self._last_send_t + chunk.dt) - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)

    def _run_chunk(self, chunk: _Chunk) -> bool:
        """Execute a chunk's actions, each reached through capped steps; True when done.

        The next step is taken from the last target commanded at every tick, so a hold (pause)
        in between never makes the next one larger than the caps."""
        for action in chunk.actions:
            goal, clipped = self.limits.clip(action)
            chunk.clipped += clipped
            ticks = 0
            while True:
                if not self._wait_tick(chunk):
                    return False
                subs = self.limits.interpolate(self._target, goal)  # (n, 7); n = ticks left
                with self._motion_lock:
                    with self._lock:
                        if chunk.abort_reason is not None or self._mode != Mode.EXECUTING:
                            return False
                    if not self._send(subs[0]):
                        return False
                ticks += 1
                chunk.t_next = self._last_send_t + chunk.dt
                if len(subs) == 1:
                    break
            chunk.interpolated += ticks - 1
            chunk.step += 1
        return self._wait_tick(chunk)  # the last target gets its full control period

    def _send(self, target: np.ndarray) -> bool:
        """One target to the robot (motion lock held); False, and FAULT, if the robot failed."""
        t = time.monotonic()
        try:
            sent = self.robot.send_action(target.astype(np.float32))
        except Exception as e:
            log.exception("send_action failed")
            with self._cond:
                self._mode = Mode.FAULT
                self._faults.append(f"robot error: {type(e).__name__}: {e}")
                self._abort_chunk("robot error")
                self._controller = None
            return False
        self._target = target
        self._last_send_t = t
        self._control_step += 1
        self.stats.actions_sent += 1
        if not callable(getattr(self.robot, "get_state", None)):
            self._ee_pose = np.asarray(sent, dtype=np.float32)
        self._refresh()
        return True


def _call_optional(robot: Any, name: str) -> Any:
    """robot.name() if the robot has that optional method, else None."""
    fn = getattr(robot, name, None)
    return fn() if callable(fn) else None


class _AllowList:
    """ZAP credentials provider: only listed CURVE client keys may connect."""

    def __init__(self, allowed: frozenset[bytes]):
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.allowed


def _bind(sock: zmq.Socket, host: str, port: int) -> str:
    if port == 0:
        sock.bind(f"tcp://{host}:*")
    else:
        sock.bind(f"tcp://{host}:{port}")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _msg_id_of(msg: Any) -> str | None:
    m = msg.get("msg_id") if isinstance(msg, dict) else None
    return m if isinstance(m, str) and 0 < len(m) <= 128 else None


def _arm_refusal(mode: Mode) -> str:
    if mode in (Mode.FAULT, Mode.ESTOP):
        return f"robot is in {mode}: send reset_fault first"
    return f"arm needs IDLE, robot is already {mode}"


def _disarm_refusal(mode: Mode) -> str:
    if mode in (Mode.EXECUTING, Mode.PAUSED):
        return f"a chunk is running ({mode}): stop it first"
    return f"disarm needs ARMED, robot is {mode}"
