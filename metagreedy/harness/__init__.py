"""The run harness, above the core: settings (config), run directories (rundir), the run's log
(runlog), checkpoints, stop signals, fault hooks, distributed sums, checked files and the reuse of a
trained run (reuse, ``load_run``). It knows no task by name: see :mod:`metagreedy.harness.registry`.
"""
