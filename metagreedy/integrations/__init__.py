"""Streamed hypergradients (greedy, T1-T2, first order) attached to the inner loops researchers
already write: :mod:`.higher` (``higher.innerloop_ctx``) and :mod:`.learn2learn` (``clone()`` /
``adapt()``); a plain PyTorch loop uses :func:`metagreedy.stream` itself. Each module is imported
on its own, so ``import metagreedy`` loads neither."""
