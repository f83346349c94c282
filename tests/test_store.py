import shutil

import numpy as np
import pytest

from buffers.codec import decode_chunk, encode_chunk
from buffers.log import FRAME, CorruptLogError, SegmentLog
from buffers.store import BufferConfig, ReplayBuffer
from tests.chunks import make_chunk


def records(n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [encode_chunk(make_chunk(rng, chunk_seq=i, **kw)) for i in range(n)]


def test_reopen_keeps_records_in_order(tmp_path):
    recs = records(20)
    with ReplayBuffer(tmp_path) as buf:
        assert buf.insert(recs[:12]).stored == 12
        assert buf.insert(recs[12:]).stored == 8
    with ReplayBuffer(tmp_path) as buf:
        got, cursor = buf.read(0, 100)
        assert got == recs and cursor == 20
        assert buf.info()["records"] == 20 and buf.info()["torn_bytes"] == 0


def test_insert_is_idempotent_across_reopen(tmp_path):
    recs = records(5)
    with ReplayBuffer(tmp_path) as buf:
        buf.insert(recs)
        again = buf.insert(recs + recs[:1])
        assert (again.stored, again.duplicates) == (0, 6)
    with ReplayBuffer(tmp_path) as buf:
        assert buf.insert(recs).duplicates == 5 and len(buf) == 5


def test_refused_record_changes_nothing_else(tmp_path):
    recs = records(3)
    with ReplayBuffer(tmp_path) as buf:
        result = buf.insert([recs[0], b"not a record", recs[1]])
        assert result.stored == 2 and result.refused[0][0] == 1
        assert "msgpack" in result.refused[0][1]
        assert len(buf) == 2
    with ReplayBuffer(tmp_path) as buf:
        assert len(buf) == 2


def test_read_by_cursor_and_policy_version(tmp_path):
    rng = np.random.default_rng(0)
    recs = [encode_chunk(make_chunk(rng, chunk_seq=i, policy_version=i // 4)) for i in range(12)]
    with ReplayBuffer(tmp_path) as buf:
        buf.insert(recs)
        got, cursor = buf.read(0, 3)
        assert got == recs[:3] and cursor == 3
        got, cursor = buf.read(cursor, 100, min_policy_version=2)
        assert got == recs[8:] and cursor == 12
        assert [decode_chunk(r).policy_version for r in got] == [2] * 4


def test_segments_rotate(tmp_path):
    recs = records(30)
    with ReplayBuffer(tmp_path, BufferConfig(segment_bytes=8192)) as buf:
        buf.insert(recs)
        assert buf.info()["segments"] > 3
    with ReplayBuffer(tmp_path, BufferConfig(segment_bytes=8192)) as buf:
        assert buf.read(0, 100)[0] == recs


def test_torn_tail_at_every_byte_of_last_record(tmp_path):
    src = tmp_path / "src"
    recs = records(4, T=4)
    with ReplayBuffer(src) as buf:
        buf.insert(recs)
    seg = src / "segment-000000.log"
    data = seg.read_bytes()
    last_start = len(data) - FRAME.size - len(recs[-1])
    for cut in range(last_start, len(data)):
        dst = tmp_path / f"cut{cut}"
        dst.mkdir()
        (dst / seg.name).write_bytes(data[:cut])
        with ReplayBuffer(dst) as buf:
            assert buf.read(0, 10)[0] == recs[:3]
            assert buf.info()["torn_bytes"] == cut - last_start
        assert (dst / seg.name).stat().st_size == last_start  # truncated, appends go on cleanly
        shutil.rmtree(dst)


def test_flipped_bit_in_middle_is_detected_and_skipped(tmp_path):
    recs = records(5)
    with ReplayBuffer(tmp_path) as buf:
        buf.insert(recs)
    seg = tmp_path / "segment-000000.log"
    data = bytearray(seg.read_bytes())
    second = FRAME.size + len(recs[0])
    data[second + FRAME.size + 40] ^= 0x10
    seg.write_bytes(bytes(data))
    with ReplayBuffer(tmp_path) as buf:
        assert buf.read(0, 10)[0] == [recs[0], *recs[2:]]
        assert buf.info()["corrupt_records"] == 1
    with pytest.raises(CorruptLogError):
        ReplayBuffer(tmp_path, BufferConfig(strict=True))


def test_zeroed_page_is_skipped(tmp_path):
    recs = records(12, T=32)
    with ReplayBuffer(tmp_path) as buf:
        buf.insert(recs)
    seg = tmp_path / "segment-000000.log"
    data = bytearray(seg.read_bytes())
    data[4096:8192] = bytes(4096)
    seg.write_bytes(bytes(data))
    with ReplayBuffer(tmp_path) as buf:
        got = buf.read(0, 100)[0]
        assert 0 < len(got) < 12 and all(r in recs for r in got)
        assert buf.info()["corrupt_records"] >= 1


def test_log_refuses_unknown_fsync_policy(tmp_path):
    with pytest.raises(ValueError, match="fsync"):
        SegmentLog(tmp_path, fsync="sometimes")
    with pytest.raises(ValueError, match="fsync"):
        BufferConfig(fsync="sometimes")


def test_a_camera_frame_that_lies_inside_is_stored_then_dropped_when_read(tmp_path):
    """Ingest checks a compressed camera frame's claimed size without inflating it; a frame
    whose content falls short of its claim is found on the first read: counted as damaged once,
    dropped, and its key freed so the robot's resend is stored."""
    import dataclasses

    import lz4.frame
    import msgpack

    from tests.test_codec import _claiming

    rng = np.random.default_rng(21)
    chunk = make_chunk(rng, T=8)
    flat = np.zeros((9, 32, 32, 3), np.uint8)
    good = encode_chunk(dataclasses.replace(chunk, obs={**chunk.obs, "camera": flat}))
    body = msgpack.unpackb(good)
    short = lz4.frame.compress(bytes(flat.nbytes - 1), store_size=True)
    body["obs"]["camera"]["lz4"] = _claiming(short, flat.nbytes)
    liar = msgpack.packb(body, use_bin_type=True)
    with ReplayBuffer(tmp_path) as buf:
        assert buf.insert([liar]).stored == 1
        with pytest.raises(CorruptLogError, match="lz4"):
            buf.get(buf.records()[0])
        assert len(buf) == 0 and buf.info()["corrupt_records"] == 1
        assert buf.insert([good]).stored == 1
        np.testing.assert_array_equal(buf.get(buf.records()[0]).obs["camera"], flat)
