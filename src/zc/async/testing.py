"""Deterministic helpers for zc.async tests, ours and users'.

* A frozen clock: :func:`setUpDatetime`, :func:`set_now`,
  :func:`tearDownDatetime` (the library clock, and, for tests written for
  zc.async 1.5, ``datetime.datetime`` itself).
* A virtual-time :class:`Reactor` that drives dispatchers step by step.
* Waiters with deadlines (:func:`wait_for_result`, :func:`wait_for_start`,
  :func:`get_poll` ...) that fail with an AssertionError instead of hanging.
* :func:`tear_down_dispatcher`, :func:`print_logs` and a throwaway
  database (:func:`db`).
"""
import copyreg
import datetime
import heapq
import itertools
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

import twisted.internet.defer
import zope.interface
import ZODB
import ZODB.FileStorage
import ZODB.POSException

from . import _registry
from . import clock
from . import interfaces

time_sleep = time.sleep  # the real sleep, even if a test patches time.sleep

# ------------------------------------------------------------ the clock

_real_datetime = datetime.datetime
_START = _real_datetime(2006, 8, 10, 15, 44, 22, 211, datetime.timezone.utc)
_END_OF_TIME = _real_datetime.max.replace(tzinfo=datetime.timezone.utc)


class _FrozenDatetimeType(type):
    """Makes every real datetime an instance of the frozen class too, so
    ``isinstance(x, datetime.datetime)`` keeps working while it is patched.
    """

    def __instancecheck__(cls, obj):
        return isinstance(obj, _real_datetime)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, _real_datetime)


def _reduce_as_datetime(dt, protocol=2):
    # Pickle as whatever ``datetime.datetime`` is now (the real class, or
    # this one while patched, which is then found under that very name).
    return (datetime.datetime, _real_datetime.__reduce_ex__(dt, protocol)[1])


class _datetime(_real_datetime, metaclass=_FrozenDatetimeType):
    """``datetime.datetime`` whose ``now`` and ``utcnow`` read the frozen
    library clock (:func:`zc.async.clock.now`)."""

    @classmethod
    def now(cls, tz=None, *, tzinfo=None):
        """The frozen time: naive UTC, or in ``tz`` (alias ``tzinfo``)."""
        tz = tz if tz is not None else tzinfo
        current = clock.now()
        if tz is None:
            return cls._of(current.replace(tzinfo=None))
        return cls._of(current.astimezone(tz))

    @classmethod
    def utcnow(cls):
        """The frozen time, naive UTC."""
        return cls._of(clock.now().replace(tzinfo=None))

    @classmethod
    def _of(cls, dt):
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
                   dt.microsecond, dt.tzinfo, fold=dt.fold)

    def astimezone(self, tz=None, *, tzinfo=None):
        """As the real method; ``tz`` may also be given as ``tzinfo``."""
        return _real_datetime.astimezone(
            self, tz if tz is not None else tzinfo)

    def __repr__(self):
        text = _real_datetime.__repr__(self)
        return 'datetime.datetime' + text[text.index('('):]

    def __reduce_ex__(self, protocol):
        return _reduce_as_datetime(self, protocol)

    def __reduce__(self):
        return _reduce_as_datetime(self)


# Found as ``datetime.datetime`` by pickle while it is patched in.
_datetime.__module__ = 'datetime'
_datetime.__name__ = _datetime.__qualname__ = 'datetime'


def set_now(dt):
    """Freeze the clock at ``dt`` (naive values are UTC)."""
    clock._set_frozen_now(_real_datetime(
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
        dt.microsecond, dt.tzinfo or datetime.timezone.utc))


def setUpDatetime():
    """Freeze the clock at 2006-08-10 15:44:22.000211 UTC.

    Also replaces ``datetime.datetime`` by :class:`_datetime`, for tests
    written for zc.async 1.5 that call ``datetime.datetime.now()``.
    """
    datetime.datetime = _datetime
    # Real datetimes made while patched must pickle under the patched name.
    copyreg.pickle(_real_datetime, _reduce_as_datetime)
    set_now(_START)


def tearDownDatetime():
    """Unfreeze the clock and restore ``datetime.datetime``."""
    datetime.datetime = _real_datetime
    copyreg.dispatch_table.pop(_real_datetime, None)
    clock._set_frozen_now(None)


# ---------------------------------------------------------- the reactor

class _DelayedCall:
    """A call scheduled on the test :class:`Reactor`."""

    def __init__(self, when, seq, call, args, kwargs):
        self.time, self.seq = when, seq
        self.call, self.args, self.kwargs = call, args, kwargs
        self.cancelled = self.called = False

    def __lt__(self, other):
        return (self.time, self.seq) < (other.time, other.seq)

    def getTime(self):
        """When the call is due (an aware datetime of the frozen clock)."""
        return self.time

    def active(self):
        """Whether the call is still to run."""
        return not (self.cancelled or self.called)

    def cancel(self):
        """Do not run the call."""
        self.cancelled = True

    def run(self):
        self.called = True
        self.call(*self.args, **self.kwargs)


@zope.interface.implementer(interfaces.IReactor)
class Reactor:
    """An :class:`~zc.async.interfaces.IReactor` on the frozen clock.

    Nothing runs until the test lets time pass: :meth:`time_flies`
    advances the clock, running the calls that come due;
    :meth:`time_passes` runs one call that is due now.  Reports from
    dispatcher worker threads are run as soon as the reactor runs anything
    and are not counted.  ``instant_dispatch`` is False: dispatchers on
    this reactor poll on the virtual clock only, as in zc.async 1.5.
    """

    instant_dispatch = False
    wait_for_threads = 0.5  # real seconds threads get between timestamps

    def __init__(self):
        self.started = False
        self.calls = []  # heap of _DelayedCall
        self.triggers = []  # (phase, event, callable, args, kwargs)
        self._when_running = []  # (callable, args, kwargs) before start
        self._handoffs = []  # calls reporting from dispatcher threads
        self._threads = []
        self._lock = threading.Lock()
        self._seq = itertools.count()

    # IReactor

    def callLater(self, delay, callable, *args, **kw):
        """Run ``callable`` when the clock has moved ``delay`` seconds."""
        self._check_started()
        when = clock.now() + datetime.timedelta(seconds=delay)
        return self._add(when, callable, args, kw)

    def callFromThread(self, callable, *args, **kw):
        """Run ``callable`` when time next passes (thread-safe)."""
        if getattr(callable, 'zc_async_handoff', False):
            with self._lock:
                self._handoffs.append((callable, args, kw))
            return
        self._add(clock.now(), callable, args, kw)

    def callInThread(self, callable, *args, **kw):
        """Run ``callable`` in a new real thread."""
        thread = threading.Thread(
            target=callable, args=args, kwargs=kw, daemon=True)
        self._threads.append(thread)
        thread.start()

    def callWhenRunning(self, callable, *args, **kw):
        """Run ``callable`` when time next passes (once started)."""
        if self.started:
            self._add(clock.now(), callable, args, kw)
        else:
            # Not now: the clock is not frozen yet (see start).
            self._when_running.append((callable, args, kw))

    def addSystemEventTrigger(self, phase, event, callable, *args, **kw):
        """Only ``('before', 'shutdown', ...)``: run by :meth:`stop`, which
        waits for the Deferreds they return."""
        if (phase, event) != ('before', 'shutdown'):
            raise ValueError('unsupported trigger: %r %r' % (phase, event))
        self.triggers.append((phase, event, callable, args, kw))

    # control

    def start(self):
        """Start (and freeze the clock; see :func:`setUpDatetime`)."""
        setUpDatetime()
        self.started = True
        when_running, self._when_running = self._when_running, []
        for callable, args, kw in when_running:
            self._add(clock.now(), callable, args, kw)

    def stop(self):
        """Run the before-shutdown triggers, stop, and unfreeze the clock.

        A dispatcher's trigger stops it warmly (see zc.async.shutdown): its
        running jobs get :attr:`wait_for_threads` real seconds to finish;
        then time passes, on the frozen clock, until the dispatcher is
        deactivated, which hands back the jobs still running.
        """
        triggers, self.triggers = self.triggers, []
        stopped = []
        for phase, event, callable, args, kw in triggers:
            res = callable(*args, **kw)
            if isinstance(res, twisted.internet.defer.Deferred):
                stopped.append(res)
        self._let_threads_work(self.wait_for_threads)
        while not all(d.called for d in stopped):
            self._run_handoffs()
            if self._next_time(_END_OF_TIME) is None:
                break
            call = self._pop()
            set_now(max(clock.now(), call.time))
            call.run()
        self.started = False
        tearDownDatetime()

    def time_flies(self, seconds):
        """Advance the clock ``seconds``; return how many calls ran.

        Before the calls of each new timestamp, worker threads get up to
        :attr:`wait_for_threads` real seconds to finish their jobs (not
        those waiting for this reactor's answer, such as a job in
        ``zc.async.local.getLiveAnnotation``: the clock moves on for them).
        """
        self._check_started()
        end = clock.now() + datetime.timedelta(seconds=seconds)
        count = 0
        then = None
        while True:
            self._run_handoffs()
            due = self._next_time(end)
            if due is None:
                break
            if due != then:
                self._let_threads_work(self.wait_for_threads)
                then = due
                continue  # threads may have added earlier calls
            call = self._pop()
            set_now(max(clock.now(), call.time))
            call.run()
            count += 1
        if end > clock.now():
            set_now(end)
        return count

    def time_passes(self):
        """Run one call that is due now; return whether one ran."""
        self._check_started()
        self._run_handoffs()
        if self._next_time(clock.now()) is None:
            return False
        self._pop().run()
        self._run_handoffs()
        return True

    def wait_for(self, *jobs, poll_interval=5, attempts=10):
        """Let one poll interval pass, then give ``jobs`` up to
        ``attempts`` tenths of a real second to complete; print ``TIME
        OUT`` if they do not.

        Meanwhile the calls that come due without the clock moving (those
        of ``callFromThread``, from any thread) run, as they arrive.
        """
        self._check_started()
        if not _all_completed(jobs):
            self.time_flies(poll_interval)
            deadline = time.monotonic() + attempts / 10
            while not _all_completed(jobs):
                if time.monotonic() >= deadline:
                    print('TIME OUT')
                    return
                while self.time_passes():
                    pass
                time_sleep(0.01)
        self._settle(jobs)

    # internals

    def _check_started(self):
        if not self.started:
            raise ValueError('not started')

    def _add(self, when, callable, args, kw):
        call = _DelayedCall(when, next(self._seq), callable, args, kw)
        with self._lock:
            heapq.heappush(self.calls, call)
        return call

    def _next_time(self, end):
        """The time of the next live call due by ``end``, or None."""
        with self._lock:
            while self.calls and not self.calls[0].active():
                heapq.heappop(self.calls)
            if self.calls and self.calls[0].time <= end:
                return self.calls[0].time
        return None

    def _pop(self):
        with self._lock:
            return heapq.heappop(self.calls)

    def _run_handoffs(self):
        while self._handoffs:
            with self._lock:
                callable, args, kw = self._handoffs.pop(0)
            callable(*args, **kw)

    def _busy(self):
        """Whether dispatcher workers or callInThread threads are at work."""
        if any(thread.is_alive() for thread in self._threads):
            return True
        return any(pool.busy for d in list(_registry.dispatchers.values())
                   if d._reactor is self for pool in d._pools())

    def _let_threads_work(self, seconds):
        """Wait until threads are idle or a call is due now (a thread may
        be waiting for it), at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while (self._busy() and self._next_time(clock.now()) is None
               and time.monotonic() < deadline):
            time_sleep(0.002)
        self._run_handoffs()

    def _settle(self, jobs, seconds=2):
        """Apply the worker reports about ``jobs`` (bounded wait)."""
        deadline = time.monotonic() + seconds
        while not _reported(jobs, 'completed') and time.monotonic() < deadline:
            self._let_threads_work(0.05)


def _all_completed(jobs):
    for job in jobs:
        _sync(job)
        try:
            if job.status != interfaces.COMPLETED:
                return False
        except ZODB.POSException.ReadConflictError:
            return False
    return True


def _sync(obj):
    """Begin a new transaction in ``obj``'s connection (see its changes)."""
    jar = getattr(obj, '_p_jar', None)
    if jar is not None:
        jar.transaction_manager.begin()


def _records(job):
    """The dispatcher records of ``job`` in this process."""
    from . import dispatcher
    if job._p_oid is None or job._p_jar is None:
        return []
    jobid = dispatcher.getId(job)
    return [(d, d.jobs[jobid]) for d in list(_registry.dispatchers.values())
            if jobid in d.jobs]


def _reported(jobs, key):
    """Whether every dispatcher record of ``jobs`` has ``key`` (or was
    reassigned), and a dispatcher of this process holding one of them
    already recorded it."""
    return all(info[key] is not None or info['reassigned']
               for job in jobs for d, info in _records(job)) and not any(
        _held_here(job) and not _records(job) for job in jobs)


def _held_here(job):
    """Whether an agent of a dispatcher of this process holds ``job`` (a
    claim's commit is seen before the dispatcher records the claim)."""
    uuid = getattr(getattr(job.agent, 'parent', None), 'UUID', None)
    return uuid is not None and uuid in _registry.dispatchers


def _wait_for_report(job, key, seconds=2):
    """Let the dispatchers running ``job`` record its ``key``.

    A live reactor applies worker reports by itself; a test
    :class:`Reactor` runs in this thread, so its reports are run here.
    """
    deadline = time.monotonic() + seconds
    while not _reported([job], key) and time.monotonic() < deadline:
        for d, info in _records(job):
            if isinstance(d._reactor, Reactor):
                d._reactor._run_handoffs()
        time_sleep(0.002)


# -------------------------------------------------------------- waiters

_PENDING = object()


def _wait(check, seconds, message, interval=0.01):
    """Call ``check`` until it answers something but ``_PENDING``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            res = check()
        except ZODB.POSException.ReadConflictError:
            res = _PENDING
        if res is not _PENDING:
            return res
        if time.monotonic() >= deadline:
            raise AssertionError(message)
        time_sleep(interval)


def get_poll(dispatcher, count=None, seconds=6):
    """Wait for a new poll of ``dispatcher`` and return it.

    New means: more than ``count`` polls recorded, or, by default, a poll
    newer than the newest one now.  AssertionError('no poll!') on timeout.
    """
    if count is None:
        previous = dispatcher.getPollInfo()

        def check():
            poll = dispatcher.getPollInfo()
            return poll if poll is not previous else _PENDING
    else:
        def check():
            if len(dispatcher.polls) > count:
                return dispatcher.getPollInfo()
            return _PENDING
    return _wait(check, seconds, 'no poll!')


def wait_for_result(job, seconds=6):
    """Wait until ``job`` is COMPLETED and return its result."""
    def check():
        _sync(job)
        if job.status == interfaces.COMPLETED:
            return job.result
        return _PENDING
    res = _wait(check, seconds, 'job never completed')
    _wait_for_report(job, 'completed')
    return res


def wait_for_start(job, seconds=6):
    """Wait until ``job`` is ACTIVE."""
    def check():
        _sync(job)
        return True if job.status == interfaces.ACTIVE else _PENDING
    _wait(check, seconds, 'job never started')
    _wait_for_report(job, 'started')


def wait_for_annotation(job, name, seconds=6):
    """Wait until ``job.annotations`` has ``name``; return its value."""
    def check():
        _sync(job)
        return job.annotations.get(name, _PENDING)
    return _wait(check, seconds, 'annotation never found')


def wait_for_deactivation(dispatcher, seconds=6):
    """Wait until ``dispatcher`` has finished deactivating."""
    _wait(lambda: True if dispatcher.activated is False else _PENDING,
          seconds, 'dispatcher never deactivated')


def wait_for_death(da, seconds=6):
    """Wait until the DispatcherAgents ``da`` is dead."""
    def check():
        _sync(da)
        return True if da.dead else _PENDING
    _wait(check, seconds, 'dispatcher agent never died')


# ------------------------------------------------------------ tear-down

class TearDownDispatcherError(RuntimeError):
    """A dispatcher's reactor thread or one of its job threads hung."""


def tear_down_dispatcher(dispatcher, seconds=3):
    """Stop ``dispatcher``'s reactor, join its threads, restore signals.

    Raises :class:`TearDownDispatcherError` naming whatever did not stop
    within ``seconds`` (each).
    """
    from .subscribers import restore_signal_handlers
    problems = _stop_reactor(dispatcher, seconds)
    for pool in list(dispatcher._pools()):
        for thread in list(pool.threads):
            thread.join(seconds)
            if thread.is_alive():
                jobid = pool.jobids.get(thread.ident)
                info = dispatcher.jobs.get(jobid, {})
                problems.append('Job in pool %r failed to stop: %s' % (
                    pool.name, info.get('call', jobid)))
    restore_signal_handlers(dispatcher)
    if problems:
        raise TearDownDispatcherError('\n'.join(problems))


def _stop_reactor(dispatcher, seconds):
    from .shutdown import stop_reactor_thread
    reactor = dispatcher.reactor
    thread = dispatcher.thread
    if thread is not None:
        # Running jobs get ``seconds`` to finish, then are handed back.
        if not stop_reactor_thread(dispatcher, seconds):
            return ['Dispatcher (%s, %s) failed to stop.' % (
                thread.name, dispatcher.UUID)]
    elif isinstance(reactor, Reactor) and reactor.started:
        reactor.stop()
    elif dispatcher.activated:
        dispatcher.deactivate()
    return []


def print_logs(log_file=None, log_level=logging.CRITICAL):
    """Echo ``zc.async`` log records of ``log_level`` and above to
    ``log_file`` (stdout at call time by default); return the handler."""
    handler = logging.StreamHandler(
        sys.stdout if log_file is None else log_file)
    handler.setLevel(log_level)
    handler.setFormatter(logging.Formatter('%(levelname)s %(message)s'))
    logging.getLogger('zc.async').addHandler(handler)
    return handler


# ------------------------------------------------------------- database

class TemporaryDB(ZODB.DB):
    """A ZODB on a FileStorage in a temporary directory, removed on close.
    """

    def __init__(self, **kw):
        self.directory = tempfile.mkdtemp(prefix='zc.async-test-')
        storage = ZODB.FileStorage.FileStorage(
            os.path.join(self.directory, 'Data.fs'))
        super().__init__(storage, **kw)

    def close(self):
        try:
            super().close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def db(**kw):
    """A throwaway :class:`TemporaryDB`; keywords go to ``ZODB.DB``."""
    return TemporaryDB(**kw)
