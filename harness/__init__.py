"""The lab's run harness, in the checkout beside the experiments (``tasks/``) and the entry points
(``train.py``, ``bench/``); not installed. The declaration language of settings (``settings``) is
below the experiments, which declare their settings in it; everything else is above them and
imports them directly: the settings table and its command line (``config``), run directories
(``rundir``), the run's log (``runlog``), checkpoints and the checked reader of every file
(``checkpoint``, ``files``), stop signals, fault hooks, distributed sums, the reuse of a trained run
(``reuse``: ``from harness.reuse import load_run``) and the campaign (``campaign``).

This package imports nothing itself: the experiments import :mod:`harness.settings` through it.
"""
