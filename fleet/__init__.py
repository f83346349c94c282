"""The composition root: the `fleet` CLI, Hydra configs, Ray wiring and user surfaces."""
