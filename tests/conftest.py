import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread_and_a_private_data_cache(tmp_path_factory):
    """Two settings for the whole session, passed to train.py subprocesses through the environment.

    One intra-op thread (unless OMP_NUM_THREADS is set): every problem here is tiny, so a second
    thread only adds hand-offs, and on a busy 2-core machine each costs a scheduler time slice
    (tests/test_registry.py: 27 s with two threads, 3.6 s with one, measured under load).

    A cache directory of its own for the synthetic alphabet and decoded Omniglot
    (metagreedy/data/cache.py), so the suite neither reads nor fills the user's; set
    METAGREEDY_CACHE to reuse one across runs."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("OMP_NUM_THREADS"):
            mp.setenv("OMP_NUM_THREADS", "1")
            torch.set_num_threads(1)
        if not os.environ.get("METAGREEDY_CACHE"):
            mp.setenv("METAGREEDY_CACHE", str(tmp_path_factory.mktemp("metagreedy-cache")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _float64_and_seeded():
    """Every test runs in float64 from a fixed seed, and leaves the defaults as it found them."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
