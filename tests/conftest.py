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
