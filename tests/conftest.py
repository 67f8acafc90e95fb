import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _private_data_cache(tmp_path_factory):
    """The synthetic alphabet and decoded Omniglot are cached on disk (metagreedy/data/cache.py).
    The suite uses a cache of its own, shared by its train.py subprocesses through the environment,
    so it neither reads nor fills the user's; set METAGREEDY_CACHE to reuse one across runs."""
    if os.environ.get("METAGREEDY_CACHE"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAGREEDY_CACHE", str(tmp_path_factory.mktemp("metagreedy-cache")))
        yield


@pytest.fixture(autouse=True)
def _float64_and_seeded():
    """Every test runs in float64 from a fixed seed, and leaves the defaults as it found them."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
