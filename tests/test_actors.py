import numpy as np
import pytest

from actors.chunker import ChunkBuilder
from actors.worker import RobotWorker, WorkerConfig
from buffers.codec import decode_chunk
from tests.fakes import FakeRobot, ListOutbox, ListWeights, ScriptedPolicy


def run_episode(max_steps=10, succeed_after=None, calls_per_chunk=2, weights=None):
    robot = FakeRobot(max_steps=max_steps, succeed_after=succeed_after)
    outbox = ListOutbox()
    worker = RobotWorker(robot, ScriptedPolicy(), outbox, weights or ListWeights(),
                         WorkerConfig(horizon=4, calls_per_chunk=calls_per_chunk))
    success = worker.run_episode(seed=3)
    return worker, success, [decode_chunk(r) for r in outbox.records]


def test_chunker_splits_an_episode_into_rollout_chunks():
    worker, success, chunks = run_episode(max_steps=10)
    assert not success
    assert [c.num_steps for c in chunks] == [8, 2]  # K=2 calls of H=4, then a short call
    assert [c.num_calls for c in chunks] == [2, 1]
    assert [c.chunk_seq for c in chunks] == [0, 1]
    assert len({c.episode_id for c in chunks}) == 1
    assert chunks[0].episode_end is None
    assert chunks[1].episode_end is not None and chunks[1].episode_end.outcome == "truncated"
    # H + 1 observations per H actions; the next chunk starts where the last one ended
    assert chunks[0].obs["state"].shape == (9, 3)
    np.testing.assert_array_equal(chunks[0].obs["state"][-1], chunks[1].obs["state"][0])
    assert worker.stats.env_steps == 10 and worker.stats.episodes == 1


def test_success_ends_the_episode_mid_chunk():
    _, success, chunks = run_episode(max_steps=50, succeed_after=6)
    assert success
    assert sum(c.num_steps for c in chunks) == 6
    assert chunks[-1].episode_end.outcome == "success" and chunks[-1].success[-1]


def test_weights_are_adopted_between_chunks_only():
    weights = ListWeights()
    weights.publish(7, {"version": np.array(7.0)})
    worker, _, chunks = run_episode(max_steps=20, weights=weights)
    assert chunks[0].policy_version == 0  # acted with the weights it started with
    assert all(c.policy_version == 7 for c in chunks[1:])
    assert worker.policy.version == 7.0


def test_evaluate_streams_nothing():
    robot = FakeRobot(max_steps=5, succeed_after=3)
    outbox = ListOutbox()
    worker = RobotWorker(robot, ScriptedPolicy(), outbox, ListWeights(), WorkerConfig())
    assert worker.evaluate([1, 2, 3]) == [True, True, True]
    assert outbox.records == []


def test_builder_refuses_a_call_before_the_last_chunk_ran():
    robot = FakeRobot()
    builder = ChunkBuilder(robot.spec, horizon=4, calls_per_chunk=2)
    builder.begin_episode("e", robot.reset(0))
    builder.add_call(np.zeros((4, 2), np.float32), 0.0)
    with pytest.raises(RuntimeError):
        builder.add_call(np.zeros((4, 2), np.float32), 0.0)


def test_a_robot_fault_propagates_instead_of_being_swallowed():
    robot = FakeRobot(max_steps=50, fail_at_step=5)
    worker = RobotWorker(robot, ScriptedPolicy(), ListOutbox(), ListWeights(), WorkerConfig())
    with pytest.raises(ConnectionError):
        worker.run_episode(seed=0)
