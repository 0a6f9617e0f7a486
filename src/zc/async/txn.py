"""Units of work against the database: run, retry and commit them.

This is where zc.async begins, retries and commits the transactions of its
own work, waiting out the errors that pass:

* :func:`disconnect_errors` and :func:`is_disconnect` tell which errors
  mean "the storage cannot be reached" (ZEO's or RelStorage's);
* the retry loops :func:`never_fail`, :func:`wait_for_system_recovery`
  and :func:`try_five_times` run a unit of work and its commit again after
  conflicts (at once) and disconnects (after 5, 10, ... 60 seconds), and
  :func:`abort` aborts even while the database is away;
* :class:`Partial` runs a call in the reactor thread in a connection of
  its own, retried the same way;
* :func:`log_after_commit` logs only once the transaction under way
  commits.

``zc.async.utils`` re-exports the 1.5 names (``never_fail``, ...).
"""
import importlib
import logging
import sys
import threading
import time

import persistent
import transaction
import transaction.interfaces
import twisted.internet.defer
import ZEO.Exceptions
import ZODB.POSException

from . import interfaces
from .logs import custom_repr, log
from .twist import Failure

EXPLOSIVE_ERRORS = (SystemExit, KeyboardInterrupt, interfaces.ReassignedError)
SYSTEM_ERRORS = (ZEO.Exceptions.ClientDisconnected,
                 ZODB.POSException.POSKeyError)
INITIAL_BACKOFF = 5
BACKOFF_INCREMENT = 5
MAX_BACKOFF = 60

# ----------------------------------------------- storage disconnects

# The RelStorage database families whose driver errors mean a disconnect.
_RELSTORAGE_FAMILIES = ('postgresql', 'mysql', 'oracle', 'sqlite')
_disconnect_cache = {}  # {families in use: classes}


def disconnect_errors():
    """The exception classes meaning "the storage cannot be reached".

    ZEO's ``ClientDisconnected``, plus, for each RelStorage database family
    in use in this process, the ``disconnected_exceptions`` of its
    available drivers (for PostgreSQL and psycopg2:
    ``psycopg2.OperationalError``, ``psycopg2.InterfaceError`` and
    RelStorage's ``ReplicaClosedException``).  A family is in use once its
    adapter module is imported, which opening such a storage does; so
    processes without RelStorage see ZEO's class alone, and the drivers of
    families nobody uses (say, sqlite3 errors of application code) are not
    taken for disconnects.  These errors are waited for with backoff, as
    1.5 did for ZEO: the retry loops of this module, the retry policies
    (their ``ClientDisconnected`` rows), the worker threads' job loading
    and :class:`Partial`.
    """
    families = tuple(
        name for name in _RELSTORAGE_FAMILIES
        if 'relstorage.adapters.%s.adapter' % (name,) in sys.modules)
    classes = _disconnect_cache.get(families)
    if classes is None:
        classes = (ZEO.Exceptions.ClientDisconnected,)
        for name in families:
            classes += _relstorage_disconnect_errors(name)
        classes = _disconnect_cache[families] = tuple(
            dict.fromkeys(classes))  # without duplicates, in order
    return classes


def _relstorage_disconnect_errors(family):
    """The ``disconnected_exceptions`` of a RelStorage family's drivers.

    Each family's ``drivers`` package provides ``IDBDriverOptions``:
    ``known_driver_factories()``; a factory whose driver module cannot be
    imported raises ``DriverNotAvailableError`` and is skipped.
    """
    from relstorage.adapters.interfaces import DriverNotAvailableError
    options = importlib.import_module(
        'relstorage.adapters.%s.drivers' % (family,))
    classes = ()
    for factory in options.known_driver_factories():
        try:
            driver = factory()
        except DriverNotAvailableError:
            continue
        classes += tuple(driver.disconnected_exceptions)
    return classes


def is_disconnect(error):
    """Whether the exception ``error`` says the storage cannot be reached
    (see :func:`disconnect_errors`)."""
    return isinstance(error, disconnect_errors())


def with_disconnects(classes):
    """``classes`` with ZEO's ``ClientDisconnected`` standing for all of
    :func:`disconnect_errors` (how retry policy tables are read)."""
    if ZEO.Exceptions.ClientDisconnected not in classes:
        return tuple(classes)
    return tuple(dict.fromkeys(
        [*classes, *disconnect_errors()]))


def abort(tm, identifier, wait=True):
    """Abort ``tm``'s transaction even when the database is away.

    The abort synchronizes the connections with their storage, so it can
    fail by itself: RelStorage reconnects then and raises its driver's
    error while the database is down, leaving the connection unsynchronized.
    The transaction is gone all the same, and another abort retries the
    synchronization; so the abort is tried again, at once after a first
    error that is not a disconnect (the resource manager that failed was
    dropped), else after 5, 10, ... 60 seconds, until it succeeds: the
    connection is usable again from there.  With ``wait`` False (the
    reactor thread, which must not sleep) a failed abort is tried once more
    at once, and its Failure returned if that fails too (the next ``begin``
    synchronizes again).  Returns None once aborted.  Explosive errors
    propagate.
    """
    errors = 0
    delay = INITIAL_BACKOFF
    while True:
        try:
            tm.abort()
            return None
        except EXPLOSIVE_ERRORS:
            raise
        except Exception as e:
            # Described only now: an identifier may be costly to format.
            what = 'aborting (%s)' % (identifier,)
            errors += 1
            kind = 'system' if is_disconnect(e) else 'other'
            if errors == 1 and (kind == 'other' or not wait):
                log.error('error while %s; aborting again', what,
                          exc_info=True)
                continue
            if not wait:
                failure = Failure()
                log.critical('cannot complete %s', what, exc_info=True)
                return failure
            _log_backoff(kind, errors, what, delay)
            _sleep(delay)
            delay = min(MAX_BACKOFF, delay + BACKOFF_INCREMENT)



def log_after_commit(context, level, message, *args):
    """Log ``message % args`` on the events log when the transaction under
    way commits: a unit of work that is retried logs once, one that is
    aborted not at all.

    ``context`` is a transaction manager, or a persistent object whose
    connection's manager is meant (one that is not stored logs at once).
    ``args`` must not need the database (texts, reprs made beforehand).
    """
    if not transaction.interfaces.ITransactionManager.providedBy(context):
        jar = getattr(context, '_p_jar', None)
        if jar is None:
            log.log(level, message, *args)
            return
        context = jar.transaction_manager

    def hook(committed):
        if committed:
            log.log(level, message, *args)
    context.get().addAfterCommitHook(hook)


# -------------------------------------------------------- retry loops

def _sleep(seconds):
    # Looked up at call time so that tests can patch ``time.sleep`` or this.
    time.sleep(seconds)


class _Spoiled(threading.local):
    spoiled = False  # see spoiled_commit


_spoiled = _Spoiled()


def spoiled_commit(spoiled):
    """Say that the commit that just failed in this thread carried work a
    synchronizer added to it (``spoiled`` true: its error counts as a
    conflict, so the commit is tried again at once), or that a new
    transaction began (false).

    The synchronizer, told in its ``afterCompletion`` that the commit
    failed, must see that its work does not spoil the next try.  (Worker
    threads claim the next job in the commit that completes a job: see
    ``zc.async.workers``.)
    """
    _spoiled.spoiled = bool(spoiled)


def _error_kind(error):
    """'system', 'conflict' (a transient transaction error, or any error
    of a commit that a synchronizer spoiled) or 'other'."""
    # Disconnects are also transient: test system errors first.
    if isinstance(error, SYSTEM_ERRORS) or is_disconnect(error):
        return 'system'
    if (isinstance(error, transaction.interfaces.TransientError)
            or _spoiled.spoiled):
        return 'conflict'
    return 'other'


def _retry(call, identifier, tm, commit=True, max_conflicts=None,
           backoff=('system', 'other'), final_level=logging.ERROR,
           log_every=10):
    """Run ``call`` (and commit) until it succeeds or an error is final.

    The one retry loop behind the three public helpers.  Conflicts are
    retried at once, forever or until ``max_conflicts`` attempts; error
    kinds listed in ``backoff`` are retried after sleeping 5, 10, ... 60
    seconds.  Any other error is final: logged at ``final_level`` and
    returned as a :class:`zc.async.twist.Failure`.  Backing-off errors
    are logged the first and every ``log_every``-th time.  Explosive errors
    are re-raised after an abort.  Aborts go through :func:`abort`: a loop
    that backs off on system errors waits there for the database too; the
    others give up (returning the abort's Failure) rather than sleep.
    """
    conflicts = errors = 0
    delay = INITIAL_BACKOFF
    # Only loops that back off on disconnects may wait for a failed abort.
    wait = 'system' in backoff
    while True:
        try:
            res = call()
            if commit:
                tm.commit()
            return res
        except EXPLOSIVE_ERRORS:
            abort(tm, identifier, wait=False)  # the process is going away
            raise
        except Exception as e:
            kind = _error_kind(e)
            if kind == 'conflict':
                conflicts += 1
                if max_conflicts is None or conflicts < max_conflicts:
                    aborted = abort(tm, identifier, wait)
                    if aborted is not None:
                        return aborted
                    if not conflicts % 5:
                        log.warning(
                            '%d consecutive transaction errors while %s',
                            conflicts, identifier, exc_info=True)
                    continue
            elif kind in backoff:
                abort(tm, identifier, wait)
                errors += 1
                _log_backoff(kind, errors, identifier, delay, log_every)
                _sleep(delay)
                delay = min(MAX_BACKOFF, delay + BACKOFF_INCREMENT)
                continue
            # Capture before the abort ghosts the objects the locals show.
            failure = Failure()
            abort(tm, identifier, wait)
            if kind == 'conflict':  # out of attempts: try_five_times
                log.log(final_level, 'Five consecutive transaction errors '
                        'while %s', identifier, exc_info=True)
            else:
                log.log(final_level, 'Error while %s', identifier,
                        exc_info=True)
            return failure


def _log_backoff(kind, errors, identifier, delay, every=10):
    """Log the first and every ``every``-th error of a backing-off retry
    loop."""
    level = logging.ERROR if kind == 'system' else logging.CRITICAL
    if errors == 1:
        log.log(level, 'first error while %s; will continue in %d seconds',
                identifier, delay, exc_info=True)
    elif not errors % every:
        log.log(level, '%d consecutive errors while %s; will continue in %d '
                'seconds', errors, identifier, delay, exc_info=True)


def never_fail(call, identifier, tm, commit=True):
    """Run ``call`` and commit with ``tm`` until it succeeds; return result.

    Transaction errors are retried at once (a WARNING every fifth time);
    other errors after sleeping 5, 10, ... 60 seconds (logged the first and
    every tenth time: ERROR for system errors, CRITICAL otherwise).
    Explosive errors are re-raised after an abort.  With ``commit`` False
    (a ``call`` that only reads) nothing is committed.
    """
    return _retry(call, identifier, tm, commit=commit)


def wait_for_system_recovery(call, identifier, tm):
    """Like :func:`never_fail`, but other errors are final.

    Errors that are neither transaction nor system errors are logged at
    ERROR and returned as a :class:`zc.async.twist.Failure`.  System
    errors are logged the first and every fifth time (as in 1.5).
    """
    return _retry(call, identifier, tm, backoff=('system',), log_every=5)


def try_five_times(call, identifier, tm, commit=True):
    """Run ``call`` (and commit), trying at most five times on conflicts.

    Any error that is not retried, including the fifth transaction error
    ("Five consecutive transaction errors while ..."), is logged at
    CRITICAL and returned as a :class:`zc.async.twist.Failure`;
    explosive errors are re-raised after an abort.
    """
    return _retry(call, identifier, tm, commit=commit, max_conflicts=5,
                  backoff=(), final_level=logging.CRITICAL)


# -------------------------------------------------- calls in the reactor

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
    (ZEO's or RelStorage's, see :func:`disconnect_errors`)
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
                               custom_repr(self.call))

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
                delay = min(MAX_BACKOFF, INITIAL_BACKOFF +
                            BACKOFF_INCREMENT * (self._disconnects - 1))
                _log_backoff('system', self._disconnects,
                             'calling %r' % (self,), delay)
            if self.reactor is not None:
                self.reactor.callLater(
                    delay, self._attempt, result, args, kwargs)
                return
            if delay:
                _sleep(delay)

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
        except EXPLOSIVE_ERRORS:
            self._abort(tm)
            raise
        except Exception as e:
            if is_disconnect(e):  # ZEO's or RelStorage's
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
        abort(tm, 'calling %r' % (self,), wait=False)

    def _reloaded(self, conn, args, kwargs):
        """The callable and arguments as loaded in ``conn`` (if any)."""
        if conn is None:
            return self.call, args, kwargs
        return (_rebind_call(conn, self.call),
                [_rebind(conn, arg) for arg in args],
                {key: _rebind(conn, arg) for key, arg in kwargs.items()})

