import pytest
import torch
from hypothesis import settings

settings.register_profile("permlib", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("permlib")

#: The devices present: CPU always, CUDA where a GPU is visible (those cases carry the ``gpu``
#: marker, so ``-m "not gpu"`` deselects them and ``-m gpu`` runs only them on a GPU machine).
DEVICES = [pytest.param("cpu", id="cpu")]
if torch.cuda.is_available():
    DEVICES.append(pytest.param("cuda", id="cuda", marks=pytest.mark.gpu))


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each test that takes ``device`` runs once per device present."""
    return torch.device(request.param)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
