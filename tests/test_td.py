"""Chunked TD: golden n-step chunk backups, and convergence to the exact Q of a chain MDP."""

import itertools

import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.td import TD, Segment, TDConfig, Transitions, chunk_transitions, step_transitions
from buffers.records import EpisodeEnd, RolloutChunk

N, H, GAMMA = 5, 2, 0.9  # states 0..4; entering 4 pays 1 and ends the episode


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    td = TD(policy, TDConfig(gamma=GAMMA, target="min", ensemble=2, tau=0.05, critic_lr=2e-3,
                             hidden=64, minibatch=64, demo_ratio=0.0, starts="call"))
    truth = exact_q()
    chunks = [chain_chunk(s, np.array(c), f"{s}{c}") for (s, c) in truth]
    td.add(td.prepare(chunks, [c.reward for c in chunks]))
    td.train(2500, train_actor=False)  # policy evaluation: the actor stays always-right
    obs = torch.eye(N)[[s for s, _ in truth]]
    acts = torch.tensor([c for _, c in truth])
    got = td.q(obs, acts).detach().numpy()
    want = np.array(list(truth.values()))
    np.testing.assert_allclose(got.mean(0), want, atol=0.05)
    assert len(np.unique(want.round(4))) == 6  # γ^0 .. γ^5: the answer is not trivial


def test_actor_climbs_q_and_bc_pulls_to_data():
    """With α = 0 the actor moves toward the higher-Q chunk; with a large α it stays near
    the demos' chunks (BC on demo rows)."""
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
                                 hidden=64, minibatch=64, starts="call", bc_coef=alpha,
                                 actor_warmup_steps=0, ensemble=2))
        td.offline(chunks, [c.reward for c in chunks])  # demo rows: the only data
        td.train(1500, train_actor=True)
        moved[alpha] = float(policy.mean_chunk(torch.eye(N)[:N - 1]).mean())
    assert moved[0.0] > 0.5  # toward always-right, the chunk of highest Q
    assert abs(moved[100.0]) < 0.3  # the dataset's chunks average 0


def test_offline_phase_and_demo_mixture():
    policy = always_right_policy()
    td = TD(policy, TDConfig(gamma=GAMMA, minibatch=8, updates_per_step=1.0,
                             offline_updates=3, demo_ratio=0.5, hidden=16))
    demo = chain_chunk(2, np.array([1.0, 1.0]), "demo")  # 2 -> 3 -> 4: two steps, two rows
    stats = td.offline([demo], [demo.reward])
    assert len(td.demos) == 2 and len(td.online) == 0 and "critic_loss" in stats
    batch = td.prepare([chain_chunk(0, np.array([-1.0, 1.0]), "x")], [np.zeros(2)])
    out = td.update(batch)
    assert out["replay_rows"] == 2 and out["demo_rows"] == 2 and out["gradient_steps"] == 2
    state = td.state_dict()
    again = TD(always_right_policy(), TDConfig(gamma=GAMMA, hidden=16))
    again.load_state_dict(state)
    assert len(again.online) == 2 and len(again.demos) == 2 and again.online_steps == 2


def constant_q(critic: torch.nn.Module, values: list[float]) -> None:
    """Makes critic j of an ensemble answer `values[j]` for every (obs, chunk)."""
    with torch.no_grad():
        critic.head.weight.zero_()
        critic.head.bias.copy_(torch.tensor(values).reshape(-1, 1, 1))


@pytest.mark.parametrize("target, agg", [("min", 1.0), ("mean", 2.0)])
def test_backup_uses_the_target_ensemble_and_its_min(target, agg):
    """The targets answer [1, 3] and the online critics [10, 20], so y = r + d · agg tells
    which networks the backup read and how it combined them: with r = 0.5, d = 0.25,
    y = 0.75 for the min of the targets, 1.0 for their mean (3.0 if it read the online min)."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=2, action_dim=1, horizon=H, hidden=8))
    td = TD(policy, TDConfig(target=target, ensemble=2, hidden=8, minibatch=4,
                             demo_ratio=0.0, tau=0.5))
    constant_q(td.target, [1.0, 3.0])
    constant_q(td.critic, [10.0, 20.0])
    before = [p.detach().clone() for p in td.target.parameters()]
    one = Transitions(obs=torch.zeros(1, 2), chunk=torch.zeros(1, H), valid=torch.ones(1, H),
                      reward=torch.tensor([0.5]), discount=torch.tensor([0.25]),
                      next_obs=torch.ones(1, 2), expert=torch.zeros(1, dtype=torch.bool))
    td.add(one)
    out = td.train(1, train_actor=False)
    assert out["q_mean"] == pytest.approx(0.5 + 0.25 * agg)
    for old, new, online in zip(before, td.target.parameters(), td.critic.parameters(),
                                strict=True):  # Polyak: the target moves τ of the way
        torch.testing.assert_close(new, old + 0.5 * (online - old))


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="target"):
        TDConfig(target="max")
    with pytest.raises(ValueError, match="demo_ratio"):
        TDConfig(demo_ratio=1.5)
    with pytest.raises(ValueError, match="target_subset"):
        TDConfig(ensemble=2, target_subset=3)
    with pytest.raises(ValueError, match="bound"):
        PolicyConfig(bound="clip")


def test_target_is_the_min_of_a_random_pair_of_ten():
    """Ten target critics answer 1..10: each backup reads the min of a fresh random pair, so
    the targets vary and average E[min of 2 of 10] = 165/45 ≈ 3.67 (the min of all ten would
    always give 1, their mean 5.5)."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=2, action_dim=1, horizon=H, hidden=8))
    td = TD(policy, TDConfig(ensemble=10, target_subset=2, hidden=8, minibatch=1,
                             demo_ratio=0.0, tau=1e-9))
    constant_q(td.target, [float(v) for v in range(1, 11)])
    td.add(Transitions(obs=torch.zeros(1, 2), chunk=torch.zeros(1, H), valid=torch.ones(1, H),
                       reward=torch.zeros(1), discount=torch.ones(1), next_obs=torch.ones(1, 2),
                       expert=torch.zeros(1, dtype=torch.bool)))
    seen = [td.train(1, train_actor=False)["q_mean"] for _ in range(400)]
    assert set(np.round(seen, 3)) <= set(range(1, 10)) and len(set(np.round(seen, 3))) >= 5
    assert np.mean(seen) == pytest.approx(165 / 45, abs=0.35)


def test_sequences_start_every_step_stitch_chunks_and_mask_the_episode_end():
    """One episode in two rollout chunks (3 steps, then 2 ending in a terminal state), H = 3,
    with another episode's chunk in between: a row per step, the rows across the chunk
    boundary stitched, the rows past the end padded, masked and not bootstrapped."""
    gamma, h = 0.5, 3

    def piece(seq, steps, first, episode, end=None):
        return RolloutChunk(
            robot_id="r", embodiment="e", task="t", episode_id=episode, chunk_seq=seq,
            policy_version=0, wall_time=0.0, horizon=h,
            obs={"state": np.arange(first, first + steps + 1, dtype=np.float32)[:, None]},
            action=np.arange(first, first + steps, dtype=np.float32)[:, None],
            policy_action=np.zeros((1, h, 1), np.float32), logp=np.zeros(1, np.float32),
            value=np.zeros(1, np.float32), reward=np.ones(steps, np.float32),
            success=np.zeros(steps, bool), intervened=np.zeros(steps, bool), episode_end=end)

    policy = ChunkPolicy(PolicyConfig(obs_dim=1, action_dim=1, horizon=h, hidden=8))
    td = TD(policy, TDConfig(gamma=gamma, hidden=8))
    a0, other = piece(0, 3, 0, "a"), piece(0, 3, 100, "b")
    a1 = piece(1, 2, 3, "a", EpisodeEnd("success"))
    first = td.prepare([a0, other], [a0.reward, other.reward])
    assert first.obs[:, 0].tolist() == [0.0, 100.0]  # only the starts whose 3 steps are known
    rows = td.prepare([a1], [a1.reward])
    assert rows.obs[:, 0].tolist() == [1, 2, 3, 4]  # starts 1 and 2 waited for this chunk
    assert rows.chunk.tolist() == [[1, 2, 3], [2, 3, 4], [3, 4, 4], [4, 4, 4]]  # padded
    assert rows.valid.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    torch.testing.assert_close(rows.reward, torch.tensor([1.75, 1.75, 1.5, 1.0]))
    torch.testing.assert_close(rows.discount, torch.tensor([0.125, 0.0, 0.0, 0.0]))
    assert rows.next_obs[:, 0].tolist() == [4, 5, 5, 5]
    truncated = piece(0, 2, 0, "c", EpisodeEnd("timeout"))
    cut = step_transitions(Segment(truncated.obs["state"], truncated.action,
                                   truncated.reward, truncated.intervened, "truncated"),
                           h, gamma)[0]
    np.testing.assert_allclose(cut["discount"], [0.25, 0.5])  # bootstraps from the last obs
    assert cut["next_obs"][:, 0].tolist() == [2, 2]


def test_bounded_actor_stays_in_range_where_an_unbounded_one_leaves():
    """Q rises with the chunk (the chain rewards moving right); with no BC and a large actor
    lr the unbounded mean walks past 1, the tanh-bounded one cannot."""
    truth = exact_q()
    chunks = [chain_chunk(s, np.array(c), f"{s}{c}") for (s, c) in truth]
    top = {}
    for bound in ("none", "tanh"):
        torch.manual_seed(2)
        policy = ChunkPolicy(PolicyConfig(obs_dim=N, action_dim=1, horizon=H, hidden=16,
                                          bound=bound))
        td = TD(policy, TDConfig(gamma=GAMMA, critic_lr=2e-3, actor_lr=2e-2, hidden=32,
                                 minibatch=64, starts="call", bc="none", ensemble=2,
                                 actor_warmup_steps=0))
        td.offline(chunks, [c.reward for c in chunks])
        td.train(400)
        top[bound] = float(policy.mean_chunk(torch.eye(N)).abs().max())
    assert top["none"] > 1.2 and top["tanh"] < 1.0


def test_symmetric_sampling_and_bc_only_on_expert_rows():
    policy = ChunkPolicy(PolicyConfig(obs_dim=2, action_dim=1, horizon=H, hidden=8))
    td = TD(policy, TDConfig(hidden=8, minibatch=256, demo_ratio=0.5))

    def rows(n, reward, expert):
        return Transitions(obs=torch.randn(n, 2), chunk=torch.full((n, H), reward),
                           valid=torch.ones(n, H), reward=torch.full((n,), reward),
                           discount=torch.ones(n), next_obs=torch.zeros(n, 2),
                           expert=torch.full((n,), expert))

    td.add(rows(1000, 0.0, False))
    assert td._minibatch().reward.sum() == 0  # no demos yet: all online
    td.add(rows(10, 1.0, True))  # interventions: online and demo replay
    batch = td._minibatch()
    assert int((batch.reward == 1).sum()) >= 128 and int(batch.expert.sum()) >= 128
    assert int((~batch.expert[:128]).sum()) >= 120  # the online half is mostly online rows
    pi = batch.chunk.clone()
    pi[~batch.expert] += 5.0  # far from the online rows' chunks, exact on the expert rows
    assert float(td._bc(batch, pi)) == 0.0


def test_actor_waits_for_online_steps():
    policy = always_right_policy()
    td = TD(policy, TDConfig(gamma=GAMMA, hidden=16, minibatch=8, updates_per_step=1.0,
                             actor_warmup_steps=4, actor_lr=1e-2))
    before = [p.detach().clone() for p in policy.actor.parameters()]
    params = policy.actor.parameters
    demo = chain_chunk(0, np.array([1.0, 1.0]), "d")
    td.offline([demo], [demo.reward])
    first = td.update(td.prepare([chain_chunk(0, np.array([-1.0, 1.0]), "x")], [np.zeros(2)]))
    assert first["actor_trained"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, params(), strict=True))
    second = td.update(td.prepare([chain_chunk(1, np.array([1.0, -1.0]), "y")], [np.zeros(2)]))
    assert second["actor_trained"] == 1.0 and second["online_steps"] == 4
    assert not all(torch.equal(a, b) for a, b in zip(before, params(), strict=True))
