import threading

import numpy as np
import pytest

from actors.chunker import ChunkBuilder
from actors.robots.base import RobotFault
from actors.worker import RobotWorker, WorkerConfig
from buffers.codec import decode_chunk
from buffers.records import EpisodeEnd
from tests.fakes import FakeRobot, ListOutbox, ListWeights, ScriptedPolicy
from tests.util import wait_for


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


@pytest.mark.parametrize("fault", ["fail_at_step", "nan_at_step"])
def test_a_robot_fault_at_any_step_closes_its_episode_with_exactly_the_steps_that_ran(fault):
    # Every offset of three chunks of K=2 calls of H=4, including each call's first step (the
    # step whose call the chunk must then leave out) and the first step after a full chunk.
    for at in range(24):
        robot = FakeRobot(max_steps=50, **{fault: at})
        outbox = ListOutbox()
        worker = RobotWorker(robot, ScriptedPolicy(), outbox, ListWeights(),
                             WorkerConfig(horizon=4, calls_per_chunk=2))
        with pytest.raises(RobotFault):
            worker.run_episode(seed=0)
        chunks = [decode_chunk(r) for r in outbox.records]
        ran = at  # a NaN observation is refused with its step
        assert sum(c.num_steps for c in chunks) == ran == worker.stats.env_steps, at
        assert all(c.num_calls == -(-c.num_steps // 4) for c in chunks), at
        ends = [c.episode_end for c in chunks]
        assert ends == ([] if ran == 0 else [None] * (len(chunks) - 1) + [EpisodeEnd("truncated")])
        assert worker.stats.faults == 1 and str(at) in worker.stats.last_fault
        worker.abort_episode()  # a second close closes nothing more
        assert len(outbox.records) == len(chunks)


def test_a_robot_that_faults_rejoins_and_its_next_episodes_run(caplog):
    robot = FakeRobot("flaky-7", max_steps=10, fail_at_step=13)
    outbox, stop = ListOutbox(), threading.Event()
    rejoined = []
    worker = RobotWorker(robot, ScriptedPolicy(), outbox, ListWeights(),
                         WorkerConfig(horizon=4, calls_per_chunk=2), rejoin=rejoined.append)
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    assert wait_for(lambda: worker.stats.episodes >= 3)
    stop.set()
    thread.join()
    assert worker.stats.faults == 1 and rejoined == [stop]
    assert "flaky-7" in caplog.text and "truncated after 3 steps" in caplog.text
    ends = [c.episode_end.outcome for c in map(decode_chunk, outbox.records) if c.episode_end]
    assert ends[:2] == ["truncated", "truncated"] and len(ends) >= 4  # time limit, then the fault


def test_a_robot_that_always_fails_backs_off_and_never_ends_the_loop():
    class Dead(FakeRobot):
        def reset(self, seed=None):
            raise OSError("no power")

    worker = RobotWorker(Dead(), ScriptedPolicy(), ListOutbox(), ListWeights(), WorkerConfig())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    assert wait_for(lambda: worker.stats.faults >= 3)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and "no power" in worker.stats.last_fault
    assert worker.stats.faults < 10  # backed off (0.1, 0.2, 0.4 s ...), did not spin


def test_episode_return_and_length_are_the_streamed_rewards_and_steps():
    worker, _, chunks = run_episode(max_steps=10)
    streamed = float(sum(c.reward.sum() for c in chunks))
    stats = worker.stats.as_dict()
    assert stats["episode_length"] == 10 and np.isclose(stats["episode_return"], streamed)
    held_out = worker.evaluate_episodes([3, 4], record=1)
    assert [e.length for e in held_out] == [10, 10]
    assert held_out[0].frames == {}  # no camera on this robot: nothing recorded
