"""The learned success classifier separates success frames from failure frames it never saw."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from buffers.records import EpisodeEnd
from rewards.classifier import SuccessClassifier, frame_labels
from tests.chunks import make_chunk


def _episode(rng, won, camera, T=16, eid="e"):
    c = make_chunk(rng, T=T, episode_id=eid, camera=camera,
                   end=EpisodeEnd("success" if won else "failure"))
    s = np.zeros(T, bool)
    state = c.obs["state"].copy()
    obs = dict(c.obs)
    if won:  # success is visible: state[:, 0] high and a bright image on the success frame
        s[-1] = True
        state[-1, 0] = 8.0
        if camera:
            obs["camera"] = obs["camera"].copy()
            obs["camera"][-1] = 255
    obs["state"] = state
    return dataclasses.replace(c, success=s, obs=obs)


def test_frame_labels_follow_human_labels():
    rng = np.random.default_rng(0)
    c = _episode(rng, True, False)
    vetoed = dataclasses.replace(c, episode_end=EpisodeEnd("failure", "human"))
    assert frame_labels(vetoed).sum() == 0
    human = dataclasses.replace(c, success=np.zeros(16, bool),
                                episode_end=EpisodeEnd("success", "human"))
    assert frame_labels(human, tail=3).sum() == 3
    mid = dataclasses.replace(c, success=np.zeros(16, bool), episode_end=None)
    assert np.isnan(frame_labels(mid)).all()


@pytest.mark.slow  # ~1-3 min on the shared 2-core box
def test_classifier_generalises_to_held_out_episodes():
    for camera in (False, True):
        rng = np.random.default_rng(1)
        train = [_episode(rng, i % 2 == 0, camera, eid=f"t{i}") for i in range(60)]
        test = [_episode(rng, i % 2 == 0, camera, eid=f"h{i}") for i in range(10)]
        clf = SuccessClassifier(state_dim=39, camera=camera)
        before = clf.version
        clf.fit(train, steps=200, batch=128)
        assert clf.version != before
        p_success = np.array([clf.score(c)[-1] for c in test[::2]])
        p_other = np.concatenate([clf.score(c)[:-1] for c in test] +
                                 [clf.score(c) for c in test[1::2]])
        assert p_success.min() > 0.5 > np.median(p_other), camera
        assert (p_other > 0.5).mean() < 0.1, camera
