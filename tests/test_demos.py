"""The demonstration cache: every demo of every task survives into one demo buffer, labelled with
the task its episode ran, and a demo the buffer would drop is an error, not a silent loss."""

import collections
import json

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.demos import LEGACY_MANIFEST, MANIFEST, read_demos, write_demos
from buffers.store import ReplayBuffer
from fleet.config import load_config
from fleet.run.pretrain import collect_task_demos, load_or_collect_demos
from tests.chunks import make_chunk

TWO_TASKS = ["robot.task='reach-v3,push-v3'", "robot.max_episode_steps=150", "pretrain.demos=2"]


def test_every_demo_of_every_task_survives_one_buffer_labelled_with_its_task(tmp_path):
    cfg = load_config(TWO_TASKS)
    demos = load_or_collect_demos(cfg, tmp_path / "demos")
    with ReplayBuffer(tmp_path / "demos", read_only=True) as buf:
        assert len(buf) == 2 * 2  # nothing dropped by ingest, which is idempotent on the key
    assert len({d.key for d in demos}) == 4
    tasks = cfg.robot.tasks
    for d in demos:  # the robot's one-hot task input says which task the episode ran
        assert d.task == tasks[int(np.argmax(d.obs["state"][0, 39:]))]
    assert collections.Counter(d.task for d in demos) == {"reach-v3": 2, "push-v3": 2}
    again = collect_task_demos(cfg)  # deterministic ids: a cache collected twice is the same
    assert [d.key for d in again] == [d.key for d in demos]
    assert [d.key for d in load_or_collect_demos(cfg, tmp_path / "demos")] == [
        d.key for d in demos]  # and read back from the cache as written


def test_stub_robot_demos_go_through_the_same_cache(tmp_path):
    cfg = load_config(["robot=stub", "pretrain.demos=3"])
    demos = load_or_collect_demos(cfg, tmp_path / "demos")
    assert len(demos) == 3 and {d.task for d in demos} == {cfg.robot.task}
    assert all(d.intervened.all() and d.episode_end.outcome == "success" for d in demos)


def test_the_writer_refuses_demos_the_buffer_would_drop_as_duplicates(tmp_path):
    rng = np.random.default_rng(0)
    same = [make_chunk(rng, robot_id="expert-0", episode_id="demo-0-0", task=t, intervened=True)
            for t in ("reach-v3", "push-v3")]
    with pytest.raises(ValueError, match=r"would keep 1 of 2 demos: duplicate keys "
                                         r"\(robot_id, episode_id, chunk_seq\) "
                                         r"\('expert-0', 'demo-0-0', 0\) x2"):
        write_demos(tmp_path / "demos", same)
    assert list(tmp_path.iterdir()) == []  # no cache left behind to be taken for a whole one


def test_reading_back_checks_the_count_that_was_written(tmp_path):
    rng = np.random.default_rng(0)
    demos = [make_chunk(rng, episode_id=f"d{i}", intervened=True) for i in range(2)]
    write_demos(tmp_path / "demos", demos)
    assert [d.key for d in read_demos(tmp_path / "demos")] == [d.key for d in demos]
    with ReplayBuffer(tmp_path / "demos", read_only=True) as buf:  # the manifest is no stray
        assert buf.info()["stray_files"] == []
    with pytest.raises(ValueError, match="exists already"):
        write_demos(tmp_path / "demos", demos)
    (tmp_path / "demos" / MANIFEST).write_text(json.dumps({"chunks": 3}))
    with pytest.raises(RuntimeError, match="holds 2 chunks but 3 were written"):
        read_demos(tmp_path / "demos")
    assert read_demos(tmp_path / "none") == []


def test_a_demo_buffer_written_before_the_manifest_is_not_read_as_whole(tmp_path):
    chunk = make_chunk(np.random.default_rng(0), episode_id="demo-0-0", intervened=True)
    with ReplayBuffer(tmp_path / "old") as buf:  # as the cache was written before
        buf.insert([encode_chunk(chunk)])
    with pytest.raises(RuntimeError, match=r"no owner/demos\.json"):
        read_demos(tmp_path / "old")


def test_the_manifest_lives_in_the_owner_subdirectory_and_a_legacy_one_is_read(tmp_path):
    rng = np.random.default_rng(0)
    demos = [make_chunk(rng, episode_id=f"d{i}", intervened=True) for i in range(2)]
    write_demos(tmp_path / "demos", demos)
    assert (tmp_path / "demos" / MANIFEST).is_file()
    assert not (tmp_path / "demos" / LEGACY_MANIFEST).exists()  # nothing of the owner's beside
    # the log: the log names no owner's file (buffers.log._OWN lists only its own)
    (tmp_path / "demos" / MANIFEST).rename(tmp_path / "demos" / LEGACY_MANIFEST)
    assert len(read_demos(tmp_path / "demos")) == 2  # a cache written before the subdirectory
    with ReplayBuffer(tmp_path / "demos", read_only=True) as buf:
        assert buf.info()["stray_files"] == [LEGACY_MANIFEST]
