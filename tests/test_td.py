"""Chunked TD: golden n-step chunk backups, and convergence to the exact Q of a chain MDP."""

import itertools

import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.td import TD, TDConfig, Transitions, chunk_transitions
from buffers.records import EpisodeEnd, RolloutChunk

N, H, GAMMA = 5, 2, 0.9  # states 0..4; entering 4 pays 1 and ends the episode


@pytest.fixture(autouse=True)
def one_thread():
    """Small nets on a shared 2-core machine: intra-op threads only fight (10× slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chain_chunk(start: int, actions: np.ndarray, episode_id: str) -> RolloutChunk:
    """One policy call of H actions (A = 1) from `start`, cut short at the goal."""
    states, rewards = [start], []
    for a in actions:
        s = min(states[-1] + 1, N - 1) if a > 0 else max(states[-1] - 1, 0)
        states.append(s)
        rewards.append(1.0 if s == N - 1 else 0.0)
        if s == N - 1:
            break
    T = len(rewards)
    obs = np.eye(N, dtype=np.float32)[states]
    done = states[-1] == N - 1
    return RolloutChunk(
        robot_id="c", embodiment="chain", task="chain", episode_id=episode_id, chunk_seq=0,
        policy_version=0, wall_time=0.0, horizon=H, obs={"state": obs},
        action=actions[:T, None].astype(np.float32),
        policy_action=actions[None, :, None].astype(np.float32),
        logp=np.zeros(1, np.float32), value=np.zeros(1, np.float32),
        reward=np.array(rewards, np.float32), success=np.array(rewards) > 0,
        intervened=np.zeros(T, bool),
        episode_end=EpisodeEnd("success" if done else "truncated"))


def exact_q() -> dict[tuple[int, tuple[float, ...]], float]:
    """Q^π of the always-right policy over every (state, chunk), by iterating the Bellman
    expectation backup to its fixed point."""
    chunks = list(itertools.product([-1.0, 1.0], repeat=H))
    v = np.zeros(N)

    def q(s: int, c: tuple[float, ...]) -> float:
        total = 0.0
        for i, a in enumerate(c):
            s = min(s + 1, N - 1) if a > 0 else max(s - 1, 0)
            if s == N - 1:
                return total + GAMMA**i
        return total + GAMMA**H * v[s]

    for _ in range(200):
        v = np.array([q(s, (1.0,) * H) if s < N - 1 else 0.0 for s in range(N)])
    return {(s, c): q(s, c) for s in range(N - 1) for c in chunks}


def test_chunk_transitions_golden():
    chunk = chain_chunk(1, np.array([1.0, 1.0]), "e")  # 1 -> 2 -> 3, no reward, not terminal
    rows = chunk_transitions(chunk, chunk.reward, GAMMA)
    np.testing.assert_allclose(rows["reward"], [0.0])
    np.testing.assert_allclose(rows["discount"], [GAMMA**2], rtol=1e-6)
    assert rows["next_obs"][0].argmax() == 3 and rows["obs"][0].argmax() == 1
    short = chain_chunk(3, np.array([1.0, -1.0]), "g")  # reaches the goal after one step
    rows = chunk_transitions(short, short.reward, GAMMA)
    np.testing.assert_allclose(rows["reward"], [1.0])
    np.testing.assert_allclose(rows["discount"], [0.0])  # terminal: no bootstrap
    np.testing.assert_allclose(rows["chunk"], [[1.0, -1.0]])  # the unexecuted tail kept


def test_chunk_transitions_three_calls():
    rng = np.random.default_rng(0)
    reward = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    chunk = RolloutChunk(
        robot_id="r", embodiment="e", task="t", episode_id="e", chunk_seq=0, policy_version=0,
        wall_time=0.0, horizon=2, obs={"state": np.arange(6, dtype=np.float32)[:, None]},
        action=rng.standard_normal((5, 1)).astype(np.float32),
        policy_action=np.zeros((3, 2, 1), np.float32), logp=np.zeros(3, np.float32),
        value=np.zeros(3, np.float32), reward=reward, success=np.zeros(5, bool),
        intervened=np.array([True, True, False, True, True]),
        episode_end=EpisodeEnd("truncated"))
    rows = chunk_transitions(chunk, reward, 0.5)
    np.testing.assert_allclose(rows["reward"], [1 + 0.5 * 2, 3 + 0.5 * 4, 5])
    np.testing.assert_allclose(rows["discount"], [0.25, 0.25, 0.5])  # short last call: γ^1
    np.testing.assert_allclose(rows["obs"][:, 0], [0, 2, 4])
    np.testing.assert_allclose(rows["next_obs"][:, 0], [2, 4, 5])
    assert rows["expert"].tolist() == [True, False, False]  # the last call is cut at step 5


def always_right_policy() -> ChunkPolicy:
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=N, action_dim=1, horizon=H, hidden=16))
    last = policy.actor[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)
    return policy


def test_chunked_td_converges_to_exact_q():
    torch.manual_seed(0)
    policy = always_right_policy()
    td = TD(policy, TDConfig(gamma=GAMMA, target="min", tau=0.05, critic_lr=2e-3, hidden=64,
                             minibatch=64, utd=2500, demo_ratio=0.0))
    truth = exact_q()
    chunks = [chain_chunk(s, np.array(c), f"{s}{c}") for (s, c) in truth]
    batch = td.prepare(chunks, [c.reward for c in chunks])
    td.update(batch, train_actor=False)  # policy evaluation: the actor stays always-right
    obs = torch.eye(N)[[s for s, _ in truth]]
    acts = torch.tensor([c for _, c in truth])
    got = td.q(obs, acts).detach().numpy()
    want = np.array(list(truth.values()))
    np.testing.assert_allclose(got.mean(0), want, atol=0.05)
    assert len(np.unique(want.round(4))) == 6  # γ^0 .. γ^5: the answer is not trivial


def test_actor_climbs_q_and_bc_pulls_to_data():
    """With α = 0 the actor moves toward the higher-Q chunk; with a large α it stays near
    the dataset's chunks."""
    truth = exact_q()
    chunks = [chain_chunk(s, np.array(c), f"{s}{c}") for (s, c) in truth]
    moved = {}
    for alpha in (0.0, 100.0):
        torch.manual_seed(1)
        policy = ChunkPolicy(PolicyConfig(obs_dim=N, action_dim=1, horizon=H, hidden=16))
        with torch.no_grad():
            policy.actor[-1].weight.zero_()
            policy.actor[-1].bias.fill_(-0.5)
        td = TD(policy, TDConfig(gamma=GAMMA, tau=0.05, critic_lr=2e-3, actor_lr=1e-3,
                                 hidden=64, minibatch=64, utd=1500, demo_ratio=0.0,
                                 bc_coef=alpha))
        td.update(td.prepare(chunks, [c.reward for c in chunks]), train_actor=True)
        moved[alpha] = float(policy.mean_chunk(torch.eye(N)[:N - 1]).mean())
    assert moved[0.0] > 0.5  # toward always-right, the chunk of highest Q
    assert abs(moved[100.0]) < 0.3  # the dataset's chunks average 0


def test_offline_phase_and_demo_mixture():
    policy = always_right_policy()
    td = TD(policy, TDConfig(gamma=GAMMA, minibatch=8, utd=2, offline_updates=3,
                             demo_ratio=0.5, hidden=16))
    demo = chain_chunk(2, np.array([1.0, 1.0]), "demo")
    stats = td.offline([demo], [demo.reward])
    assert len(td.demos) == 1 and len(td.online) == 0 and "critic_loss" in stats
    batch = td.prepare([chain_chunk(0, np.array([-1.0, 1.0]), "x")], [np.zeros(2)])
    out = td.update(batch)
    assert out["replay_calls"] == 1 and out["demo_calls"] == 1
    state = td.state_dict()
    again = TD(always_right_policy(), TDConfig(gamma=GAMMA, hidden=16))
    again.load_state_dict(state)
    assert len(again.online) == 1 and len(again.demos) == 1


def constant_q(critic: torch.nn.Module, values: list[float]) -> None:
    """Makes critic j of an ensemble answer `values[j]` for every (obs, chunk)."""
    with torch.no_grad():
        for net, v in zip(critic.nets, values, strict=True):
            net[-1].weight.zero_()
            net[-1].bias.fill_(v)


@pytest.mark.parametrize("target, agg", [("min", 1.0), ("mean", 2.0)])
def test_backup_uses_the_target_ensemble_and_its_min(target, agg):
    """The targets answer [1, 3] and the online critics [10, 20], so y = r + d · agg tells
    which networks the backup read and how it combined them: with r = 0.5, d = 0.25,
    y = 0.75 for the min of the targets, 1.0 for their mean (3.0 if it read the online min)."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=2, action_dim=1, horizon=H, hidden=8))
    td = TD(policy, TDConfig(target=target, ensemble=2, hidden=8, minibatch=4, utd=1,
                             demo_ratio=0.0, tau=0.5))
    constant_q(td.target, [1.0, 3.0])
    constant_q(td.critic, [10.0, 20.0])
    before = [p.detach().clone() for p in td.target.parameters()]
    one = Transitions(obs=torch.zeros(1, 2), chunk=torch.zeros(1, H), reward=torch.tensor([0.5]),
                      discount=torch.tensor([0.25]), next_obs=torch.ones(1, 2),
                      expert=torch.zeros(1, dtype=torch.bool))
    out = td.update(one, train_actor=False)
    assert out["q_mean"] == pytest.approx(0.5 + 0.25 * agg)
    for old, new, online in zip(before, td.target.parameters(), td.critic.parameters(),
                                strict=True):  # Polyak: the target moves τ of the way
        torch.testing.assert_close(new, old + 0.5 * (online - old))


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="target"):
        TDConfig(target="max")
    with pytest.raises(ValueError, match="demo_ratio"):
        TDConfig(demo_ratio=1.5)
