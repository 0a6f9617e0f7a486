"""What a running job may ask about itself (``zc.async.local``).

A dispatcher's worker thread sets :attr:`Local.dispatcher` and
:attr:`Local.name` (the agent's name) before it calls a job, and the job sets
:attr:`Local.job` while its callable or callbacks run.  Code inside a job can
therefore find its job, queue, dispatcher and reactor, and publish or read
*live* annotations: values written to ``job.annotations`` in a separate
connection and transaction, committed through the dispatcher's reactor, so
other connections see them while the job is still running.  A replay or
dry-run (:mod:`zc.async.ops.sandbox`) sets :attr:`Local.sandbox` instead of a
dispatcher: live annotations then go to the sandbox, and
:meth:`Local.isSandbox` tells the job.

This module is imported by ``zc.async`` itself, so it imports nothing heavy
at module level (Twisted, ZODB and the dispatcher are imported on use).
"""
import threading

from . import clock

_marker = object()

# Idents of the threads blocked until their reactor answers them: a
# virtual-time zc.async.testing.Reactor moves its clock without waiting
# for them to finish their jobs.
waiting_for_reactor = set()


class Result:
    """A value handed from the reactor thread to a waiting thread."""

    value = None
    failure = None

    def __init__(self):
        self.ready = threading.Event()

    def set(self, value):
        """Store ``value`` and wake the waiting thread."""
        self.value = value
        self.ready.set()

    def fail(self, failure):
        """Store a Twisted Failure to re-raise in the waiting thread."""
        self.failure = failure
        self.ready.set()


def _set_annotation(job, name, value):
    job.annotations[name] = value


def _get_annotation(job, name):
    return job.annotations.get(name, _marker)


class Local(threading.local):
    """Per-thread facts about the running job (the ``zc.async.local``)."""

    job = None  # the job or callback running in this thread
    dispatcher = None  # the in-memory Dispatcher owning this worker thread
    name = None  # the name of the agent whose pool runs this thread
    sandbox = None  # the zc.async.ops.sandbox.Sandbox running this job

    def getJob(self):
        """The job (or callback) currently running in this thread."""
        return self.job

    def getQueue(self):
        """The queue of the running job (None outside a job)."""
        job = self.job
        return None if job is None else job.queue

    def getDispatcher(self):
        """The in-memory dispatcher running this thread."""
        return self.dispatcher

    def getReactor(self):
        """The reactor of the dispatcher running this thread."""
        dispatcher = self.dispatcher
        return None if dispatcher is None else dispatcher.reactor

    def getAgentName(self):
        """The name of the agent whose worker pool runs this thread."""
        return self.name

    def isAbortRequested(self):
        """Whether the abort of the running job was requested (see
        ``IJob.requestAbort``): a job that looks now and then may return
        early.  It fails with AbortRequested either way."""
        from . import watchdog  # deferred: see the module docstring
        return watchdog.abort_requested(self.job)
    def isSandbox(self):
        """Whether the running job runs in a sandbox (a replay or a
        dry-run, see :mod:`zc.async.ops.sandbox`): its commits go nowhere, but
        what it does outside the database happens for real, so a job skips
        side effects such as sending mail when this is true."""
        return self.sandbox is not None

    def _reactor_and_job(self, job):
        if self.job is None or self.dispatcher is None:
            raise ValueError('not initialized')
        reactor = self.dispatcher.reactor
        if reactor is None:
            raise ValueError('not initialized')
        return reactor, (self.job if job is None else job)

    def setLiveAnnotation(self, name, value, job=None):
        """Set ``job.annotations[name] = value`` in a fresh transaction.

        Fire and forget: the reactor commits the change in its own
        connection (retrying conflicts), so other connections see it while
        the job still runs.  ``job`` defaults to the running job.  Use
        immutable, non-persistent values.  ValueError('not initialized')
        outside a dispatcher-run job.
        """
        if self.sandbox is not None:
            self.sandbox.setLiveAnnotation(
                self.job if job is None else job, name, value)
            return
        reactor, job = self._reactor_and_job(job)
        from .txn import Partial
        partial = Partial(_set_annotation, job, name, value)
        partial.setReactor(reactor)
        reactor.callFromThread(partial)

    def getLiveAnnotation(self, name, default=None, timeout=0, poll=1,
                          job=None):
        """Read ``job.annotations[name]`` as committed by now, or ``default``.

        The read happens in a fresh connection in the reactor thread.  If
        the annotation is absent it is checked again every ``min(poll, time
        left)`` seconds until ``timeout`` seconds have passed.  Blocks the
        calling thread for at most ``timeout + 2`` seconds.  ValueError('not
        initialized') outside a dispatcher-run job.
        """
        if self.sandbox is not None:
            return self.sandbox.getLiveAnnotation(
                self.job if job is None else job, name, default)
        reactor, job = self._reactor_and_job(job)
        result = Result()
        me = threading.get_ident()
        waiting_for_reactor.add(me)
        try:
            reactor.callFromThread(
                self._get, reactor, job, name, default, timeout, poll,
                result)
            answered = result.ready.wait(timeout + 2)
        finally:
            waiting_for_reactor.discard(me)
        if not answered:
            return default
        if result.failure is not None:
            result.failure.raiseException()
        return result.value

    def _get(self, reactor, job, name, default, timeout, poll, result,
             start=None):
        """In the reactor thread: read once, then re-check or answer."""
        from .txn import Partial
        if start is None:
            start = clock.now()
        partial = Partial(_get_annotation, job, name)
        partial.setReactor(reactor)

        def answer(value):
            if value is not _marker:
                result.set(value)
                return
            left = timeout - (clock.now() - start).total_seconds()
            if left <= 0:
                result.set(default)
            else:
                reactor.callLater(
                    min(poll, left), self._get, reactor, job, name, default,
                    timeout, poll, result, start)

        partial().addCallbacks(answer, result.fail)


local = Local()
