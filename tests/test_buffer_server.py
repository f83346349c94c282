"""The buffer actor's sampling hook, called on the plain class (no Ray needed): specs cross as
plain data, and each named sampler keeps its uses and rate counts between calls."""

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.sampling import Sampling, on_policy, spec_from_dict
from buffers.store import BufferConfig
from fleet.remote.buffer import BufferServerImpl
from tests.chunks import make_chunk


@pytest.fixture
def server(tmp_path):
    s = BufferServerImpl(str(tmp_path), BufferConfig(fsync="never"))
    yield s
    s.close()


def fill(server, n, **kw):
    rng = np.random.default_rng(0)
    chunks = [make_chunk(rng, chunk_seq=i, **{k: v(i) for k, v in kw.items()}) for i in range(n)]
    assert server.insert([encode_chunk(c) for c in chunks]).stored == n


def test_spec_from_dict_builds_presets_and_mixtures_and_refuses_nonsense():
    assert spec_from_dict({"preset": "on_policy", "max_staleness": 2, "batch_size": 8}) == \
        on_policy(max_staleness=2, batch_size=8)
    mix = spec_from_dict({"preset": "mixture", "batch_size": 8, "parts": [
        [{"preset": "replay"}, 0.5], [{"preset": "demonstrations"}, 0.5]]})
    assert mix.kind == "mixture" and [p.kind for p, _ in mix.parts] == ["uniform",
                                                                         "demonstrations"]
    assert spec_from_dict({"kind": "uniform", "rate": {"min_size": 3}}) == \
        Sampling(rate=spec_from_dict({"rate": {"min_size": 3}}).rate)
    with pytest.raises(ValueError, match="preset 'nope'"):
        spec_from_dict({"preset": "nope"})
    with pytest.raises(ValueError, match="run dry"):  # impossible settings still raise
        spec_from_dict({"preset": "on_policy", "max_uses": 2,
                        "rate": {"samples_per_insert": 4}})


def test_on_policy_through_the_server_keeps_staleness_and_bounded_reuse(server):
    fill(server, 16, policy_version=lambda i: i // 4)
    spec = {"preset": "on_policy", "max_staleness": 1, "max_uses": 2, "batch_size": 4}
    drawn = []
    while (batch := server.sample(spec, policy_version=3)) is not None:
        drawn += list(batch.cursor)
        assert set(batch.policy_version) <= {2, 3} and batch.action.shape[:2] == (4, 8)
    assert sorted(drawn) == sorted(list(range(8, 16)) * 2)  # every fresh record, twice
    fill_more = {"preset": "on_policy", "max_staleness": 1, "max_uses": 3, "batch_size": 4}
    assert server.sample(fill_more, policy_version=3) is not None  # a new spec starts afresh


def test_mixture_with_demonstrations_through_the_server(server):
    fill(server, 30, intervened=lambda i: i < 3)
    spec = {"preset": "mixture", "batch_size": 64,
            "parts": [[{"preset": "replay"}, 0.5], [{"preset": "demonstrations"}, 0.5]]}
    batch = server.sample(spec)
    assert batch is not None and len(batch.cursor) == 64
    assert (batch.cursor[32:] < 3).all() and not (batch.cursor[:32] < 3).all()


def test_a_sharded_server_inserts_reads_and_reports_every_shard(tmp_path):
    s = BufferServerImpl(str(tmp_path), BufferConfig(fsync="never", shards=2))
    rng = np.random.default_rng(0)
    recs = [encode_chunk(make_chunk(rng, robot_id=f"r{r}", chunk_seq=i))
            for i in range(3) for r in range(4)]
    assert s.insert(recs).stored == 12 and s.insert(recs).duplicates == 12
    got, cursor = s.read(0, 100)
    assert sorted(got) == sorted(recs) and s.read(cursor, 100)[0] == []
    assert s.info()["records"] == 12 and s.info()["shards"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00", "shard-01"]
    with pytest.raises(NotImplementedError, match="sharded"):
        s.sample({"preset": "replay", "batch_size": 4})
    s.close()
