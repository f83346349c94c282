"""Demonstrations from a folder of .npz episodes, cut into chunks that join back."""

import numpy as np

from buffers.codec import encode_chunk
from buffers.episodes import import_npz, iter_episodes
from buffers.sampler import Sampler
from buffers.sampling import demonstrations
from buffers.store import ReplayBuffer


def test_long_episodes_import_as_chunks_that_join_back(tmp_path):
    rng = np.random.default_rng(0)
    T = 150
    obs = rng.standard_normal((T + 1, 9)).astype(np.float32)
    cam = rng.integers(0, 255, (T + 1, 4, 4, 3), dtype=np.uint8)
    action = rng.uniform(-1, 1, (T, 3)).astype(np.float32)
    np.savez(tmp_path / "demo1.npz", **{"obs.state": obs, "obs.camera": cam}, action=action,
             **{"meta.task": np.array("reach-v3"), "meta.outcome": np.array("success")})
    chunks = import_npz(tmp_path)
    assert [c.num_steps for c in chunks] == [64, 64, 22]
    assert [c.episode_end for c in chunks[:2]] == [None, None] and chunks[2].episode_end
    with ReplayBuffer(tmp_path / "buf") as buf:
        assert buf.insert([encode_chunk(c) for c in chunks]).stored == 3
        (ep,) = list(iter_episodes(buf))
        np.testing.assert_array_equal(ep.obs["state"], obs)
        np.testing.assert_array_equal(ep.obs["camera"], cam)
        np.testing.assert_array_equal(ep.action, action)
        assert ep.outcome == "success" and ep.intervened.all()
        batch = Sampler(buf, demonstrations(batch_size=8, horizon=4)).sample()
        assert batch is not None and batch.intervened.all()
