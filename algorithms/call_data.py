"""Per-call data (`aux`): what a policy's likelihood needs besides the chunk, carried through
the rollout record from the robot's `act` to the learner's `log_prob`.

Example (a robot's side, then an algorithm's):

    chunk, logp, aux = split_act(policy.act(obs))           # aux {} for most policies
    aux = aux_rows(chunks, aux_spec(policy), device)        # {name: [N, ...]}, N calls, or None
    logp = log_prob(policy, rows[idx], chunk_rows[idx], aux, idx)

A policy declares its per-call data as `aux_spec`: `{name: (shape, dtype)}` of one call (dtype
float32, int32 or int64, the record's allowlist `buffers.schema.AUX_DTYPES`); its `act` then
returns `(chunk, logp, aux)` with those arrays, the robot stores them per call in
`RolloutChunk.aux` ([K, *shape]), and algorithms pass them back as `log_prob(rows, chunks,
aux=...)`. A policy without `aux_spec` keeps the two-argument `log_prob` and is never passed
`aux`, so plug-ins written before it need no change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from buffers.records import RolloutChunk

AuxSpec = Mapping[str, tuple[tuple[int, ...], str]]


def aux_spec(policy: Any) -> AuxSpec:
    """The policy's declared per-call data; empty for a policy that has none."""
    spec: AuxSpec = getattr(policy, "aux_spec", {})
    return spec


def split_act(out: Sequence[Any]) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """`policy.act(...)`'s answer as (chunk [H, A], log-prob, aux): a policy without per-call
    data answers `(chunk, logp)`."""
    if len(out) == 2:
        return out[0], out[1], {}
    chunk, logp, aux = out
    return chunk, logp, dict(aux)


def aux_rows(chunks: Sequence[RolloutChunk], spec: AuxSpec,
             device: torch.device | str | None = None) -> dict[str, torch.Tensor] | None:
    """Every call's per-call data, concatenated in chunk order: {name: [N, *shape]}; None when
    the policy declares none. A chunk whose `aux` does not match the spec (a record from
    another policy, or from before `aux`) is refused, naming it."""
    if not spec:
        return None
    out: dict[str, list[np.ndarray]] = {name: [] for name in spec}
    for c in chunks:
        if c.aux.keys() != spec.keys():
            raise ValueError(f"chunk {c.key} carries aux {sorted(c.aux)}, the policy needs "
                             f"{sorted(spec)} (a record from another policy kind?)")
        for name, (shape, dtype) in spec.items():
            a = c.aux[name]
            if a.shape != (c.num_calls, *shape) or a.dtype != np.dtype(dtype):
                raise ValueError(f"chunk {c.key}: aux.{name} is {a.dtype} {a.shape}, the policy "
                                 f"needs {dtype} {(c.num_calls, *shape)}")
            out[name].append(a)
    return {k: torch.as_tensor(np.concatenate(v), device=device) for k, v in out.items()}


def log_prob(policy: Any, obs: torch.Tensor, chunk: torch.Tensor,
             aux: Mapping[str, torch.Tensor] | None, idx: torch.Tensor | None = None
             ) -> torch.Tensor:
    """`policy.log_prob` of rows `idx` (all when None) of a batch, with their per-call data
    where the policy declares some."""
    if aux is None:
        return policy.log_prob(obs, chunk)
    rows = {k: v if idx is None else v[idx] for k, v in aux.items()}
    return policy.log_prob(obs, chunk, aux=rows)
