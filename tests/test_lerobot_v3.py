"""`fleet data export RUN --format lerobot` and `fleet data import`: a real PushT run's buffer
(96x96 camera, a real image policy, real files) out as a LeRobotDataset v3.0 directory and back;
the directory checked against the layout LeRobot's loader reads; bad input exits 2 naming the
key or file and leaves nothing half-written."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from buffers.episodes import iter_episodes
from buffers.store import ReplayBuffer
from fleet.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAM = "observation.images.pixels"


def _said(text, out):
    return "".join(text.split()) in "".join(out.split())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """runs/pusht/buffer: two PushT episodes (14 steps, chunks of 8 + 6) from pixels by the
    image policy; version 1 is published after the first, so the second's second chunk has it
    (weights change between chunks); the first chunk is labelled by a reward model."""
    from actors.robots.pusht import PushTConfig, PushTRobot
    from actors.worker import RobotWorker, WorkerConfig
    from algorithms.policy import ChunkPolicy, PolicyConfig
    from tests.fakes import ListOutbox, ListWeights

    root = tmp_path_factory.mktemp("lerobot") / "runs" / "pusht"
    policy = ChunkPolicy(PolicyConfig(obs_dim=2, action_dim=2, horizon=4, hidden=16,
                                      image_key="pixels"))
    outbox, weights = ListOutbox(), ListWeights()
    worker = RobotWorker(PushTRobot(PushTConfig("pusht", max_episode_steps=14)), policy, outbox,
                         weights, WorkerConfig(4, 2, seed=1))
    worker.run_episode(seed=3)
    weights.publish(1, policy.policy_state())
    worker.run_episode(seed=4)
    with ReplayBuffer(root / "buffer") as buf:
        buf.insert(outbox.records)
        first = buf.records()[0]
        buf.set_rewards(first.key, "progress", 2, np.linspace(0, 1, first.num_steps))
        episodes = list(iter_episodes(buf))
    return root, episodes


def _export(run, tmp_path, *extra):
    out = tmp_path / "ds"
    assert main(["data", "export", str(run[0]), str(out), "--format", "lerobot", *extra]) == 0
    return out


def test_a_run_exported_as_lerobot_imports_back_with_the_same_steps(run, tmp_path, capsys):
    out = _export(run, tmp_path)
    assert _said("wrote 2 episodes (30 frames, 1 camera videos)", capsys.readouterr().out)
    assert main(["data", "import", str(out), "--out", str(tmp_path / "buf")]) == 0
    said = capsys.readouterr().out
    assert _said("imported 2 episodes (28 steps", said)
    assert _said("not imported (no Fleet column): next.done, complementary_info.policy_version",
                 said)
    with ReplayBuffer(tmp_path / "buf") as buf:
        back = list(iter_episodes(buf))
    for a, b in zip(run[1], back, strict=True):
        assert (b.robot_id, b.episode_id, b.task, b.outcome) == (
            a.robot_id, a.episode_id, a.task, a.outcome)
        np.testing.assert_array_equal(b.action, a.action)
        np.testing.assert_array_equal(b.obs["state"], a.obs["state"])
        np.testing.assert_array_equal(b.reward, a.reward)
        np.testing.assert_array_equal(b.success, a.success)
        assert b.obs["pixels"].shape == a.obs["pixels"].shape and b.intervened.all()
        diff = np.abs(b.obs["pixels"].astype(int) - a.obs["pixels"])
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16, (diff.mean(), diff.max())
    # the old name still imports; --format npz writes one file per episode
    assert main(["buffer", "import", str(out), "--out", str(tmp_path / "old")]) == 0
    assert main(["data", "export", str(run[0]), str(tmp_path / "npz"), "--format", "npz"]) == 0
    assert len(list((tmp_path / "npz").glob("*.npz"))) == 2


def test_the_export_has_the_published_v3_layout_and_fleet_columns(run, tmp_path):
    out = _export(run, tmp_path, "--fps", "10")
    info = json.loads((out / "meta" / "info.json").read_text())
    # DatasetInfo's fields (lerobot.datasets.utils), and nothing left at a default it rejects
    for key in ("codebase_version", "fps", "features", "total_episodes", "total_frames",
                "total_tasks", "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb",
                "data_path", "video_path", "robot_type", "splits"):
        assert key in info, key
    assert (info["codebase_version"], info["fps"], info["total_episodes"], info["total_frames"],
            info["total_tasks"], info["splits"]) == ("v3.0", 10, 2, 30, 1, {"train": "0:2"})
    feats = info["features"]
    assert feats[CAM]["dtype"] == "video" and feats[CAM]["shape"] == [96, 96, 3]
    assert feats[CAM]["names"] == ["height", "width", "channels"]
    assert feats[CAM]["info"]["video.codec"] == "h264" and feats[CAM]["info"]["video.fps"] == 10
    assert {k: feats[k]["shape"] for k in ("observation.state", "action", "next.reward",
                                           "complementary_info.policy_version")} == {
        "observation.state": [2], "action": [2], "next.reward": [1],
        "complementary_info.policy_version": [1]}
    for f in feats.values():
        assert {"dtype", "shape", "names"} <= set(f)
    # data: every non-video feature is a column, typed as LeRobot's hf features cast them
    data = out / info["data_path"].format(chunk_index=0, file_index=0)
    table = pq.read_table(data)
    assert set(table.column_names) == {k for k, f in feats.items() if f["dtype"] != "video"}
    assert pa.types.is_fixed_size_list(table.schema.field("observation.state").type)
    assert table.schema.field("next.reward").type == pa.float32()
    assert table.schema.field("episode_index").type == pa.int64()
    rows = table.to_pydict()
    assert rows["index"] == list(range(30)) and rows["frame_index"][:16] == [*range(15), 0]
    assert rows["complementary_info.policy_version"] == [0] * 23 + [1] * 7  # per chunk
    assert rows["next.done"].count(True) == 2
    label = np.array(rows["complementary_info.reward.progress@2"], np.float32)
    assert label[0] == 0 and label[7] == 1 and np.isnan(label[8:14]).all()
    # tasks: pandas reads a frame indexed by the task string (LeRobot's load_tasks)
    tasks = pq.read_table(out / "meta" / "tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    if importlib.util.find_spec("pandas"):
        frame = tasks.to_pandas()
        assert frame.iloc[0].name == "pusht" and int(frame.loc["pusht"].task_index) == 0
    # episodes: where each episode's rows and frames lie
    eps = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [(e["episode_index"], e["length"], e["dataset_from_index"], e["dataset_to_index"])
            for e in eps] == [(0, 15, 0, 15), (1, 15, 15, 30)]
    for e in eps:
        for k in ("tasks", "data/chunk_index", "data/file_index", "meta/episodes/chunk_index",
                  "meta/episodes/file_index", f"videos/{CAM}/chunk_index",
                  f"videos/{CAM}/file_index", f"videos/{CAM}/to_timestamp"):
            assert k in e, k
    video = out / info["video_path"].format(video_key=CAM, chunk_index=0, file_index=0)
    with av.open(str(video)) as f:
        stream = f.streams.video[0]
        times = [float(fr.pts * stream.time_base) for fr in f.decode(stream)]
    assert len(times) == 30
    # LeRobot's lookup: from_timestamp + timestamp finds a frame within tolerance_s = 1e-4
    for e in eps:
        start = e[f"videos/{CAM}/from_timestamp"]
        for ts in rows["timestamp"][e["dataset_from_index"]:e["dataset_to_index"]]:
            assert min(abs(start + ts - t) for t in times) < 1e-4
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert np.array(stats[CAM]["mean"]).shape == (3, 1, 1)
    assert {"min", "max", "mean", "std", "count", "q01", "q99"} <= set(stats["action"])


def test_bad_exports_exit_2_and_write_nothing(run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["data", "export", str(run[0]), str(tmp_path / "taken")]) == 2
    assert _said("taken: exists already", capsys.readouterr().out)
    assert main(["data", "export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert _said("nowhere: no buffer there", capsys.readouterr().out)
    from tests.chunks import make_chunk

    rng = np.random.default_rng(0)
    from buffers.codec import encode_chunk
    from buffers.records import EpisodeEnd

    with ReplayBuffer(tmp_path / "mixed") as buf:  # two robots whose states differ in size
        buf.insert([encode_chunk(make_chunk(rng, D=5, robot_id="a", end=EpisodeEnd("success"))),
                    encode_chunk(make_chunk(rng, D=7, robot_id="b", end=EpisodeEnd("success")))])
    assert main(["data", "export", str(tmp_path / "mixed"), str(tmp_path / "out")]) == 2
    assert _said("episode b/e0: observation 'state' has shape [7], episode a/e0 [5]",
                 capsys.readouterr().out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed", "taken"]


def _dataset(run, tmp_path):
    out = tmp_path / "ds"
    assert main(["data", "export", str(run[0]), str(out)]) == 0
    return out, json.loads((out / "meta" / "info.json").read_text())


def test_a_dataset_missing_its_video_or_of_another_shape_exits_2_naming_it(run, tmp_path,
                                                                           capsys):
    out, info = _dataset(run, tmp_path)
    video = out / info["video_path"].format(video_key=CAM, chunk_index=0, file_index=0)
    video.rename(video.with_suffix(".moved"))
    assert main(["data", "import", str(out), "--out", str(tmp_path / "buf")]) == 2
    assert _said(f"{video}: no such video (feature '{CAM}', episode 0)", capsys.readouterr().out)
    video.with_suffix(".moved").rename(video)
    info["features"][CAM]["shape"] = [64, 64, 3]
    (out / "meta" / "info.json").write_text(json.dumps(info))
    assert main(["data", "import", str(out), "--out", str(tmp_path / "buf")]) == 2
    assert _said(f"'{CAM}': video frames of shape [96, 96, 3], meta/info.json declares [64, 64, 3]",
                 capsys.readouterr().out)
    del info["features"]["action"]
    (out / "meta" / "info.json").write_text(json.dumps(info))
    assert main(["data", "import", str(out), "--out", str(tmp_path / "buf")]) == 2
    assert _said("has no 'action' feature", capsys.readouterr().out)
    assert not (tmp_path / "buf").exists()


def test_a_dataset_written_by_lerobot_itself_imports(tmp_path, capsys):
    """tests/fixtures/lerobot-v3-by-lerobot: LeRobot 0.4.4's own writer, AV1 video (its README
    says how its states, actions and frames were made, so they are rebuilt here)."""
    from pathlib import Path

    src = Path(__file__).parent / "fixtures" / "lerobot-v3-by-lerobot"
    assert main(["data", "import", str(src), "--out", str(tmp_path / "buf"), "--horizon",
                 "4"]) == 0
    assert _said("imported 2 episodes (45 steps", capsys.readouterr().out)
    with ReplayBuffer(tmp_path / "buf") as buf:
        episodes = sorted(iter_episodes(buf), key=lambda e: e.episode_id)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    for e, (ep, n, task) in zip(episodes, ((0, 20, "pick the cube"), (1, 27, "place it")),
                                strict=True):
        rows = [(rng.standard_normal(3).astype(np.float32),
                 rng.uniform(-1, 1, 2).astype(np.float32)) for _ in range(n)]
        frames = np.stack([np.stack([(xx * 4 + t * 3) % 256, (yy * 5 + ep * 60) % 256,
                                     np.full_like(xx, 40 * t % 256)], -1) for t in range(n)])
        assert (e.task, e.robot_id, e.outcome, len(e.action)) == (task, "so100", "truncated",
                                                                  n - 1)
        np.testing.assert_array_equal(e.obs["state"], np.stack([s for s, _ in rows]))
        np.testing.assert_array_equal(e.action, np.stack([a for _, a in rows[:-1]]))
        diff = np.abs(e.obs["top"].astype(int) - frames)  # AV1 at LeRobot's CRF 30
        assert diff.mean() < 6 and np.percentile(diff, 99) <= 48, (diff.mean(), diff.max())


def test_a_v2_dataset_with_one_video_per_episode_imports(tmp_path, capsys):
    """LeRobot v2.x: `videos/chunk-000/<key>/episode_<i>.mp4`, each starting at 0 s, no
    meta/episodes/ parquet."""
    from buffers.video import write_mp4

    root, fps, rng = tmp_path / "v21", 5, np.random.default_rng(1)
    yy, xx = np.mgrid[0:16, 0:24]
    frames = {ep: np.stack([np.stack([(xx * 8 + t * 20) % 256, yy * 12 + ep * 40,
                                      np.full_like(xx, 30 * t)], -1).astype(np.uint8)
                            for t in range(n)]) for ep, n in ((0, 6), (1, 9))}
    for ep, images in frames.items():
        n = len(images)
        video = root / "videos" / "chunk-000" / CAM / f"episode_{ep:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(video, images, fps)
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "observation.state": rng.standard_normal((n, 2)).astype(np.float32).tolist(),
            "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32).tolist(),
            "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n),
            "episode_index": np.full(n, ep), "task_index": np.zeros(n, np.int64)}),
            root / "data" / "chunk-000" / f"episode_{ep:06d}.parquet")
    (root / "meta").mkdir()
    (root / "meta" / "tasks.jsonl").write_text('{"task_index": 0, "task": "wave"}\n')
    vec = {"dtype": "float32", "shape": [2], "names": None}
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v2.1", "fps": fps, "chunks_size": 1000, "video_path":
        "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {"observation.state": vec, "action": vec, CAM: {
            "dtype": "video", "shape": [16, 24, 3], "names": ["height", "width", "channels"]}}}))
    assert main(["data", "import", str(root), "--out", str(tmp_path / "buf")]) == 0
    assert _said("imported 2 episodes (13 steps", capsys.readouterr().out)
    with ReplayBuffer(tmp_path / "buf") as buf:
        back = sorted(iter_episodes(buf), key=lambda e: e.episode_id)
    for e, ep in zip(back, (0, 1), strict=True):
        assert e.task == "wave"
        got = e.obs["pixels"].astype(int)
        diff = np.abs(got - frames[ep]).mean()  # small sharp-edged frames: H.264's worst case
        off_by_one = np.abs(got[1:] - frames[ep][:-1]).mean()
        assert diff < 6 and off_by_one > 3 * diff, (diff, off_by_one)  # each at its own time


def test_lerobots_own_loader_reads_the_export(run, tmp_path, monkeypatch):
    """LeRobot's `LeRobotDataset` (lerobot >= 0.5, Python >= 3.12; docs/python312.md), unpatched,
    reads the export: every frame's state and action exactly, the frames decoded by PyAV, the
    task, and chunks of actions through `delta_timestamps` as ACT's training asks for them.
    Skips only where the optional lerobot package cannot be imported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local root: nothing to fetch
    lrd = pytest.importorskip("lerobot.datasets.lerobot_dataset")
    out = _export(run, tmp_path, "--fps", "10")
    ds = lrd.LeRobotDataset("local/fleet_export", root=out, video_backend="pyav")
    assert (len(ds), ds.num_episodes, ds.fps) == (30, 2, 10)
    episodes = run[1]
    diffs = []
    for idx in range(len(ds)):
        item = ds[idx]
        ep, t = int(item["episode_index"]), int(item["frame_index"])
        src = episodes[ep]
        np.testing.assert_array_equal(item["observation.state"].numpy(), src.obs["state"][t])
        if t < len(src.action):
            np.testing.assert_array_equal(item["action"].numpy(), src.action[t])
        assert item["task"] == "pusht"
        img = item[CAM].numpy().transpose(1, 2, 0) * 255  # [3, h, w] in [0, 1]
        diffs.append(np.abs(img - src.obs["pixels"][t]).mean())
    assert np.mean(diffs) < 3, np.mean(diffs)  # H.264, 4:2:0
    chunked = lrd.LeRobotDataset("local/fleet_export", root=out, video_backend="pyav",
                                 delta_timestamps={"action": [0, 0.1, 0.2, 0.3],
                                                   CAM: [-0.1, 0.0]})
    end = chunked[13]  # episode 0's frame 13 of 15: two steps left
    assert tuple(end["action"].shape) == (4, 2) and tuple(end[CAM].shape) == (2, 3, 96, 96)
    assert end["action_is_pad"].tolist() == [False, False, True, True]
