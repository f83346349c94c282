"""Sparse success with human labels, composition, and the guard that `make_reward` applies."""

from __future__ import annotations

import dataclasses

import numpy as np

from buffers.records import EpisodeEnd
from rewards.base import RewardConfig, make_reward
from rewards.guard import Guarded
from tests.chunks import make_chunk


def _chunk(success_at=None, end=None, T=8):
    c = make_chunk(np.random.default_rng(0), T=T, end=end)
    s = np.zeros(T, bool)
    if success_at is not None:
        s[success_at] = True
    return dataclasses.replace(c, success=s)


def test_sparse_success_pays_on_the_env_success_step():
    r = make_reward(RewardConfig("sparse_success", {"bonus": 2.0})).score(_chunk(3))
    np.testing.assert_array_equal(r, [0, 0, 0, 2, 0, 0, 0, 0])


def test_human_label_overrides_the_env_flag_both_ways():
    m = make_reward(RewardConfig("sparse_success"))
    failed = _chunk(3, EpisodeEnd("failure", source="human"))
    assert m.score(failed).sum() == 0.0  # the human said failure despite the env's flag
    won = _chunk(None, EpisodeEnd("success", source="human"))
    np.testing.assert_array_equal(m.score(won), [0] * 7 + [1])
    env_fail = _chunk(3, EpisodeEnd("failure", source="env"))
    assert m.score(env_fail)[3] == 1.0  # an env outcome is no human label


def test_weighted_sum_from_config():
    c = _chunk(2)
    r = make_reward(RewardConfig("sum", {"terms": [
        {"name": "sparse_success", "weight": 2.0},
        {"name": "env", "weight": 0.5, "params": {"scale": 1.0, "success_bonus": 0.0}}]})).score(c)
    expect = 0.5 * c.reward
    expect[2] += 2.0
    np.testing.assert_allclose(r, expect, rtol=1e-6)


def test_potential_shaping_telescopes_over_an_episode():
    """Σ γ^t F_t = γ^T Φ(s_T) − Φ(s_0) with γ = 1 and a terminal Φ = 0: −Φ(s_0)."""
    c = _chunk(None, EpisodeEnd("failure"))
    m = make_reward(RewardConfig("shaped", {"base": {"name": "sparse_success"},
                                            "index": 1, "scale": 3.0, "gamma": 1.0}))
    r = m.score(c)
    assert r.shape == (8,)
    np.testing.assert_allclose(r.sum(), -3.0 * c.obs["state"][0, 1], rtol=1e-5)


class _Bad:
    name, version = "bad", "1"

    def __init__(self, mode):
        self.mode = mode

    def score(self, chunk):
        T = len(chunk.action)
        if self.mode == "raise":
            raise RuntimeError("model exploded")
        if self.mode == "nan":
            return np.full(T, np.nan)
        if self.mode == "shape":
            return np.zeros(T + 1)
        return np.ones(T)


def test_guard_contains_raise_nan_and_wrong_shape_and_recovers():
    for mode in ("raise", "nan", "shape"):
        g = Guarded(_Bad(mode))
        c = _chunk(None)
        r = g.score(c)
        np.testing.assert_array_equal(r, np.zeros(8))
        assert g.n_faults == 1 and g.failed(c), mode
        g.model.mode = "ok"
        np.testing.assert_array_equal(g.score(c), np.ones(8))
        assert not g.failed(c)


def test_make_reward_guards_by_default():
    m = make_reward(RewardConfig("env"))
    assert isinstance(m, Guarded) and m.name == "env"
    assert not isinstance(make_reward(RewardConfig("env"), guard=False), Guarded)


def test_guarded_model_pickles_with_its_params():
    import pickle

    g = pickle.loads(pickle.dumps(make_reward(RewardConfig("env", {"scale": 0.5}))))
    assert isinstance(g, Guarded) and g.scale == 0.5 and g.n_faults == 0


class _Records:
    """A `ChunkSource` over encoded chunks in a list."""

    def __init__(self, records):
        self.records = records

    def read(self, cursor, limit, min_policy_version=0):
        got = self.records[cursor:cursor + limit]
        return got, cursor + len(got)


class _Fits:
    """A model with fit/weights/load_weights that records what it was fitted on."""

    name, version = "fits", "0"

    def __init__(self):
        self.config = type("C", (), {"min_episodes": 2, "keep_episodes": 8, "fit_every_s": 0.0})
        self.calls = []

    def score(self, chunk):
        return np.zeros(len(chunk.action), np.float32)

    def fit_online(self, fleet, demos, first):
        self.calls.append(([ep[0].episode_id for ep in fleet],
                           [ep[0].episode_id for ep in demos], first))
        return {"loss": 0.0}

    def weights(self):
        return {"w": np.full(1, len(self.calls), np.float32)}

    def load_weights(self, version, state):
        self.version = str(version)


def test_a_plugin_learns_online_by_declaring_the_fit_contract():
    """The trainer fits a model that declares `LearnsOnline` through its one `fit_online`
    (fleet episodes, demos apart, `first` on the first fit only); the same methods without the
    declaration are refused, not probed for."""
    import pytest

    from buffers.codec import encode_chunk
    from rewards.trainer import LearnsOnline, RewardTrainer
    from tests.toy_reach import reach_episodes

    class Declared(_Fits, LearnsOnline):
        pass

    class Sink:
        def publish(self, version, state):
            self.got = (version, float(state["w"][0]))

    fleet, demos = reach_episodes(1, 2), reach_episodes(2, 1)
    model, sink = Declared(), Sink()
    trainer = RewardTrainer(model, _Records([encode_chunk(c) for ep in fleet for c in ep]), sink,
                            [c for ep in demos for c in ep])
    assert trainer.step() and trainer.step()
    ids = [ep[0].episode_id for ep in fleet]
    assert model.calls == [(ids, ["e2-0"], True), (ids, ["e2-0"], False)]
    assert sink.got == (2, 2.0) and trainer.stats()["episodes"] == 3
    with pytest.raises(ValueError, match="LearnsOnline"):
        RewardTrainer(_Fits(), _Records([]), sink)  # type: ignore[arg-type]
