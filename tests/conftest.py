"""Fixtures shared by the integration and chaos tests."""

import logging

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray for one test module (2 CPUs, small object store), shut down after."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_torch_thread():
    """Small nets on a shared 2-core machine: intra-op threads only fight (10-50x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
