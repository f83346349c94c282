"""DPO: the loss by hand, pairs from rankings, and updates raise the preferred log-prob margin."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from algorithms.dpo import DPO, DPOConfig, dpo_loss, dpo_objective, episode_logp, outcome_pairs
from algorithms.policy import ChunkPolicy, PolicyConfig
from buffers.records import EpisodeEnd
from tests.chunks import bandit_chunk, counting_chunk


def test_dpo_loss_by_hand():
    w, lo = torch.tensor([-1.0, 0.5]), torch.tensor([-2.0, 1.0])
    rw, rl = torch.tensor([-1.5, 0.0]), torch.tensor([-1.0, 0.0])
    beta = 0.5
    logits = [beta * ((-1.0 + 1.5) - (-2.0 + 1.0)), beta * ((0.5 - 0.0) - (1.0 - 0.0))]
    want = np.mean([-math.log(1 / (1 + math.exp(-x))) for x in logits])
    assert float(dpo_loss(w, lo, rw, rl, beta)) == pytest.approx(want, rel=1e-6)
    same = torch.zeros(3)
    assert float(dpo_loss(same, same, same, same, 1.0)) == pytest.approx(math.log(2))


def test_dpo_objective_adds_the_winners_nll():
    w, lo, rw, rl = (torch.tensor([x]) for x in (-1.0, -2.0, -1.5, -1.0))
    want = -math.log(1 / (1 + math.exp(-0.5 * 1.5))) + 0.3 * 1.0
    assert float(dpo_objective(w, lo, rw, rl, 0.5, 0.3)) == pytest.approx(want, rel=1e-6)


def test_pairs_by_outcome_successes_over_failures_ties_by_length():
    success, length = [True, False, True, False, True], [10, 5, 20, 7, 10]
    assert outcome_pairs(success, length) == [(0, 1), (0, 3), (2, 1), (2, 3), (4, 1), (4, 3)]
    extra = outcome_pairs(success, length, same_outcome=True)[6:]
    assert extra == [(0, 2), (4, 2)]  # the shorter success wins; equal lengths: no pair
    assert outcome_pairs([False, False], [3, 9], same_outcome=True) == []


def test_pairs_ignore_summed_dense_reward():
    """A failure with a large summed reward still loses to a success with none; two failures
    with different rewards make no pair at all."""
    policy = ChunkPolicy(PolicyConfig(obs_dim=3, action_dim=1, horizon=2, hidden=8))
    dpo = DPO(policy, DPOConfig(group_size=2, set_pairs=1, held_out_every=0))
    won = counting_chunk(4, 2, EpisodeEnd("success"), None, "a", "g")
    lost = counting_chunk(6, 2, EpisodeEnd("truncated"), np.full(6, 100.0), "b", "g")
    batch = dpo.prepare([lost, won], [lost.reward, won.reward])
    winner, loser = batch.pairs[0].tolist()
    assert len(batch.pairs) == 1 and batch.same_outcome == 0.0
    assert (batch.episode == winner).sum() == 2 and (batch.episode == loser).sum() == 3
    f1 = counting_chunk(4, 2, EpisodeEnd("failure"), np.ones(4), "c", "h")
    f2 = counting_chunk(4, 2, EpisodeEnd("failure"), np.zeros(4), "d", "h")
    assert len(dpo.prepare([f1, f2], [f1.reward, f2.reward])) == 0
    assert dpo.holding()["pairs_held"] == 0 and dpo.holding()["groups_seen"] == 1


def groups(policy, rng, n=8, size=4):
    """Bandit episodes in groups of one context each; reward 1 when the chunk's signs match."""
    chunks = []
    for g in range(n):
        ctx = rng.choice([-1.0, 1.0])
        chunks += [bandit_chunk(policy, ctx, f"{g}-{e}", 1.0, 0.0, group=f"b/{g}")
                   for e in range(size)]
    return chunks, [c.reward for c in chunks]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dpo_raises_the_preferred_margin_and_success():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=32,
                                      init_std=0.5))
    dpo = DPO(policy, DPOConfig(beta=0.5, group_size=4, lr=3e-3, epochs=4, set_pairs=1,
                                held_out_every=0, nll_coef=0.0, refresh_reference=False))
    first = np.mean([r[-1] for r in groups(policy, rng, n=32)[1]])
    batch = dpo.prepare(*groups(policy, rng))
    assert len(batch.pairs) > 0
    w, lo = batch.pairs[:, 0], batch.pairs[:, 1]
    with torch.no_grad():
        start = episode_logp(policy, batch)
    assert torch.allclose(start, batch.ref_logp)  # the policy starts as its reference
    m = dpo.update(batch)
    with torch.no_grad():
        after = episode_logp(policy, batch)
    assert float(((after[w] - after[lo]) - (start[w] - start[lo])).mean()) > 0
    assert m["margin"] > 0 and m["dpo_loss"] < math.log(2)
    for _ in range(25):
        dpo.update(dpo.prepare(*groups(policy, rng)))
    final = np.mean([r[-1] for r in groups(policy, rng, n=32)[1]])
    assert final > 0.8 > first


def test_same_outcomes_make_no_pairs_and_no_update():
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=8))
    dpo = DPO(policy, DPOConfig(group_size=2, set_pairs=1))
    chunks = [bandit_chunk(policy, 1.0, f"e{i}", 1.0, 1.0, group="b/0") for i in range(2)]
    chunks = [dataclasses.replace(c, episode_end=EpisodeEnd("failure")) for c in chunks]
    before = [p.clone() for p in policy.actor.parameters()]
    out = dpo.update(dpo.prepare(chunks, [c.reward for c in chunks]))
    assert out["pairs"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.actor.parameters(), strict=True))


def one_round(config, hidden=256):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=hidden,
                                      init_std=0.5))
    dpo = DPO(policy, config)
    held = 0
    while len(batch := dpo.prepare(*groups(policy, rng, n=1))) == 0:
        assert dpo.holding()["pairs_held"] < config.set_pairs
        held += 1
    return dpo, batch, held


def test_a_round_collects_a_set_trains_it_and_refreshes_the_reference():
    """set_pairs 24, groups of 4 bandit episodes, every 3rd group with pairs held out: batches
    are empty until 24 training pairs are held; one update with the default lr, epochs, β and
    NLL weight (policy 2×256, as on push-v3) moves the margin by > 0.3 nat per call and raises
    the winners' log-prob, where the old settings (lr 1e-5, 4 steps, β 0.1) moved it by < 0.1;
    it predicts held-out pairs, drifts little, and leaves the reference equal to the policy."""
    config = DPOConfig(group_size=4, set_pairs=24, held_out_every=3)
    dpo, batch, held = one_round(config)
    assert held >= 3 and len(batch.pairs) >= 24 and len(batch.held_out) > 0
    m = dpo.update(batch)
    assert m["margin_gain"] > 0.3 and m["dpo_loss"] < 0.6 and m["pair_accuracy"] > 0.9, m
    assert m["heldout_pair_accuracy"] > 0.9 and m["same_outcome_share"] == 0.0, m
    assert 0 < m["drift_kl"] < 0.1 and m["winner_logp_change"] > 0, m  # 1e-4: 0.38
    for a, b in zip(dpo.reference.parameters(), dpo.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert dpo.holding() == {"pairs_held": 0.0, "heldout_pairs_held": 0.0, "groups_seen": 0.0}
    old = dataclasses.replace(config, lr=1e-5, epochs=4, beta=0.1, nll_coef=0.0)
    dpo, batch, _ = one_round(old)
    assert dpo.update(batch)["margin_gain"] < 0.1


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="group_size"):
        DPOConfig(group_size=1)
