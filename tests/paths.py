"""Where the tests that read real data find it; they skip without it.

``METAGREEDY_TEST_DATA`` names the folder (torchvision's layout: ``MNIST/raw``, ``FashionMNIST/raw``,
``omniglot-py/...``); by default it is the checkout's ``data/``, the README's ``--data-root``.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DATA = os.environ.get("METAGREEDY_TEST_DATA") or os.path.join(ROOT, "data")
