"""The VLA adapter (`policy.kind=hf`, issue 16) on a tiny Llava the test builds with random
weights and saves with `save_pretrained`, loaded as a user's checkpoint would be: its own
processor and tokenizer, the PushT camera and an instruction in, action tokens out with a KV
cache; a console correction becomes the instruction of the next call, recorded per call, and the
learner scores each executed chunk with the instruction that was actually used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")  # the hf extra; tests/test_dependencies.py checks the error

from actors.control import RobotControl
from actors.robots.pusht import PushTConfig, PushTRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.call_data import aux_rows, aux_spec, log_prob
from algorithms.factory import make_policy
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.hf_adapter import HFVLAPolicy
from algorithms.policy import PolicyConfig, input_keys, policy_input
from algorithms.ppo import PPOConfig
from bench.vla_decode import build_tiny_vlm
from buffers.codec import decode_chunk
from fleet.remote.inference import batched_act
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig
from tests.fakes import ListOutbox, ListWeights


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny Llava (CLIP tower on 32x32, 16 image tokens, Llama LM of width 32) and a bare
    Llama LM with the same tokenizer, each a local `save_pretrained` directory; weights of std
    0.2, not 0.02, so that a different image or instruction moves every log-probability by
    well over the tolerance of the equalities below."""
    root = tmp_path_factory.mktemp("hf")
    build_tiny_vlm(root / "vlm", init_std=0.2)
    build_tiny_vlm(root / "lm", vision=False, init_std=0.2)
    return root


def vla(checkpoints, image: bool = True, **change) -> HFVLAPolicy:
    cfg = dict(kind="hf", path=str(checkpoints / ("vlm" if image else "lm")), obs_dim=2,
               action_dim=2, horizon=2, bins=16, hidden=16, image_key="pixels" if image else "",
               instruction="push the T block home", params={"instruction_tokens": 8})
    policy = make_policy(PolicyConfig(**{**cfg, **change}))
    assert isinstance(policy, HFVLAPolicy)
    torch.manual_seed(0)  # the worker's calls sample from torch's global generator
    return policy


def pusht(steps: int = 12) -> PushTRobot:
    return PushTRobot(PushTConfig("pusht", max_episode_steps=steps))


def rows_of(policy, obs) -> torch.Tensor:
    return policy_input({k: np.asarray(v)[None] for k, v in obs.items()},
                        input_keys(policy.config))


CORRECTION = "slow down and go right"


class Corrected(PushTRobot):
    """PushT (10 steps) whose operator says CORRECTION after the fourth step, as the console's
    `say` does from its thread: with H = 2, from the third policy call on."""

    def __init__(self, control: RobotControl) -> None:
        super().__init__(PushTConfig("pusht", max_episode_steps=10))
        self.control, self.steps = control, 0

    def send_action(self, action):
        self.steps += 1
        if self.steps == 4:
            self.control.command({"cmd": "say", "text": CORRECTION})
        return super().send_action(action)


@pytest.mark.parametrize("image", [True, False])
def test_acts_from_the_camera_and_the_instruction_through_the_models_own_processor(
        checkpoints, image):
    policy = vla(checkpoints, image)
    obs = pusht().reset(seed=1)
    seen = obs if image else obs["state"]
    assert policy.takes_obs_dict is image
    chunk, logp, aux = policy.act(seen, generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (2, 2) and np.isfinite(logp)
    words = policy.tokenizer("push the T block home", add_special_tokens=False)["input_ids"]
    assert aux["instruction"].tolist() == words + [-1] * (8 - len(words))
    rows = rows_of(policy, obs) if image else torch.as_tensor(obs["state"])[None]
    ids = torch.as_tensor(aux["instruction"])[None]
    with torch.no_grad():
        again = policy.log_prob(rows, torch.as_tensor(chunk)[None], aux={"instruction": ids})
        assert float(again) == pytest.approx(logp, abs=1e-4)  # PPO's behaviour log-prob
        # the KV cache changes nothing but the time: same tokens, same log-probabilities
        cached = policy.decode(rows, ids, deterministic=True)
        uncached = policy.decode(rows, ids, deterministic=True, use_cache=False)
        assert torch.equal(cached[0], uncached[0])
        assert torch.allclose(cached[1], uncached[1], atol=1e-4)
        if image:  # the camera is an input: other pixels, other probabilities
            other = rows.clone()
            other[:, 2:] = 255 - other[:, 2:]
            moved = policy.log_prob(other, torch.as_tensor(chunk)[None], aux={"instruction": ids})
            assert abs(float(moved) - logp) > 1e-3


def test_a_console_correction_is_acted_on_and_the_learner_scores_with_the_recorded_one(
        checkpoints):
    """A real worker on PushT with a console control: a correction arrives mid-episode (as
    the console's `say` does), the following calls use it and record it; the learner's
    log_prob from the record equals every call's acting-time logp, which the instruction the
    policy holds at learning time would not give for the calls before the correction."""
    policy = vla(checkpoints)
    control = RobotControl(action_dim=2)
    out = ListOutbox()
    worker = RobotWorker(Corrected(control), policy, out, ListWeights(),
                         WorkerConfig(horizon=2, calls_per_chunk=2), control=control)
    worker.run_episode(seed=0, group="pusht/0")
    chunks = [decode_chunk(r) for r in out.records]
    aux = aux_rows(chunks, aux_spec(policy))
    assert aux is not None
    ids = aux["instruction"]
    first = policy.tokenizer("push the T block home", add_special_tokens=False)["input_ids"]
    later = policy.tokenizer(CORRECTION, add_special_tokens=False)["input_ids"]
    assert [row[row >= 0].tolist() for row in ids] == [first] * 2 + [later] * 3
    assert policy.instruction == CORRECTION
    rows = torch.cat([policy_input(c.obs, input_keys(policy.config))[: c.num_steps: c.horizon]
                      for c in chunks])
    acts = torch.as_tensor(np.concatenate([c.policy_action for c in chunks]))
    behaviour = np.concatenate([c.logp for c in chunks])
    with torch.no_grad():  # one batch: calls with instructions of different lengths
        recorded = log_prob(policy, rows, acts, aux).numpy()
        current = policy.log_prob(rows, acts).numpy()
    np.testing.assert_allclose(recorded, behaviour, atol=1e-4)
    assert np.abs(current[:2] - behaviour[:2]).min() > 1e-3  # the current one is another's
    np.testing.assert_allclose(current[2:], behaviour[2:], atol=1e-4)
    worker.control = RobotControl(action_dim=2)  # a new episode has no correction
    worker.run_episode(seed=1, group="pusht/0")  # another start: the group's returns differ
    assert policy.instruction == "push the T block home"
    # GRPO hands the recorded instructions back too: its proximal log-probs are the robot's
    both = [decode_chunk(r) for r in out.records]
    batch = GRPO(policy, GRPOConfig(group_size=2, min_groups=1)).prepare(
        both, [c.reward for c in both])
    assert len(batch) == 10 and batch.aux is not None
    np.testing.assert_allclose(batch.prox_logp.numpy(), batch.behaviour_logp.numpy(), atol=1e-4)
    # and so does the inference server's answer (one `act` per request for this policy)
    obs = [pusht().reset(seed=s) for s in (2, 3)]
    _, logps, answered = batched_act(policy, obs)
    assert answered["instruction"].shape == (2, 8) and np.isfinite(logps).all()


def test_ppo_post_trains_the_vla_on_pusht_pixels(checkpoints, tmp_path):
    """The serial loop (PushT robot, buffer on disk, learner) with PPO: the learner's
    log-probabilities of fresh data, from the recorded instructions, are the robot's (importance
    weight 1), and the language model's and vision tower's weights move."""
    cfg = PolicyConfig(kind="hf", path=str(checkpoints / "vlm"), obs_dim=2, action_dim=2,
                       horizon=2, bins=16, hidden=16, image_key="pixels",
                       instruction="push the T block home", params={"instruction_tokens": 8})
    parts = LearnerParts(cfg, None, AlgorithmConfig(ppo=PPOConfig(minibatch=16, actor_lr=1e-3,
                                                                  epochs=1)),
                         RewardConfig("env"), LearnerConfig(batch_calls=16, critic_warmup=0,
                                                            max_wait_s=1, device="cpu"),
                         tmp_path / "checkpoints")
    torch.manual_seed(0)
    run = SerialRun(pusht(16), parts, WorkerConfig(horizon=2, calls_per_chunk=4), tmp_path)
    before = {k: v.copy() for k, v in run.learner.policy.policy_state().items()}
    run.train(env_steps=32)
    assert run.learner.policy_version >= 1
    after = run.learner.policy.policy_state()
    moved = {k.split(".")[2] for k in before
             if k.startswith("actor.model.") and not np.array_equal(before[k], after[k])}
    assert {"language_model", "vision_tower"} <= moved, moved
    assert run.metrics[0]["is_weight"] == pytest.approx(1.0, abs=1e-3)
    run.close()


def test_checkpoints_that_cannot_work_and_unsupported_combinations_are_refused(checkpoints):
    from fleet.config import ConfigError, load_config

    with pytest.raises(ValueError, match="special token"):
        vla(checkpoints, bins=319)  # would cover <pad> <s> </s>
    with pytest.raises(ValueError, match=r"policy\.path"):
        make_policy(PolicyConfig(kind="hf"))
    with pytest.raises(ValueError, match="image_size"):
        vla(checkpoints, image_size=64).act(pusht().reset(seed=0))
    from fleet.run.pretrain import pretrained_base

    cfg = load_config(["robot=pusht", "policy=hf", "policy.image_key=pixels",
                       f"policy.path={checkpoints / 'nothing'}"])
    with pytest.raises(ConfigError, match=r"policy\.path=.*nothing.* is not a directory"):
        pretrained_base(cfg)  # before any demos are collected
    from fleet.cli import main  # the same error through `fleet train`: exit 2, no run left

    runs = checkpoints.parent / "bad-path-runs"
    assert main(["train", "robot=pusht", "policy=hf", "policy.image_key=pixels",
                 f"policy.path={checkpoints / 'nothing'}", f"run.dir={runs}",
                 "run.name=bad-path"]) == 2
    assert not (runs / "bad-path").exists()
    for override in ("algorithm=grpo", "algorithm=dpo", "fleet.inference=server"):
        assert load_config(["policy=hf", override]).policy.kind == "hf"  # they hand aux back
    with pytest.raises(ConfigError, match=r"policy\.kind=hf has no mean_chunk"):
        load_config(["policy=hf", "algorithm=td"])


def test_corrections_reach_the_inference_server_with_each_call(checkpoints, local_ray):
    """fleet.inference=server: the robot's worker acts through a real `InferenceServer` actor;
    its corrections travel with each call, so the server's policy answers with the robot's
    instruction and records it."""
    from fleet.remote.inference import RemotePolicy, inference_server

    cfg = PolicyConfig(kind="hf", path=str(checkpoints / "vlm"), obs_dim=2, action_dim=2,
                       horizon=2, bins=16, hidden=16, image_key="pixels",
                       instruction="push the T block home", params={"instruction_tokens": 8})
    server = inference_server(cfg, max_batch=1)
    policy = make_policy(cfg)
    remote = RemotePolicy(server, 0, policy.takes_obs_dict, policy.takes_corrections,
                          policy.instruction)
    control = RobotControl(action_dim=2)
    out = ListOutbox()
    worker = RobotWorker(Corrected(control), remote, out, remote,
                         WorkerConfig(horizon=2, calls_per_chunk=2), control=control)
    worker.run_episode(seed=0)
    chunks = [decode_chunk(r) for r in out.records]
    aux = aux_rows(chunks, aux_spec(policy))
    assert aux is not None
    first = policy.tokenizer("push the T block home", add_special_tokens=False)["input_ids"]
    later = policy.tokenizer(CORRECTION, add_special_tokens=False)["input_ids"]
    assert [r[r >= 0].tolist() for r in aux["instruction"]] == [first] * 2 + [later] * 3
    rows = torch.cat([policy_input(c.obs, input_keys(cfg))[: c.num_steps: c.horizon]
                      for c in chunks])
    acts = torch.as_tensor(np.concatenate([c.policy_action for c in chunks]))
    with torch.no_grad():  # the server's copy has the same weights (both from the checkpoint)
        again = log_prob(policy, rows, acts, aux).numpy()
    np.testing.assert_allclose(again, np.concatenate([c.logp for c in chunks]), atol=1e-4)
