"""Stopping a running job from outside its thread: time limits and aborts.

The callable of a job runs in a worker thread of a dispatcher (see
:mod:`zc.async.workers`).  Each such thread has a :class:`Slot` that says
which job's callable it is calling, and each dispatcher a :class:`Watchdog`
(its ``watchdog`` attribute) that, in the reactor thread:

* arms a timer when a callable with a time limit starts: the job's
  ``time_limit``, else the ``time_limit`` of the agent that claimed it
  (not for callbacks, nor for zc.async's housekeeping jobs, whose
  callables are methods of other jobs);
* learns of abort requests (``job.requestAbort()``) committed by any
  process: it reads the requests of the jobs it watches when a commit
  changes one of them (the ZODB invalidations that the dispatcher watches
  for instant dispatch: at once with ZEO and FileStorage) and after every
  poll (the only way with RelStorage, or on the test reactor);
* and then raises :class:`~zc.async.interfaces.TimeLimitExceeded` or
  :class:`~zc.async.interfaces.AbortRequested` inside the job's thread, as
  an asynchronous exception (CPython's ``PyThreadState_SetAsyncExc``).
  The job's transaction is aborted and its retry policy's ``jobError``
  decides, as for any error of its callable: the default policies fail
  the job with that error.  Code in the job may look at
  ``zc.async.local.isAbortRequested()``; the job fails either way.  A
  coroutine job (``async def``) is stopped by cancelling its task instead
  (:func:`zc.async.coroutines.interrupt`): the coroutine gets a
  ``CancelledError`` at its next ``await``, and the job fails with the
  error even if the coroutine swallows the cancellation.

**What an asynchronous exception cannot do.**  It is raised when the thread
next runs Python code.  A loop in Python stops at once, but a thread in a
call into C (``time.sleep``, a read from a socket or a pipe, waiting for a
lock or a subprocess, a long computation inside an extension) gets it only
when that call returns.  A job that has not returned :attr:`Watchdog.grace`
seconds after the exception was raised is *abandoned*: a new thread takes
the old one's place, so the agent runs its next job; the job is settled
from another thread as its retry policy's ``jobError`` says (failed, by
default); and when the abandoned thread returns at last, whatever the job
did then is dropped, as for a reassigned job, and the thread ends.  A
thread that never returns stays until the process ends.  The exception can
also land in code that is not written for it: a job that commits by itself,
or that holds locks or other resources without ``try``/``finally``.  Keep
time limits generous, and let long jobs look at ``isAbortRequested()``.
"""
import ctypes
import datetime
import functools
import sys
import threading

import transaction
import ZODB.utils

from . import coroutines
from . import interfaces
from . import logs
from . import txn
from . import utils

#: Seconds an interrupted job has to return before its thread is abandoned.
GRACE = 5

_SetAsyncExc = ctypes.pythonapi.PyThreadState_SetAsyncExc


def check_time_limit(value):
    """``value`` if it is a time limit (None or a positive timedelta);
    TypeError or ValueError otherwise."""
    if value is not None:
        if not isinstance(value, datetime.timedelta):
            raise TypeError('time_limit must be a timedelta or None, not %r'
                            % (value,))
        if value <= datetime.timedelta(0):
            raise ValueError('time_limit must be positive, not %r'
                             % (value,))
    return value


class _Current(threading.local):
    slot = None  # the Slot of a dispatcher's worker thread


_current = _Current()


def watched(job, func):
    """``func`` (``job``'s callable, or what runs the coroutine it
    returned), or in a dispatcher's worker thread that is not calling
    another job's callable already, a callable that calls it watched
    (:meth:`Slot.call`)."""
    slot = _current.slot
    if slot is None or slot.calling or job._p_jar is None:
        return func
    return functools.partial(slot.call, job, func)


def abort_requested(job=None):
    """Whether the abort of the job running in this thread was requested:
    the watchdog said so, or ``job`` (the running job) says so."""
    slot = _current.slot
    if slot is not None and slot.abort_requested:
        return True
    return job is not None and bool(getattr(job, 'abort_requested', False))


def abandoned():
    """Whether this thread is an abandoned worker thread."""
    slot = _current.slot
    return slot is not None and slot.abandoned


def dropped(job):
    """Whether this worker thread drops its attempt of ``job`` on purpose:
    the thread was abandoned, or a stop of its dispatcher handed the job
    back (so that finding the job reassigned is no surprise)."""
    slot = _current.slot
    if slot is None:
        return False
    return slot.abandoned or (
        job._p_jar is not None
        and _jobid(job) in slot.pool.dispatcher.watchdog.handed_back)


def _jobid(job):
    return ZODB.utils.u64(job._p_oid), job._p_jar.db().database_name


def _limit(job):
    """The time limit of ``job``'s callable, in seconds, or None."""
    limit = getattr(job, 'time_limit', None)
    if limit is None:
        agent = job.parent
        owner = getattr(job.callable, '__self__', None)
        if (interfaces.IAgent.providedBy(agent)
                and not interfaces.IJob.providedBy(owner)):
            limit = getattr(agent, 'time_limit', None)
    return None if limit is None else limit.total_seconds()


def _watched_oids(job):
    """The oids that a commit requesting ``job``'s abort changes."""
    return frozenset(oid for oid in (
        job._p_oid, getattr(job.annotations, '_p_oid', None))
        if oid is not None)


class Slot:
    """What one worker thread of an ``AgentThreadPool`` calls.

    Made by the thread when it starts, closed when it ends.  The thread
    sets what it calls; the pool's dispatcher's watchdog reads it and
    stops it, under :attr:`lock`.
    """

    def __init__(self, pool):
        self.pool = pool
        self.thread = threading.current_thread()
        self._ident = ctypes.c_ulong(self.thread.ident)
        self.lock = threading.Lock()
        self.token = 0  # counts the watched calls
        self.calling = False  # a watched call runs now
        self.jobid = None  # (oid, database name) of its job
        self.oids = frozenset()  # see _watched_oids
        self.stop = None  # the JobStopped raised in the call, if any
        self.abort_requested = False  # an abort request stopped the call
        self.abandoned = False  # given up: the thread takes no more work
        _current.slot = self
        pool.dispatcher.watchdog.add(self)

    def close(self):
        """The thread ends."""
        _current.slot = None
        self.pool.dispatcher.watchdog.remove(self)

    def _report(self, method, *args):
        self.pool.dispatcher.reactor.callFromThread(method, *args)

    def call(self, job, func, *args, **kwargs):
        """Call ``func(*args, **kwargs)`` for ``job``, watched."""
        token = limit = None
        try:
            if getattr(job, 'abort_requested', False):
                self.abort_requested = True
                raise interfaces.AbortRequested(
                    'its abort was requested before it started')
            limit = _limit(job)
            jobid, oids = _jobid(job), _watched_oids(job)
            with self.lock:
                self.token += 1
                token = self.token
                self.jobid, self.oids = jobid, oids
                self.stop = None
                self.abort_requested = False
                self.calling = True
            if limit is not None:
                self._report(self.pool.dispatcher.watchdog.arm,
                             self, token, limit)
            return func(*args, **kwargs)
        finally:
            # No Python call before the lock is held: the exception, if it
            # comes now, must not escape this.  Once ``calling`` is false
            # nothing is raised in this thread any more, and what may still
            # be pending is withdrawn.
            with self.lock:
                self.calling = False
                stop = self.stop
                if stop is not None:
                    _SetAsyncExc(self._ident, None)
            if limit is not None and token is not None:
                self._report(self.pool.dispatcher.watchdog.disarm,
                             self, token)
            if stop is not None:
                error = sys.exc_info()[1]  # None: the callable returned
                if isinstance(error, type(stop)):
                    # What was raised in the thread: keep where it landed.
                    raise stop.with_traceback(
                        error.__traceback__.tb_next) from None
                raise stop from error

    def interrupt(self, token, error, abort=False):
        """(Any thread) Stop call ``token`` of the thread with ``error`` if
        it still runs, unless it was stopped already; say whether.

        A coroutine job is cancelled (:func:`zc.async.coroutines.interrupt`);
        in other jobs the error's class is raised asynchronously.
        """
        with self.lock:
            if (token != self.token or not self.calling
                    or self.stop is not None):
                return False
            self.stop = error
            if abort:
                self.abort_requested = True
            if not coroutines.interrupt(self.thread.ident, error):
                _SetAsyncExc(self._ident, ctypes.py_object(type(error)))
            return True

    def abandon(self, token):
        """(Any thread) Give the thread up if it still runs call ``token``;
        return the call's job id and error, or None."""
        with self.lock:
            if token != self.token or not self.calling or self.abandoned:
                return None
            self.abandoned = True
            return self.jobid, self.stop


class Watchdog:
    """Stops the watched calls of a dispatcher's worker threads (see the
    module docstring).

    Runs in the reactor thread, but for :meth:`add` and :meth:`remove`
    (worker threads) and :meth:`invalidated` (committing threads).
    ``handed_back`` holds the ``(oid, database name)`` of the jobs that a
    stop of the dispatcher handed back while they ran (see
    :mod:`zc.async.shutdown`).
    """

    grace = GRACE

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.slots = ()  # of the live worker threads
        self.handed_back = set()
        self._timers = {}  # {slot: (token, DelayedCall)}
        self._lock = threading.Lock()  # for slots
        self._check_requested = False  # a check is on its way
        self._checking = False  # a check reads the database
        self._check_again = False  # check again when it is done
        dispatcher.listeners.append(self._notified)

    @property
    def reactor(self):
        return self.dispatcher.reactor

    # ---------------------------------------------- worker threads

    def add(self, slot):
        with self._lock:
            self.slots += (slot,)

    def remove(self, slot):
        with self._lock:
            self.slots = tuple(s for s in self.slots if s is not slot)

    def invalidated(self, oids):
        """In a committing thread: the dispatcher heard of a commit that
        changed ``oids``; check when a watched job is among them (a stale
        read of a slot costs one check at most)."""
        for slot in self.slots:
            if slot.calling and not slot.oids.isdisjoint(oids):
                self._requestCheck()
                return

    def _requestCheck(self):
        if not self._check_requested:
            self._check_requested = True
            self.reactor.callFromThread(self.checkAborts)

    # ---------------------------------------------------- time limits

    @utils.handoff
    def arm(self, slot, token, seconds):
        """Stop call ``token`` of ``slot`` after ``seconds``."""
        self._schedule(slot, token, seconds, self._expire, slot, token,
                       seconds)

    @utils.handoff
    def disarm(self, slot, token):
        """Call ``token`` of ``slot`` ended: cancel its timer."""
        found = self._timers.get(slot)
        if found is not None and found[0] == token:
            del self._timers[slot]
            if found[1].active():
                found[1].cancel()

    def _schedule(self, slot, token, seconds, method, *args):
        """Call ``method(*args)`` after ``seconds``, instead of what was
        scheduled for ``slot``."""
        found = self._timers.pop(slot, None)
        if found is not None and found[1].active():
            found[1].cancel()
        self._timers[slot] = token, self.reactor.callLater(
            seconds, method, *args)

    def _expire(self, slot, token, seconds):
        self._stop(slot, token, interfaces.TimeLimitExceeded(
            'it ran longer than its time limit of %s'
            % (datetime.timedelta(seconds=seconds),)))

    # ------------------------------------------------- abort requests

    def _notified(self, event, info):
        if event == 'poll':
            self.checkAborts()

    @utils.handoff
    def checkAborts(self):
        """Read whether the abort of a watched job was requested, and stop
        its call.  A dispatcher that polls in this thread (its ``conn``)
        reads here, others in a thread of the reactor's pool."""
        self._check_requested = False
        calls = []
        for slot in self.slots:
            with slot.lock:
                if slot.calling and slot.stop is None:
                    calls.append((slot, slot.token, slot.jobid))
        if not calls:
            return
        conn = self.dispatcher.conn
        if conn is not None:
            self._requestsRead(_read_requests(conn, calls))
        elif self._checking:
            self._check_again = True
        else:
            self._checking = True
            self.reactor.callInThread(self._readInThread, calls)

    def _readInThread(self, calls):
        requested = []
        try:
            conn = self.dispatcher.db.open(
                transaction_manager=transaction.TransactionManager())
            try:
                requested = _read_requests(conn, calls)
            finally:
                conn.close()
        except Exception:  # the database is away: the next poll tries again
            logs.tracelog.info('could not read abort requests',
                               exc_info=True)
        finally:
            self.reactor.callFromThread(self._requestsRead, requested, True)

    @utils.handoff
    def _requestsRead(self, requested, in_thread=False):
        for slot, token in requested:
            self._stop(slot, token, interfaces.AbortRequested(
                'its abort was requested'), abort=True)
        if in_thread:
            self._checking = False
            if self._check_again:
                self._check_again = False
                self.checkAborts()

    # ------------------------------------------------------- stopping

    def _stop(self, slot, token, error, abort=False):
        """Raise ``error`` in call ``token`` of ``slot``; abandon the thread
        if the call has not ended after :attr:`grace` seconds.

        Not once the dispatcher is deactivated: the jobs still running then
        were handed back, and what they do is dropped anyway.
        """
        if not self.dispatcher.activated:
            return
        if not slot.interrupt(token, error, abort):
            return
        logs.log.info('stopping %s in a worker thread of agent %r: %s',
                      self._name(slot.jobid), slot.pool.name, error)
        self._schedule(slot, token, self.grace, self._abandon, slot, token)

    def _abandon(self, slot, token):
        self._timers.pop(slot, None)
        if not self.dispatcher.activated:
            return  # handed back meanwhile (see _stop)
        found = slot.abandon(token)
        if found is None:
            return
        jobid, error = found
        logs.log.warning(
            'abandoning a worker thread of agent %r: %s has not returned %s '
            'seconds after %s was raised in it (a blocking call?); a new '
            'thread takes its place, its retry policy settles the job, and '
            'what it does if it returns is dropped', slot.pool.name,
            self._name(jobid), self.grace, type(error).__name__)
        slot.pool.abandon(slot.thread)
        self.reactor.callInThread(_settle, self.dispatcher.db, jobid, error)

    def _name(self, jobid):
        info = self.dispatcher.jobs.get(jobid)
        if info is not None:
            return info['call']
        return 'job %d in db %r' % jobid


def _read_requests(conn, calls):
    """The ``(slot, token)`` of the ``(slot, token, job id)`` calls whose
    job's abort was requested, as committed by now."""
    requested = []
    tm = conn.transaction_manager
    try:
        tm.begin()  # see what others committed
        for slot, token, (oid, dbname) in calls:
            job = conn.get_connection(dbname).get(ZODB.utils.p64(oid))
            if getattr(job, 'abort_requested', False):
                requested.append((slot, token))
    except Exception:  # the database is away: the next poll tries again
        logs.tracelog.info('could not read abort requests', exc_info=True)
    finally:
        txn.abort(tm, 'reading abort requests', wait=False)
    return requested


def _settle(db, jobid, error):
    """Settle the job of an abandoned call as if it had raised ``error``
    (in a thread of the reactor's pool)."""
    oid, dbname = jobid
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        job = conn.get_connection(dbname).get(ZODB.utils.p64(oid))
        job._abandon(error)
    except interfaces.ReassignedError:
        pass  # it returned after all, or another dispatcher has it
    except Exception:
        logs.log.critical('could not settle abandoned job %d in db %r',
                          oid, dbname, exc_info=True)
    finally:
        tm.abort()
        conn.close()
