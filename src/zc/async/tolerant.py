"""Reading and changing stored objects whose code this process lacks.

A job whose callable lives in a module this process cannot import still
loads in ZODB: the missing global becomes a ``ZODB.broken.Broken`` class.
But nothing that holds such a class can be stored again (pickling a class
imports it), and an object whose ``__setstate__`` raises here cannot be
loaded at all.  So the job can be neither claimed, failed, removed nor put
back through a normal connection (see :mod:`zc.async.unloadable`).

A *tolerant* connection (:func:`connection`) loads records with an
unpickler that never gives up:

* a global it cannot import (missing module or attribute, or a module that
  raises on import) becomes a stand-in class of :class:`Missing`: a
  ``Broken`` subclass (so its instances keep their state, as ZODB's do)
  that stores itself as ``ZODB.broken.find_global(module, name)``, which
  every ZODB process resolves to the real global where it exists (and to a
  Broken class elsewhere); calling it raises ImportError;
* an object that cannot be built here (its ``__setstate__`` or its
  constructor raises) becomes an :class:`Unbuilt`, which stores itself as
  the same construction and state, to be built where that works.

So a job loaded there can be changed and committed with the ordinary code
of :mod:`zc.async.job` and :mod:`zc.async.queue`, and it keeps its
callable and arguments for the processes that can load them.  The
connection starts with an empty cache, so no object loaded the ordinary
way (holding ZODB's unstorable Broken classes) is mixed in, and it leaves
none of its stand-ins behind for the next user of the pooled connection.

:func:`record_state` reads one record's state the same way without
touching any connection's cache (persistent references stay
:class:`Reference` stand-ins): enough to name a job's callable.
"""
import contextlib
import copyreg
import io
import sys

import transaction
import transaction.interfaces
import ZODB.broken
import ZODB.POSException
import ZODB.serialize
import ZODB.utils
import zodbpickle.pickle_3
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

from . import txn


class Missing(type):
    """The metaclass of the stand-ins for globals that cannot be imported.

    The stand-in is a class (so that instances of a missing class unpickle
    as ZODB's Broken instances do); ``__Missing_error__`` says why the
    import failed.
    """

    def __call__(cls, *args, **kwargs):
        raise ImportError('cannot import %s.%s here: %s' % (
            cls.__module__, cls.__name__, cls.__Missing_error__))


def _reduce_missing(cls):
    return ZODB.broken.find_global, (cls.__module__, cls.__name__)


copyreg.pickle(Missing, _reduce_missing)

_missing = {}  # {(module, name): stand-in class}


def missing(module, name, error):
    """The stand-in class for ``module.name``, which cannot be imported
    because of ``error`` (a text)."""
    cls = _missing.get((module, name))
    if cls is None:
        cls = _missing[(module, name)] = Missing(
            name, (ZODB.broken.Broken,), {
                '__module__': module, '__qualname__': name,
                '__Missing_error__': error,
                # Instances made by object.__new__ (protocol 0 and 1
                # pickles) have no constructor arguments to store.
                '__Broken_newargs__': ()})
    return cls


def find_global(module, name):
    """``module.name``, or its :func:`missing` stand-in when it cannot be
    imported (for whatever reason)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    module = IMPORT_MAPPING.get(module, module)
    try:
        __import__(module)
        return getattr(sys.modules[module], name)
    except Exception as e:  # an import may raise anything
        return missing(module, name, '%s: %s' % (type(e).__name__, e))


def dotted_name(obj):
    """``module.name`` of a global (a function, class or stand-in), or
    None."""
    module = getattr(obj, '__module__', None)
    name = getattr(obj, '__qualname__', None) or getattr(
        obj, '__name__', None)
    if not isinstance(module, str) or not isinstance(name, str):
        return None
    return '%s.%s' % (module, name)


def is_missing(obj):
    """Whether ``obj`` is a global that could not be imported (a stand-in,
    or one of ZODB's Broken classes), or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return issubclass(cls, ZODB.broken.Broken)


class Unbuilt:
    """Stands in for an object that could not be built in this process.

    It stores itself as the construction (``call(*args)``) and state the
    record held, so the processes that can build it still get it.
    ``error`` says what went wrong here.
    """

    def __init__(self, call, args, state=None, error=None):
        if call is copyreg.__newobj__:
            # Pickle refuses __newobj__ for an object of another class;
            # ZODB's rebuild makes the same ``cls.__new__(cls, *args)``.
            cls, args = args[0], args[1:]
            call, args = ZODB.broken.rebuild, (
                cls.__module__, cls.__qualname__, *args)
        self._reduce = (call, args) if state is None else (call, args, state)
        self.error = error

    def __reduce__(self):
        return self._reduce

    def __repr__(self):
        return '<unbuilt %s: %s>' % (
            dotted_name(self._reduce[0]) or repr(self._reduce[0]),
            self.error)


class Reference:
    """A persistent reference of a record read by :func:`record_state`
    (the raw reference data: an oid, or ``(oid, class)``, or a list)."""

    def __init__(self, data):
        self.data = data

    @property
    def oid(self):
        data = self.data
        if isinstance(data, list):  # ['m', (db, oid, class)] and kin
            data = data[1]
            return data[1] if len(data) > 1 else data[0]
        if isinstance(data, tuple):
            return data[0]
        return data

    @property
    def cls(self):
        data = self.data
        if isinstance(data, tuple) and len(data) == 2:
            return data[1]
        if isinstance(data, list) and data[0] == 'm':
            return data[1][2]
        return None

    def __repr__(self):
        name = dotted_name(self.cls) if self.cls is not None else None
        oid = self.oid
        text = 'oid %d' % ZODB.utils.u64(oid) if isinstance(
            oid, bytes) and len(oid) == 8 else repr(oid)
        return '<reference to %s%s>' % (
            name + ' ' if name else '', '(%s)' % text)


def _failed(error):
    return '%s: %s' % (type(error).__name__, error)


def is_transient(error):
    """Whether ``error`` is the database's (a conflict, a disconnect), not
    the record's: such errors are never taken for a record that cannot be
    loaded."""
    return (isinstance(error, (ZODB.POSException.ConflictError,
                               transaction.interfaces.TransientError))
            or txn.is_disconnect(error))


class Unpickler(zodbpickle.pickle_3._Unpickler):
    """A pure-Python unpickler that builds stand-ins where the normal one
    raises (see the module docstring)."""

    dispatch = dict(zodbpickle.pickle_3._Unpickler.dispatch)

    def __init__(self, data, persistent_load):
        super().__init__(io.BytesIO(data))
        self.persistent_load = persistent_load
        self._made = {}  # {id(object): (call, args)} of what REDUCE made

    def find_class(self, module, name):
        return find_global(module, name)

    def _build(self, call, args):
        if isinstance(call, Missing):
            return Unbuilt(call, args, error=call.__Missing_error__)
        # What a tolerant connection stored: resolve it tolerantly again.
        call = _TOLERANT_CALLS.get(call, call)
        try:
            res = call(*args)
        except Exception as e:
            if is_transient(e):
                raise
            return Unbuilt(call, args, error=_failed(e))
        self._made[id(res)] = (call, args)
        return res

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._build(self.stack[-1], args)
    dispatch[zodbpickle.pickle_3.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack[-1]
        self.stack[-1] = self._build(copyreg.__newobj__, (cls, *args))
    dispatch[zodbpickle.pickle_3.NEWOBJ[0]] = load_newobj

    def _instantiate(self, klass, k):
        # INST and OBJ, of protocols 0 and 1 (1.5's Python 2 pickles).
        args = tuple(self.stack[k + 1:])
        del self.stack[k:]
        if (args or not isinstance(klass, type)
                or hasattr(klass, '__getinitargs__')):
            self.append(self._build(klass, args))
        else:
            self.append(self._build(copyreg.__newobj__, (klass,)))

    def load_build(self):
        state = self.stack[-1]
        inst = self.stack[-2]
        if isinstance(inst, Unbuilt):  # it could not be made: keep all
            self.stack.pop()
            inst._reduce = inst._reduce[:2] + (state,)
            return
        try:
            super().load_build()
        except Exception as e:
            if is_transient(e):
                raise
            call, args = self._made.get(id(inst), (
                copyreg.__newobj__, (type(inst),)))
            self.stack[-1] = Unbuilt(call, args, state, _failed(e))
    dispatch[zodbpickle.pickle_3.BUILD[0]] = load_build


def _rebuild(module, name, *args):
    cls = find_global(module, name)
    return cls.__new__(cls, *args)


# The reductions that stand-ins store, and their tolerant counterparts.
_TOLERANT_CALLS = {ZODB.broken.find_global: find_global,
                   ZODB.broken.rebuild: _rebuild}


class Reader(ZODB.serialize.ObjectReader):
    """A connection's object reader that unpickles tolerantly."""

    def __init__(self, conn):
        super().__init__(conn, conn._cache,
                         lambda conn, module, name: find_global(module, name))

    def _get_unpickler(self, pickle):
        return Unpickler(pickle, self._persistent_load)


@contextlib.contextmanager
def connection(db, transaction_manager=None):
    """A tolerant connection to ``db`` with its own transaction manager
    (or ``transaction_manager``), for a ``with`` block.

    Its cache starts and ends empty (ZODB's ``_reader`` and
    ``_resetCache`` are used: the connection's way of loading is not
    public API); the transaction is aborted at the end.
    """
    if transaction_manager is None:
        transaction_manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=transaction_manager)
    normal = conn._reader
    try:
        conn._resetCache()
        conn._reader = Reader(conn)
        yield conn
    finally:
        try:
            transaction_manager.abort()
        finally:
            conn._reader = normal
            conn._resetCache()
            conn.close()


def record_state(conn, oid):
    """The state of record ``oid`` as ``conn`` sees it now, unpickled
    tolerantly, with :class:`Reference` for each persistent reference.

    Loads nothing into ``conn``'s cache.  Errors of the storage (an
    unknown oid, a disconnect) propagate.
    """
    data, _serial = conn._storage.load(oid)
    unpickler = Unpickler(data, Reference)
    unpickler.load()  # the class metadata
    return unpickler.load()
