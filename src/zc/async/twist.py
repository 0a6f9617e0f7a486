"""Twisted helpers for ZODB: storable failures and the connection of objects.

* :class:`Failure` is a Twisted failure sanitized at creation, so that it
  pickles into the ZODB (a job's result) with no live frames or objects.
* :func:`transactionManager` and :func:`connection` find the ZODB
  connection (and its transaction manager) that a persistent object lives in.

With :class:`zc.async.txn.Partial` (a call run in the reactor thread in a
connection of its own), this module replaces the Python 2 package zc.twist.
"""
import copyreg

import persistent
import persistent.interfaces
import transaction
import transaction.interfaces
import twisted.python.failure
import twisted.python.reflect
import zope.component
import zope.interface
import ZODB.interfaces

from . import legacy
from . import pickling

# ------------------------------------------------------------- failures

_REPR_LENGTH = 21  # a frame's local values are kept as reprs this long


class UnpicklableError(Exception):
    """Stands in for a failure's exception value that could not be stored.

    Its message is the original class name and message; the failure keeps
    the original's class names, so ``check`` and ``trap`` still match it.
    """


class Failure(twisted.python.failure.Failure):
    """A Twisted failure without live references, so it can be stored.

    It is sanitized as soon as it is made (see :func:`sanitize`): no
    traceback object, frames kept as (function, file, line, short reprs of
    locals, no globals).  ``Failure()`` in an ``except`` block captures the
    exception being handled.
    """

    sanitized = False

    def __init__(self, exc_value=None, exc_type=None, exc_tb=None,
                 captureVars=False):
        # Locals are always kept, as short reprs; ``captureVars`` is moot.
        super().__init__(exc_value, exc_type, exc_tb)
        _sanitize(self)

    @property
    def stack(self):
        """Always empty; see ``frames``."""
        return []

    @stack.setter
    def stack(self, value):
        pass  # Twisted no longer keeps stacks; nor do we.

    def cleanFailure(self):
        """Nothing to do: the failure was cleaned when it was made."""

    def printTraceback(self, file=None, elideFrameworkCode=False,
                       detail='default'):
        """See Twisted; the verbose form shows the kept reprs as they are."""
        if detail != 'verbose':
            return super().printTraceback(file, elideFrameworkCode, detail)
        if file is None:
            from twisted.python import log
            file = log.logerr
        # Twisted would repr the kept reprs again, quoting them.
        w = file.write
        w('*--- Failure #%d (pickled) ---\n' % self.count)
        for name, filename, lineno, localz, globalz in self.frames:
            w('%s:%d: %s(...)\n [ Locals ]\n' % (filename, lineno, name))
            for var, text in localz:
                w('  %s : %s\n' % (var, text))
            w(' ( Globals )\n')
        w('%s: %s\n' % (twisted.python.reflect.qual(self.type),
                        twisted.python.reflect.safe_str(self.value)))
        w('*--- End of Failure #%d ---\n' % self.count)

    def __reduce__(self):
        # Twisted's reduce names its own class; keep ours.
        return (copyreg.__newobj__, (type(self),), self.__getstate__())

    def __getstate__(self):
        return dict(self.__dict__, tb=None)

    def __setstate__(self, state):
        # Also accept the state of a pickled plain Twisted failure, and of
        # a 1.5 (zc.twist) one, whose class names are Python 2's.
        state = dict(state)
        state.pop('stack', None)
        if 'frames' in state:
            state['_frames'] = state.pop('frames')
        if 'parents' in state:
            state['_parents'] = state.pop('parents')
        if '_parents' in state:
            state['_parents'] = list(dict.fromkeys(  # once each, in order
                legacy.python3_qual(name) if isinstance(name, str) else name
                for name in state['_parents']))
        self.__dict__.update(state)


def sanitize(failure):
    """A sanitized :class:`Failure` for any Twisted ``failure``.

    A zc.async failure is sanitized in place; any other Twisted failure is
    copied into a new one.  Sanitizing drops the traceback object, keeps
    each frame's locals as reprs cut to 21 characters plus ``[...]``,
    empties the globals, forgets the tracebacks of the exception and its
    chain, and replaces an exception value that cannot be pickled on its
    own by an :class:`UnpicklableError`.
    """
    if not isinstance(failure, twisted.python.failure.Failure):
        raise TypeError('sanitize needs a Twisted Failure, not %r'
                        % (failure,))
    if not isinstance(failure, Failure):
        copy = Failure.__new__(Failure)
        copy.__dict__.update(failure.__dict__)
        failure = copy
    if not failure.sanitized:
        _sanitize(failure)
    return failure


def _sanitize(failure):
    """Sanitize a zc.async ``failure`` in place (see :func:`sanitize`)."""
    failure.parents  # computed from the real type, before it may be replaced
    if failure.tb is not None:
        frames = _frames_of_traceback(failure.tb)
    else:
        reprs_ready = bool(failure.pickled)  # locals are already reprs
        frames = [_clean_frame(frame, reprs_ready)
                  for frame in failure.frames]
    failure._frames = frames
    failure.tb = None
    failure.captureVars = True  # locals are kept: show them in 'verbose'
    failure.pickled = 1
    failure.sanitized = True
    _forget_tracebacks(failure.value)
    if not pickling.stores_alone(failure.type, failure.value):
        failure.value = UnpicklableError('%s: %s' % (
            twisted.python.reflect.qual(failure.type),
            twisted.python.reflect.safe_str(failure.value)))
        if not pickling.stores_alone(failure.type):
            failure.type = UnpicklableError


def _cut(text):
    if len(text) > _REPR_LENGTH:
        return text[:_REPR_LENGTH] + '[...]'
    return text


def _short_repr(value):
    return _cut(twisted.python.reflect.safe_repr(value))


def _frames_of_traceback(tb):
    frames = []
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        # Module-level locals are the globals, which are not kept.
        localz = {} if frame.f_locals is frame.f_globals else frame.f_locals
        frames.append([code.co_name, code.co_filename, tb.tb_lineno,
                       [(k, _short_repr(v)) for k, v in localz.items()], []])
        tb = tb.tb_next
    return frames


def _clean_frame(frame, reprs_ready):
    """A frame of a failure made elsewhere, with short reprs, no globals."""
    name, filename, lineno, localz = frame[:4]
    localz = [(k, _cut(v) if reprs_ready and isinstance(v, str)
               else _short_repr(v)) for k, v in localz]
    return [name, filename, lineno, localz, []]


def _forget_tracebacks(error):
    """Drop the tracebacks (live frames) of ``error`` and of its chain."""
    pending, seen = [error], set()
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseException) and id(exc) not in seen:
            seen.add(id(exc))
            exc.__traceback__ = None
            pending += [exc.__cause__, exc.__context__]


# ------------------------------------------------- connections of objects

@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(ZODB.interfaces.IConnection)
def connection(obj):
    """The connection of ``obj``, or of its nearest ``__parent__`` with one.

    None when neither ``obj`` nor any of its parents is in a connection.
    """
    while obj is not None:
        jar = getattr(obj, '_p_jar', None)
        if jar is not None:
            return jar
        obj = getattr(obj, '__parent__', None)
    return None


@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(transaction.interfaces.ITransactionManager)
def transactionManager(obj):
    """The transaction manager of ``obj``'s connection.

    The thread-local ``transaction.manager`` when ``obj`` has no connection.
    ``obj`` may also be a connection (``configure`` registers this adapter
    for ``IConnection`` too).
    """
    if ZODB.interfaces.IConnection.providedBy(obj):
        return obj.transaction_manager
    conn = connection(obj)
    manager = getattr(conn, 'transaction_manager', None)
    return manager if manager is not None else transaction.manager
