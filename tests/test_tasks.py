"""Task sampling by recent failure rate: the table, the learner that keeps and publishes it,
and robots that draw their next task from it."""

import collections

import numpy as np
import pytest
import torch

from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot
from actors.tasks import TaskChooser
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO, PPOConfig
from buffers.codec import decode_chunk, encode_chunk
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from buffers.tasks import TaskSampling, TaskTable, pick
from learner.loop import Learner, LearnerConfig
from tests.chunks import make_chunk
from tests.fakes import ConstantReward, ListOutbox, ListWeights, ScriptedPolicy

ON = TaskSampling(enabled=True, window=10, floor=0.1)


def test_a_failing_task_is_drawn_more_than_a_solved_one_and_the_floor_holds():
    table = TaskTable(("failing", "solved", "unseen"), ON)
    for _ in range(10):
        table.record("failing", False)
        table.record("solved", True)
    w = table.weights()
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["solved"] == pytest.approx(0.1)  # the floor: never starved
    assert w["failing"] == w["unseen"] == pytest.approx(0.1 + 0.7 / 2)  # prior 1: as failing
    rng = np.random.default_rng(0)
    drawn = collections.Counter(pick(w, rng) for _ in range(20_000))
    assert drawn["failing"] > 3 * drawn["solved"]
    assert drawn["solved"] / 20_000 == pytest.approx(0.1, abs=0.01)
    for _ in range(10):  # the window forgets: the failing task is now solved too
        table.record("failing", True)
        table.record("unseen", True)
    assert table.weights() == pytest.approx({t: 1 / 3 for t in table.tasks})
    assert table.success() == {"failing": 1.0, "solved": 1.0, "unseen": 1.0}
    with pytest.raises(ValueError, match=r"floor <= 0\.3333"):
        TaskTable(("a", "b", "c"), TaskSampling(enabled=True, floor=0.4))


class ListTasks(ListWeights):
    """A `WeightSink` that also takes the task table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[int, dict[str, float]]] = []

    def publish_tasks(self, policy_version: int, weights: dict[str, float]) -> None:
        self.tables.append((policy_version, weights))


def test_the_learner_publishes_the_table_of_its_robots_outcomes_with_each_weight_set(tmp_path):
    rng = np.random.default_rng(0)
    chunks = []
    for i in range(8):  # reach succeeds, push fails, and a push success an operator took over
        task, outcome, taken = [("reach-v3", "success", False), ("push-v3", "failure", False),
                                ("push-v3", "success", True), ("reach-v3", "success", False)][i % 4]
        chunks.append(make_chunk(rng, T=8, H=4, A=4, D=39, episode_id=f"e{i}", task=task,
                                 end=EpisodeEnd(outcome), intervened=taken))
    with ReplayBuffer(tmp_path / "buf") as buf:
        buf.insert([encode_chunk(c) for c in chunks])
        torch.manual_seed(0)
        policy = ChunkPolicy(PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=16))
        sink = ListTasks()
        learner = Learner(policy, PPO(policy, PPOConfig(epochs=1)), ConstantReward(), buf, sink,
                          LearnerConfig(batch_calls=16, critic_warmup=0, max_wait_s=1,
                                        task_sampling=ON), tmp_path / "ckpt",
                          tasks=("reach-v3", "push-v3"), task_sink=sink)
        metrics = learner.step()
    assert [v for v, _ in sink.tables] == [v for v, _ in sink.published] == [1]
    table = sink.tables[0][1]
    assert table["push-v3"] == pytest.approx(0.9) and table["reach-v3"] == pytest.approx(0.1)
    assert metrics["task_weight/push-v3"] == table["push-v3"]
    assert metrics["task_success/push-v3"] == 0.0 and metrics["task_success/reach-v3"] == 1.0
    assert learner.tasks is not None
    path = learner.save_checkpoint()  # a resumed learner keeps the table
    again = Learner(policy, PPO(policy, PPOConfig()), ConstantReward(), buf, ListTasks(),
                    learner.config, tmp_path / "ckpt", tasks=("reach-v3", "push-v3"),
                    task_sink=ListTasks())
    again.load_checkpoint(path)
    assert again.tasks is not None and again.tasks.weights() == learner.tasks.weights()
    with pytest.raises(ValueError, match="task_sink"):
        Learner(policy, PPO(policy, PPOConfig()), ConstantReward(), buf, ListWeights(),
                LearnerConfig(task_sampling=ON), tmp_path / "c2", tasks=("a", "b"))


class FixedTable:
    def __init__(self, weights):
        self.weights = weights

    def task_weights(self):
        return self.weights


def test_robots_draw_their_next_task_from_the_table(tmp_path):
    config = MetaWorldConfig(task="reach-v3,push-v3", max_episode_steps=8)
    robot = MetaWorldRobot(config, "robot-0", ("reach-v3",))  # its share: reach only
    source = FixedTable(None)
    chooser = TaskChooser(robot, source, seed=1)
    outbox = ListOutbox()
    worker = RobotWorker(robot, ScriptedPolicy(4, 4), outbox, ListWeights(),
                         WorkerConfig(horizon=4, calls_per_chunk=2), choose_task=chooser)

    def run(episodes):
        outbox.records.clear()
        stop = _StopAfter(worker, episodes)
        worker.run(stop)
        return collections.Counter(decode_chunk(r).task for r in outbox.records
                                   if decode_chunk(r).episode_end is not None)

    assert run(4) == {"reach-v3": 4}  # no table yet: its own share, in turn
    source.weights = {"reach-v3": 0.1, "push-v3": 0.9}
    drawn = run(30)
    assert drawn["push-v3"] > drawn["reach-v3"] and sum(drawn.values()) == 30
    assert chooser.chosen == drawn


class _StopAfter:
    """A stop event for `RobotWorker.run` that is set after `n` finished episodes."""

    def __init__(self, worker, n):
        self.worker, self.until = worker, worker.stats.episodes + n

    def is_set(self):
        return self.worker.stats.episodes >= self.until

    def wait(self, timeout=None):
        return self.is_set()
