"""A job's arguments, callbacks and annotations, stored only when used.

A 1.5 job got four persistent sub-objects when it was made: ``args`` (a
PersistentList), ``kwargs`` (a PersistentMapping), ``callbacks`` (a
zc.queue PersistentQueue) and ``annotations`` (an OOBTree).  Each was a
record to write when the job was put, and the first three were loaded
(a network round trip each on ZEO) when it ran; most jobs use none of them.
:class:`JobParts`, a base class of :class:`zc.async.job.Job`, keeps the four
attributes and their behaviour, and stores:

* ``args`` and ``kwargs`` in the job's own state, as a tuple and a dict,
  while they are small (pickled, at most :data:`INLINE_LIMIT` bytes, a
  persistent object counting as a reference).  ``job.args`` and
  ``job.kwargs`` are then a list-like :class:`Args` and a dict-like
  :class:`Kwargs`: views whose changes write the job.  Larger ones are kept
  in 1.5's PersistentList and PersistentMapping (so a large argument is not
  written again with every status change of the job), and the attributes
  are those objects.
* ``callbacks`` and ``annotations`` in 1.5's PersistentQueue and OOBTree,
  made by the first addition.  Until then the attributes are empty
  stand-ins (:class:`NoCallbacks`, :class:`NoAnnotations`) that make them
  when changed.

Reading never writes the job.  Jobs stored by 1.5 (or by earlier zc.async 2
code) keep their four sub-objects: ``__setstate__`` moves them from the
``args``... keys of their state to the private names that the properties
read.

A live annotation (``zc.async.local.setLiveAnnotation``) is committed by
another connection while the job runs; on a job without annotations it
creates the tree, so it writes the job, and the job's own next commit would
conflict.  :meth:`JobParts._p_resolveConflict` merges exactly that case.
"""
import collections
import collections.abc
import types

import BTrees.OOBTree
import persistent
import persistent.list
import persistent.mapping
import ZODB.POSException
import zc.queue

from . import pickling

#: The largest pickle, in bytes, of ``args`` (or of ``kwargs``) stored in
#: the job's own state rather than in a persistent object of its own.
INLINE_LIMIT = 1024

# The state keys of 1.5's layout, and the private names they move to.
_OLD_NAMES = {'args': '_args', 'kwargs': '_kwargs',
              'callbacks': '_callbacks', 'annotations': '_annotations'}
_OLD_KEYS = frozenset(_OLD_NAMES)

# ``_kwargs`` of a job without keyword arguments: read-only, so that no
# code can change the class default by mistake (it is never stored).
_NO_KWARGS = types.MappingProxyType({})


class JobParts:
    """The ``args``, ``kwargs``, ``callbacks`` and ``annotations`` of a job.

    Mixed into a persistent class.  Each private attribute holds the stored
    form: ``_args`` a tuple (inline) or PersistentList; ``_kwargs`` a dict
    (inline) or PersistentMapping; ``_callbacks`` None or a PersistentQueue;
    ``_annotations`` None or an OOBTree.  The class defaults are the empty
    forms, so an empty part adds nothing to the job's state.
    """

    _args = ()
    _kwargs = _NO_KWARGS
    _callbacks = None
    _annotations = None

    def _init_parts(self, args, kwargs):
        """Store the arguments of a new job (nothing when they are empty)."""
        if args:
            self._args = _stored_args(args)
        if kwargs:
            self._kwargs = _stored_kwargs(kwargs)

    # -------------------------------------------------------- properties

    @property
    def args(self):
        """The stored positional arguments: a mutable sequence."""
        stored = self._args
        if isinstance(stored, persistent.Persistent):
            return stored
        return self._view('_v_args', Args)

    @args.setter
    def args(self, value):
        if not isinstance(value, persistent.list.PersistentList):
            value = _stored_args(value)
        self._args = value

    @property
    def kwargs(self):
        """The stored keyword arguments: a mutable mapping."""
        stored = self._kwargs
        if isinstance(stored, persistent.Persistent):
            return stored
        return self._view('_v_kwargs', Kwargs)

    @kwargs.setter
    def kwargs(self, value):
        if not isinstance(value, persistent.mapping.PersistentMapping):
            value = _stored_kwargs(value)
        self._kwargs = value

    @property
    def callbacks(self):
        """The callbacks, in order: 1.5's PersistentQueue once there is
        one (add them with ``addCallback``)."""
        stored = self._callbacks
        if stored is None:
            return self._view('_v_callbacks', NoCallbacks)
        return stored

    @callbacks.setter
    def callbacks(self, value):
        self._callbacks = value

    @property
    def annotations(self):
        """The job's annotations: 1.5's OOBTree once something is in it."""
        stored = self._annotations
        if stored is None:
            return self._view('_v_annotations', NoAnnotations)
        return stored

    @annotations.setter
    def annotations(self, value):
        self._annotations = value

    def _view(self, name, factory):
        """The ``factory(self)`` kept in volatile attribute ``name``, so
        that the attribute gives the same object while the job is loaded
        (volatile attributes are not stored, and setting one does not
        write the job)."""
        view = getattr(self, name, None)
        if view is None:
            view = factory(self)
            setattr(self, name, view)
        return view

    # ---------------------------------------------- internal use (no views)

    def _callback_queue(self):
        """The callbacks' PersistentQueue, made on first use."""
        if self._callbacks is None:
            self._callbacks = zc.queue.PersistentQueue()
        return self._callbacks

    def _callback_list(self):
        """The callbacks as a list (no object is made)."""
        return [] if self._callbacks is None else list(self._callbacks)

    def _has_callbacks(self):
        return self._callbacks is not None and len(self._callbacks) > 0

    def _annotation_tree(self):
        """The annotations' OOBTree, made on first use."""
        if self._annotations is None:
            self._annotations = BTrees.OOBTree.OOBTree()
        return self._annotations

    # ------------------------------------------------------------ storing

    def __setstate__(self, state):
        # 1.5's layout names the parts like the properties, which would hide
        # them: move them to the private names.
        if isinstance(state, dict) and not _OLD_KEYS.isdisjoint(state):
            state = {_OLD_NAMES.get(key, key): value
                     for key, value in state.items()}
        super().__setstate__(state)

    def _p_resolveConflict(self, old, committed, new):
        """Merge a commit that only created the annotations (a live
        annotation on a job that had none) with any other change of the
        job; every other conflict stands."""
        merged = _merge_created_annotations(old, committed, new)
        if merged is None:
            raise ZODB.POSException.ConflictError
        return merged


# --------------------------------------------------------- stored forms

def _fits_inline(value):
    """Whether ``value`` is small enough to store in the job's state."""
    size = pickling.pickled_size(value)
    # One that cannot be pickled may be kept anywhere: Queue.put's check
    # names the argument that cannot be stored.
    return size is None or size <= INLINE_LIMIT


def _stored_args(values):
    """The stored form of positional arguments ``values``."""
    values = tuple(values)
    if not values or _fits_inline(values):
        return values
    return persistent.list.PersistentList(values)


def _stored_kwargs(mapping):
    """The stored form of keyword arguments ``mapping``."""
    mapping = dict(mapping)
    if not mapping or _fits_inline(mapping):
        return mapping
    return persistent.mapping.PersistentMapping(mapping)


# ----------------------------------------------------------------- views

class Args(collections.abc.MutableSequence):
    """``job.args`` while the arguments are stored in the job's state.

    A list-like view: it reads the job's current arguments and every change
    stores new ones in the job (a PersistentList once they grow past
    :data:`INLINE_LIMIT`, which it then changes in place).  It compares
    equal to a list with the same items and pickles as such a list.
    """

    __slots__ = ('_job',)

    def __init__(self, job):
        self._job = job

    def _change(self, change):
        """Apply ``change`` (a function of a list) to the arguments and
        store them; return what ``change`` returned."""
        job = self._job
        stored = job._args
        if isinstance(stored, persistent.Persistent):
            return change(stored)  # a PersistentList: it stores itself
        items = list(stored)
        result = change(items)  # raising: nothing changed
        job._args = _stored_args(items)
        return result

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self._job._args[index])
        return self._job._args[index]

    def __len__(self):
        return len(self._job._args)

    def __iter__(self):
        return iter(self._job._args)

    def __contains__(self, value):
        return value in self._job._args

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            value = list(value)
        self._change(lambda items: items.__setitem__(index, value))

    def __delitem__(self, index):
        self._change(lambda items: items.__delitem__(index))

    def insert(self, index, value):
        self._change(lambda items: items.insert(index, value))

    def append(self, value):
        self._change(lambda items: items.append(value))

    def extend(self, values):
        values = list(values)  # may be this very view
        if values:
            self._change(lambda items: items.extend(values))

    def __iadd__(self, values):
        self.extend(values)
        return self

    def pop(self, index=-1):
        return self._change(lambda items: items.pop(index))

    def remove(self, value):
        self._change(lambda items: items.remove(value))

    def clear(self):
        if len(self):
            self._change(lambda items: items.clear())

    def reverse(self):
        self._change(lambda items: items.reverse())

    def sort(self, *, key=None, reverse=False):
        self._change(lambda items: items.sort(key=key, reverse=reverse))

    def copy(self):
        return list(self)

    def __add__(self, other):
        return list(self) + list(other)

    def __radd__(self, other):
        return list(other) + list(self)

    def __mul__(self, count):
        return list(self) * count

    __rmul__ = __mul__

    def __imul__(self, count):
        self._change(lambda items: items.__imul__(count))
        return self

    def __eq__(self, other):
        # As PersistentList: equal to lists (and list wrappers) only.
        if isinstance(other, (Args, collections.UserList)):
            other = list(other)
        return list(self) == other

    __hash__ = None

    def __repr__(self):
        return repr(list(self))

    def __reduce__(self):
        return list, (list(self),)


class Kwargs(collections.abc.MutableMapping):
    """``job.kwargs`` while the keyword arguments are stored in the job's
    state: a dict-like view, as :class:`Args` is list-like."""

    __slots__ = ('_job',)

    def __init__(self, job):
        self._job = job

    def _change(self, change):
        """Apply ``change`` (a function of a dict) to the keyword arguments
        and store them; return what ``change`` returned."""
        job = self._job
        stored = job._kwargs
        if isinstance(stored, persistent.Persistent):
            return change(stored)  # a PersistentMapping: it stores itself
        mapping = dict(stored)
        result = change(mapping)  # raising: nothing changed
        job._kwargs = _stored_kwargs(mapping)
        return result

    def __getitem__(self, key):
        return self._job._kwargs[key]

    def get(self, key, default=None):
        return self._job._kwargs.get(key, default)

    def __contains__(self, key):
        return key in self._job._kwargs

    def __iter__(self):
        return iter(self._job._kwargs)

    def __len__(self):
        return len(self._job._kwargs)

    def __setitem__(self, key, value):
        self._change(lambda mapping: mapping.__setitem__(key, value))

    def __delitem__(self, key):
        self._change(lambda mapping: mapping.__delitem__(key))

    def update(self, *args, **kwargs):
        self._change(lambda mapping: mapping.update(*args, **kwargs))

    def setdefault(self, key, default=None):
        if key in self:
            return self[key]
        self[key] = default
        return default

    _MISSING = object()

    def pop(self, key, default=_MISSING):
        if key not in self:
            if default is self._MISSING:
                raise KeyError(key)
            return default
        return self._change(lambda mapping: mapping.pop(key))

    def popitem(self):
        return self._change(lambda mapping: mapping.popitem())

    def clear(self):
        if len(self):
            self._change(lambda mapping: mapping.clear())

    def copy(self):
        return dict(self)

    def __repr__(self):
        return repr(dict(self))

    def __reduce__(self):
        return dict, (dict(self),)


# ----------------------------------------------------------- stand-ins

class NoCallbacks:
    """``job.callbacks`` of a job that has none yet: reads as an empty
    PersistentQueue; ``put`` makes the job's queue (``addCallback`` is the
    way to add a callback, as in 1.5)."""

    __slots__ = ('_job',)

    def __init__(self, job):
        self._job = job

    def _queue(self):
        """The job's queue if it has one by now, else an empty tuple."""
        queue = self._job._callbacks
        return () if queue is None else queue

    def put(self, item):
        self._job._callback_queue().put(item)

    def pull(self, index=0):
        queue = self._job._callbacks
        if queue is None:
            raise IndexError(index)
        return queue.pull(index)

    def __len__(self):
        return len(self._queue())

    def __iter__(self):
        return iter(self._queue())

    def __getitem__(self, index):
        return self._queue()[index]

    def __repr__(self):
        return '<no callbacks of %s>' % (type(self._job).__name__,)


class NoAnnotations(collections.abc.MutableMapping):
    """``job.annotations`` of a job that has none yet: reads as an empty
    OOBTree; the first change makes the job's OOBTree, which this object
    then reads and changes."""

    __slots__ = ('_job',)

    def __init__(self, job):
        self._job = job

    def _read(self):
        tree = self._job._annotations
        return _EMPTY_TREE if tree is None else tree

    def _write(self):
        return self._job._annotation_tree()

    # Reads (OOBTree's signatures).
    def __getitem__(self, key):
        return self._read()[key]

    def get(self, key, default=None):
        return self._read().get(key, default)

    def __contains__(self, key):
        return key in self._read()

    def has_key(self, key):
        return self._read().has_key(key)

    def __iter__(self):
        return iter(self._read())

    def __len__(self):
        return len(self._read())

    def keys(self, *args, **kwargs):
        return self._read().keys(*args, **kwargs)

    def values(self, *args, **kwargs):
        return self._read().values(*args, **kwargs)

    def items(self, *args, **kwargs):
        return self._read().items(*args, **kwargs)

    def minKey(self, *args):
        return self._read().minKey(*args)

    def maxKey(self, *args):
        return self._read().maxKey(*args)

    def byValue(self, min):
        return self._read().byValue(min)

    # Changes.
    def __setitem__(self, key, value):
        self._write()[key] = value

    def insert(self, key, value):
        return self._write().insert(key, value)

    def __delitem__(self, key):
        if self._job._annotations is None:
            raise KeyError(key)
        del self._write()[key]

    def update(self, *args, **kwargs):
        items = dict(*args, **kwargs)
        if items:
            self._write().update(items)

    def setdefault(self, key, default=None):
        if key in self._read():
            return self._read()[key]
        return self._write().setdefault(key, default)

    _MISSING = object()

    def pop(self, key, default=_MISSING):
        if key not in self._read():
            if default is self._MISSING:
                raise KeyError(key)
            return default
        return self._write().pop(key)

    def clear(self):
        if len(self._read()):
            self._write().clear()

    def __repr__(self):
        return '<no annotations of %s>' % (type(self._job).__name__,)


# Read by NoAnnotations only, never changed.
_EMPTY_TREE = BTrees.OOBTree.OOBTree()


# --------------------------------------------------- conflict resolution

def _merge_created_annotations(old, committed, new):
    """The merged state when one of ``committed`` and ``new`` differs from
    ``old`` only by newly created annotations and the other has none; else
    None."""
    if not all(isinstance(s, dict) for s in (old, committed, new)):
        return None
    if '_annotations' in old or 'annotations' in old:
        return None
    for adder, other in ((committed, new), (new, committed)):
        if '_annotations' in adder and '_annotations' not in other:
            rest = {k: v for k, v in adder.items() if k != '_annotations'}
            if pickling.same_state(rest, old):
                merged = dict(other)
                merged['_annotations'] = adder['_annotations']
                return merged
    return None
