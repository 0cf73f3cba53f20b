import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Experiment tests train small models: one torch thread is fastest and keeps the other core
    free (and results do not depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
