"""`fleet reward-eval` on a small synthetic episode set written through the real ReplayBuffer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from buffers.codec import encode_chunk
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from fleet.cli import main
from fleet.run.reward_eval import episodes_of, evaluate, roc_auc, spearman
from rewards.base import RewardConfig, make_reward
from tests.chunks import make_chunk


def _write_buffer(path, n_success=4, n_fail=4, T=8, chunks=3, alternate=False):
    rng = np.random.default_rng(0)
    records = []
    for i in range(n_success + n_fail):
        won = i % 2 == 0 if alternate else i < n_success
        for k in range(chunks):
            last = k == chunks - 1
            end = EpisodeEnd("success" if won else "failure") if last else None
            c = make_chunk(rng, T=T, episode_id=f"e{i}", chunk_seq=k, end=end)
            s = np.zeros(T, bool)
            if won and last:
                s[-1] = True
            # state[:, 0] rises with time on every episode: a progress signal
            state = c.obs["state"].copy()
            state[:, 0] = k * T + np.arange(T + 1)
            records.append(encode_chunk(dataclasses.replace(c, success=s, obs={"state": state})))
    with ReplayBuffer(path) as buf:
        buf.insert(records)


def test_rank_metrics_known_answers():
    y = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), y) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), y) == 0.0
    assert roc_auc(np.zeros(4), y) == 0.5
    assert spearman(np.array([1, 2, 3.0]), np.array([10, 20, 30.0])) == 1.0


def test_sparse_success_detects_every_success_and_env_noise_does_not(tmp_path):
    _write_buffer(tmp_path / "buf")
    eps = episodes_of(tmp_path / "buf")
    assert len(eps) == 8
    good = evaluate(make_reward(RewardConfig("sparse_success")), eps)
    assert good["roc_auc"] == 1.0 and good["false_success_rate"] == 0.0
    assert good["episodes"] == 8 and good["successes"] == 4 and good["faults"] == 0
    noise = evaluate(make_reward(RewardConfig("env", {"scale": 1.0, "success_bonus": 0.0})), eps)
    assert noise["roc_auc"] < 0.9  # random per-step env rewards in these chunks carry no label
    progress = evaluate(_Progress(), eps)
    assert progress["spearman_progress"] > 0.999 and progress["roc_auc"] == 0.5
    assert good["spearman_progress"] < 0.9  # one step of reward says little about progress


class _Progress:
    """Rewards the rise of state[:, 0] (time here): perfect progress, no success signal."""

    name, version = "progress", "1"

    def score(self, chunk):
        return np.diff(chunk.obs["state"][:, 0])


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    _write_buffer(tmp_path / "buf")
    out = tmp_path / "eval.json"
    assert main(["reward-eval", "reward=sparse_success", f"buffer={tmp_path / 'buf'}",
                 f"out={out}"]) == 0
    report = json.loads(out.read_text())
    assert report["roc_auc"] == 1.0 and report["latency_ms_per_chunk"] > 0
    assert "roc_auc" in capsys.readouterr().out


def test_threshold_is_chosen_on_calibration_episodes_and_measured_on_the_others():
    from fleet.run.reward_eval import calibrate, choose_threshold

    y = np.array([False, False, True, True])
    assert choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), y) == 0.5
    assert np.isnan(choose_threshold(np.array([0.1, 0.2]), np.array([False, False])))
    # calibration episodes (even) separate at 0.5; the test episodes (odd) hold a failure at
    # 0.7, which the chosen threshold calls a success: measured, not hidden
    s = np.array([0.1, 0.7, 0.9, 0.95, 0.2, 0.3, 0.8, 0.6])
    y = np.array([False, False, True, True, False, False, True, True])
    got = calibrate(s, y)
    assert got["threshold_chosen"] == 0.5 and got["calibration_episodes"] == 4
    assert got["false_success_rate_chosen"] == 0.5 and got["miss_rate_chosen"] == 0.0


def test_several_models_are_scored_on_the_same_held_out_episodes(tmp_path):
    _write_buffer(tmp_path / "buf", alternate=True)
    out = tmp_path / "eval.json"
    assert main(["reward-eval", "reward=sparse_success,classifier", "key=state", "fit_steps=20",
                 "rounds=1", f"buffer={tmp_path / 'buf'}", f"out={out}"]) == 0
    doc = json.loads(out.read_text())
    sparse, clf = doc["models"]
    assert (sparse["reward"], clf["reward"]) == ("sparse_success", "classifier")
    assert clf["fit_episodes"] == 4 and sparse["fit_episodes"] == 0
    assert sparse["episodes"] == clf["episodes"] == doc["held_out_episodes"] == 4
    assert sparse["successes"] == 2 and sparse["roc_auc"] == 1.0
    assert sparse["threshold_chosen"] == 0.5 and sparse["false_success_rate_chosen"] == 0.0
    assert 0.0 <= clf["roc_auc"] <= 1.0
