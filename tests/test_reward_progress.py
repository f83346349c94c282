"""The VLAC-style progress reward: the real MiniLM text encoder, shapes, and progress that
tracks time-to-success on a synthetic camera task (and a state-only one)."""

import dataclasses

import numpy as np
import pytest

from fleet.run.reward_eval import evaluate
from rewards.base import RewardConfig, make_reward
from rewards.progress import TextEncoder
from tests.toy_reach import reach_episodes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Sink:
    """Where the reward trainer publishes: keeps the last version."""

    def publish(self, version, state):
        self.version = version


def recording(config):
    """A `ProgressReward` that keeps the episode ids of its last fit (`seen`) and the `steps`
    of every fit."""
    from rewards.progress import ProgressReward

    class Recording(ProgressReward):
        def fit(self, episodes, steps=None):
            self.seen = [ep[0].episode_id for ep in episodes]
            self.steps = [*getattr(self, "steps", []), steps]
            return super().fit(episodes, steps)

    return Recording(config)


def test_text_encoder_is_the_pretrained_minilm_and_caches():
    enc = TextEncoder()
    e = enc(["push the puck to the goal", "move the puck to the target", "open the drawer"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]  # pretrained: paraphrases are closer than other tasks
    assert enc(["open the drawer"])[0] is not None and len(enc._cache) == 3


@pytest.mark.parametrize("key", ["pixels", "state"])
def test_progress_tracks_time_to_success(key):
    model = make_reward(RewardConfig("progress", {"key": key, "max_k": 20, "batch": 64}))
    held_out = reach_episodes(1, 12, camera=True)
    chunk = held_out[0][0]
    assert not model.ready and not model.score(chunk).any()
    first = model.fit(reach_episodes(0, 30, camera=True), steps=5)
    last = model.fit(reach_episodes(0, 30, camera=True), steps=150)
    assert model.ready and model.version == "2" and last["loss"] < first["loss"]
    r = model.score(chunk)
    assert r.shape == (len(chunk.action),) and r.dtype == np.float32
    assert model.done(chunk).shape == r.shape
    report = evaluate(model, held_out)
    assert report["faults"] == 0 and report["spearman_progress"] > 0.5, report
    assert report["roc_auc"] > 0.5, report


def test_weights_round_trip_and_language_negatives():
    eps = reach_episodes(0, 10, camera=True)
    other = [[dataclasses.replace(c, instruction="open the drawer", episode_id=c.episode_id + "x")
              for c in ep] for ep in eps]
    a = make_reward(RewardConfig("progress", {"max_k": 10, "batch": 32}), guard=False)
    a.fit(eps + other, steps=10)
    b = make_reward(RewardConfig("progress", {"max_k": 10, "batch": 32}), guard=False)
    b.load_weights(5, a.weights())
    chunk = eps[0][0]
    np.testing.assert_allclose(a.score(chunk), b.score(chunk), rtol=1e-4, atol=1e-6)
    assert b.version == "5"


@pytest.mark.parametrize("reward", ["progress", "world_model"])
def test_reward_eval_fits_a_learned_reward_then_scores_held_out_episodes(reward, tmp_path):
    import json

    from buffers.codec import encode_chunk
    from buffers.store import ReplayBuffer
    from fleet.run.reward_eval import main

    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(c) for ep in reach_episodes(0, 24, camera=True) for c in ep])
    out = tmp_path / "eval.json"
    assert main([f"reward={reward}", f"buffer={tmp_path / 'buf'}", f"out={out}",
                 "fit_steps=60", "rounds=3", "reward.params.batch=64"]) == 0
    report = json.loads(out.read_text())
    assert report["fit_episodes"] == 12 and report["episodes"] == 12
    assert report["version"] == "3" and report["spearman_progress"] > 0.5, report
    assert report["roc_auc"] > 0.8, report


def test_trainer_keeps_the_demos_when_fleet_episodes_push_old_ones_out(tmp_path):
    """The pool keeps the newest `keep_episodes`; the demos (the only successes a weak base's
    fleet may have) are fitted on every time, however many fleet episodes came since."""
    from buffers.codec import encode_chunk
    from buffers.store import ReplayBuffer
    from rewards.progress import ProgressConfig
    from rewards.trainer import RewardTrainer

    model = recording(ProgressConfig(key="state", keep_episodes=4, min_episodes=4,
                                     fit_steps=2, batch=16))
    demos = [c for ep in reach_episodes(5, 2) for c in ep]
    fleet = [[dataclasses.replace(c, success=np.zeros_like(c.success)) for c in ep]
             for ep in reach_episodes(6, 10)]
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(c) for ep in fleet for c in ep])
        trainer = RewardTrainer(model, buf, _Sink(), demos)
        assert trainer.step()
    demo_ids = {c.episode_id for c in demos}
    assert trainer.demos == 2 and demo_ids <= set(model.seen) and len(model.seen) == 6


def test_potential_reward_telescopes_over_an_episode_however_it_is_chunked():
    """The potential head's return is scale * (phi(last) - phi(first)) whatever the path and
    the chunking, so it cannot be farmed by going back and forth; the pair head's, anchored
    at each chunk's first frame, depends on where the chunks are cut."""
    from rewards.episodes import observations

    ep = reach_episodes(3, 2)[1]  # a failure: 40 steps, 4 chunks
    assert len(ep) == 4
    whole = dataclasses.replace(ep[0], obs={"state": observations(ep, "state")},
                                action=np.concatenate([c.action for c in ep]))
    sums = {}
    for head in ("potential", "pair"):
        model = make_reward(RewardConfig("progress", {"key": "state", "head": head,
                                                      "batch": 16}), guard=False)
        model.fit(reach_episodes(0, 6), steps=3)
        chunked = sum(float(model.score(c).sum()) for c in ep)
        sums[head] = (chunked, float(model.score(whole).sum()))
    chunked, whole_sum = sums["potential"]
    assert chunked == pytest.approx(whole_sum, abs=1e-4), sums
    assert abs(sums["pair"][0] - sums["pair"][1]) > 1e-3, sums


@pytest.mark.parametrize("failed_delta", [True, False])
def test_failed_episodes_pairs_are_told_no_progress(failed_delta):
    """Pairs inside a failed episode: delta target 0 with `failed_delta`, no delta target
    without; outcome 0 on their frames, 1 on a success's; progress known on successes only."""
    from rewards.progress import ProgressConfig, ProgressReward, _frames

    f = _frames(reach_episodes(0, 6), "state")
    pr = ProgressReward(ProgressConfig(key="state", failed_delta=failed_delta))
    b = pr._pairs(f, np.random.default_rng(0), 2000)
    failed = np.isnan(f.progress[b["i"]])
    assert failed.any() and (~failed).any()
    assert (b["known"][failed] == float(failed_delta)).all() and (b["delta"][failed] == 0).all()
    assert (b["outcome"][failed] == 0).all() and (b["outcome"][~failed] == 1).all()
    assert (b["p_known"] == ~failed).all() and (b["known"][~failed] == 1).all()
    assert (b["delta"][~failed] < 0).any() and (b["delta"][~failed] > 0).any()  # reversed pairs


def test_fitted_potential_returns_more_on_successes_than_failures():
    held_out = reach_episodes(1, 12)
    model = make_reward(RewardConfig("progress", {"key": "state", "batch": 64}), guard=False)
    model.fit(reach_episodes(0, 30), steps=150)
    report = evaluate(model, held_out)
    assert report["return_auc"] > 0.9 and report["return_failed"] < 0.5 * report[
        "return_success"], report


def test_trainer_first_fit_runs_first_fit_steps(tmp_path):
    """The first version the learner sees is fitted `first_fit_steps` on the base's episodes;
    later fits run `fit_steps`."""
    from buffers.codec import encode_chunk
    from buffers.store import ReplayBuffer
    from rewards.progress import ProgressConfig
    from rewards.trainer import RewardTrainer

    model = recording(ProgressConfig(key="state", min_episodes=4, fit_steps=2,
                                     first_fit_steps=7, batch=16))
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(c) for ep in reach_episodes(6, 4) for c in ep])
        trainer = RewardTrainer(model, buf, _Sink())
        assert trainer.step() and trainer.step()
    assert model.steps == [7, None] and model.version == "2"


def _saved(tmp_path, **params):
    """A progress reward fitted a few steps on toy state episodes and saved; (model, path)."""
    model = make_reward(RewardConfig("progress", {"key": "state", "batch": 16, **params}),
                        guard=False)
    model.fit(reach_episodes(0, 6), steps=3)
    path = tmp_path / "progress.npz"
    model.save(str(path))
    return model, path


def test_saved_weights_start_a_model_ready_with_identical_scores(tmp_path):
    saved, path = _saved(tmp_path)
    started = make_reward(RewardConfig("progress", {"key": "state", "init": str(path)}))
    assert started.ready and started.version == "0"  # the learner does not wait for a fit
    for chunk in reach_episodes(1, 2)[1]:
        np.testing.assert_array_equal(started.score(chunk), saved.score(chunk))
        np.testing.assert_array_equal(started.done(chunk), saved.done(chunk))


def test_a_file_that_is_not_this_models_is_refused_clearly(tmp_path):
    _, path = _saved(tmp_path, feature=16)

    def build(init, **params):
        return make_reward(RewardConfig("progress", {"key": "state", "init": str(init),
                                                     **params}))

    with pytest.raises(ValueError, match="saved with feature=16, this config has feature=64"):
        build(path)
    with pytest.raises(ValueError, match="saved with key='state', this config has key='pixels'"):
        build(path, key="pixels", feature=16)
    with pytest.raises(ValueError, match="not a file `save` wrote"):
        build(tmp_path / "missing.npz", feature=16)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a file `save` wrote"):
        build(tmp_path / "junk.npz", feature=16)
    with np.load(path) as f:  # the right fields, a weight of the wrong shape
        state = {k: f[k] for k in f.files}
    state["obs.norm.weight"] = np.ones(3, np.float32)
    np.savez(tmp_path / "bent.npz", **state)
    with pytest.raises(ValueError, match="do not fit this architecture"):
        build(tmp_path / "bent.npz", feature=16)
    model = build(path, feature=16)  # right file, frames of another shape
    chunk = reach_episodes(1, 1)[0][0]
    wide = dataclasses.replace(chunk, obs={"state": np.zeros((len(chunk.action) + 1, 99))})
    with pytest.raises(ValueError, match=r"frames are \(99,\), the model was built for"):
        model.predict(wide)


def test_a_trainer_started_from_init_continues_from_it(tmp_path):
    """A trainer whose model starts from a saved file fits it further (an ordinary fit, not
    `first_fit_steps`) and publishes version 1, near the file's weights, not a fresh net's."""
    from buffers.codec import encode_chunk
    from buffers.store import ReplayBuffer
    from rewards.progress import ProgressConfig
    from rewards.trainer import RewardTrainer

    _, path = _saved(tmp_path)
    with np.load(path) as f:
        start = {k: f[k] for k in f.files if not k.startswith("_")}
    model = recording(ProgressConfig(key="state", init=str(path), min_episodes=4, fit_steps=2,
                                     first_fit_steps=50, batch=16, seed=1))
    fresh = recording(ProgressConfig(key="state", min_episodes=4, fit_steps=2, batch=16, seed=1))
    sink = _Sink()
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(c) for ep in reach_episodes(6, 4) for c in ep])
        trainer = RewardTrainer(model, buf, sink)
        assert trainer.step()
        assert RewardTrainer(fresh, buf, _Sink()).step()
    assert model.steps == [None] and sink.version == 1 and model.version == "1"

    def distance(state):
        return sum(float(np.abs(state[k] - start[k]).sum()) for k in start)

    assert 0 < distance(model.weights()) < 0.1 * distance(fresh.weights())


def test_reward_eval_fits_on_the_demos_too_and_saves_the_fit(tmp_path):
    import json

    from buffers.codec import encode_chunk
    from buffers.demos import write_demos
    from buffers.store import ReplayBuffer
    from fleet.run.reward_eval import main

    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(c) for ep in reach_episodes(0, 8) for c in ep])
    demos = [dataclasses.replace(c, episode_id=f"demo-{c.episode_id}")
             for ep in reach_episodes(2, 6)[::2] for c in ep]  # the successes
    write_demos(tmp_path / "demos", demos)
    out, saved = tmp_path / "eval.json", tmp_path / "fit"  # no .npz: written as named
    assert main(["reward=progress", f"buffer={tmp_path / 'buf'}", f"out={out}",
                 f"demos={tmp_path / 'demos'}", f"save={saved}", "fit_steps=3", "rounds=2",
                 "reward.params.key=state", "reward.params.batch=16"]) == 0
    report = json.loads(out.read_text())
    assert report["fit_episodes"] == 4 and report["fit_demos"] == 3 and report["episodes"] == 4
    model = make_reward(RewardConfig("progress", {"key": "state", "init": str(saved)}))
    assert model.ready and json.loads(out.read_text())["version"] == "2"
