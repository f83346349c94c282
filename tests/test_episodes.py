import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from buffers.codec import encode_chunk
from buffers.episodes import export_npz, import_npz, iter_episodes
from buffers.log import verify_log
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from tests.chunks import make_chunk

ROOT = Path(__file__).resolve().parent.parent


def two_chunk_episode(rng, episode_id="e1"):
    a = make_chunk(rng, T=8, H=4, episode_id=episode_id, chunk_seq=0)
    b = make_chunk(rng, T=5, H=4, episode_id=episode_id, chunk_seq=1, end=EpisodeEnd("success"))
    b.obs["state"][0] = a.obs["state"][-1]  # a chunk starts where the previous one ended
    return a, b


def test_chunks_join_into_episodes_and_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(0)
    a, b = two_chunk_episode(rng)
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(b), encode_chunk(a)])  # arrival order does not matter
        (ep,) = list(iter_episodes(buf))
        assert ep.outcome == "success" and ep.action.shape == (13, 4)
        assert ep.obs["state"].shape == (14, 39)
        np.testing.assert_array_equal(ep.obs["state"][9:], b.obs["state"][1:])
        assert export_npz(buf, tmp_path / "out") == 1
    (chunk,) = import_npz(tmp_path / "out", horizon=4)
    np.testing.assert_array_equal(chunk.action, ep.action)
    np.testing.assert_array_equal(chunk.obs["state"], ep.obs["state"])
    assert chunk.intervened.all() and chunk.episode_end == EpisodeEnd("success")
    with ReplayBuffer(tmp_path / "demos") as demos:  # imported demos are valid records
        assert demos.insert([encode_chunk(chunk)]).stored == 1


def test_verify_reports_damage_and_changes_nothing(tmp_path):
    rng = np.random.default_rng(1)
    with ReplayBuffer(tmp_path) as buf:
        buf.insert([encode_chunk(make_chunk(rng, chunk_seq=i)) for i in range(4)])
    seg = tmp_path / "segment-000000.log"
    data = seg.read_bytes()[:-7]  # a torn tail
    seg.write_bytes(data)
    report = verify_log(tmp_path)
    assert report["records"] == 3 and report["torn_bytes"] > 0
    assert seg.read_bytes() == data
    done = subprocess.run([sys.executable, "-m", "fleet.cli", "buffer", "verify", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1 and json.loads(done.stdout)["torn_bytes"] == report["torn_bytes"]
    assert seg.read_bytes() == data
