"""Draw batches from a `ReplayBuffer` as a `buffers.sampling.Sampling` spec declares.

Example:

    sampler = Sampler(buffer, on_policy(max_staleness=1, max_uses=4, batch_size=256, horizon=8))
    batch = sampler.sample(policy_version=7)     # None: the rate limit or the data says wait
    if batch is not None:
        obs = torch.from_numpy(batch.obs["state"])   # [B, H + 1, D], on the learner's side
        sampler.update_priorities(batch.cursor, td_errors)   # prioritized specs only

Batches are numpy arrays, not torch tensors: `buffers` is the leaf package and imports no torch;
`torch.from_numpy` shares their memory, so the learner converts them without a copy. The sampler
keeps the buffer's index as numpy columns (`_Table`) and catches up with new records on each
call; records are decoded through the buffer's LRU cache.

Not on `fleet train`'s path: the learner takes whole rollout chunks, each once, from
`buffers.feed.ChunkFeed` (PPO's GAE runs over a chunk's calls, GRPO and DPO need every call of
every episode of a group, rewards come from the reward model as the learner scores). The
staleness rule is the same function for both (`buffers.sampling.oldest_usable`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from buffers.log import CorruptLogError
from buffers.records import RolloutChunk
from buffers.sampling import Sampling, oldest_usable, split
from buffers.store import RecordMeta, ReplayBuffer
from buffers.table import Table

Picked = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, weights, group number per row


@dataclasses.dataclass(frozen=True)
class Batch:
    """B samples of H steps each (b indexes samples, t steps within a sample).

    obs[name] [B, H + 1, ...]: obs[:, t] is seen before action[:, t].
    action [B, H, A]; reward, success, intervened [B, H].
    mask [B, H]: True on real steps; a window that runs past its record's end is padded (the
      last observation repeated, zeros elsewhere) and masked.
    terminal [B, H]: the episode ended in success or failure after step t (no bootstrap);
    truncated [B, H]: it was cut off after step t (bootstrap from obs[:, t + 1]).
    cursor, start, policy_version [B]: which record, from which step, acted by which version.
    weight [B]: importance weight (prioritized; else ones). group [B]: rows with the same number
      form one group (groups) or pair (pairs); -1 otherwise.
    labelled [B]: the reward came from the spec's reward side column (False: no label yet, so
      reward is zeros there).
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    intervened: np.ndarray
    mask: np.ndarray
    terminal: np.ndarray
    truncated: np.ndarray
    cursor: np.ndarray
    start: np.ndarray
    policy_version: np.ndarray
    weight: np.ndarray
    group: np.ndarray
    labelled: np.ndarray

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        fields: dict[str, object] = {}
        offset = 0
        groups = []
        for b in batches:  # keep group numbers distinct across parts
            groups.append(np.where(b.group >= 0, b.group + offset, -1))
            offset += int(b.group.max(initial=-1)) + 1
        for f in dataclasses.fields(Batch):
            if f.name == "obs":
                fields["obs"] = {k: np.concatenate([b.obs[k] for b in batches])
                                 for k in batches[0].obs}
            elif f.name != "group":
                fields[f.name] = np.concatenate([getattr(b, f.name) for b in batches])
        return Batch(group=np.concatenate(groups), **fields)  # type: ignore[arg-type]


class Sampler:
    def __init__(self, buffer: ReplayBuffer, spec: Sampling, seed: int = 0) -> None:
        self.buffer, self.spec = buffer, spec
        self.rng = np.random.default_rng(seed)
        self.table = Table()
        self.samples = 0  # records drawn so far, for the rate limit
        self._start_end = buffer.end
        self._preloaded = min(len(buffer), spec.rate.min_size)  # see `allowed`
        self.parts = [Sampler(buffer, dataclasses.replace(part, batch_size=n), seed + 1 + i)
                      for i, ((part, _), n) in enumerate(zip(spec.parts, split(spec)
                                                             if spec.parts else [], strict=True))]

    def allowed(self, n: int) -> bool:
        """May `n` more records be drawn now? Reverb's rule: samples may run ahead of
        `samples_per_insert * (inserts - min_size)` by at most `error_buffer`. Records already
        stored when the sampler was made count towards `min_size` only."""
        rate = self.spec.rate
        if len(self.buffer) < rate.min_size:
            return False
        if rate.samples_per_insert is None:
            return True
        inserts = self.buffer.end - self._start_end + self._preloaded
        budget = rate.samples_per_insert * (inserts - rate.min_size) + rate.error_buffer
        return self.samples + n <= budget

    def sample(self, policy_version: int | None = None) -> Batch | None:
        """A batch, or None when the rate limit, `min_size` or the data (too few eligible
        records) says to wait. `policy_version` is the learner's, for `max_staleness`."""
        if not self.allowed(self.spec.batch_size):
            return None
        drawn = self._draw(policy_version)
        if drawn is None:
            return None
        batches = [part._batch(pick, chunks) for part, pick, chunks in drawn]
        self.samples += self.spec.batch_size
        return batches[0] if len(batches) == 1 else Batch.concat(batches)

    def _draw(self, version: int | None,
              ) -> list[tuple[Sampler, Picked, list[RolloutChunk]]] | None:
        """Pick rows for every part and decode them; nothing is counted as used until all
        parts succeed, so a part that must wait costs the others nothing."""
        for _ in range(3):  # a record deleted or damaged meanwhile: pick again
            drawn = []
            for part in self.parts or [self]:
                pick = part._pick(version)
                if pick is None:
                    return None
                chunks = part._load(pick)
                if chunks is None:
                    break
                drawn.append((part, pick, chunks))
            else:
                return drawn
        return None

    def update_priorities(self, cursors: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of the records at `cursors` (e.g. |TD error|), for prioritized
        specs, including prioritized parts of a mixture."""
        for s in self.parts or [self]:
            if s.spec.kind == "prioritized":
                s.table.set_priorities(np.asarray(cursors), np.asarray(priorities, np.float64))

    def _eligible(self, version: int | None) -> np.ndarray:
        t, s = self.table, self.spec
        t.sync(self.buffer)
        ok = t.col("alive").copy()
        if s.max_staleness is not None:
            newest = int(t.col("version").max(initial=0)) if version is None else version
            ok &= t.col("version") >= oldest_usable(newest, s.max_staleness)
        if s.max_uses is not None:
            ok &= t.col("uses") < s.max_uses
        if s.kind == "demonstrations":
            ok &= t.col("intervened")
        return np.flatnonzero(ok)

    def _pick(self, version: int | None) -> Picked | None:
        rows = self._eligible(version)
        s, n = self.spec, self.spec.batch_size
        if len(rows) == 0 or (s.max_uses is not None and len(rows) < n):
            return None
        if s.kind in ("groups", "pairs"):
            return self._pick_grouped(rows)
        ones = np.ones(n, np.float32)
        if s.kind == "prioritized":
            p = self.table.col("priority")[rows] ** s.alpha
            p /= p.sum()
            i = self.rng.choice(len(rows), n, p=p)
            w = (len(rows) * p[i]) ** -s.beta
            return rows[i], (w / w.max()).astype(np.float32), -np.ones(n, np.int64)
        p = None
        if s.kind == "task_balanced":
            tasks = self.table.col("task")[rows]
            counts = np.bincount(tasks)
            p = 1.0 / (np.count_nonzero(counts) * counts[tasks])
        chosen = self.rng.choice(rows, n, replace=s.max_uses is None, p=p)
        return chosen, ones, -np.ones(n, np.int64)

    def _pick_grouped(self, rows: np.ndarray) -> Picked | None:
        """Groups: G finished episodes of one group; pairs: a success and a non-success."""
        t, s = self.table, self.spec
        by_group: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        outcome = t.outcomes
        for r, g, e in zip(rows, t.col("group")[rows], t.col("episode")[rows], strict=True):
            if g >= 0 and outcome[e] > 0:
                by_group[int(g)][int(e)].append(int(r))
        if s.kind == "groups":
            fits = [g for g, eps in by_group.items() if len(eps) >= s.group_size]
            width = s.group_size
        else:
            fits = [g for g, eps in by_group.items()
                    if len({outcome[e] for e in eps}) == 2]
            width = 2
        if not fits:
            return None
        count = s.batch_size // width
        chosen = self.rng.choice(fits, count, replace=len(fits) < count)
        out = []
        for g in chosen:
            eps = by_group[int(g)]
            if s.kind == "groups":
                picked = list(self.rng.choice(list(eps), width, replace=False))
            else:  # the success first, then the failure
                picked = [self.rng.choice([e for e in eps if outcome[e] == k]) for k in (1, 2)]
            out += [self.rng.choice(eps[int(e)]) for e in picked]
        number = np.repeat(np.arange(count), width)
        return np.array(out, np.int64), np.ones(len(out), np.float32), number

    def _load(self, pick: Picked) -> list[RolloutChunk] | None:
        """Decoded records of `pick`, or None (and the bad ones marked) if any is gone."""
        metas: list[RecordMeta | None] = [self.buffer.at(int(c))
                                          for c in self.table.col("cursor")[pick[0]]]
        chunks = []
        for row, meta in zip(pick[0], metas, strict=True):
            try:
                if meta is None:
                    raise KeyError(row)
                chunks.append(self.buffer.get(meta))
            except (KeyError, CorruptLogError):
                self.table.col("alive")[row] = False
        return chunks if len(chunks) == len(metas) else None

    def _batch(self, pick: Picked, chunks: list[RolloutChunk]) -> Batch:
        rows, weight, group = pick
        np.add.at(self.table.col("uses"), rows, 1)
        return assemble(chunks, self.spec, self.rng, self.buffer,
                        cursor=self.table.col("cursor")[rows], weight=weight, group=group)


def assemble(chunks: list[RolloutChunk], spec: Sampling, rng: np.random.Generator,
             buffer: ReplayBuffer, cursor: np.ndarray, weight: np.ndarray,
             group: np.ndarray) -> Batch:
    """Cut one H-step window out of each chunk, padding and masking past its end."""
    B, H = len(chunks), spec.horizon
    first = chunks[0]
    obs = {k: np.empty((B, H + 1, *v.shape[1:]), v.dtype) for k, v in first.obs.items()}
    action = np.zeros((B, H, first.action.shape[1]), np.float32)
    f32 = {k: np.zeros((B, H), np.float32) for k in ("reward",)}
    flags = {k: np.zeros((B, H), bool) for k in ("success", "intervened", "mask", "terminal",
                                                  "truncated")}
    start = np.zeros(B, np.int64)
    labelled = np.ones(B, bool)
    for b, c in enumerate(chunks):
        T = c.num_steps
        s = start[b] = int(rng.integers(0, max(T - H, 0) + 1))
        n = min(H, T - s)
        if c.obs.keys() != obs.keys() or c.action.shape[1] != action.shape[2]:
            raise ValueError("records with different observations or action sizes in one "
                             "batch: sample each embodiment with its own sampler")
        for k, v in c.obs.items():
            obs[k][b, :n + 1] = v[s:s + n + 1]
            obs[k][b, n + 1:] = v[s + n]
        action[b, :n] = c.action[s:s + n]
        reward = c.reward
        if spec.reward is not None:
            label = buffer.get_rewards(c.key, *spec.reward)
            labelled[b] = label is not None and len(label) == T
            reward = label if labelled[b] and label is not None else np.zeros(T, np.float32)
        f32["reward"][b, :n] = reward[s:s + n]
        flags["success"][b, :n] = c.success[s:s + n]
        flags["intervened"][b, :n] = c.intervened[s:s + n]
        flags["mask"][b, :n] = True
        if c.episode_end is not None and s + n == T:
            flags["terminal" if c.episode_end.terminal else "truncated"][b, n - 1] = True
    versions = np.array([c.policy_version for c in chunks], np.int64)
    return Batch(obs=obs, action=action, **f32, **flags, cursor=cursor.astype(np.int64),
                 start=start, policy_version=versions, weight=weight, group=group,
                 labelled=labelled)
