"""Replay a job against the data it saw; dry-run one against live data.

:func:`replay` calls a job's callable again, with its arguments, against
the database as it was when the job last ran (the snapshot the job
recorded, ``IJob.active_snapshot``, or any transaction given), so a job
that failed on data since corrected fails again, with the same error, and
can be debugged.  :func:`dry_run` calls a pending job's callable, or any
callable, against the current data, commits, and reports what it would
add, change and leave unreferenced.  Both return a report
(:class:`zc.async.interfaces.ISandboxReport`); the ``zc-async replay`` and
``dry-run`` commands (:mod:`zc.async.ops.sandboxcli`) and the dashboard
(``--allow-replay``) print or show it.

Nothing is written to the database, whatever the code does: it runs in a
*sandbox*.

How the sandbox is built
========================

Opening "the database read-only at a transaction" has three candidate
designs:

* ``DB.open(at=tid)`` gives a historical connection: it reads the right
  data, but refuses to commit, and a job's code commits (and a dry-run must
  commit to find what it writes).
* A ``DemoStorage`` over the real storage opened read only: it takes the
  writes, but shows the current data, and a base that changes under it
  (other processes commit) breaks its consistency.
* A ``DemoStorage`` whose base is a storage *pinned* at the tid: every load
  answered with the revision current at the tid, through the storage's
  ``loadBefore``.

The sandbox is the third (:class:`zc.async.snapshot.Pinned`).  It works
the same over every storage, because ``loadBefore`` is the one read method
that ZODB 5 storages all serve from history: FileStorage from its file,
ZEO's ClientStorage from the server (the pinned view only ever calls
``loadBefore``, so it is read-only even over a writable client), and
RelStorage from its ``object_state`` table (through an instance of its own
with its own database session).  A history-free RelStorage keeps no past
revisions: it can be pinned only at its latest transaction, so it can
dry-run but not replay (:class:`~zc.async.interfaces.SnapshotUnavailableError`
says so).  A dry-run pins the latest transaction, so it sees one consistent
state even while workers commit.

Each database of a multi-database gets such a sandbox; a replay pins them
all at the job's tid (tids are times: the other databases are shown as
they were at that moment), a dry-run each at its latest transaction.

A pack removes revisions that were not current at its pack time; a
snapshot older than that is incomplete.  Packs mark the transactions they
went over, so a replay checks first and refuses with the oldest complete
snapshot to offer instead (:mod:`zc.async.snapshot`).

Running the code
================

The code runs in a thread of its own, as in a worker: its own thread-local
transaction manager (so ``transaction.commit()`` in a job commits the
sandbox, and never a transaction of the caller's thread), a connection to
the sandbox, the job's ``setUp`` and ``tearDown``, and
:data:`zc.async.local` set up with the job, its agent's name and
:meth:`~zc.async.threadlocal.Local.isSandbox` true.  Live annotations are
committed to the sandbox, in a connection of their own.  There is no
dispatcher or reactor (``getDispatcher()`` and ``getReactor()`` are None).

Non-transactional side effects happen for real: a replayed job that sends
mail sends mail.  Jobs skip them with ``zc.async.local.isSandbox()``.
"""
import io
import pickle
import pkgutil
import threading
import time
import traceback

import transaction
import ZODB
import ZODB.DemoStorage
import ZODB.POSException
import ZODB.utils

from .. import coroutines
from .. import interfaces
from .. import logs
from .. import snapshot
from ..job import Job
from ..monitordb import get_job
from ..loadable import status_word
from .sandboxreport import Report, changes, cut
from ..threadlocal import local

HISTORY_FREE = ('this storage is history-free: it keeps no past states, so '
                'a job cannot be replayed there (a dry-run works)')


class Sandbox:
    """Every database of ``db``'s multi-database, layered in a DemoStorage
    over a view pinned at ``at`` (default: each at its latest transaction).

    :attr:`db` is the sandbox of ``db``; :meth:`close` when done.
    """

    def __init__(self, db, at=None):
        self.bases = {}  # database name -> snapshot.Pinned
        self.databases = {}  # database name -> sandbox DB
        try:
            for name, real in sorted(db.databases.items()):
                storage, release = snapshot.storage_instance(real)
                tid = storage.lastTransaction() if at is None else at
                base = self.bases[name] = snapshot.Pinned(
                    storage, tid, release)
                ZODB.DB(ZODB.DemoStorage.DemoStorage(
                    name='sandbox of %s' % (base.getName(),), base=base),
                    database_name=name, databases=self.databases)
        except BaseException:
            self.close()
            raise
        self.db = self.databases[db.database_name]
        self.at = self.bases[db.database_name].tid

    def close(self):
        for sandbox in self.databases.values():
            sandbox.close()  # closes its base
        for base in self.bases.values():
            base.close()

    def missing(self):
        """The oids the run read whose revisions were packed away."""
        return [oid for base in self.bases.values() for oid in base.missing]

    def changes(self, report):
        """Fill in what the run wrote (see sandboxreport.changes)."""
        for name, sandbox in sorted(self.databases.items()):
            def find_global(module, name, sandbox=sandbox):
                return sandbox.classFactory(None, module, name)
            added, changed, removed = changes(
                sandbox.storage, self.bases[name], name, find_global)
            report.added.extend(added)
            report.changed.extend(changed)
            report.removed.extend(removed)

    # ----------------------------------------------- live annotations

    def setLiveAnnotation(self, job, name, value):
        """``local.setLiveAnnotation`` in a sandbox: committed to the
        sandbox in a connection of its own."""
        self._in_own_connection(job, _set_annotation, name, value)

    def getLiveAnnotation(self, job, name, default):
        """``local.getLiveAnnotation`` in a sandbox: read once from the
        sandbox's committed data (nobody else writes there meanwhile)."""
        return self._in_own_connection(job, _get_annotation, name, default)

    @staticmethod
    def _in_own_connection(job, func, *args):
        if job._p_jar is None:  # a dry-run's job for a plain callable
            return func(job, *args)
        tm = transaction.TransactionManager()
        conn = job._p_jar.db().open(transaction_manager=tm)
        try:
            res = func(conn.get(job._p_oid), *args)
            tm.commit()
            return res
        finally:
            tm.abort()
            conn.close()

    # ------------------------------------------------------------ runs

    def run(self, report, load, check=None, post_mortem=None):
        """Call the job ``load(conn)`` gives (in a connection to the
        sandbox) in a thread of its own; fill in ``report``.

        ``check(job)`` (optional) raises if the job may not run.
        """
        def in_thread():
            conn = self.db.open()  # with this thread's transaction manager
            try:
                job = load(conn)
                if check is not None:
                    check(job)
                if report.job is None:
                    report.job = repr(job)
                self._call(job, report, post_mortem)
            finally:
                transaction.abort()
                conn.close()
                coroutines.close_loop()
        _in_thread(in_thread)
        report.missing = self.missing()
        self.changes(report)
        return report

    def _call(self, job, report, post_mortem):
        args, kwargs = _arguments(job)
        agent = job.agent
        local.job, local.dispatcher, local.sandbox = job, None, self
        local.name = None if agent is None else agent.name
        setup_info = None
        start = time.perf_counter()
        try:
            setup_info = job.setUp()
            result = job.callable(*args, **kwargs)
            if coroutines.is_coroutine(result):  # as a worker runs it
                result = coroutines.run(result)
            transaction.commit()
            report.result = result
            report.result_repr = cut(logs.custom_repr(result))
        except BaseException as e:  # the job's code may raise anything
            report.seconds = time.perf_counter() - start
            report.error = e
            report.traceback = ''.join(traceback.format_exception(
                type(e), e, e.__traceback__.tb_next))
            if post_mortem is not None:
                post_mortem(e.__traceback__.tb_next)
            transaction.abort()
        else:
            report.seconds = time.perf_counter() - start
        finally:
            try:
                job.tearDown(setup_info)
            finally:
                local.job = local.name = local.sandbox = None


def _set_annotation(job, name, value):
    job.annotations[name] = value


def _get_annotation(job, name, default):
    return job.annotations.get(name, default)


def _in_thread(func):
    """``func()`` in a new thread (its own transaction manager and
    ``zc.async.local``); its result, or its exception raised here."""
    box = {}

    def target():
        try:
            box['result'] = func()
        except BaseException as e:
            box['error'] = e
    thread = threading.Thread(target=target, name='zc.async sandbox',
                              daemon=True)
    thread.start()
    thread.join()
    if 'error' in box:
        raise box['error']
    return box.get('result')


def _arguments(job):
    """The arguments a worker calls ``job``'s callable with: its own, and
    for a callback the result of the job it is a callback of."""
    args, kwargs = list(job.args), dict(job.kwargs)
    parent = job.parent
    while interfaces.ICallbackProxy.providedBy(parent):
        parent = parent.parent
    if interfaces.IJob.providedBy(parent):
        args.append(parent.result)
    return args, kwargs


# ---------------------------------------------------------------- replay

def replay(db, job_oid, at=None, post_mortem=None):
    """Call the job ``job_oid`` of ``db`` again in a sandbox pinned at the
    snapshot its last run saw (or at tid ``at``); return the report.

    ``job_oid``: an integer, an 8-byte oid, or the job itself.
    ``post_mortem(traceback)``, if given, is called in the sandbox when
    the call fails, before it is aborted (``pdb.post_mortem`` debugs it
    there).  SnapshotUnavailableError when the storage no longer has that
    snapshot (packed away, or history-free); ValueError for an oid that is
    not a job's.
    """
    oid = _oid(job_oid)
    if not snapshot.keeps_history(db.storage):
        raise interfaces.SnapshotUnavailableError(HISTORY_FREE)
    recorded = _recorded_snapshot(db, oid)
    if at is None and recorded is None:
        raise interfaces.SnapshotUnavailableError(
            'job %d has no recorded snapshot (it has not been called since '
            'zc.async 2 records them): give the transaction to replay it '
            'at' % (ZODB.utils.u64(oid),))
    source = 'the snapshot its last run saw'
    if at is None:
        at = recorded
    elif at != recorded:
        source = 'as asked'
    _check_history(db, oid, at)
    _check_exists(db, oid, at)
    sandbox = Sandbox(db, at)
    try:
        report = Report('replay', None, (ZODB.utils.u64(oid),
                                         db.database_name), at, source)
        return sandbox.run(report, lambda conn: conn.get(oid),
                           post_mortem=post_mortem)
    finally:
        sandbox.close()


def _oid(job_oid):
    if interfaces.IJob.providedBy(job_oid):
        return job_oid._p_oid
    if isinstance(job_oid, bytes):
        return job_oid
    return ZODB.utils.p64(job_oid)


def _recorded_snapshot(db, oid):
    """The snapshot the job ``oid`` recorded (ValueError if not a job)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        return get_job(conn, ZODB.utils.u64(oid), None).active_snapshot
    finally:
        tm.abort()
        conn.close()


def _check_history(db, oid, at):
    """SnapshotUnavailableError if a pack removed revisions of ``at``."""
    if snapshot.packed_after(db.storage, at):
        oldest = snapshot.oldest_complete(db.storage, at)
        raise interfaces.SnapshotUnavailableError(
            'cannot replay job %d at %s: the database was packed after it, '
            'so the data the job saw then is gone.  The oldest complete '
            'state is at %s: replay at that (--at 0x%016x) to run the job '
            'against the data then' % (
                ZODB.utils.u64(oid), snapshot.tid_text(at),
                snapshot.tid_text(oldest), ZODB.utils.u64(oldest)),
            oldest=oldest)


def _check_exists(db, oid, at):
    """SnapshotUnavailableError if the job was not stored yet at ``at``.
    """
    storage, release = snapshot.storage_instance(db)
    try:
        found = snapshot.Pinned(storage, at).loadBefore(oid, None)
    finally:
        if release is not None:
            release()
    if found is None:
        raise interfaces.SnapshotUnavailableError(
            'cannot replay job %d at %s: it was not in the database yet'
            % (ZODB.utils.u64(oid), snapshot.tid_text(at)))


# --------------------------------------------------------------- dry-run

_NOT_STARTED = (interfaces.NEW, interfaces.PENDING, interfaces.ASSIGNED)


def dry_run(db, job_or_callable, *args, **kwargs):
    """Run a job that has not started, or a callable, against the current
    data of ``db`` in a sandbox, commit there, and return the report of
    what it did.

    ``job_or_callable``: a job stored in ``db`` (or another database of its
    multi-database), or a callable (or its dotted name) to call with
    ``args`` and ``kwargs``; persistent arguments stored in the database
    are passed as their sandbox copies.  BadStatusError for a job that
    started; the job stays as it is.
    """
    if interfaces.IJob.providedBy(job_or_callable):
        if args or kwargs:
            raise TypeError('a job is dry-run with its own arguments; give '
                            'none (got %r, %r)' % (args, kwargs))
        return _dry_run_job(db, job_or_callable)
    call = job_or_callable
    if isinstance(call, str):
        call = _resolve(call)
    if not callable(call):
        raise TypeError('dry_run needs a job or a callable, not %r' % (call,))
    arguments = _pickle_arguments(db, args, kwargs)
    sandbox = Sandbox(db)
    try:
        report = Report('dry-run', _call_text(call, args, kwargs), None,
                        sandbox.at, 'the latest transaction')

        def load(conn):
            args, kwargs = _unpickle_arguments(conn, arguments)
            return Job(call, *args, **kwargs)
        return sandbox.run(report, load)
    finally:
        sandbox.close()


def _call_text(call, args, kwargs):
    """``module.function(arguments)``, as a job's repr shows its call."""
    arguments = [logs.custom_repr(arg) for arg in args]
    arguments.extend('%s=%s' % (key, logs.custom_repr(value))
                     for key, value in kwargs.items())
    return '%s(%s)' % (logs.custom_repr(call), ', '.join(arguments))


def _dry_run_job(db, job):
    if job._p_jar is None or job._p_jar.db() not in db.databases.values():
        raise ValueError('%s is not a job stored in %r' % (
            logs.custom_repr(job), db.database_name))
    oid, name = job._p_oid, job._p_jar.db().database_name
    sandbox = Sandbox(db)
    try:
        report = Report('dry-run', None, (ZODB.utils.u64(oid), name),
                        sandbox.bases[name].tid, 'the latest transaction',
                        note='the job is still as it was')
        return sandbox.run(
            report, lambda conn: conn.get_connection(name).get(oid),
            check=_not_started)
    finally:
        sandbox.close()


def _not_started(job):
    if job.status not in _NOT_STARTED:
        raise interfaces.BadStatusError(
            'only a job that has not started can be dry-run; %s is %s '
            '(replay it instead)' % (logs.custom_repr(job), status_word(job)))


def _resolve(name):
    try:
        return pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError('cannot import %r: %s' % (name, e)) from None


def _pickle_arguments(db, args, kwargs):
    """Pickle ``(args, kwargs)``, persistent objects of ``db``'s databases
    as references (see _unpickle_arguments)."""
    databases = db.databases

    def persistent_id(obj):
        jar = getattr(obj, '_p_jar', None)
        if jar is None or getattr(obj, '_p_oid', None) is None:
            return None  # stored with the arguments, as a new object
        name = jar.db().database_name
        if databases.get(name) is not jar.db():
            raise ValueError('%s is stored in another database' % (
                logs.custom_repr(obj),))
        return name, obj._p_oid

    file = io.BytesIO()
    pickler = pickle.Pickler(file, 3)
    pickler.persistent_id = persistent_id
    pickler.dump((args, kwargs))
    return file.getvalue()


def _unpickle_arguments(conn, data):
    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.persistent_load = (
        lambda ref: conn.get_connection(ref[0]).get(ref[1]))
    return unpickler.load()
