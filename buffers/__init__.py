"""Fleet's leaf package: the rollout-chunk record, its codec, the on-disk log and samplers.

Terms used everywhere in Fleet are defined once, in `buffers.records`.
"""
