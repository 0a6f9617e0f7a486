"""The benchmark jobs: importable, so worker processes resolve them.

Both jobs do no work; :func:`started` returns the wall-clock time at which
its call began, which W2 compares with the producer's commit time.
"""
import time


def noop():
    """A job that does nothing."""


def started():
    """A job that returns ``time.time()`` at its start (seconds)."""
    return time.time()
