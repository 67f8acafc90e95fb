"""Measurement scripts and the campaign's command line: the entry points above the experiments.

Run each from the checkout as a module, e.g. ``python -m bench.campaign status`` or
``python -m bench.toy``.
"""
