"""Complete episodes and complete groups out of a stream of rollout chunks (for GRPO).

Example:

    groups, rest = complete_groups(chunks, group_size=8)
    for group in groups:            # 8 episodes from one start state
        for episode in group:       # its chunks, in chunk_seq order, the last one ending it
            ...

An episode is complete when its chunks 0..k are all present and chunk k ends it; a group is
complete when it holds `group_size` complete episodes. Everything else is returned as `rest`,
to be offered again once more chunks have arrived.
"""

from __future__ import annotations

import collections

from buffers.records import RolloutChunk

Episode = list[RolloutChunk]


def complete_episodes(chunks: list[RolloutChunk]) -> tuple[list[Episode], list[RolloutChunk]]:
    by_episode: dict[tuple[str, str], list[RolloutChunk]] = collections.defaultdict(list)
    for c in chunks:
        by_episode[(c.robot_id, c.episode_id)].append(c)
    done: list[Episode] = []
    rest: list[RolloutChunk] = []
    for parts in by_episode.values():
        parts.sort(key=lambda c: c.chunk_seq)
        whole = (parts[-1].episode_end is not None
                 and [c.chunk_seq for c in parts] == list(range(len(parts))))
        if whole:
            done.append(parts)
        else:
            rest.extend(parts)
    return done, rest


def complete_groups(chunks: list[RolloutChunk], group_size: int,
                    ) -> tuple[list[list[Episode]], list[RolloutChunk]]:
    episodes, rest = complete_episodes(chunks)
    by_group: dict[str, list[Episode]] = collections.defaultdict(list)
    for ep in episodes:
        by_group[ep[0].group].append(ep)
    groups: list[list[Episode]] = []
    for name, eps in by_group.items():
        if name and len(eps) >= group_size:
            groups.append(eps[:group_size])
            eps = eps[group_size:]
        rest.extend(c for ep in eps for c in ep)
    return groups, rest
