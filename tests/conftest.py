import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_and_seeded():
    """Every test runs in float64 from a fixed seed, and leaves the defaults as it found them."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
