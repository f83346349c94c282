"""Sampling specs refuse impossible settings; samplers draw what the spec declares."""

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.records import EpisodeEnd
from buffers.sampler import Sampler
from buffers.sampling import (
    SampleRate,
    Sampling,
    demonstrations,
    groups,
    mixture,
    on_policy,
    pairs,
    prioritized,
    replay,
    task_balanced,
)
from buffers.store import BufferConfig, ReplayBuffer
from tests.chunks import make_chunk


@pytest.fixture
def buf(tmp_path):
    with ReplayBuffer(tmp_path, BufferConfig(fsync="never")) as b:
        yield b


def fill(buf, n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    chunks = [make_chunk(rng, chunk_seq=i, **{k: v(i) if callable(v) else v
                                              for k, v in kw.items()}) for i in range(n)]
    assert buf.insert([encode_chunk(c) for c in chunks]).stored == n
    return chunks


@pytest.mark.parametrize("make, message", [
    (lambda: groups(4, batch_size=10), "multiple of G=4"),
    (lambda: groups(1), "G must be >= 2"),
    (lambda: pairs(batch_size=7), "even"),
    (lambda: on_policy(max_uses=2, rate=SampleRate(samples_per_insert=4)), "run dry"),
    (lambda: on_policy(max_staleness=-1), "max_staleness"),
    (lambda: mixture([(replay(), 0.0)]), "must be > 0"),
    (lambda: mixture([(replay(), 1.0), (groups(8), 0.01)], batch_size=64), "cannot use"),
    (lambda: mixture([(mixture([(replay(), 1)]), 1)]), "cannot be mixtures"),
    (lambda: mixture([(replay(horizon=4), 1)], horizon=8), "horizon"),
    (lambda: mixture([(replay(rate=SampleRate(min_size=5)), 1)]), "on the mixture"),
    (lambda: SampleRate(samples_per_insert=0), "samples_per_insert"),
    (lambda: Sampling("uniform", group_size=3), "only for kind='groups'"),
])
def test_impossible_specs_raise_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_windows_are_cut_padded_and_masked(buf):
    ends = {2: EpisodeEnd("success"), 3: EpisodeEnd("truncated")}
    chunks = fill(buf, 4, T=6, episode_id=lambda i: f"e{i}", end=lambda i: ends.get(i))
    batch = Sampler(buf, replay(batch_size=32, horizon=8)).sample()
    assert batch is not None
    assert batch.obs["state"].shape == (32, 9, 39) and batch.action.shape == (32, 8, 4)
    assert (batch.mask.sum(1) == 6).all() and (batch.start == 0).all()
    for b in range(32):
        c = chunks[batch.cursor[b]]
        np.testing.assert_array_equal(batch.obs["state"][b, :7], c.obs["state"])
        np.testing.assert_array_equal(batch.obs["state"][b, 7:], c.obs["state"][[-1, -1]])
        np.testing.assert_array_equal(batch.action[b, :6], c.action)
        assert not batch.action[b, 6:].any()
        assert batch.terminal[b, 5] == (batch.cursor[b] == 2)
        assert batch.truncated[b, 5] == (batch.cursor[b] == 3)
    assert batch.terminal.sum() + batch.truncated.sum() == np.isin(batch.cursor, [2, 3]).sum()


def test_window_start_varies_within_long_chunks(buf):
    chunks = fill(buf, 1, T=32)
    batch = Sampler(buf, replay(batch_size=64, horizon=8), seed=1).sample()
    assert batch is not None and batch.mask.all() and len(set(batch.start)) > 10
    for b, s in enumerate(batch.start):
        np.testing.assert_array_equal(batch.reward[b], chunks[0].reward[s:s + 8])


def test_on_policy_keeps_fresh_records_and_bounds_their_uses(buf):
    fill(buf, 16, policy_version=lambda i: i // 4)
    sampler = Sampler(buf, on_policy(max_staleness=1, max_uses=2, batch_size=4))
    drawn = []
    while (batch := sampler.sample(policy_version=3)) is not None:
        drawn += list(batch.cursor)
        assert set(batch.policy_version) <= {2, 3}
    assert sorted(drawn) == sorted(list(range(8, 16)) * 2)  # every fresh record, twice


def test_demonstrations_only_draws_operator_steps(buf):
    fill(buf, 20, intervened=lambda i: i % 5 == 0)
    batch = Sampler(buf, demonstrations(batch_size=50)).sample()
    assert batch is not None and set(batch.cursor) == {0, 5, 10, 15}
    assert batch.intervened[batch.mask].all()


def test_task_balanced_evens_out_tasks(buf):
    fill(buf, 40, task=lambda i: "rare" if i < 4 else "common")
    batch = Sampler(buf, task_balanced(batch_size=2000)).sample()
    assert batch is not None
    rare = np.mean(batch.cursor < 4)
    assert 0.45 < rare < 0.55  # uniform would give 0.1


def test_prioritized_follows_priorities_and_weights_correct_for_it(buf):
    fill(buf, 10)
    sampler = Sampler(buf, prioritized(alpha=1.0, beta=1.0, batch_size=1000))
    sampler.sample()
    sampler.update_priorities(np.arange(10), np.array([9.0] + [1.0] * 9))
    batch = sampler.sample()
    assert batch is not None
    assert 0.4 < np.mean(batch.cursor == 0) < 0.6  # 9 / 18
    assert batch.weight[batch.cursor == 0].max() < batch.weight[batch.cursor != 0].min()


def _episodes(buf, groups_of, per_group, seed=0, success=lambda g, e: e % 2 == 0):
    rng = np.random.default_rng(seed)
    recs = []
    for g in range(groups_of):
        for e in range(per_group):
            end = EpisodeEnd("success" if success(g, e) else "failure")
            for seq in range(2):
                recs.append(encode_chunk(make_chunk(
                    rng, episode_id=f"g{g}e{e}", chunk_seq=seq, group=f"r0/{g}",
                    end=end if seq == 1 else None)))
    recs.append(encode_chunk(make_chunk(rng, episode_id="open", group="r0/0")))  # unfinished
    buf.insert(recs)


def test_groups_hold_distinct_finished_episodes_of_one_start_state(buf):
    _episodes(buf, groups_of=3, per_group=5)
    batch = Sampler(buf, groups(4, batch_size=32)).sample()
    assert batch is not None
    metas = {cur: m for cur, m in buf.since(0)}
    for g in range(8):
        rows = [metas[int(c)] for c in batch.cursor[batch.group == g]]
        assert len(rows) == 4 and len({m.group for m in rows}) == 1
        assert len({m.episode for m in rows}) == 4 and "open" not in {m.key[1] for m in rows}


def test_pairs_put_a_success_before_a_failure_of_the_same_start_state(buf):
    _episodes(buf, groups_of=3, per_group=4, success=lambda g, e: g != 2 and e % 2 == 0)
    batch = Sampler(buf, pairs(batch_size=40)).sample()
    assert batch is not None
    metas = {cur: m for cur, m in buf.since(0)}
    won = {m.key[1] for m in metas.values() if m.outcome == "success"}
    for i in range(20):
        a, b = metas[int(batch.cursor[2 * i])], metas[int(batch.cursor[2 * i + 1])]
        assert a.group == b.group != "r0/2" and a.key[1] in won and b.key[1] not in won


def test_mixture_splits_each_batch_by_weight(buf):
    fill(buf, 30, intervened=lambda i: i < 3)
    spec = mixture([(replay(), 0.5), (demonstrations(), 0.5)], batch_size=64)
    batch = Sampler(buf, spec).sample()
    assert batch is not None and len(batch.cursor) == 64
    assert (batch.cursor[32:] < 3).all()


def test_rate_limit_holds_sampling_to_samples_per_insert(buf):
    spec = replay(batch_size=4, rate=SampleRate(min_size=4, samples_per_insert=1.0))
    sampler = Sampler(buf, spec)
    fill(buf, 3)
    assert sampler.sample() is None  # under min_size
    fill(buf, 5, seed=1, episode_id="more")  # 8 inserts: 4 past min_size, room for 4 samples
    assert sampler.sample() is not None
    assert sampler.sample() is None
    fill(buf, 4, seed=2, episode_id="again")
    assert sampler.sample() is not None


def test_rewards_come_from_a_side_column_when_asked(buf):
    chunks = fill(buf, 2, T=8)
    buf.set_rewards(chunks[0].key, "judge", 2, np.arange(8, dtype=np.float32))
    batch = Sampler(buf, replay(batch_size=20, horizon=8, reward=("judge", "2"))).sample()
    assert batch is not None
    np.testing.assert_array_equal(batch.labelled, batch.cursor == 0)
    assert (batch.reward[batch.cursor == 0] == np.arange(8)).all()
    assert not batch.reward[batch.cursor == 1].any()


def test_decoded_cache_stays_within_its_budget(tmp_path):
    with ReplayBuffer(tmp_path, BufferConfig(fsync="never", cache_bytes=40_000)) as b:
        fill(b, 50)
        sampler = Sampler(b, replay(batch_size=64))
        for _ in range(5):
            sampler.sample()
        assert 0 < b.cache.bytes <= 40_000 and b.cache.hits > 0
