"""`fleet buffer import` (`fleet data import`): .npz episodes and a LeRobotDataset directory
(v3 layout, built here with pyarrow) into a buffer as demonstrations; bad input exits 2 naming
the file and key, and writes nothing."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest

from buffers.episodes import iter_episodes
from buffers.store import ReplayBuffer
from fleet.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _said(text, out):
    """`text` in the CLI's output, whatever lines rich wrapped it into."""
    return "".join(text.split()) in "".join(out.split())


def _npz(path, T=10, D=3, A=2, **changes):
    rng = np.random.default_rng(len(str(path)))
    arrays = {"obs.state": rng.standard_normal((T + 1, D)).astype(np.float32),
              "action": rng.uniform(-1, 1, (T, A)).astype(np.float32),
              "meta.task": np.array("reach"), "meta.outcome": np.array("success")}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_episodes_import_through_the_cli(tmp_path, capsys):
    (tmp_path / "eps").mkdir()
    a = _npz(tmp_path / "eps" / "a.npz", T=10)
    _npz(tmp_path / "eps" / "b.npz", T=70)
    assert main(["buffer", "import", str(tmp_path / "eps"), "--out", str(tmp_path / "buf"),
                 "--horizon", "2"]) == 0
    assert _said("imported 2 episodes (80 steps", capsys.readouterr().out)
    with ReplayBuffer(tmp_path / "buf") as buf:
        episodes = list(iter_episodes(buf))
    assert sorted(len(e.action) for e in episodes) == [10, 70]
    first = next(e for e in episodes if len(e.action) == 10)
    np.testing.assert_array_equal(first.obs["state"], a["obs.state"])
    assert first.outcome == "success" and first.intervened.all() and first.task == "reach"


@pytest.mark.parametrize("changes, says", [
    ({"obs.state": np.zeros((4, 3), np.float32)}, r"'obs.state' has 4 rows, 'action' 10"),
    ({"action": None}, "needs 'action'"),
    ({"reward": np.zeros(3, np.float32)}, r"'reward' has shape \[3\]"),
])
def test_a_bad_npz_episode_exits_2_naming_file_and_key_and_writes_nothing(
        tmp_path, capsys, changes, says):
    import re

    (tmp_path / "eps").mkdir()
    _npz(tmp_path / "eps" / "good.npz")
    _npz(tmp_path / "eps" / "zbad.npz", **changes)
    assert main(["buffer", "import", str(tmp_path / "eps"), "--out", str(tmp_path / "b")]) == 2
    out = "".join(capsys.readouterr().out.split())
    assert "zbad.npz" in out and re.search(says.replace(" ", ""), out), out
    assert not (tmp_path / "b").exists()


def _lerobot(root, features=None, state_dim=3, version="v3.0"):
    """A LeRobotDataset v3.0 directory: meta/info.json, meta/tasks.parquet, one data file
    holding two episodes (5 and 7 frames) with an `image` camera, rewards and success; or the
    v2.1 layout: one data file per episode, meta/tasks.jsonl."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    rng = np.random.default_rng(0)
    rows: dict[str, list] = {k: [] for k in (
        "observation.state", "observation.images.top", "action", "next.reward", "next.success",
        "timestamp", "frame_index", "episode_index", "index", "task_index")}
    frames = []
    for ep, n in ((0, 5), (1, 7)):
        for t in range(n):
            image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            frames.append(image)
            rows["observation.state"].append(rng.standard_normal(state_dim).tolist())
            rows["observation.images.top"].append({"bytes": png.getvalue(), "path": None})
            rows["action"].append(rng.uniform(-1, 1, 2).tolist())
            rows["next.reward"].append(float(t))
            rows["next.success"].append(ep == 1 and t == n - 1)
            rows["timestamp"].append(t / 10)
            rows["frame_index"].append(t)
            rows["episode_index"].append(ep)
            rows["index"].append(len(rows["index"]))
            rows["task_index"].append(ep)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta").mkdir()
    table = pa.table({k: v for k, v in rows.items()})
    if version == "v3.0":
        pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
        pq.write_table(pa.table({"task_index": [0, 1], "task": ["push the T", "reach it"]}),
                       root / "meta" / "tasks.parquet")
    else:
        for ep, (a, b) in enumerate(((0, 5), (5, 12))):
            pq.write_table(table.slice(a, b - a),
                           root / "data" / "chunk-000" / f"episode_{ep:06d}.parquet")
        (root / "meta" / "tasks.jsonl").write_text(
            '{"task_index": 0, "task": "push the T"}\n{"task_index": 1, "task": "reach it"}\n')
    features = features or {
        "observation.state": {"dtype": "float32", "shape": [3], "names": None},
        "observation.images.top": {"dtype": "image", "shape": [8, 8, 3],
                                   "names": ["height", "width", "channels"]},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None}}
    info = {"codebase_version": version, "robot_type": "so100", "fps": 10, "total_episodes": 2,
            "total_frames": 12, "data_path": "data/chunk-{chunk_index:03d}/file-"
            "{file_index:03d}.parquet", "features": features}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return rows, frames


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_a_lerobot_dataset_imports_as_demonstrations(tmp_path, capsys, version):
    rows, frames = _lerobot(tmp_path / "ds", version=version)
    assert main(["buffer", "import", str(tmp_path / "ds"), "--out", str(tmp_path / "buf"),
                 "--horizon", "2"]) == 0
    out = capsys.readouterr().out
    assert _said("imported 2 episodes (10 steps", out)  # mp4 cameras: tests/test_lerobot_v3.py
    with ReplayBuffer(tmp_path / "buf") as buf:
        episodes = sorted(iter_episodes(buf), key=lambda e: e.episode_id)
    first, second = episodes
    assert (first.episode_id, len(first.action), first.outcome) == ("episode_000000", 4,
                                                                     "truncated")
    assert (len(second.action), second.outcome, second.task) == (6, "success", "reach it")
    np.testing.assert_allclose(first.obs["state"], np.array(rows["observation.state"][:5]),
                               rtol=1e-6)
    np.testing.assert_allclose(second.action, np.array(rows["action"][5:11]), rtol=1e-6)
    np.testing.assert_array_equal(second.obs["top"], np.stack(frames[5:12]))
    np.testing.assert_array_equal(second.reward, np.arange(6, dtype=np.float32))
    assert first.robot_id == "so100" and first.intervened.all()


def test_a_lerobot_dataset_missing_a_feature_or_of_another_shape_exits_2(tmp_path, capsys):
    _lerobot(tmp_path / "a", features={
        "observation.state": {"dtype": "float32", "shape": [3]}})
    assert main(["buffer", "import", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert _said("info.json: has no 'action' feature", out)
    _lerobot(tmp_path / "c", features={
        "observation.state": {"dtype": "float32", "shape": [4]},
        "action": {"dtype": "float32", "shape": [2]}})
    assert main(["buffer", "import", str(tmp_path / "c"), "--out", str(tmp_path / "b")]) == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert _said("'observation.state': rows of shape [3], meta/info.json declares [4]", out)
    assert not (tmp_path / "b").exists()


GOAL = "tests.gym_envs:fleet-tests/Goal-v0"


def _goal_demos(folder, episodes=12):
    """Expert episodes of the Goal env (move toward the goal), as .npz files."""
    from actors.robots.gym import GymConfig

    robot = GymConfig(GOAL, termination="success").make("expert")
    folder.mkdir()
    for i in range(episodes):
        obs = robot.reset(seed=i)
        states, actions = [obs["state"]], []
        for _ in range(20):
            goal, x = obs["state"]
            actions.append(np.array([np.clip(4.0 * (goal - x), -1, 1)], np.float32))
            fb = robot.send_action(actions[-1])
            obs = robot.get_observation()
            states.append(obs["state"])
            if fb.done:
                break
        np.savez(folder / f"ep{i}.npz", **{"obs.state": np.array(states), "action":
                 np.array(actions), "meta.outcome": np.array(fb.outcome)})
    robot.close()


def test_fleet_pretrain_behaviour_clones_the_base_from_imported_demos(tmp_path, capsys):
    _goal_demos(tmp_path / "eps")
    assert main(["buffer", "import", str(tmp_path / "eps"), "--out", str(tmp_path / "buf")]) == 0
    args = ["pretrain", "robot=gym", f"robot.task={GOAL}", "robot.termination=success",
            "policy.horizon=2", "policy.hidden=32", "pretrain.bc.steps=400", "eval.episodes=10",
            f"pretrain.cache_dir={tmp_path}/cache"]
    assert main([*args, f"pretrain.data={tmp_path}/buf"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert _said("behaviour-cloned the base on 12 episodes", out)
    success = float(out.split("demos): ")[1].split("%")[0])
    assert success >= 80, out  # the expert's skill, from its demos alone
    assert main([*args, f"pretrain.data={tmp_path}/eps"]) == 0  # the .npz folder itself
    if importlib.util.find_spec("pyarrow") and importlib.util.find_spec("av"):
        # the same demos as a LeRobot v3 dataset, exported by Fleet
        assert main(["data", "export", f"{tmp_path}/buf", f"{tmp_path}/lerobot"]) == 0
        capsys.readouterr()
        assert main([*args, f"pretrain.data={tmp_path}/lerobot"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert _said("behaviour-cloned the base on 12 episodes", out)
        assert float(out.split("demos): ")[1].split("%")[0]) >= 80, out
    assert main(["pretrain", "robot=stub", f"pretrain.data={tmp_path}/buf",
                 f"pretrain.cache_dir={tmp_path}/cache"]) == 2
    assert _said("buf: episode ep0 has state of size 2, robot.kind=stub reach-point has 16",
                 capsys.readouterr().out)
