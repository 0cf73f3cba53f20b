import pytest
import torch
from hypothesis import settings

settings.register_profile("permlib", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("permlib")


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
