import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

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
