import contextlib
import dataclasses
import tracemalloc

import lz4.frame
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffers.check import check_record
from buffers.codec import COLUMNS, RecordError, decode_chunk, encode_chunk
from buffers.records import EpisodeEnd
from tests.chunks import make_chunk


def assert_same(a, b):
    assert a.key == b.key and a.policy_version == b.policy_version
    assert a.episode_end == b.episode_end and a.horizon == b.horizon
    for name in ("action", "policy_action", "logp", "value", "reward", "success", "intervened"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.obs.keys() == b.obs.keys()
    for k in a.obs:
        assert a.obs[k].dtype == b.obs[k].dtype
        np.testing.assert_array_equal(a.obs[k], b.obs[k])


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 70), H=st.integers(1, 8), A=st.integers(1, 7), seed=st.integers(0, 2**16),
       camera=st.booleans(), outcome=st.sampled_from([None, "success", "failure", "truncated"]))
def test_round_trip(T, H, A, seed, camera, outcome):
    end = None if outcome is None else EpisodeEnd(outcome, "env")
    chunk = make_chunk(np.random.default_rng(seed), T=T, H=H, A=A, camera=camera, end=end)
    assert_same(chunk, decode_chunk(encode_chunk(chunk)))


def test_compresses_and_keeps_images_uint8():
    chunk = make_chunk(np.random.default_rng(0), T=64, camera=True)
    back = decode_chunk(encode_chunk(chunk))
    assert back.obs["camera"].dtype == np.uint8


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x04\x22\x4d\x18" + b"\x00" * 20])
def test_refuses_garbage(data):
    with pytest.raises(RecordError):
        decode_chunk(data)


def test_refuses_truncated_frame():
    data = encode_chunk(make_chunk(np.random.default_rng(1)))
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(RecordError):
            decode_chunk(data[:cut])


def test_refuses_oversized_record():
    with pytest.raises(RecordError, match="exceeds"):
        decode_chunk(b"\x00" * 2048, max_bytes=1024)


def _body(chunk):
    return msgpack.unpackb(encode_chunk(chunk), raw=False)


def _encode_body(body):
    return msgpack.packb(body, use_bin_type=True)


def _v2(chunk) -> bytes:
    """The record as format version 2 wrote it: every array raw, one lz4 frame around all."""
    body = {**_body(chunk), "v": 2}
    for spec in body["obs"].values():
        if "lz4" in spec:
            spec["data"] = lz4.frame.decompress(spec.pop("lz4"))
    return bytes(lz4.frame.compress(msgpack.packb(body, use_bin_type=True),
                                    compression_level=0, store_size=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_non_finite_actions(bad):
    chunk = make_chunk(np.random.default_rng(2))
    action = chunk.action.copy()
    action[3, 1] = bad
    with pytest.raises(RecordError, match="finite"):
        encode_chunk(dataclasses.replace(chunk, action=action))
    body = _body(chunk)
    body["action"]["data"] = action.tobytes()
    with pytest.raises(RecordError, match="finite"):
        decode_chunk(_encode_body(body))


def test_refuses_wrong_shapes_and_missing_fields():
    chunk = make_chunk(np.random.default_rng(3), T=16, H=4)
    with pytest.raises(RecordError, match="logp"):
        encode_chunk(dataclasses.replace(chunk, logp=np.zeros(3, np.float32)))
    with pytest.raises(RecordError, match=r"obs\.state"):
        encode_chunk(dataclasses.replace(chunk, obs={"state": np.zeros((16, 39), np.float32)}))
    body = _body(chunk)
    del body["reward"]
    with pytest.raises(RecordError, match="missing"):
        decode_chunk(_encode_body(body))
    body = _body(chunk)
    body["action"]["dtype"] = "object"
    with pytest.raises(RecordError, match="not allowed"):
        decode_chunk(_encode_body(body))
    body = _body(chunk)
    body["action"]["shape"] = [1000, 1000]
    with pytest.raises(RecordError, match="do not fill"):
        decode_chunk(_encode_body(body))


def test_refuses_oversized_strings_and_unknown_ext_types():
    chunk = make_chunk(np.random.default_rng(4))
    with pytest.raises(RecordError, match="robot_id"):
        encode_chunk(dataclasses.replace(chunk, robot_id="x" * 1000))
    body = _body(chunk)
    body["task"] = msgpack.ExtType(1, b"payload")
    with pytest.raises(RecordError):
        decode_chunk(_encode_body(body))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_never_crashes_otherwise(data):
    with pytest.raises(RecordError):
        decode_chunk(lz4.frame.compress(data))


def _bomb(size: int, store_size: bool = True) -> bytes:
    """An lz4 frame of `size` zero bytes, built a block at a time so that the test itself never
    holds them all."""
    block = bytes(4 << 20)
    with lz4.frame.LZ4FrameCompressor() as comp:
        parts = [comp.begin(source_size=size if store_size else 0)]
        parts += [comp.compress(block) for _ in range(size // len(block))]
        parts.append(comp.flush())
    return b"".join(parts)


def _xxh32(data: bytes) -> int:
    """XXH32 with seed 0 of fewer than 16 bytes: what an lz4 frame header checksums."""
    m, p1, p2, p3, p4, p5 = 0xFFFFFFFF, 2654435761, 2246822519, 3266489917, 668265263, 374761393

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    h, i = (p5 + len(data)) & m, 0
    for i in range(0, len(data) - 3, 4):
        h = rotl((h + int.from_bytes(data[i:i + 4], "little") * p3) & m, 17) * p4 & m
    for b in data[len(data) - len(data) % 4:]:
        h = rotl((h + b * p5) & m, 11) * p1 & m
    for shift, prime in ((15, p2), (13, p3)):
        h = (h ^ (h >> shift)) * prime & m
    return h ^ (h >> 16)


def _claiming(frame: bytes, size: int) -> bytes:
    """`frame` (stored with its content size) with a header that claims `size` bytes instead."""
    descriptor = frame[4:6] + size.to_bytes(8, "little")
    return frame[:4] + descriptor + bytes([(_xxh32(descriptor) >> 8) & 0xFF]) + frame[15:]


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(data: bytes, max_bytes: int, match: str):
    def attempt():
        with pytest.raises(RecordError, match=match):
            decode_chunk(data, max_bytes=max_bytes)
    return attempt


@pytest.mark.parametrize(("store_size", "lie", "match"), [
    (True, None, "claims 268435456 bytes"),  # honest header, over the limit: no inflating
    (False, None, "record limit"),  # no size in the header: inflating stops at the limit
    (True, 1000, "larger than its header"),  # a header that lies low: stops at what it claims
])
def test_bomb_is_refused_without_allocating_its_size(store_size, lie, match):
    bomb = _bomb(256 << 20, store_size)  # ~1 MB on the wire, 256 MiB once inflated
    if lie is not None:
        bomb = _claiming(bomb, lie)
    limit = 2 << 20
    assert _peak_bytes(_refused(bomb, limit, match)) < 3 * limit


def test_header_that_lies_about_a_real_record_is_refused():
    data = _v2(make_chunk(np.random.default_rng(10)))
    size = lz4.frame.get_frame_info(data)["content_size"]
    assert _claiming(data, size) == data  # the forger is faithful
    for claim in (size - 1, size + 1):
        with pytest.raises(RecordError, match="lz4 frame"):
            decode_chunk(_claiming(data, claim))


def test_refuses_bytes_after_the_frame():
    data = _v2(make_chunk(np.random.default_rng(5)))
    with pytest.raises(RecordError, match="follow the lz4 frame"):
        decode_chunk(data + b"extra")
    with pytest.raises(RecordError, match="msgpack"):  # version 3: bytes after the map
        decode_chunk(encode_chunk(make_chunk(np.random.default_rng(5))) + b"extra")


def test_refuses_empty_action_dimension():
    chunk = make_chunk(np.random.default_rng(6), T=8, H=4)
    body = _body(chunk)
    body["action"] = {"dtype": "float32", "shape": [8, 0], "data": b""}
    body["policy_action"] = {"dtype": "float32", "shape": [2, 4, 0], "data": b""}
    with pytest.raises(RecordError, match="A >= 1"):
        decode_chunk(_encode_body(body))


@pytest.mark.parametrize("name", [b"state", "", "x" * 300])
def test_refuses_bad_obs_names(name):
    body = _body(make_chunk(np.random.default_rng(7)))
    body["obs"] = {name: body["obs"]["state"]}
    with pytest.raises(RecordError, match="obs names"):
        decode_chunk(_encode_body(body))


@pytest.mark.parametrize("end", [["won", "env"], ["success", "oracle"], ["success"], "success"])
def test_refuses_bad_episode_end(end):
    body = _body(make_chunk(np.random.default_rng(8)))
    body["episode_end"] = end
    with pytest.raises(RecordError, match="episode_end"):
        decode_chunk(_encode_body(body))


def test_refuses_unknown_fields_and_versions():
    body = _body(make_chunk(np.random.default_rng(9)))
    with pytest.raises(RecordError, match="unknown"):
        decode_chunk(_encode_body({**body, "pickle": b"\x80\x04"}))
    with pytest.raises(RecordError, match="version"):
        decode_chunk(_encode_body({**body, "v": 99}))


_ODD = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                 st.text(max_size=300), st.binary(max_size=64),
                 st.lists(st.integers(-1, 2**40), max_size=4),
                 st.fixed_dictionaries({"dtype": st.sampled_from(["float32", "bool", "int64"]),
                                        "shape": st.lists(st.integers(0, 9), max_size=3),
                                        "data": st.binary(max_size=64)}))
_BODY = _body(make_chunk(np.random.default_rng(11), T=5, H=2, A=3, camera=True,
                         end=EpisodeEnd("success")))


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(sorted(_BODY)), sub=st.booleans(), value=_ODD)
def test_mutated_fields_raise_only_record_error(field, sub, value):
    """One field (or one entry of an array spec) replaced by an odd value: refused or accepted,
    but never any other exception, which would escape a caller's `except RecordError`."""
    body = dict(_BODY)
    if sub and isinstance(body[field], dict):
        inner = dict(body[field])
        inner[sorted(inner)[len(str(value)) % len(inner)]] = value
        body[field] = inner
    else:
        body[field] = value
    with contextlib.suppress(RecordError):
        decode_chunk(_encode_body(body))


def test_unchecked_decode_skips_only_the_schema():
    body = _body(make_chunk(np.random.default_rng(5)))
    body["reward"]["data"] = np.full(16, np.nan, np.float32).tobytes()
    data = _encode_body(body)
    with pytest.raises(RecordError, match="finite"):
        decode_chunk(data)
    assert np.isnan(decode_chunk(data, checked=False).reward).all()
    for bad in (b"garbage", data[:-3]):  # framing and sizes are still checked
        with pytest.raises(RecordError):
            decode_chunk(bad, checked=False)


def test_inflated_bound_walks_lz4_blocks_and_gives_up_on_strange_frames():
    from buffers.codec import _inflated_bound

    raw = np.random.default_rng(0).integers(0, 4, 300_000, dtype=np.uint8).tobytes()
    frame = lz4.frame.compress(raw, store_size=True)  # 64 KiB blocks: 5 of them
    assert len(raw) <= _inflated_bound(frame) == 5 * (64 << 10)
    assert _inflated_bound(frame[:-4]) > 1 << 60  # no end mark: unknown, take the careful path
    assert _inflated_bound(b"\x04\x22\x4d\x18") > 1 << 60
    record = _v2(make_chunk(np.random.default_rng(0)))
    assert _inflated_bound(record) < 1 << 20  # what the one-shot path takes
    with pytest.raises(RecordError, match="follow the lz4 frame"):
        decode_chunk(record + b"\x00")


@pytest.mark.parametrize(("values", "ok"), [
    ([3e38, 3e38, 3e38, 3e38], True),  # finite, though their float32 sum overflows
    ([np.inf, -np.inf, 0.0, 0.0], False),  # a sum of NaN
    ([1.0, np.nan, 2.0, 3.0], False),
    ([-np.inf, 1.0, 2.0, 3.0], False),
])
def test_finiteness_check_is_exact_where_sums_overflow_or_cancel(values, ok):
    chunk = make_chunk(np.random.default_rng(0), T=4, H=4, A=4)
    bad = dataclasses.replace(chunk, action=np.array([values] * 4, np.float32))
    if ok:
        assert decode_chunk(encode_chunk(bad)).action[0, 0] == np.float32(3e38)
    else:
        with pytest.raises(RecordError, match="action must be finite"):
            encode_chunk(bad)


def test_v3_compresses_only_observations_that_shrink_and_old_records_still_decode():
    rng = np.random.default_rng(12)
    chunk = make_chunk(rng, T=16, camera=True)
    chunk = dataclasses.replace(chunk, obs={**chunk.obs, "camera": np.zeros((17, 32, 32, 3),
                                                                           np.uint8)})
    body = _body(chunk)
    assert body["v"] == 3 and "lz4" in body["obs"]["camera"]  # zeros shrink: compressed
    assert all("data" in body[c] for c in COLUMNS)  # columns stay raw (finiteness is cheap)
    noise = dataclasses.replace(chunk, obs={"state": rng.standard_normal((17, 64), np.float32)})
    assert "data" in _body(noise)["obs"]["state"]  # float noise: lz4 would not pay, kept raw
    for c in (chunk, noise):
        assert_same(c, decode_chunk(encode_chunk(c)))
        assert_same(c, decode_chunk(_v2(c)))  # format version 2: one lz4 frame around it all


def _camera_record(rng, *, lie: int = 0) -> bytes:
    chunk = make_chunk(rng, T=8, camera=True)
    chunk = dataclasses.replace(chunk, obs={**chunk.obs, "camera": np.zeros((9, 32, 32, 3),
                                                                           np.uint8)})
    body = _body(chunk)
    if lie:
        body["obs"]["camera"]["lz4"] = _claiming(body["obs"]["camera"]["lz4"], 9 * 32 * 32 * 3
                                                 + lie)
    return _encode_body(body)


def test_check_record_leaves_camera_frames_compressed_but_checks_their_claimed_size():
    rng = np.random.default_rng(13)
    record = _camera_record(rng)
    head = check_record(record)
    chunk = decode_chunk(record)
    assert head.key == chunk.key and head.num_steps == 8 and head.task == chunk.task
    with pytest.raises(RecordError, match="claims"):
        check_record(_camera_record(rng, lie=3))
    with pytest.raises(RecordError, match="record limit"):
        check_record(record, max_bytes=len(record) + 100)  # it would inflate past the limit


def test_a_compressed_column_is_refused():
    body = _body(make_chunk(np.random.default_rng(14), T=8))
    body["reward"] = {"dtype": "float32", "shape": [8],
                      "lz4": lz4.frame.compress(bytes(32), store_size=True)}
    with pytest.raises(RecordError, match="exactly dtype, shape and data"):
        check_record(_encode_body(body))
