"""Robot link protocol v1: message schema, msgpack codec and request validation.

Shared by the robot server and the workbench client; the wire format is specified in
docs/protocol.md so that a client can be written in any language from that page alone.

Every message is one ZeroMQ frame holding a msgpack map with "v": 1 and "type"; requests
also carry a unique "msg_id" string, and every reply carries "ack_of" = that msg_id.
Arrays travel as {"__ndarray__": True, "data": bytes, "dtype": "<f4", "shape": [...]}.
msgpack rather than pickle: decoding untrusted bytes must never run code, and only
bool/int/uint/float arrays are accepted, so a frame can only ever become plain data.
"""

from __future__ import annotations

import enum
import itertools
import math
import uuid
from typing import Any

import msgpack
import numpy as np

from robot.types import ACTION_DIM

PROTOCOL_VERSION = 1

# Requests (client -> robot). `reset` is the sim's scene reset (task, seed, split); `tasks`
# and `jog` are v1.1 additions (new types only, so a v1 robot rejects them with a reason).
REQUEST_TYPES: tuple[str, ...] = (
    "hello",
    "get_observation",
    "arm",
    "disarm",
    "pause",
    "resume",
    "stop",
    "estop",
    "reset_fault",
    "heartbeat",
    "execute_chunk",
    "reset",
    "tasks",
    "jog",
)
ACK_STATUSES: tuple[str, ...] = ("ok", "accepted", "rejected", "done", "aborted")
SPLITS: tuple[str, ...] = ("train", "test")
ALLOWED_DTYPE_KINDS = "biuf"  # bool, int, uint, float: nothing that can hold objects
MAX_MSG_ID_LEN = 128
MAX_STRING_LEN = 1024
MAX_ARRAY_NDIM = 4
MAX_ARRAY_BYTES = 64 << 20  # a 4-camera 256x256 observation is ~0.8 MB


class Mode(enum.StrEnum):
    """Robot server modes (DESIGN §5). Strings on the wire."""

    IDLE = "IDLE"
    ARMED = "ARMED"
    EXECUTING = "EXECUTING"
    PAUSED = "PAUSED"
    FAULT = "FAULT"
    ESTOP = "ESTOP"


class ProtocolError(ValueError):
    """A message that breaks the protocol; `msg_id` is set when one could be read, so the
    server can answer with a rejected ack (otherwise the message is dropped)."""

    def __init__(self, reason: str, msg_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.msg_id = msg_id


# ---------------------------------------------------------------------------- codec


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_DTYPE_KINDS:
            raise TypeError(
                f"cannot send an array of dtype {obj.dtype} (allowed kinds: bool, int, uint, float)"
            )
        a = np.ascontiguousarray(obj)
        return {
            "__ndarray__": True,
            "data": a.tobytes(),
            "dtype": a.dtype.str,
            "shape": list(a.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(msg: dict[str, Any]) -> bytes:
    """Pack a message into one msgpack frame (numpy arrays and scalars included)."""
    return msgpack.packb(msg, default=_pack_default, use_bin_type=True)


def decode_ndarray(d: dict[str, Any]) -> np.ndarray:
    """Rebuild an array from its wire form, checking dtype, shape and byte count."""
    dtype_s, shape, data = d.get("dtype"), d.get("shape"), d.get("data")
    if not isinstance(dtype_s, str) or len(dtype_s) > 8:
        raise ValueError(f"array dtype must be a short string like '<f4', got {dtype_s!r}")
    try:
        dtype = np.dtype(dtype_s)
    except Exception:  # numpy raises TypeError, SyntaxError, ... on odd strings
        raise ValueError(f"array dtype {dtype_s!r} is not a numpy dtype") from None
    if (
        dtype.kind not in ALLOWED_DTYPE_KINDS
        or dtype.fields is not None
        or dtype.subdtype is not None
    ):
        raise ValueError(f"array dtype {dtype_s!r} not allowed (bool, int, uint and float only)")
    if not isinstance(shape, list) or len(shape) > MAX_ARRAY_NDIM:
        raise ValueError(
            f"array shape must be a list of at most {MAX_ARRAY_NDIM} ints, got {shape!r}"
        )
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape):
        raise ValueError(f"array shape must hold non-negative ints, got {shape!r}")
    if not isinstance(data, bytes):
        raise ValueError(f"array data must be bytes, got {type(data).__name__}")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) or len(data) > MAX_ARRAY_BYTES:
        raise ValueError(
            f"array data holds {len(data)} bytes, shape {shape} of {dtype_s} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _decode_arrays(obj: dict, depth: int = 0) -> Any:
    # Arrays sit at most three maps deep (observation.images.<cam>); deeper nesting is left
    # as is and fails field validation, so hostile nesting cannot exhaust the stack here.
    if obj.get("__ndarray__") is True:
        return decode_ndarray(obj)
    if depth >= 3:
        return obj
    return {k: _decode_arrays(v, depth + 1) if isinstance(v, dict) else v for k, v in obj.items()}


def decode(frame: bytes) -> dict[str, Any]:
    """Unpack one frame into a message map with arrays rebuilt.

    Raises ProtocolError, with `msg_id` set whenever the frame was a map with a string msg_id.
    """
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, timestamp=0)
    except Exception as e:  # any decoder failure is the sender's problem, never ours
        raise ProtocolError(f"not a msgpack message ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"message must be a msgpack map, got {type(obj).__name__}")
    msg_id = obj.get("msg_id")
    msg_id = msg_id if isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_MSG_ID_LEN else None
    if obj.get("__ndarray__") is True:
        raise ProtocolError("message must be a msgpack map, got an array", msg_id)
    try:
        return _decode_arrays(obj)
    except ValueError as e:
        raise ProtocolError(str(e), msg_id) from None


# ------------------------------------------------------------------------ messages


_MSG_PREFIX = uuid.uuid4().hex[:12]  # per process; a counter makes each id unique
_msg_counter = itertools.count()


def new_msg_id() -> str:
    return f"{_MSG_PREFIX}-{next(_msg_counter)}"


def request(type_: str, msg_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A request map ready for `encode`; fields left as None are omitted."""
    if type_ not in REQUEST_TYPES:
        raise ValueError(f"unknown request type {type_!r}; types are {REQUEST_TYPES}")
    msg = {"v": PROTOCOL_VERSION, "type": type_, "msg_id": msg_id or new_msg_id()}
    msg.update({k: v for k, v in fields.items() if v is not None})
    return msg


def ack(ack_of: str, status: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    """The ack reply: status is one of ACK_STATUSES; `reason` says why when rejected/aborted."""
    return {
        "v": PROTOCOL_VERSION,
        "type": "ack",
        "ack_of": ack_of,
        "status": status,
        "reason": reason,
        **fields,
    }


# ---------------------------------------------------------------------- validation


def _is_int(x: Any) -> bool:
    return type(x) is int  # not bool, not a numpy scalar, not an array


def _is_number(x: Any) -> bool:
    return type(x) is int or (type(x) is float and math.isfinite(x))


def _check_str(msg: dict, key: str, msg_id: str, *, required: bool) -> None:
    if key not in msg:
        if required:
            raise ProtocolError(f"{msg['type']}: missing field {key!r}", msg_id)
        return
    v = msg[key]
    if not isinstance(v, str) or len(v) > MAX_STRING_LEN:
        raise ProtocolError(
            f"{msg['type']}: {key!r} must be a string of at most {MAX_STRING_LEN} chars", msg_id
        )


def _check_int(msg: dict, key: str, msg_id: str, *, required: bool, lo: int = 0) -> None:
    if key not in msg:
        if required:
            raise ProtocolError(f"{msg['type']}: missing field {key!r}", msg_id)
        return
    v = msg[key]
    if not _is_int(v) or v < lo or v >= 2**63:
        raise ProtocolError(
            f"{msg['type']}: {key!r} must be an int >= {lo}, got {_short(v)}", msg_id
        )


def _check_bool(msg: dict, key: str, msg_id: str) -> None:
    if key in msg and type(msg[key]) is not bool:
        raise ProtocolError(
            f"{msg['type']}: {key!r} must be true or false, got {_short(msg[key])}", msg_id
        )


def _check_vec3(msg: dict, key: str, msg_id: str) -> None:
    """Optional 3-vector: a list of 3 finite numbers or a float array of shape (3,)."""
    if key not in msg:
        return
    v = msg[key]
    if isinstance(v, np.ndarray):
        ok = v.shape == (3,) and v.dtype.kind == "f" and bool(np.all(np.isfinite(v)))
    else:
        ok = isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v)
    if not ok:
        raise ProtocolError(
            f"{msg['type']}: {key!r} must be 3 finite numbers, got {_short(v)}", msg_id
        )


def _short(v: Any) -> str:
    """A bounded description of a bad value for a reason string (values may be huge)."""
    r = f"{type(v).__name__} of shape {v.shape}" if isinstance(v, np.ndarray) else repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def validate_request(msg: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded request's envelope and fields; return it unchanged when valid.

    Raises ProtocolError with a precise reason, and nothing else, whatever the field values
    (arrays, maps, huge ints, NaN, bytes, nil): types are checked before values are compared.
    Unknown extra fields are ignored, so newer clients can add optional fields. Limits that
    depend on the robot (max_chunk_len, finiteness, dt against the control rate, jog size)
    are checked by the server's safety layer.
    """
    msg_id = msg.get("msg_id")
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_MSG_ID_LEN:
        raise ProtocolError(
            f"'msg_id' must be a non-empty string of at most {MAX_MSG_ID_LEN} chars"
        )
    v = msg.get("v")
    if not _is_int(v) or v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {_short(v)}; this robot speaks v{PROTOCOL_VERSION}",
            msg_id,
        )
    type_ = msg.get("type")
    if not isinstance(type_, str) or type_ not in REQUEST_TYPES:
        raise ProtocolError(f"unknown request type {_short(type_)}", msg_id)
    if type_ == "hello":
        _check_str(msg, "client", msg_id, required=True)
    elif type_ == "reset":
        _check_str(msg, "task", msg_id, required=False)
        _check_int(msg, "seed", msg_id, required=False)
        if "split" in msg and (not isinstance(msg["split"], str) or msg["split"] not in SPLITS):
            raise ProtocolError(
                f"reset: 'split' must be one of {SPLITS}, got {_short(msg['split'])}", msg_id
            )
    elif type_ == "jog":
        _check_vec3(msg, "dxyz", msg_id)
        _check_vec3(msg, "drpy", msg_id)
        g = msg.get("gripper")
        if g is not None and not _is_number(g):
            raise ProtocolError(
                f"jog: 'gripper' must be a finite number or nil, got {_short(g)}", msg_id
            )
    elif type_ == "execute_chunk":
        _check_str(msg, "chunk_id", msg_id, required=True)
        _check_int(msg, "seq", msg_id, required=True)
        _check_int(msg, "expires_at_ns", msg_id, required=False)
        _check_int(msg, "event_index", msg_id, required=False)
        _check_bool(msg, "replace", msg_id)
        _check_bool(msg, "intervention", msg_id)
        dt = msg.get("dt")
        if not _is_number(dt) or dt <= 0:
            raise ProtocolError(
                f"execute_chunk: 'dt' must be a finite number of seconds > 0, got {_short(dt)}",
                msg_id,
            )
        a = msg.get("actions")
        if not isinstance(a, np.ndarray):
            raise ProtocolError(
                "execute_chunk: 'actions' must be an ndarray (see docs/protocol.md)", msg_id
            )
        if a.dtype != np.float32:
            raise ProtocolError(
                f"execute_chunk: 'actions' must be float32 ('<f4'), got {a.dtype.str}", msg_id
            )
        if a.ndim != 2 or a.shape[1] != ACTION_DIM or a.shape[0] < 1:
            raise ProtocolError(
                f"execute_chunk: 'actions' must have shape (H, {ACTION_DIM}) with H >= 1, got {a.shape}",
                msg_id,
            )
    return msg
