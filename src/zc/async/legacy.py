"""What old pickles need: helpers of zc.async before 1.4, and the Python 2
names and zope.bforest state that 1.5 databases hold."""
import _compat_pickle  # the standard library's Python 2 -> 3 pickle names
import datetime
import importlib

import persistent


def success_or_failure(success, failure, res):
    """Call ``failure`` or ``success`` with ``res``, depending on its kind.

    The callback of pre-1.4 jobs: a Twisted Failure goes to ``failure``,
    anything else to ``success``; with no matching callable, ``res`` is
    returned unchanged.
    """
    import twisted.python.failure
    if isinstance(res, twisted.python.failure.Failure):
        call = failure
    else:
        call = success
    if call is None:
        return res
    return call(res)


def chooseFirst(agent):
    """The deprecated default chooser: claim the next job of the queue."""
    return agent.queue.claim()


# ------------------------------------------------------ 1.5 databases

#: Python 2 modules of builtins and exceptions, whose names 1.5 pickles
#: and stored failures hold (``exceptions.ValueError``).
PYTHON2_BUILTIN_MODULES = ('exceptions', '__builtin__')


def python3_class(module, name):
    """The Python 3 class of a Python 2 builtin or exception class, by
    its Python 2 module and name; None for other names.

    ``exceptions.StandardError``, gone, gives ``Exception``;
    ``exceptions.EnvironmentError`` gives ``OSError``, its Python 3 self.
    """
    if module not in PYTHON2_BUILTIN_MODULES:
        return None
    module, name = _compat_pickle.NAME_MAPPING.get(
        (module, name), ('builtins', name))
    found = getattr(importlib.import_module(module), name, None)
    return found if isinstance(found, type) else None


def python2_exceptions():
    """``(name, class)`` for each exception class of Python 2's
    ``exceptions`` module that has a Python 3 class."""
    for module, name in sorted(_compat_pickle.NAME_MAPPING):
        found = python3_class(module, name) if module == 'exceptions' else None
        if found is not None and issubclass(found, BaseException):
            yield name, found


def python3_qual(dotted):
    """``dotted``, a class's dotted name, with a Python 2 builtin or
    exception module replaced (``exceptions.ValueError`` becomes
    ``builtins.ValueError``); other names are returned unchanged."""
    module, _, name = dotted.rpartition('.')
    found = python3_class(module, name)
    if found is None:
        return dotted
    return '%s.%s' % (found.__module__, found.__qualname__)


def long_to_dt15(key):
    """The UTC datetime that a 1.5 completed-job key encodes.

    1.5 packed ``datetime.max - dt`` as days, seconds and microseconds
    (bits 41 and up, 24-40, 4-23), the four low bits breaking ties;
    zc.async 2 counts microseconds (:func:`zc.async.clock.dt_to_long`).
    """
    micros = (key >> 4) & (2 ** 20 - 1)
    seconds = (key >> 24) & (2 ** 17 - 1)
    days = key >> 41
    return (datetime.datetime.max - datetime.timedelta(days, seconds, micros)
            ).replace(tzinfo=datetime.timezone.utc)


class PeriodicForest(persistent.Persistent):
    """The jobs of a 1.5 agent's completed-job store, as 1.5 stored them.

    1.5's ``zc.async.utils.Periodic`` kept its jobs in a zope.bforest
    periodic ``LOBForest``: ``buckets``, a list of LOBTrees (newest first)
    keyed by 1.5's datetime keys, ``last_rotation`` and ``_period``.
    zodbupdate loads that class as this one (see :mod:`zc.async.upgrade`),
    so that ``zc-async upgrade`` can read the forest and move its jobs into
    the store; nothing else uses it.
    """

    buckets = ()
    last_rotation = _period = None
