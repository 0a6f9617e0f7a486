"""Persistent building blocks of the stored objects, and 1.5's utilities.

The base classes that the queue, agent and dispatcher records build on
(:class:`Base`, :class:`Dict`), the time-keyed collections of completed
jobs (:class:`Periodic`, :class:`RollingSet`), an in-memory rolling
mapping, and small helpers for iterating and for worker threads' reports.

1.5 defined more here.  Those names are re-exported from where they live
now: the clock and the datetime keys (:mod:`zc.async.clock`), the loggers
and reprs (:mod:`zc.async.logs`), and the retry loops and error classes
(:mod:`zc.async.txn`).
"""
import collections
import datetime
import heapq
import itertools

import BTrees.Length
import BTrees.LOBTree
import BTrees.OOBTree
import persistent
import zope.interface
import zope.minmax

from . import interfaces
# 1.5's names (and ``now``, which the documentation uses), re-exported.
from .clock import dt_to_long, long_to_dt, now  # noqa: F401
from .logs import custom_repr, log, tracelog  # noqa: F401
from .txn import (  # noqa: F401
    BACKOFF_INCREMENT, EXPLOSIVE_ERRORS, INITIAL_BACKOFF, MAX_BACKOFF,
    SYSTEM_ERRORS, never_fail, try_five_times, wait_for_system_recovery)

Atom = zope.minmax.Maximum  # legacy alias kept for 1.5 pickles and code

# ---------------------------------------------------------- iteration

def sortedmerge(sources, key=None):
    """Lazily merge already-sorted iterables into one sorted iterator."""
    return heapq.merge(*sources, key=key)


def takecount(iterable, count):
    """An iterator over the first ``count`` items of ``iterable``."""
    if count < 0:
        raise ValueError('count must be zero or more, not %r' % (count,))
    return itertools.islice(iterable, count)


def handoff(method):
    """Mark a method that worker threads send to the reactor thread.

    :class:`zc.async.testing.Reactor` runs these reports as soon as it runs
    anything and leaves them out of its call counts.
    """
    method.zc_async_handoff = True
    return method


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


class SequenceReads:
    """Sequence reads over the items a record holds in ``_data``."""

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return iter(self._data)

    def __getitem__(self, index):
        return self._data[index]


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
