"""Measurement scripts, the evaluation of a trained run and the campaign's command line: the entry
points above the experiments and the harness.

Run each from the checkout as a module, e.g. ``python -m bench.campaign status`` or
``python -m bench.toy``.
"""
