"""Jobs a dispatcher cannot load: passed over, reported once, then failed.

A job whose record, callable or arguments cannot be loaded in a process
(its module is not on that process's path, its callable was defined in
another process's ``__main__``, an argument's ``__setstate__`` raises
here, a persistent object it refers to has a class that is gone) must
never stop that process's claims: claiming it would fail the claim's
commit (ZODB cannot store a job holding a class it could not import), and
every poll would try again.  So each claim asks
:func:`zc.async.loadable.check` about each due job it looks at, through
its dispatcher's :class:`Registry`:

* a job this process cannot run is passed over, and the claim goes on
  with the jobs behind it (in the polls and in the worker threads' claims
  of their next job alike);
* the dispatcher logs it once, at ERROR, with the remedy (install the code
  in the workers, route the job with an agent filter, or remove it with
  ``zc-async remove``), counts it as a claim error and remembers it, so
  later claims pass over it without loading it again;
* after ``queue.unloadable_timeout`` (10 minutes by default, zero meaning
  at once), when no live dispatcher of the queue can load it, the next
  dispatcher that passes over it in a poll claims, instead, a job that
  fails it with :class:`zc.async.interfaces.UnloadableJobError` (see
  :func:`fail_unloadable`); the job's failure callbacks run there, as for
  any failed job, and a callback that cannot be loaded fails too.

Who could load it, across processes
-----------------------------------

Each dispatcher keeps, in its own record of the queue
(``DispatcherAgents.unloadable``, an OOBTree made on first use), the
pending jobs it found it cannot load and when it first did: its polls
write that tree only when the set changes (a new unloadable job, or one
that left the queue), never for good jobs, and nobody else writes it, so
it adds no conflicts.  A job may be failed when every *other* live
dispatcher of the queue that has agents has it in its tree, and the
dispatcher failing it has known it for the timeout.  A dispatcher that
can load the job never records it, so with one such dispatcher alive the
job waits for it and runs there; a dispatcher that is dead or
deactivated does not count.  The check reads the other records only for
jobs already found unloadable.

What is noticed, and what is not, is told in :mod:`zc.async.loadable`,
whose :func:`~zc.async.loadable.check` the registry asks.
"""
import datetime
import threading
import types
import weakref

import BTrees.OOBTree
import ZODB.broken
import ZODB.POSException
import ZODB.utils

from . import _registry
from . import clock
from . import interfaces
from . import jobactions
from . import loadable
from . import logs
from . import tolerant
from . import twist
from . import txn
from .job import Job
from .threadlocal import local

#: ``Queue.unloadable_timeout`` unless set: how long a job that no live
#: dispatcher can load waits before it is failed.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)

#: How long a dispatcher waits before it claims another job failing the
#: same unloadable job (the first one's commit may have failed).
FAIL_RETRY = datetime.timedelta(minutes=1)



# ------------------------------------------------------------ registry

class Entry:
    """A pending job that a dispatcher found it cannot load."""

    failing_since = None  # when a job failing it was last claimed

    def __init__(self, key, queue_name, error, callable_name, first_seen,
                 broken):
        self.key = key
        self.queue_name = queue_name
        self.error = error
        self.callable_name = callable_name
        self.first_seen = first_seen
        # It cannot be failed here: its class is missing, or a try failed.
        self.broken = broken

    @property
    def oid(self):
        return ZODB.utils.u64(self.key[1])

    @property
    def database(self):
        return self.key[0]

    def exception(self):
        """The UnloadableJobError that fails the job."""
        return interfaces.UnloadableJobError(
            self.oid, self.callable_name, self.error)

    def info(self):
        """A plain description (for status reports)."""
        return {'oid': self.oid, 'database': self.database,
                'queue': self.queue_name, 'callable': self.callable_name,
                'error': self.error, 'first seen': self.first_seen}


class Registry:
    """The jobs one dispatcher (``uuid``) found it cannot load.

    Thread-safe: the dispatcher's polls and its worker threads claim.
    ``report(entry)`` is called (in the claiming thread) once per new
    entry.
    """

    def __init__(self, uuid=None, report=None):
        self.uuid = uuid
        self.report = report
        self._lock = threading.Lock()
        self._entries = {}  # {(database name, oid): Entry}
        # The keys of the jobs logged: never again, even when a claim with
        # an older snapshot meets a job again after it left the queue.
        self._logged = set()

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        """The entry of the job ``key`` (database name, oid), or None."""
        return self._entries.get(key)

    def entries(self, queue_name=None):
        """The entries (of queue ``queue_name``), oldest first."""
        with self._lock:
            found = [entry for entry in self._entries.values()
                     if queue_name in (None, entry.queue_name)]
        return sorted(found, key=lambda entry: entry.first_seen)

    def check(self, job, queue):
        """The entry of ``job``, due in ``queue``, if this process cannot
        run it (found now, or before); else None."""
        key = loadable.job_key(job)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        error = loadable.check(job)
        if error is None:
            return None
        new = Entry(key, queue.name, error, loadable.callable_name(job),
                    clock.now(), isinstance(job, ZODB.broken.Broken))
        return self._add(new, queue)

    def blame(self, job, queue, error):
        """Note ``job``, taken by a claim whose commit failed because of
        ``error`` (a text: see :func:`zc.async.loadable.unstorable`);
        return its entry."""
        entry = Entry(loadable.job_key(job), queue.name, error,
                      loadable.callable_name(job), clock.now(), False)
        return self._add(entry, queue)

    def _add(self, entry, queue):
        with self._lock:
            found = self._entries.setdefault(entry.key, entry)
            new = found is entry and entry.key not in self._logged
            self._logged.add(entry.key)
        if new:
            _log_found(entry, self.uuid, queue)
            if self.report is not None:
                self.report(entry)
        return found

    def failing_job(self, job, entry, queue):
        """A new job that fails ``job`` (of ``entry``) with
        UnloadableJobError, when that is due; else None.

        Due when ``queue.unloadable_timeout`` passed since this dispatcher
        found it, and every other live dispatcher of the queue with agents
        recorded it as unloadable too (see the module docstring).
        """
        now = clock.now()
        if entry.broken or (entry.failing_since is not None
                            and now - entry.failing_since < FAIL_RETRY):
            return None
        if now - entry.first_seen < _timeout(queue):
            return None
        if not self._nobody_else_can(entry, queue):
            return None
        entry.failing_since = now
        return Job(fail_unloadable, job, entry.exception())

    def _nobody_else_can(self, entry, queue):
        for uuid, da in queue.dispatchers.items():
            if uuid == self.uuid or not da.activated or da.dead or not len(
                    da):
                continue
            if da.unloadable is None or entry.key not in da.unloadable:
                return False
        return True

    def needs_sync(self, queue, da):
        """Whether :meth:`sync` has anything to do for ``queue``."""
        return bool(da.unloadable) or any(
            entry.queue_name == queue.name
            for entry in list(self._entries.values()))

    def sync(self, queue, da):
        """Forget the jobs that left ``queue``, and make the dispatcher's
        record ``da`` hold the others (written only if that changes)."""
        mine = {entry.key: entry for entry in self.entries(queue.name)}
        for key in list(mine):
            if not _still_pending(queue, key):
                with self._lock:
                    self._entries.pop(key, None)
                del mine[key]
        tree = da.unloadable
        if tree is None:
            if not mine:
                return
            tree = da.unloadable = BTrees.OOBTree.OOBTree()
        for key in [key for key in tree if key not in mine]:
            del tree[key]
        for key, entry in mine.items():
            if key not in tree:
                tree[key] = entry.first_seen


_registries = weakref.WeakKeyDictionary()  # {database: Registry}


def process_registry(db):
    """The registry of this process's dispatcher (that of the instance
    UUID) if it serves the database ``db``, else one for the claims made
    in ``db`` without a dispatcher."""
    found = _registry.get()
    if found is not None and db in found.db.databases.values():
        return found.unloadable
    return _registries.setdefault(db, Registry())


def _timeout(queue):
    return getattr(queue, 'unloadable_timeout', DEFAULT_TIMEOUT)


def _still_pending(queue, key):
    """Whether the job ``key`` is still in ``queue`` (read from its
    record: the job need not load)."""
    database, oid = key
    try:
        conn = queue._p_jar.get_connection(database)
        state = tolerant.record_state(conn, oid)
    except (KeyError, ZODB.POSException.POSKeyError):
        return False
    parent = state.get('parent') if isinstance(state, dict) else None
    return (isinstance(parent, tolerant.Reference)
            and parent.oid == queue._p_oid)


def _log_found(entry, uuid, queue):
    if entry.broken:
        fate = 'It cannot be failed: its class is missing here.'
    else:
        fate = ('Unless a live dispatcher of the queue can load it, it is '
                'failed with UnloadableJobError after %s.'
                % (_timeout(queue),))
    logs.log.error(
        'job %d (database %r, callable %s) in queue %r cannot be run by '
        '%s, which passes over it: %s.  To run it, install the code it '
        'needs in the worker processes, or route it with an agent filter '
        'to the processes that have that code; else remove it: zc-async '
        'remove DATABASE %d.  %s', entry.oid, entry.database,
        entry.callable_name or '?', queue.name,
        'this process' if uuid is None else 'dispatcher %s' % (uuid,),
        entry.error, entry.oid, fate)


# -------------------------------------------------------------- failing

def fail_unloadable(job, error):
    """Fail ``job`` with ``error``: the callable of the job a dispatcher
    claims to fail an unloadable job (see :meth:`Registry.failing_job`).

    Runs in a worker thread: ``job``, if still pending, is taken from its
    queue, held by the worker's agent and failed (its callbacks run here)
    in a :func:`zc.async.tolerant.connection`; it ends in that agent's
    completed jobs.
    """
    wrapper = local.getJob()
    agent = wrapper.agent if wrapper is not None else None
    oid = job._p_oid
    with tolerant.connection(job._p_jar.db()) as conn:
        def unit():
            held = None if agent is None else conn.get(agent._p_oid)
            return jobactions.fail_pending(conn.get(oid), error, held)
        res = txn.wait_for_system_recovery(
            unit, 'failing unloadable job %d' % ZODB.utils.u64(oid),
            conn.transaction_manager)
    if isinstance(res, twist.Failure) and local.dispatcher is not None:
        # It cannot be changed even so (logged): only remove can help.
        entry = local.dispatcher.unloadable.get(loadable.job_key(job))
        if entry is not None:
            entry.broken = True
    return res


# ------------------------------------------------------- early warning

_warned = set()  # the __main__ callables warned about


def warn_if_main(job):
    """Log a WARNING, once per callable, when ``job``'s callable is
    defined in ``__main__``: other processes cannot import it."""
    root = job._callable_root
    if not isinstance(root, (type, types.FunctionType,
                             types.BuiltinFunctionType)):
        root = type(root)  # a callable instance, or a method's owner
    if root.__module__ != '__main__':
        return
    name = (tolerant.dotted_name(root), job._callable_name)
    if name in _warned:
        return
    _warned.add(name)
    logs.log.warning(
        'the callable of %r is defined in __main__: only dispatchers of '
        'this process can run it, since other processes cannot import it '
        '(they pass over it, and fail it after the queue\'s '
        'unloadable_timeout).  Define it in a module the workers import.',
        job)
