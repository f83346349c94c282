"""Hydra's config tree for `fleet train`: YAML only (see fleet/config.py). This file makes the
folder a package, so the wheel ships it and Hydra finds it as `pkg://configs` wherever fleet is
installed."""
