"""One driver per system: its app with a no-op task, and how to submit to it.

Each module runs in that system's own virtualenv (``benchmarks.venvs``) as
``python -m benchmarks.peers.<system> submit|latency ...`` (see :mod:`benchmarks.peers._driver`),
and its worker is started by the benchmark with the system's own command line
(``benchmarks.systems``). Standard library plus the system itself only.
"""
