import dataclasses

import lz4.frame
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffers.codec import RecordError, decode_chunk, encode_chunk
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


def test_refuses_decompression_bomb_before_allocating_it():
    bomb = lz4.frame.compress(b"\x00" * (8 << 20))
    with pytest.raises(RecordError, match=r"larger than the record limit|truncated"):
        decode_chunk(bomb, max_bytes=1 << 20)


def test_refuses_oversized_record():
    with pytest.raises(RecordError, match="exceeds"):
        decode_chunk(b"\x00" * 2048, max_bytes=1024)


def _body(chunk):
    return msgpack.unpackb(lz4.frame.decompress(encode_chunk(chunk)), raw=False)


def _encode_body(body):
    return lz4.frame.compress(msgpack.packb(body, use_bin_type=True))


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
