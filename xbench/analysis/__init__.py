"""The analysis layer: everything that only *reads* records.

``records`` (load, label, the comparability key), ``sweep`` (trial choice across a
hyper-parameter sweep; checkpoint choice within a run is the harness's
:mod:`xbench.harness.checkpoints`), ``stats`` (intervals, tests, power), ``report``
(tables and renderers), ``plots``, ``site`` (the published page), ``compare`` (the
regression gate) and ``history``. Nothing here imports :mod:`xbench.harness`.
"""
