"""DPO: the loss by hand, pairs from rankings, and updates raise the preferred log-prob margin."""

import math

import numpy as np
import pytest
import torch

from algorithms.dpo import DPO, DPOConfig, dpo_loss, episode_logp, preference_pairs
from algorithms.policy import ChunkPolicy, PolicyConfig
from tests.chunks import bandit_chunk


def test_dpo_loss_by_hand():
    w, lo = torch.tensor([-1.0, 0.5]), torch.tensor([-2.0, 1.0])
    rw, rl = torch.tensor([-1.5, 0.0]), torch.tensor([-1.0, 0.0])
    beta = 0.5
    logits = [beta * ((-1.0 + 1.5) - (-2.0 + 1.0)), beta * ((0.5 - 0.0) - (1.0 - 0.0))]
    want = np.mean([-math.log(1 / (1 + math.exp(-x))) for x in logits])
    assert float(dpo_loss(w, lo, rw, rl, beta)) == pytest.approx(want, rel=1e-6)
    same = torch.zeros(3)
    assert float(dpo_loss(same, same, same, same, 1.0)) == pytest.approx(math.log(2))


def test_preference_pairs_from_a_ranking():
    assert preference_pairs([1.0, 0.0, 1.0, 0.5]) == [(0, 1), (0, 3), (2, 1), (2, 3), (3, 1)]
    assert preference_pairs([1.0, 1.0]) == []


def groups(policy, rng, n=8, size=4):
    """Bandit episodes in groups of one context each; reward 1 when the chunk's signs match."""
    chunks = []
    for g in range(n):
        ctx = rng.choice([-1.0, 1.0])
        chunks += [bandit_chunk(policy, ctx, f"{g}-{e}", 1.0, 0.0, group=f"b/{g}")
                   for e in range(size)]
    return chunks, [c.reward for c in chunks]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small nets on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def test_dpo_raises_the_preferred_margin_and_success():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=32,
                                      init_std=0.5))
    dpo = DPO(policy, DPOConfig(beta=0.5, group_size=4, lr=3e-3, epochs=4))
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


def test_equal_returns_make_no_pairs_and_no_update():
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(obs_dim=4, action_dim=1, horizon=2, hidden=8))
    dpo = DPO(policy, DPOConfig(group_size=2))
    chunks = [bandit_chunk(policy, 1.0, f"e{i}", 1.0, 1.0, group="b/0") for i in range(2)]
    before = [p.clone() for p in policy.actor.parameters()]
    out = dpo.update(dpo.prepare(chunks, [c.reward for c in chunks]))
    assert out["pairs"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.actor.parameters(), strict=True))


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="group_size"):
        DPOConfig(group_size=1)
