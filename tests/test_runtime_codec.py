"""User state blobs round-trip exactly through bytes and JSON, and damaged blobs are refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from interestgym.runtime.codec import (
    StateFormatError,
    decode_bytes,
    decode_json,
    encode_bytes,
    encode_json,
)


def _fields(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "long_term": rng.normal(size=(2, 16)).astype(np.float32),
        "short_term": rng.normal(size=16).astype(np.float32),
        "last_ts": np.array(1_700_000_123, dtype=np.int64),
        "stats": rng.normal(size=5),  # float64
        "seen": np.array([True, False, True]),
    }


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name, value in a.items():
        assert value.dtype == b[name].dtype, name
        assert value.shape == b[name].shape, name
        # bit-exact: a service that reloads a state must continue exactly where it stopped
        assert value.tobytes() == b[name].tobytes(), name


def test_bytes_round_trip_is_bit_exact():
    fields = _fields(np.random.default_rng(0))
    blob = encode_bytes(fields, {"user_id": "u1", "events": 7})
    assert blob[:4] == b"IGUS"
    back, meta = decode_bytes(blob)
    _assert_same(fields, back)
    assert meta == {"user_id": "u1", "events": 7}
    back["short_term"][0] = 99.0  # decoded arrays own their memory
    assert decode_bytes(blob)[0]["short_term"][0] == fields["short_term"][0]


def test_bytes_layout_matches_the_documented_header():
    fields = {"x": np.arange(3, dtype=np.float32)}
    blob = encode_bytes(fields)
    magic, version, header_len = struct.unpack_from("<4sHI", blob, 0)
    header = json.loads(blob[10 : 10 + header_len])
    assert (magic, version) == (b"IGUS", 1)
    assert header["fields"] == [["x", "<f4", [3]]]
    payload = blob[10 + header_len : -4]
    assert np.frombuffer(payload, dtype="<f4").tolist() == [0.0, 1.0, 2.0]


def test_json_round_trip_is_exact_and_plain_json():
    fields = _fields(np.random.default_rng(1))
    text = encode_json(fields, {"user_id": "u2"})
    doc = json.loads(text)
    assert doc["fields"]["short_term"]["dtype"] == "<f4"
    back, meta = decode_json(text)
    _assert_same(fields, back)
    assert meta == {"user_id": "u2"}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-9] + b[-4:], "CRC"),                  # truncated payload
        (lambda b: b"XXXX" + b[4:], "magic"),                # not a state blob
        (lambda b: b[:4] + struct.pack("<H", 9) + b[6:], "codec version"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "CRC"),  # one flipped bit
        (lambda b: b[:5], "at least"),
    ],
)
def test_damaged_blobs_are_refused_with_a_reason(damage, message):
    blob = encode_bytes(_fields(np.random.default_rng(2)))
    with pytest.raises(StateFormatError, match=message):
        decode_bytes(damage(blob))


@pytest.mark.parametrize(("shape", "message"), [([-1], r"shape \[-1\]; expected sizes >= 0"),
                                              ([2, -2], r"shape \[2, -2\]; expected sizes >= 0"),
                                              ([4], "needs 16 bytes at offset")])
def test_a_header_whose_shape_does_not_fit_its_bytes_is_refused(shape, message):
    """A blob whose CRC is right but whose header gives a negative size (numpy would read "all the rest") or more values
    than the blob holds: refused naming the field, not read."""
    import zlib

    header = json.dumps({"fields": [["x", "<f4", shape]], "meta": {}}).encode()
    body = struct.pack("<4sHI", b"IGUS", 1, len(header)) + header + np.arange(2, dtype="<f4").tobytes()
    with pytest.raises(StateFormatError, match=f"field 'x'.*{message}|{message}"):
        decode_bytes(body + struct.pack("<I", zlib.crc32(body)))


def test_unsupported_dtype_is_refused():
    with pytest.raises(StateFormatError, match="dtype"):
        encode_bytes({"s": np.array(["a"])})
    with pytest.raises(StateFormatError, match="values"):
        decode_json(json.dumps({"codec": 1, "fields": {"x": {"dtype": "<f4", "shape": [3], "data": [1.0]}}}))


def _tracker_state_json() -> dict:
    from interestgym.runtime.state import UserState

    return json.loads(UserState.empty(4, tracker_weight=0.5, with_drift=True).to_json())


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.pop("tracker_stats"), r"tracker fields \['tracker_window', 'tracker_last_ts'\]; expected all of"),
    (lambda f: f["tracker_stats"].update(shape=[2], data=[0.5, 0.0]), r"tracker fields of shapes .*expected \(3, k\), \(2,\) and \(3,\)"),
    (lambda f: f["tracker_stats"].update(data=[float("nan"), 0.0, 0.0]), r"'tracker_stats': a non-finite value"),
    (lambda f: f["drift_window"].update(dtype="<f8"), r"'drift_window' has dtype <f8 and shape \(0, 4\); expected <f4 of shape \(m, 4\)"),
])
def test_a_damaged_tracker_or_drift_field_is_refused_naming_it(edit, message):
    """A state whose tracker window / statistics or drift window is damaged is refused, naming the field,
    and a version-1 state (no such fields) still reads."""
    from interestgym.runtime.state import UserState

    doc = _tracker_state_json()
    edit(doc["fields"])
    with pytest.raises(StateFormatError, match=message):
        UserState.from_json(json.dumps(doc))
    old = _tracker_state_json()
    for name in ("tracker_window", "tracker_last_ts", "tracker_stats", "drift_window"):
        old["fields"].pop(name)
    old["meta"]["state_version"] = 1
    state = UserState.from_json(json.dumps(old))
    assert state.tracker is None and state.drift_window is None


@pytest.mark.parametrize("version", [0, 2, 3, 255])
def test_a_blob_or_json_of_any_other_codec_version_is_refused(version):
    """Blobs of versions 1 and 2 (sparse fields) and JSON of version 1 are read: any other codec is refused naming it
    (a newer format read as this one would be misread silently)."""
    fields = _fields(np.random.default_rng(4))
    blob = encode_bytes(fields, {})
    if version != 2:
        with pytest.raises(StateFormatError, match=rf"codec version {version}; this interestgym reads versions 1, 2"):
            decode_bytes(blob[:4] + struct.pack("<H", version) + blob[6:])
    doc = json.loads(encode_json(fields, {}))
    doc["codec"] = version
    with pytest.raises(StateFormatError, match=rf"state JSON codec {version}; expected an object with codec 1"):
        decode_json(json.dumps(doc))


def test_a_user_state_of_an_unknown_state_version_is_refused():
    """A state written by a newer interestgym (state_version 5) or with none is refused, naming the versions read."""
    from interestgym.runtime.state import UserState

    state = UserState.empty(4)
    fields, meta = decode_bytes(state.to_bytes())
    for version in (5, 0, None):
        with pytest.raises(StateFormatError, match=rf"user state version {version!r}; this interestgym reads versions 1, 2, 3, 4"):
            UserState.from_bytes(encode_bytes(fields, {**meta, "state_version": version}))


def _reseal(body: bytes) -> bytes:
    import zlib

    return body + struct.pack("<I", zlib.crc32(body))


def test_mostly_zero_fields_are_stored_sparse_and_come_back_bit_for_bit():
    """A field whose non-zero elements take less than half its bytes as (position, value) pairs is stored so (codec
    version 2); -0.0, a NaN payload, a subnormal, ints and bools come back bit for bit, and the blob is that much
    smaller. A blob without such a field is version 1, byte for byte the dense layout (a version-1 reader reads it)."""
    counts = np.zeros((5, 400))
    counts[0, [3, 7, 399]] = [1.5, -0.0, 5e-324]
    counts[4, 0] = np.frombuffer(np.uint64(0x7FF8_0000_0000_1234).tobytes(), dtype=np.float64)[0]  # a NaN with a payload
    ints = np.zeros(300, dtype=np.int64)
    ints[[1, 299]] = [-7, 2**40]
    flags = np.zeros(128, dtype=bool)
    flags[5] = True
    dense = np.arange(100, dtype=np.float32)
    fields = {"counts": counts, "ints": ints, "flags": flags, "dense": dense}
    blob = encode_bytes(fields, {"k": 1})
    assert struct.unpack_from("<H", blob, 4)[0] == 2
    back, meta = decode_bytes(blob)
    assert meta == {"k": 1}
    for name, value in fields.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        assert back[name].tobytes() == value.tobytes(), name  # bit for bit, the -0.0 and the NaN payload included
    header = json.loads(blob[10: 10 + struct.unpack_from("<I", blob, 6)[0]])
    assert [e[3] if len(e) == 4 else None for e in header["fields"]] == [4, 2, 1, None]
    dense_size = sum(v.nbytes for v in fields.values())
    assert len(blob) < dense_size / 4
    # no field worth storing sparse: version 1, the dense layout
    plain = encode_bytes({"dense": dense, "small": np.zeros(10)}, {})
    assert struct.unpack_from("<H", plain, 4)[0] == 1
    header_len = struct.unpack_from("<I", plain, 6)[0]
    assert plain[10 + header_len: -4] == dense.tobytes() + np.zeros(10).tobytes()


@pytest.mark.parametrize(("positions", "nnz", "message"), [
    ([5, 3], 2, "sparse positions are not ascending positions below 400"),
    ([1, 400], 2, "sparse positions are not ascending positions below 400"),
    ([], 401, "sparse with 401 values; its shape \\[400\\] holds 400"),
])
def test_a_sparse_field_with_bad_positions_is_refused_naming_it(positions, nnz, message):
    header = json.dumps({"fields": [["c", "<f8", [400], nnz]], "meta": {}}).encode()
    payload = np.array(positions, dtype="<u4").tobytes() + np.ones(len(positions)).tobytes()
    body = struct.pack("<4sHI", b"IGUS", 2, len(header)) + header + payload
    with pytest.raises(StateFormatError, match=f"field 'c'.*{message}|field 'c' is {message}"):
        decode_bytes(_reseal(body))
    # a version-1 blob cannot hold a sparse entry
    with pytest.raises(StateFormatError, match="expected \\[name, dtype, shape\\]$"):
        decode_bytes(_reseal(struct.pack("<4sHI", b"IGUS", 1, len(header)) + header + payload))


def test_a_user_state_with_many_categories_is_stored_in_a_fraction_of_its_dense_size():
    """A user who touched 12 of 2,000 categories: counts, per-slot counts and exposure are dense in memory (what the
    core computes with) and sparse in the blob; the state comes back equal."""
    from interestgym.runtime.state import UserState

    rng = np.random.default_rng(0)
    state = UserState.empty(64)
    touched = rng.choice(2000, 12, replace=False)
    state.category_counts = np.zeros(2000)
    state.category_counts[touched] = rng.random(12)
    state.slot_category_counts = np.zeros((4, 2000))
    state.slot_category_counts[rng.integers(4, size=12), touched] = rng.random(12)
    state.slot_factor = 1.0
    state.exposure = np.zeros((2, 2000))
    state.exposure[0, touched] = rng.random(12)
    blob = state.to_bytes()
    assert UserState.from_bytes(blob) == state
    dense = 7 * 2000 * 8
    assert len(blob) < dense / 20, (len(blob), dense)
