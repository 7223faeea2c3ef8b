import pickle

import msgpack
import numpy as np
import pytest

from robot.protocol import ProtocolError, ack, decode, encode, request, validate_request


@pytest.mark.parametrize(
    "dtype", ["bool", "int8", "int64", "uint8", "uint16", "float16", "float32", "float64"]
)
def test_arrays_round_trip_for_every_allowed_dtype(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    out = decode(encode({"v": 1, "type": "x", "a": a, "nested": {"cam": {"img": a}}}))
    np.testing.assert_array_equal(out["a"], a)
    assert out["a"].dtype == a.dtype and out["a"].shape == (2, 3, 4)
    np.testing.assert_array_equal(out["nested"]["cam"]["img"], a)


def test_wire_form_of_an_array_is_the_documented_map():
    a = np.array([[1.0, 2.0]], dtype=np.float32)
    raw = msgpack.unpackb(encode({"a": a}), raw=False)
    assert raw["a"] == {"__ndarray__": True, "data": a.tobytes(), "dtype": "<f4", "shape": [1, 2]}


def _array_map(dtype: str, shape, data: bytes) -> bytes:
    return msgpack.packb(
        {
            "v": 1,
            "type": "execute_chunk",
            "msg_id": "m1",
            "actions": {"__ndarray__": True, "data": data, "dtype": dtype, "shape": shape},
        },
        use_bin_type=True,
    )


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "why"),
    [
        ("|O", [1], b"\0" * 8, "not allowed"),
        ("<U4", [1], b"\0" * 16, "not allowed"),
        ("<c8", [1], b"\0" * 8, "not allowed"),
        ("V8", [1], b"\0" * 8, "not allowed"),
        ("f4,i4", [1], b"\0" * 8, "not allowed"),
        ("<f9", [1], b"\0" * 9, "not a numpy dtype"),
        ("<f4", [2, 7], b"\0" * 12, "needs 56"),
        ("<f4", [-1, 7], b"", "non-negative"),
        ("<f4", "2x7", b"", "shape"),
        ("<f4", [1, 1, 1, 1, 1], b"\0" * 4, "at most 4"),
    ],
)
def test_bad_arrays_are_refused_with_the_reason_and_the_msg_id(dtype, shape, data, why):
    with pytest.raises(ProtocolError, match=why) as e:
        decode(_array_map(dtype, shape, data))
    assert e.value.msg_id == "m1"


def test_object_arrays_cannot_be_sent():
    with pytest.raises(TypeError, match="dtype object"):
        encode({"a": np.array([object()])})


def test_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for payload in (
        pickle.dumps(Evil()),
        msgpack.packb({"v": 1, "msg_id": "x", "data": pickle.dumps(Evil())}),
    ):
        try:
            msg = decode(payload)
        except ProtocolError:
            continue
        with pytest.raises(ProtocolError):
            validate_request(msg)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\xc1garbage", "not a msgpack"),
        (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
        (msgpack.packb({1: 2}), "not a msgpack"),  # integer keys are not allowed
    ],
)
def test_frames_that_are_not_maps_have_no_msg_id(frame, why):
    with pytest.raises(ProtocolError, match=why) as e:
        decode(frame)
    assert e.value.msg_id is None


GOOD_CHUNK = dict(chunk_id="c1", seq=1, actions=np.zeros((4, 7), np.float32), dt=0.1)


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        ({"v": 1, "type": "hello"}, "'msg_id' must be"),
        ({"v": 1, "type": "hello", "msg_id": ""}, "'msg_id' must be"),
        ({"v": 2, "type": "hello", "msg_id": "a", "client": "x"}, "unsupported protocol version 2"),
        (
            {"v": True, "type": "hello", "msg_id": "a", "client": "x"},
            "unsupported protocol version",
        ),
        ({"v": 1, "type": "fly", "msg_id": "a"}, "unknown request type 'fly'"),
        ({"v": 1, "type": "hello", "msg_id": "a"}, "missing field 'client'"),
        ({"v": 1, "type": "reset", "msg_id": "a", "seed": -1}, "'seed' must be an int >= 0"),
        ({"v": 1, "type": "reset", "msg_id": "a", "task": 3}, "'task' must be a string"),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "seq": True}),
            "'seq' must be an int",
        ),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "dt": 0}),
            "'dt' must be a finite number",
        ),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "dt": float("nan")}),
            "'dt' must be a finite number",
        ),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "chunk_id": 5}),
            "'chunk_id' must be a string",
        ),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "actions": [[0.0] * 7]}),
            "must be an ndarray",
        ),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "actions": np.zeros((4, 7))}),
            "float32",
        ),
        (
            request(
                "execute_chunk",
                msg_id="a",
                **{**GOOD_CHUNK, "actions": np.zeros((4, 6), np.float32)},
            ),
            r"shape \(H, 7\)",
        ),
        (
            request(
                "execute_chunk",
                msg_id="a",
                **{**GOOD_CHUNK, "actions": np.zeros((0, 7), np.float32)},
            ),
            "H >= 1",
        ),
        (
            request("execute_chunk", msg_id="a", **{**GOOD_CHUNK, "expires_at_ns": "soon"}),
            "'expires_at_ns' must be an int",
        ),
        (
            {
                "v": 1,
                "type": "execute_chunk",
                "msg_id": "a",
                "seq": 1,
                "actions": np.zeros((1, 7), np.float32),
                "dt": 0.1,
            },
            "missing field 'chunk_id'",
        ),
    ],
)
def test_validation_gives_precise_reasons(msg, why):
    with pytest.raises(ProtocolError, match=why):
        validate_request(decode(encode(msg)))


def test_valid_requests_pass_and_replies_carry_ack_of():
    for msg in (
        request("hello", client="t"),
        request("arm"),
        request("reset", task="x", seed=3),
        request("execute_chunk", **GOOD_CHUNK),
    ):
        assert validate_request(decode(encode(msg)))["msg_id"] == msg["msg_id"]
    a = ack("m7", "done", executed_steps=3)
    assert decode(encode(a)) == {
        "v": 1,
        "type": "ack",
        "ack_of": "m7",
        "status": "done",
        "reason": "",
        "executed_steps": 3,
    }
    ids = {request("heartbeat")["msg_id"] for _ in range(1000)}
    assert len(ids) == 1000


def test_the_byte_example_in_the_protocol_doc_is_what_we_send():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    line = next(ln for ln in doc.splitlines() if ln.startswith("83 a1 76 01"))
    assert bytes.fromhex(line) == encode({"v": 1, "type": "arm", "msg_id": "a1"})
    assert validate_request(decode(bytes.fromhex(line)))["type"] == "arm"
