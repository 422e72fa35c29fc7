"""Experiments that exercise the package end to end on real Foundry training, run by ``scripts/`` and
recorded in ``docs/``.

- :mod:`foundry_ext.experiments.budgets`: many budgets from one run, WSD-S vs WSD main + decay branches vs
  cyclic cosine (``scripts/budget_experiment.py``, ``docs/budgets.md``).
- :mod:`foundry_ext.experiments.resume_spike`: the resume spike after a decay, with and without
  ``resume_guard``'s rewarm (``scripts/resume_spike_demo.py``, ``docs/resume_guard.md``).
"""
