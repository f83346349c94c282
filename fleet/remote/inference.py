"""Shared inference (`fleet.inference=server`): one batched forward for many robots.

Example:

    chunks, logp, aux = batched_act(policy, np.stack([obs_a, obs_b]))   # [B, H, A], [B], {}

`batched_act` answers B robots' `act` requests with one forward pass (a state-only
`ChunkPolicy`, or any policy with `act_batch`, such as the token policy), or one `act` per
request for the rest (image policies, plug-ins); each row equals what `policy.act(obs_row)`
returns (same mean, same log-prob of the sampled chunk, same per-call data `aux`: the flow
policy's denoising path, `algorithms.call_data`), so every policy kind is served.
`InferenceServer` (a Ray actor) gathers robots' requests for up to `max_wait_s` or until
`max_batch`, answers them with one `batched_act`; `RemotePolicy` is the worker's `Policy` over
it, and its `WeightSource` too.

Weights: the server, not the robots, adopts the learner's publications. A background task asks
the `WeightHub` every `poll_s` (the asyncio loop runs it between batches, so every batch is
answered by one `policy_version`), and each answer carries that version. A robot stamps each
rollout chunk with the server's version as of the end of its previous chunk: every call in the
chunk was answered by that version or a newer one, so the stamp is a lower bound and staleness
is never under-counted (the behaviour log-prob of each call is exact either way).

The hot path is one Ray call per policy call (a chunk of H actions); robots load no weights.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import torch

from algorithms.call_data import split_act
from algorithms.policy import ChunkPolicy

Aux = dict[str, np.ndarray]  # per-call data of B calls: {name: [B, ...]} ({} for most policies)


@torch.no_grad()
def batched_act(policy: Any, obs: np.ndarray | list[Any], deterministic: bool = False,
                generator: torch.Generator | None = None,
                ) -> tuple[np.ndarray, np.ndarray, Aux]:
    """obs [B, D] (or B observation dicts) -> (chunks [B, H, A], log-probs [B], aux), answered
    the fastest way the policy allows: its own `act_batch(obs [B, D], deterministic,
    generator)` (the token policy decodes B robots at once; a policy with per-call data
    returns it third, `{name: [B, ...]}`), one forward pass of a state-only `ChunkPolicy`, or
    else one `act` per row (any policy: an image policy, a plug-in). No critic: robots act
    with the actor alone."""
    if isinstance(obs, list):  # observation dicts
        return _per_row(policy, obs, deterministic)
    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"batched_act needs obs [B, D], got shape {tuple(x.shape)}")
    if type(policy) is not ChunkPolicy or policy.takes_obs_dict:
        if hasattr(policy, "act_batch"):
            out = policy.act_batch(x, deterministic, generator)
            aux = {k: v.cpu().numpy() for k, v in (out[2] if len(out) > 2 else {}).items()}
            return (out[0].cpu().numpy().astype(np.float32),
                    out[1].cpu().numpy().astype(np.float32), aux)
        return _per_row(policy, list(np.asarray(obs)), deterministic)
    device = policy.log_std.device  # a GPU server keeps its policy there
    x = x.to(device)
    mean = policy.mean_chunk(x)
    std = policy.log_std.exp()
    if deterministic:
        sample = mean
    else:
        sample = mean + std * torch.randn(mean.shape, generator=generator).to(device)
    logp = torch.distributions.Normal(mean, std).log_prob(sample).sum(-1)
    chunks = sample.reshape(x.shape[0], policy.config.horizon, policy.config.action_dim)
    return chunks.cpu().numpy().astype(np.float32), logp.cpu().numpy().astype(np.float32), {}


def _per_row(policy: Any, obs: list[Any], deterministic: bool
             ) -> tuple[np.ndarray, np.ndarray, Aux]:
    """One `policy.act` per observation: correct for every policy, batched for none."""
    answers = [split_act(policy.act(o, deterministic=deterministic)) for o in obs]
    return (np.stack([np.asarray(c, np.float32) for c, _, _ in answers]),
            np.array([lp for _, lp, _ in answers], np.float32),
            {k: np.stack([a[k] for _, _, a in answers]) for k in answers[0][2]})


class InferenceServerImpl:
    """Batches concurrent `act` calls (run as an async Ray actor: `InferenceServer`).

    `hub`: a `WeightHub` actor to adopt weights from (None: only `load_policy_state`);
    `state`/`policy_version`: the weights to start with.
    """

    def __init__(self, policy_config: Any, max_batch: int = 64, max_wait_s: float = 0.002,
                 hub: Any = None, state: dict[str, np.ndarray] | None = None,
                 policy_version: int = 0, device: str = "cpu", poll_s: float = 0.05) -> None:
        from algorithms.factory import make_policy

        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("inference server: max_batch must be >= 1 and max_wait_s >= 0")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(1)  # it shares the machine with robots and the learner
        self.policy = make_policy(policy_config)
        if state is not None:
            self.policy.load_policy_state(state)
        self.policy.to(device)
        self.policy_version = policy_version
        self.hub, self.poll_s = hub, poll_s
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        # (observation, deterministic, the robot's instruction or None, the answer's future)
        self._pending: list[tuple[Any, bool, str | None, asyncio.Future[Any]]] = []
        self._flush: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.batches = 0
        self.requests = 0
        self.adopted = 0
        self.adopt_latency_s = float("nan")

    def load_policy_state(self, state: dict[str, np.ndarray],
                          policy_version: int | None = None) -> None:
        self.policy.load_policy_state(state)
        if policy_version is not None:
            self.policy_version = policy_version

    async def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool = False,
                  instruction: str | None = None) -> tuple[np.ndarray, float, int, Aux]:
        """obs [D] (the observation dict for a policy that `takes_obs_dict`) -> (chunk [H, A],
        log-prob, policy_version that answered, this call's per-call data {name: [...]}).
        `instruction`: the robot's (its console corrections) for a policy that
        `takes_corrections`, set before its call is answered."""
        if self.hub is not None and self._watch is None:
            self._watch = asyncio.ensure_future(self._adopt_weights())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        row = obs if isinstance(obs, dict) else np.asarray(obs, np.float32)
        self._pending.append((row, deterministic, instruction, fut))
        if len(self._pending) >= self.max_batch:
            self._run()
        elif self._flush is None:
            self._flush = asyncio.ensure_future(self._later())
        result: tuple[np.ndarray, float, int, Aux] = await fut
        return result

    async def _adopt_weights(self) -> None:
        """Ask the hub for newer weights every `poll_s`, forever (between batches: one thread)."""
        while True:
            reply = await self.hub.poll.remote(self.policy_version)
            if reply is not None and reply[0] > self.policy_version:
                version, parts, published_at = reply
                state: dict[str, np.ndarray] = {}
                for part in await asyncio.gather(*parts):
                    state.update(part)
                self.policy.load_policy_state(state)
                self.policy_version = version
                self.adopted += 1
                self.adopt_latency_s = time.time() - published_at
            await asyncio.sleep(self.poll_s)

    async def _later(self) -> None:
        await asyncio.sleep(self.max_wait_s)
        self._flush = None
        self._run()

    def _run(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.batches += 1
        self.requests += len(batch)
        for det, said in dict.fromkeys((b[1], b[2]) for b in batch):
            rows = [b for b in batch if b[1] is det and b[2] == said]
            if said is not None:  # robots' own instructions (corrections) differ: one at a time
                self.policy.set_instruction(said)
            obs = [r[0] for r in rows]
            chunks, logp, aux = batched_act(
                self.policy, obs if isinstance(obs[0], dict) else np.stack(obs), det)
            for i, (_, _, _, fut) in enumerate(rows):
                if not fut.done():
                    fut.set_result((chunks[i], float(logp[i]), self.policy_version,
                                    {k: v[i] for k, v in aux.items()}))

    def stats(self) -> dict[str, float]:
        return {"batches": self.batches, "requests": self.requests,
                "mean_batch": self.requests / max(self.batches, 1),
                "policy_version": self.policy_version, "adopted": self.adopted,
                "adopt_latency_s": self.adopt_latency_s}


def inference_server(policy_config: Any, num_gpus: float = 0.0, **kw: Any) -> Any:
    """Start an `InferenceServer` actor (async: many robots' requests in flight at once).
    With `num_gpus` > 0 it asks Ray for a GPU and runs its policy there."""
    import ray

    remote: Any = ray.remote  # Ray's stubs know no actor options
    cls = remote(num_cpus=0, num_gpus=num_gpus, max_concurrency=1000)(InferenceServerImpl)
    kw.setdefault("device", "cuda" if num_gpus > 0 else "cpu")
    return cls.remote(policy_config, **kw)


class RemotePolicy:
    """The worker's `Policy` over an `InferenceServer`, and its `WeightSource`: the robot loop
    is unchanged. `poll` reports the newest server version this robot has been answered by
    (with no weights: the server holds them), so chunks carry the server's policy_version."""

    def __init__(self, server: Any, policy_version: int = 0, takes_obs_dict: bool = False,
                 takes_corrections: bool = False, instruction: str = "") -> None:
        self.server = server
        self.policy_version = policy_version
        self.takes_obs_dict = takes_obs_dict  # send the whole observation (an image policy)
        self.takes_corrections = takes_corrections  # send this robot's instruction with each call
        self.instruction = instruction
        self.adopt_latency_s = float("nan")  # the server's to measure (`stats`)

    def act(self, obs: Any, deterministic: bool = False
            ) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, Aux]:
        """(chunk, log-prob), or (chunk, log-prob, aux) for a policy with per-call data."""
        import ray

        said = (self.instruction,) if self.takes_corrections else ()
        chunk, logp, version, aux = ray.get(self.server.act.remote(obs, deterministic, *said))
        if version > self.policy_version:
            self.policy_version = version
        return (chunk, logp, aux) if aux else (chunk, logp)

    def set_instruction(self, text: str) -> None:
        """This robot's instruction (the worker's, from console corrections), sent per call."""
        self.instruction = text

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        if self.policy_version > have_version:
            return self.policy_version, {}
        return None

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        pass  # the server adopts weights; robots only report the version they acted with
