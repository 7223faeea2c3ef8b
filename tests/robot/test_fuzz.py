"""Fuzz the robot server with >= 10 000 malformed messages from the armed controller itself.

Every message is invalid by construction (random bytes, random msgpack, or a valid request
with one thing broken), so the robot must execute none of them, and it must still answer
`hello` afterwards.
"""

import math
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot.kinematic import KinematicRobot
from robot.protocol import REQUEST_TYPES, Mode, decode, encode, request, validate_request

N_EXAMPLES, PER_EXAMPLE = 200, 54  # 10 800 messages; long lists keep hypothesis overhead low

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
    st.text(max_size=20), st.binary(max_size=40),
)
any_value = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _valid_chunk(seq: int) -> dict:
    a = np.tile(np.array([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0], np.float32), (4, 1))
    return request("execute_chunk", msg_id=f"fuzz-{seq}", chunk_id="fuzz", seq=seq, actions=a, dt=0.1)


@st.composite
def broken_chunk(draw) -> bytes:
    msg = _valid_chunk(draw(st.integers(1, 2**40)))
    how = draw(st.sampled_from(["drop", "retype", "nan", "dtype", "shape", "bytes", "version", "type"]))
    if how == "drop":
        del msg[draw(st.sampled_from(["chunk_id", "seq", "actions", "dt", "type", "v"]))]
    elif how == "retype":
        key = draw(st.sampled_from(["chunk_id", "seq", "actions", "dt", "expires_at_ns", "event_index"]))
        ok = {"chunk_id": str, "seq": int, "expires_at_ns": int, "event_index": int}
        v = draw(any_value.filter(lambda x: not (isinstance(x, ok.get(key, ())) and not isinstance(x, bool))))
        if key == "dt" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            v = -abs(v) - 1  # still a number, but never a valid dt
        msg[key] = v
    elif how == "nan":
        a = msg["actions"].copy()
        a[draw(st.integers(0, 3)), draw(st.integers(0, 6))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        msg["actions"] = a
    elif how == "dtype":
        msg["actions"] = msg["actions"].astype(draw(st.sampled_from(["float64", "float16", "int32", "uint8", "bool"])))
    elif how == "shape":
        shape = draw(st.sampled_from([(4, 6), (4, 8), (28,), (1, 4, 7), (0, 7), (65, 7)]))
        msg["actions"] = np.zeros(shape, np.float32)
    elif how == "version":
        msg["v"] = draw(scalars.filter(lambda v: v != 1 or isinstance(v, bool)))
    elif how == "type":
        msg["type"] = draw(st.text(max_size=16).filter(lambda t: t not in REQUEST_TYPES))
    if how == "bytes":  # a valid frame, cut or corrupted
        frame = bytearray(encode(msg))
        i = draw(st.integers(0, len(frame) - 1))
        if draw(st.booleans()):
            return bytes(frame[:i])
        frame[i] = draw(st.integers(0, 255).filter(lambda b: b != frame[i]))
        try:
            accepted = _server_would_accept(decode(bytes(frame)))
        except Exception:
            accepted = False
        return b"\xc1" if accepted else bytes(frame)  # keep it only if it really is broken
    return encode(msg)


def _server_would_accept(msg: dict) -> bool:
    validate_request(msg)
    if msg["type"] != "execute_chunk":
        return True
    a = msg["actions"]
    return bool(np.all(np.isfinite(a)) and len(a) <= 64 and abs(msg["dt"] - 0.1) <= 1e-4)


bad_message = st.one_of(
    broken_chunk(),  # listed twice: most messages are near-valid chunks, the interesting case
    broken_chunk(),
    st.binary(min_size=1, max_size=300),
    any_value.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.dictionaries(st.sampled_from(["v", "type", "msg_id", "actions", "seq", "dt"]), any_value, max_size=6)
    .filter(lambda d: d.get("type") not in REQUEST_TYPES)
    .map(lambda d: msgpack.packb(d, use_bin_type=True)),
    broken_chunk(),
)


@pytest.mark.slow
def test_ten_thousand_malformed_messages_execute_nothing(link):
    robot = KinematicRobot()
    server = link.server(robot, heartbeat_timeout_s=600.0)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.sndhwm = s.rcvhwm = 0
    s.connect(server.cmd_endpoint)
    s.send(encode(request("arm", msg_id="arm")))
    assert decode(s.recv())["status"] == "ok" and server.mode == Mode.ARMED

    frames: list[bytes] = []

    @settings(max_examples=N_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(bad_message, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def collect(batch):
        frames.extend(batch)

    collect()
    assert len(frames) >= 10_000
    for f in frames:
        s.send(f)
    s.send(encode(request("hello", client="after-fuzz", msg_id="final-hello")))
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and s.poll(5000):
        reply = decode(s.recv())
        if reply.get("ack_of") == "final-hello":
            break
        statuses[reply["status"]] = statuses.get(reply["status"], 0) + 1
    else:
        raise AssertionError("no hello reply after the fuzz batch")
    s.close()
    print(f"fuzz: {len(frames)} messages, replies {statuses}, dropped {server.stats.dropped}")
    assert reply["type"] == "hello" and reply["action_space"] == "ee_pose_abs" and reply["mode"] == "ARMED"
    assert set(statuses) <= {"rejected"}
    assert server.stats.received == len(frames) + 2
    assert statuses["rejected"] + server.stats.dropped == len(frames)  # each answered or dropped
    assert server.stats.chunks_accepted == 0 and robot.sent == [] and server.mode == Mode.ARMED
