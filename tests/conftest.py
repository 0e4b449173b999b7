import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_configure(config):
    """Under pytest-xdist, split the cores among the workers rather than give each all of them:
    a worker per core, each with every core's threads, oversubscribes them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


# the files whose tests run cells on Ray: one xdist group, so that they share one test process and
# its Ray (`local_ray`); every other file is a group of its own, as under --dist loadfile
RAY_FILES = ("test_executors.py", "test_readme_commands.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups into the test ids
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group("ray" if item.path.name in RAY_FILES else item.path.name))


@pytest.fixture(scope="session")
def local_ray():
    """`connect()`: the one local Ray of this test process, started on first use and kept to the
    end (the executor uses the Ray its process is connected to). Starting Ray, and its workers'
    first import of torch, cost more than most tiny runs on it, so the files of RAY_FILES share it;
    a test may shut it down, and the next `connect()` starts it again."""
    ray = pytest.importorskip("ray", reason="the ray extra is part of the test extra")

    def connect():
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    yield connect
    ray.shutdown()


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (benchmark data lives in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def tiny():
    """(tokenizer, encoder) of the tiny random BERT."""
    from cml.encoder import build_encoder

    return build_encoder("tiny")


@pytest.fixture(scope="session")
def demo():
    from cml.data import load_dataset

    return load_dataset("demo")
