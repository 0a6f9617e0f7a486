"""Twisted helpers for ZODB: storable failures and connection-aware calls.

* :class:`Failure` is a Twisted failure sanitized at creation, so that it
  pickles into the ZODB (a job's result) with no live frames or objects.
* :func:`transactionManager` and :func:`connection` find the ZODB
  connection (and its transaction manager) that a persistent object lives in.
* :class:`Partial` runs a call in the reactor thread against its own
  connection, retrying conflicts and disconnects.

This module replaces the Python 2 package zc.twist.
"""
import copyreg
import io
import pickle

import persistent
import persistent.interfaces
import transaction
import transaction.interfaces
import twisted.internet.defer
import twisted.python.failure
import twisted.python.reflect
import zope.component
import zope.interface
import ZODB.interfaces

from . import legacy
from . import utils

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
    if not _stores_alone(failure.type, failure.value):
        failure.value = UnpicklableError('%s: %s' % (
            twisted.python.reflect.qual(failure.type),
            twisted.python.reflect.safe_str(failure.value)))
        if not _stores_alone(failure.type):
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


class _NoPersistentPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent):
            raise pickle.PicklingError('refers to a persistent object')
        return None


def _stores_alone(*objects):
    """Whether ``objects`` pickle and unpickle without database objects."""
    buffer = io.BytesIO()
    try:
        _NoPersistentPickler(buffer, 3).dump(objects)
        pickle.loads(buffer.getvalue())
    except Exception:
        return False
    return True


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


# ------------------------------------------------------- reactor calls

METHOD_WRAPPER_TYPE = type({}.__setitem__)


def get_self(method):
    """The object a bound method or method-wrapper is bound to, or None."""
    return getattr(method, '__self__', None)


def _stored(obj):
    return (isinstance(obj, persistent.Persistent)
            and obj._p_jar is not None and obj._p_oid is not None)


def _candidates(call, args, kwargs):
    """The objects a Partial reloads: the callable (or its self) and args."""
    return [get_self(call), call, *args, *kwargs.values()]


def _rebind(conn, obj):
    """``obj`` as loaded in ``conn`` (same oid and database), if stored."""
    if _stored(obj):
        name = obj._p_jar.db().database_name
        return conn.get_connection(name).get(obj._p_oid)
    return obj


def _rebind_call(conn, call):
    if _stored(get_self(call)):
        return getattr(_rebind(conn, get_self(call)), call.__name__)
    return _rebind(conn, call)


class Partial:
    """A call made (in the reactor thread) in a connection of its own.

    Calling the partial with extra arguments opens a new connection, with
    its own transaction manager, on the database of the first stored
    persistent object among the callable (a bound method's object
    included) and the arguments; reloads those objects in it by oid; calls;
    commits; and closes the connection.  Conflicts are retried at once, at
    most ``max_transaction_errors`` times (None: forever); disconnects
    (ZEO's or RelStorage's, see :func:`zc.async.utils.disconnect_errors`)
    are retried after 5, 10, ... 60 seconds, rescheduled with
    ``reactor.callLater`` when a reactor was set (see :meth:`setReactor`),
    else after sleeping.  Returns a Deferred of the result or
    :class:`Failure`.
    """

    max_transaction_errors = 5
    attempt_count = 0  # attempts made by the latest call
    reactor = None
    _conflicts = _disconnects = 0  # of the latest call

    def __init__(self, call, *args, **kwargs):
        if not callable(call):
            raise TypeError('Partial needs a callable, not %r' % (call,))
        self.call = call
        self.args = args
        self.kwargs = kwargs

    def setReactor(self, reactor):
        """Reschedule retries with ``reactor.callLater``, not sleeping."""
        self.reactor = reactor

    def __repr__(self):
        return '<%s.%s %s>' % (type(self).__module__, type(self).__name__,
                               utils.custom_repr(self.call))

    def __call__(self, *args, **kwargs):
        args = self.args + args
        kwargs = dict(self.kwargs, **kwargs)
        self.attempt_count = self._conflicts = self._disconnects = 0
        result = twisted.internet.defer.Deferred()
        self._attempt(result, args, kwargs)
        return result

    def _attempt(self, result, args, kwargs):
        """Try until an outcome is final; fire ``result`` with it."""
        while True:
            outcome, value = self._try_once(args, kwargs)
            if outcome == 'done' and isinstance(
                    value, twisted.internet.defer.Deferred):
                value.chainDeferred(result)
                return
            if outcome == 'done':
                result.callback(value)
                return
            if outcome == 'failed':
                result.errback(value)
                return
            delay = 0
            if outcome == 'disconnected':
                delay = min(utils.MAX_BACKOFF, utils.INITIAL_BACKOFF +
                            utils.BACKOFF_INCREMENT * (self._disconnects - 1))
                utils._log_backoff('system', self._disconnects,
                                   'calling %r' % (self,), delay)
            if self.reactor is not None:
                self.reactor.callLater(
                    delay, self._attempt, result, args, kwargs)
                return
            if delay:
                utils._sleep(delay)

    def _try_once(self, args, kwargs):
        """One attempt: ('done', result), ('failed', Failure) or a retry."""
        self.attempt_count += 1
        tm = transaction.TransactionManager()
        db = next((obj._p_jar.db() for obj in _candidates(
            self.call, args, kwargs) if _stored(obj)), None)
        conn = None
        try:
            if db is not None:  # opening syncs: it may meet a disconnect
                conn = db.open(transaction_manager=tm)
            tm.begin()
            call, args, kwargs = self._reloaded(conn, args, kwargs)
            res = call(*args, **kwargs)
            tm.commit()
            return 'done', res
        except utils.EXPLOSIVE_ERRORS:
            self._abort(tm)
            raise
        except Exception as e:
            if utils.is_disconnect(e):  # ZEO's or RelStorage's
                self._abort(tm)
                self._disconnects += 1
                return 'disconnected', None
            if isinstance(e, transaction.interfaces.TransientError):
                self._conflicts += 1
                limit = self.max_transaction_errors
                if limit is None or self._conflicts < limit:
                    self._abort(tm)
                    return 'conflict', None
            failure = Failure()
            self._abort(tm)
            return 'failed', failure
        finally:
            if conn is not None:
                conn.close()

    def _abort(self, tm):
        # The connection is closed next, so a failed abort (the database
        # is away) need not be waited for: the next attempt opens another.
        utils.abort(tm, 'calling %r' % (self,), wait=False)

    def _reloaded(self, conn, args, kwargs):
        """The callable and arguments as loaded in ``conn`` (if any)."""
        if conn is None:
            return self.call, args, kwargs
        return (_rebind_call(conn, self.call),
                [_rebind(conn, arg) for arg in args],
                {key: _rebind(conn, arg) for key, arg in kwargs.items()})
