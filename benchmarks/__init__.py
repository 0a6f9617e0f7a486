"""Benchmarks of zc.async 2: the four workloads of design.md ("Performance").

Run them all with ``python -m benchmarks.run`` from the checkout's root; see
``docs/benchmarks.rst``.  Not part of the test suite.
"""
