"""Shared foundations: clock, loggers, retry loops and persistent containers.

Everything here is small and used by several modules: the one clock the
library reads (:func:`now`), the ``zc.async.events``/``zc.async.trace``
loggers, the retry loops that wrap a unit of work and its commit
(:func:`never_fail`, :func:`wait_for_system_recovery`,
:func:`try_five_times`), the datetime <-> integer key encoding, and the
persistent base classes the queue, agent and dispatcher objects build on.
"""
import collections
import datetime
import heapq
import itertools
import logging
import sys
import threading
import time
import types

import BTrees.Length
import BTrees.LOBTree
import BTrees.OOBTree
import persistent
import persistent.interfaces
import transaction.interfaces
import zope.interface
import zope.minmax
import ZEO.Exceptions
import ZODB.POSException
import ZODB.utils

from . import interfaces
from . import legacy

log = logging.getLogger('zc.async.events')
tracelog = logging.getLogger('zc.async.trace')

EXPLOSIVE_ERRORS = (SystemExit, KeyboardInterrupt, interfaces.ReassignedError)
SYSTEM_ERRORS = (ZEO.Exceptions.ClientDisconnected,
                 ZODB.POSException.POSKeyError)
INITIAL_BACKOFF = 5
BACKOFF_INCREMENT = 5
MAX_BACKOFF = 60

Atom = zope.minmax.Maximum  # legacy alias kept for 1.5 pickles and code

UTC = datetime.timezone.utc

# ---------------------------------------------------------------- the clock

_frozen_now = None


# The real class, even while zc.async.testing patches ``datetime.datetime``
# (whose ``now`` reads this clock).
_real_datetime = datetime.datetime


def now():
    """The current time, a timezone-aware UTC datetime (maybe frozen)."""
    if _frozen_now is not None:
        return _frozen_now
    return _real_datetime.now(UTC)


def _set_frozen_now(dt):
    """Freeze :func:`now` at ``dt`` (naive values are UTC); None unfreezes.

    Used only by :mod:`zc.async.testing`.
    """
    global _frozen_now
    _frozen_now = None if dt is None else _as_utc(dt, 'dt')


def _as_utc(dt, argname):
    """``dt`` as an aware UTC datetime; naive values are taken as UTC."""
    if not isinstance(dt, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (argname, dt))
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# ------------------------------------------------------- datetime <-> key

_LATEST = datetime.datetime.max.replace(tzinfo=UTC)
_TIE_BITS = 4  # the low bits of a key are free for tie-breaking


def dt_to_long(dt):
    """Encode ``dt`` as an int key; newer datetimes give smaller keys.

    The key counts microseconds back from ``datetime.max``, shifted left by
    four bits so that callers can add 0-15 to break ties.  Every datetime
    from ``datetime.min`` to ``datetime.max`` fits a signed 64-bit key.
    """
    delta = _LATEST - _as_utc(dt, 'dt')
    micros = (delta.days * 86400 + delta.seconds) * 1000000
    return (micros + delta.microseconds) << _TIE_BITS


# The largest key of :func:`dt_to_long`; 1.5's keys (of the same times)
# are larger.
_MAX_KEY = ((_LATEST - datetime.datetime.min.replace(tzinfo=UTC))
            // datetime.timedelta(microseconds=1)) << _TIE_BITS | 15


def long_to_dt(key):
    """Decode a :func:`dt_to_long` key (tie-break bits ignored); aware UTC.

    A larger key is one of 1.5's, which ``zc-async upgrade`` converts (see
    :func:`zc.async.legacy.long_to_dt15`).
    """
    if key > _MAX_KEY:
        return legacy.long_to_dt15(key)
    return _LATEST - datetime.timedelta(microseconds=int(key) >> _TIE_BITS)


# --------------------------------------------------------------- reprs

def custom_repr(obj):
    """A short, stable description of ``obj`` for logs and reports.

    Persistent objects: ``module.Class (oid <int|?>, db <'name'|?>)``;
    functions and builtins: ``module.name``; anything else: ``repr``.
    """
    if persistent.interfaces.IPersistent.providedBy(obj):
        oid = '?' if obj._p_oid is None else ZODB.utils.u64(obj._p_oid)
        db = '?'
        if obj._p_jar is not None:
            db = repr(obj._p_jar.db().database_name)
        cls = obj.__class__
        return '%s.%s (oid %s, db %s)' % (
            cls.__module__, cls.__name__, oid, db)
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return '%s.%s' % (obj.__module__, obj.__name__)
    return repr(obj)


#: Characters of a value's repr that :func:`bounded_repr` keeps.
REPR_LIMIT = 200


def bounded_repr(obj, limit=REPR_LIMIT):
    """:func:`custom_repr` of ``obj``, cut to ``limit`` characters (then
    ``...`` and the full length follow): for the arguments and results in
    job reprs, logs and reports, which a large value must not swamp."""
    text = custom_repr(obj)
    if len(text) <= limit:
        return text
    return '%s...(%d characters)' % (text[:limit], len(text))


class BoundedRepr:
    """Stands for ``obj`` in a log call: its repr is
    :func:`bounded_repr`, computed only if the message is written."""

    __slots__ = ('obj',)

    def __init__(self, obj):
        self.obj = obj

    def __repr__(self):
        return bounded_repr(self.obj)

    __str__ = __repr__


# ---------------------------------------------------------- iteration

def sortedmerge(sources, key=None):
    """Lazily merge already-sorted iterables into one sorted iterator."""
    return heapq.merge(*sources, key=key)


def takecount(iterable, count):
    """An iterator over the first ``count`` items of ``iterable``."""
    if count < 0:
        raise ValueError('count must be zero or more, not %r' % (count,))
    return itertools.islice(iterable, count)


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
    and :class:`zc.async.twist.Partial`.
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
    import importlib
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
                from .twist import Failure  # twist imports this module
                failure = Failure()
                log.critical('cannot complete %s', what, exc_info=True)
                return failure
            _log_backoff(kind, errors, what, delay)
            _sleep(delay)
            delay = min(MAX_BACKOFF, delay + BACKOFF_INCREMENT)


def handoff(method):
    """Mark a method that worker threads send to the reactor thread.

    :class:`zc.async.testing.Reactor` runs these reports as soon as it runs
    anything and leaves them out of its call counts.
    """
    method.zc_async_handoff = True
    return method


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
            from .twist import Failure  # twist imports this module
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


# ------------------------------------------------- persistent base classes

class Base(persistent.Persistent):
    """Persistent object with a ``parent``; ``__parent__`` follows it.

    ``__parent__`` (used by Zope security and locations) reads ``parent``
    unless it was set explicitly.
    """

    parent = None
    _z_parent__ = None

    @property
    def __parent__(self):
        if self._z_parent__ is not None:
            return self._z_parent__
        return self.parent

    @__parent__.setter
    def __parent__(self, value):
        self._z_parent__ = value


_MISSING = object()


class BTreeReads:
    """Mapping reads over an OOBTree ``_data`` and a Length ``_len``.

    A key the tree cannot compare with its keys (an int among UUIDs) is
    simply not there, as in 1.5, whose Python 2 compared anything.
    """

    def __getitem__(self, key):
        try:
            return self._data[key]
        except TypeError:
            raise KeyError(key) from None

    def get(self, key, default=None):
        try:
            return self._data.get(key, default)
        except TypeError:
            return default

    def __contains__(self, key):
        try:
            return key in self._data
        except TypeError:
            return False

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return self._len()

    def keys(self):
        return self._data.keys()

    def values(self):
        return self._data.values()

    def items(self):
        return self._data.items()


class Dict(BTreeReads, Base):
    """A persistent BTree mapping whose values know their ``name``/``parent``.

    Setting ``d[key] = value`` sets ``value.name = key`` and
    ``value.parent = d``; removing a value resets both to None.
    """

    def __init__(self, *args, **kwargs):
        self._data = BTrees.OOBTree.OOBTree()
        self._len = BTrees.Length.Length()
        self.update(*args, **kwargs)

    def __setitem__(self, key, value):
        if key not in self._data:
            self._len.change(1)
        self._data[key] = value
        value.parent = self
        value.name = key

    def __delitem__(self, key):
        self.pop(key)

    def pop(self, key, default=_MISSING):
        """Remove ``key`` and return its value (or ``default`` if missing)."""
        try:
            value = self._data.pop(key)
        except (KeyError, TypeError):  # TypeError: see BTreeReads
            if default is _MISSING:
                raise KeyError(key) from None
            return default
        self._len.change(-1)
        value.parent = value.name = None
        return value

    def update(self, *args, **kwargs):
        """Set each item of a mapping or (key, value) sequence, then kwargs."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def copy(self):
        """Refused: values belong to exactly one parent."""
        raise TypeError('%s cannot be copied: its values record it as their '
                        'parent' % type(self).__name__)



def simpleWrapper(name):
    """A method that forwards to the method ``name`` of ``self._data``."""
    def wrapper(self, *args, **kwargs):
        return getattr(self._data, name)(*args, **kwargs)
    wrapper.__name__ = name
    return wrapper


# ----------------------------------------------- time-keyed collections

@zope.interface.implementer(interfaces.ICompletedCollection)
class AbstractSet(Base):
    """Items keyed by the time they were added, iterated newest first.

    ``add`` gives each item a ``key`` (see :func:`dt_to_long`, tie-broken
    in the low bits) and sets its ``parent`` to the set's ``__parent__``.
    Subclasses may keep several trees (see :class:`Periodic`);
    :meth:`_trees` lists them, newest first.
    """

    def __init__(self):
        self._data = BTrees.LOBTree.LOBTree()

    def _trees(self):
        return [self._data]

    def _store(self, key, item):
        self._data[key] = item

    def clear(self):
        """Forget every item."""
        for tree in self._trees():
            tree.clear()

    def add(self, item, parent=None):
        """Add ``item`` now; set its ``key`` and ``parent``."""
        key = self._new_key()
        self._store(key, item)
        self._adopt(item, key, parent)

    def _new_key(self):
        """A key for an item added now that no item has."""
        key = dt_to_long(now()) + 15
        while self._key_taken(key):
            key -= 1  # same microsecond: later additions sort newer
        return key

    def _key_taken(self, key):
        return any(key in tree for tree in self._trees())

    def _adopt(self, item, key, parent=None):
        parent = parent if parent is not None else self.__parent__
        if parent is not None:
            item.parent = parent
        item.key = key

    def _keyrange(self, start, stop):
        """Key bounds for items added at or before start, at or after stop."""
        low = None if start is None else dt_to_long(start)
        high = None if stop is None else dt_to_long(stop) + 15
        return low, high

    def iter(self, start=None, stop=None):
        """Items from ``start`` (newer datetime) back to ``stop`` (older)."""
        low, high = self._keyrange(start, stop)
        merged = sortedmerge(self._sources(low, high),
                             key=lambda item: item[0])
        return (value for key, value in merged)

    def _sources(self, low, high):
        """Iterables of ``(key, item)`` by key, for keys in the range."""
        return [tree.items(low, high) for tree in self._trees()]

    def __iter__(self):
        return self.iter()

    def first(self, start=None):
        """The newest item added at or before ``start``."""
        for item in self.iter(start):
            return item
        raise ValueError('no item at or before %s' % (start,))

    def last(self, stop=None):
        """The oldest item added at or after ``stop``."""
        high = self._keyrange(None, stop)[1]
        found = []  # (key, item) of each source's oldest candidate
        for tree in self._trees():
            try:
                key = tree.maxKey(high)
            except ValueError:  # nothing in range in this tree
                continue
            found.append((key, tree[key]))
        found.extend(self._recent_items(None, high)[-1:])
        if not found:
            raise ValueError('no item at or after %s' % (stop,))
        return max(found, key=lambda pair: pair[0])[1]

    def _recent_items(self, low, high):
        return []

    def __len__(self):
        return sum(len(tree) for tree in self._trees())

    def __bool__(self):
        return any(tree for tree in self._trees())

    __nonzero__ = __bool__


class RollingSet(AbstractSet):
    """An :class:`AbstractSet` keeping only its ``size`` newest items."""

    size = 100

    def add(self, item, parent=None):
        super().add(item, parent)
        while len(self._data) > self.size:
            del self._data[self._data.maxKey()]


class Periodic(AbstractSet):
    """Completed jobs, kept for at least ``period`` (the agents' store).

    Items live in ``buckets`` LOBTrees, the newest first; when
    ``period / (buckets - 1)`` has passed since the last rotation, adding
    an item first drops the oldest tree and starts a new one.  Ordinary
    adds touch only the newest tree and a length counter, not this object.

    A 1.5 store (its jobs in a zope.bforest forest, ``_data``) has no
    buckets until ``zc-async upgrade`` moves its jobs into them (see
    :mod:`zc.async.upgrade`): until then it reads as empty, and its first
    add starts its buckets.
    """

    period = datetime.timedelta(days=7)
    _buckets = ()
    _len = _rotated = None
    # The agent's jobs record (see zc.async.agentjobs) where its newest
    # completed jobs wait, or None (1.5 agents, older zc.async 2 agents).
    _recent = None

    def __init__(self, period=datetime.timedelta(days=7), buckets=7):
        if buckets < 2:
            raise ValueError('buckets must be at least 2, not %r' % (buckets,))
        if period <= datetime.timedelta(0):
            raise ValueError('period must be positive, not %r' % (period,))
        self.period = period
        self._start(buckets)

    def _start(self, buckets):
        self._buckets = tuple(BTrees.LOBTree.LOBTree() for _ in range(buckets))
        self._len = BTrees.Length.Length()
        self._rotated = now()

    @property
    def interval(self):
        """Time between rotations."""
        return self.period / (len(self._buckets) - 1)

    def _trees(self):
        return list(self._buckets)

    def _store(self, key, item):
        self._buckets[0][key] = item
        self._len.change(1)

    def _rotate(self):
        """Drop expired trees: one per interval passed since the last one."""
        steps = int((now() - self._rotated) / self.interval)
        if steps <= 0:
            return
        # Jobs waiting in the agent's record completed before now: they
        # belong in the tree that was the newest until now.
        self._move_recent()
        steps = min(steps, len(self._buckets))
        dropped = self._buckets[-steps:]
        self._len.change(-sum(len(tree) for tree in dropped))
        fresh = tuple(BTrees.LOBTree.LOBTree() for _ in range(steps))
        self._buckets = fresh + self._buckets[:-steps]
        self._rotated = now()

    def add(self, item, parent=None):
        if not self._buckets:  # a 1.5 store, not upgraded yet
            self._start(7)  # 1.5's number of buckets
        self._rotate()
        super().add(item, parent)

    def _move_recent(self):
        """Store the ``(key, item)`` pairs waiting in ``_recent``."""
        pairs = () if self._recent is None else self._recent.take_done()
        for key, item in pairs:
            self._buckets[0][key] = item
        if pairs:
            self._len.change(len(pairs))

    def _sources(self, low, high):
        return super()._sources(low, high) + [self._recent_items(low, high)]

    def _recent_items(self, low, high):
        recent = self._recent
        return [] if recent is None else recent.done_items(low, high)

    def _key_taken(self, key):
        return super()._key_taken(key) or bool(self._recent_items(key, key))

    def clear(self):
        super().clear()
        if self._len is not None:
            self._len.set(0)
        if self._recent is not None:
            self._recent.take_done()

    def __len__(self):
        recent = self._recent
        return ((0 if self._len is None else self._len())
                + (0 if recent is None else recent.done_count()))

    def __bool__(self):
        return len(self) > 0

    __nonzero__ = __bool__


class RollingMapping(collections.OrderedDict):
    """An in-memory, insertion-ordered mapping of at most ``size`` items.

    Adding a new key beyond ``size`` drops the oldest insertions.
    """

    size = 100

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)

    def minKey(self, key=None):
        """The smallest key (at least ``key`` if given), as BTrees answer."""
        keys = [k for k in self if key is None or k >= key]
        if not keys:
            raise ValueError('no key at or above %r' % (key,))
        return min(keys)

    def maxKey(self, key=None):
        """The largest key (at most ``key`` if given), as BTrees answer."""
        keys = [k for k in self if key is None or k <= key]
        if not keys:
            raise ValueError('no key at or below %r' % (key,))
        return max(keys)
