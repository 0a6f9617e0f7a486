"""A job is a persistent call with a status, a result and callbacks.

A :class:`Job` holds a callable with its stored arguments and, once called,
its result (a value or a sanitized :class:`zc.async.twist.Failure`).  It
runs its own transactions when called: one commit to go ACTIVE, one to store
the result (which also completes a job that has no callbacks), then, if it
has callbacks, their commits and one to complete.  Its retry policy
(:mod:`zc.async.retry`) decides what happens after errors and
interruptions.  See :class:`zc.async.interfaces.IJob` for the states and
transitions.

Every status change of a job happens in this module, in four transition
methods that check the current status first: ``_start`` (NEW or ASSIGNED ->
ACTIVE), ``_complete`` (-> CALLBACKS, storing the result), ``_finish``
(CALLBACKS -> COMPLETED) and ``_reset`` (ACTIVE -> NEW, to be rescheduled).
The class is built from parts: :class:`~zc.async._jobparts.JobParts` stores
its arguments, callbacks and annotations;
:class:`~zc.async.jobsettings.JobSettings` checks its settings;
:class:`~zc.async.jobrun.JobRun` runs it (its attempts and their commits,
its callbacks, its retry policy's answers), calling the transitions
defined here; :mod:`zc.async._jobstatus` reads the stored status.

Callback proxies (:class:`ConditionalCallbackProxy`,
:class:`SuccessFailureCallbackProxy`) choose a callback job once the result
is known.  :func:`serial` and :func:`parallel` make composite jobs, whose
steps live in :mod:`zc.async.composite`.  This module re-exports those
steps and the retry policies (:mod:`zc.async.retry`) under their 1.5 names
(``zc.async.job.RetryCommonFourTimes``, ``zc.async.job._queue_next``,
...), which stored objects refer to.
"""
import logging

import persistent.list
import twisted.python.failure
import zc.queue
import zope.interface

from . import clock
from . import interfaces
from . import logs
from . import pickling
from . import twist
from . import unique
from . import utils
from ._jobparts import JobParts
from ._jobstatus import (
    _NEW, _ACTIVE, _CALLBACKS, _COMPLETED, _STATUSES, _derived_status,
    _passes_to_queue, _skip_jobs)
from .composite import (  # noqa: F401  (1.5 names, which stored jobs use)
    _queue_all, _queue_next, _schedule_parallel, _schedule_serial,
    _transparent)
from .interfaces import NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS
from .jobrun import JobRun
from .jobsettings import JobSettings
from .retry import (  # noqa: F401  (1.5 names of zc.async.job)
    RetryCommonFourTimes, RetryCommonForever, NeverRetry,
    callback_retry_policy_factory)
from .threadlocal import local

# The annotation that records an abort request (see requestAbort): a change
# of the annotations, which merges with the job's own commits.
_ABORT_KEY = 'zc.async.abort_requested'


def isFailure(value):
    """Whether ``value`` is a (Twisted) Failure: the failure condition."""
    return isinstance(value, twisted.python.failure.Failure)


class _CallbackAdder:
    """``addCallbacks`` in terms of the class's own ``addCallback``."""

    def addCallbacks(self, success=None, failure=None,
                     failure_log_level=None, retry_policy_factory=None):
        """See IAbstractJob."""
        return self.addCallback(SuccessFailureCallbackProxy(
            success, failure, failure_log_level=failure_log_level,
            retry_policy_factory=retry_policy_factory))


@zope.interface.implementer(interfaces.IJob)
class Job(_CallbackAdder, JobSettings, JobRun, JobParts, utils.Base):
    """See :class:`zc.async.interfaces.IJob`.

    ``Job(callable, *args, **kwargs)``; subclasses may override
    :meth:`setUp` and :meth:`tearDown`.
    """

    # Class defaults are also the values of fields a 1.5 pickle may lack.
    _callable_root = _callable_name = None  # (owner, method name) or (f, None)
    _result = None
    _status_id = _NEW
    _begin_after = _begin_by = None  # aware UTC datetime; timedelta
    _time_limit = None  # timedelta
    _active_start = _active_end = None
    _active_snapshot = None  # tid; none in 1.5 pickles
    _quota_names = ()
    _retry_policy = None  # created once by getRetryPolicy
    retry_policy_factory = None
    failure_log_level = None
    assignerUUID = None
    key = None  # set by the agent's completed collection
    unique_key = None  # set by Queue.put (see zc.async.unique)

    def __init__(self, *args, **kwargs):
        if not args:
            raise TypeError('Job needs a callable as its first argument')
        # Empty arguments, callbacks and annotations store nothing (see
        # zc.async._jobparts).
        self._init_parts(args[1:], kwargs)
        self.callable = args[0]

    @classmethod
    def bind(cls, *args, **kwargs):
        """A job whose callable receives the job itself as first argument."""
        job = cls(*args, **kwargs)
        job.args.insert(0, job)
        return job

    def __repr__(self):
        try:
            call = logs.bounded_repr(self._callable_root)
            if self._callable_name is not None:
                call += ' :' + self._callable_name
            arguments = [logs.bounded_repr(arg) for arg in self._args]
            arguments.extend('%s=%s' % (key, logs.bounded_repr(value))
                             for key, value in self._kwargs.items())
            return '<%s ``%s(%s)``>' % (
                logs.custom_repr(self), call, ', '.join(arguments))
        except Exception:
            # A repr must not fail (say, for a job of a closed connection).
            return super().__repr__()

    # ------------------------------------------------------------ status

    @property
    def status(self):
        if self._status_id == _NEW:
            return _derived_status(self.parent)
        return _STATUSES[self._status_id]

    def _require_status(self, statuses, message):
        """Raise BadStatusError(message) unless the status is one of
        ``statuses`` (the messages are 1.5's, which tests match)."""
        if self.status not in statuses:
            raise interfaces.BadStatusError(message)

    def _call_statuses(self):
        """The statuses in which the job may be called."""
        if interfaces.IAbstractJob.providedBy(self.parent):
            # A callback: PENDING comes from its parent's queue, but the
            # callback itself is not in the queue.
            return (NEW, PENDING, ASSIGNED)
        return (NEW, ASSIGNED)

    # The four transitions.

    def _start(self, args, kwargs, statuses, started=None):
        """NEW/ASSIGNED -> ACTIVE; return the effective call arguments.

        ``started`` is the ``active_start`` an earlier try of this start
        stored: when a disconnect hid that its commit landed, the job is
        ACTIVE with exactly that time, and is taken as started.
        """
        if not (started is not None and self._status_id == _ACTIVE
                and self._active_start == started):
            self._go_active(statuses)
        return [*self._args, *args], {**self._kwargs, **kwargs}

    def _go_active(self, statuses):
        self._check_reassigned(statuses)
        self._status_id = _ACTIVE
        self._active_start = clock.now()

    def _start_claimed(self):
        """ASSIGNED -> ACTIVE in the commit of the dispatcher's claim, which
        thereby is the job's start commit; return ``active_start``.

        The claim only takes as many jobs as its agent has idle threads, so
        the job runs right after that commit (see ``_call_claimed``).
        """
        self._go_active((ASSIGNED,))
        return self._active_start

    def _complete(self, res, data_cache=None):
        """Store the final result: -> CALLBACKS."""
        self._require_status(
            (NEW, PENDING, ASSIGNED, ACTIVE),
            'can only store the result of a job that has none yet')
        if isinstance(res, twisted.python.failure.Failure):
            res = twist.sanitize(res)
        self._result = res
        self._status_id = _CALLBACKS
        self._active_end = clock.now()
        self._update_policy_data(data_cache)

    def _finish(self):
        """CALLBACKS -> COMPLETED; an agent holding the job is told."""
        self._require_status(
            (CALLBACKS,), 'can only complete a job with CALLBACKS status')
        self._status_id = _COMPLETED
        if self.unique_key is not None:
            unique.release(self.queue, self)
        if interfaces.IAgent.providedBy(self.parent):
            self.parent.jobCompleted(self)

    def _reset(self):
        """ACTIVE -> NEW, forgetting the attempt, so it can run again."""
        self._require_status(
            (ACTIVE,), 'can only reset a job with ACTIVE status')
        self._status_id = _NEW
        self._active_start = None
        self._result = None  # an inner job of the abandoned attempt

    # ------------------------------------------------------- containers

    @property
    def queue(self):
        """The queue the job is in, or whose agent holds it (or None)."""
        ob = self.parent
        while ob is not None and _passes_to_queue(ob):
            ob = ob.parent
        return ob if interfaces.IQueue.providedBy(ob) else None

    @property
    def agent(self):
        """The agent that holds the job (or its parent job), or None."""
        ob = _skip_jobs(self.parent)
        return ob if interfaces.IAgent.providedBy(ob) else None

    # ------------------------------------------------------- aborting

    @property
    def abort_requested(self):
        return self.annotations.get(_ABORT_KEY) is not None

    def requestAbort(self):
        """See IJob."""
        self._require_status(
            (NEW, PENDING, ASSIGNED, ACTIVE),
            'can only request the abort of a job that has no result yet')
        status = self.status
        self._annotation_tree()[_ABORT_KEY] = clock.now()
        if status in (NEW, PENDING):
            error = interfaces.AbortRequested(
                'its abort was requested before it started')
            if interfaces.IQueue.providedBy(self.parent):
                self._fail_pending(error)  # it keeps its queue
            else:
                self.fail(error)


    # ------------------------------------------------------------ logging

    def _failure_level(self):
        if self.failure_log_level is None:
            return logging.ERROR
        return self.failure_log_level

    def _log_completion(self, res):
        if isFailure(res):
            logs.log.log(self._failure_level(),
                         '%r failed with traceback:\n%s', self,
                         res.getTraceback(elideFrameworkCode=True,
                                          detail='verbose'))
        else:
            logs.tracelog.info('%r succeeded with result:\n%r', self,
                               logs.BoundedRepr(res))

    def _log_lost_outcome(self, res):
        """The result's commit failed: say what the callable had done."""
        if isFailure(res):
            logs.log.log(
                self._failure_level(),
                'Commit failed for %r (see subsequent traceback).  Prior to '
                'this, job failed with traceback:\n%s', self,
                res.getTraceback(elideFrameworkCode=True, detail='verbose'))
        else:
            logs.log.info(
                'Commit failed for %r (see subsequent traceback).  Prior to '
                'this, job succeeded with result: %r', self,
                logs.BoundedRepr(res))

    # ---------------------------------------------------------- callbacks

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        """See IAbstractJob."""
        callback = _prepare_callback(
            callback, failure_log_level, retry_policy_factory, self)
        self._callback_queue().put(callback)
        if self._status_id == _COMPLETED:
            # Run it now, in this thread; errors reach the caller.  It runs
            # on behalf of this job, not of a job this thread may be running
            # (so the reassignment check leaves it alone).
            previous, local.job = local.job, self
            try:
                self._run_callback(callback)
            finally:
                local.job = previous
        else:
            # Should another thread complete this job meanwhile, one of the
            # two commits conflicts; the adder's retry then runs it at once.
            self._p_changed = True
        return callback

    # ------------------------------------------------------------ failing

    def _abort(self, error=None):
        """Give up an interrupted job: ``error`` (by default an
        AbortedError), then the callbacks."""
        failure = twist.Failure(
            interfaces.AbortedError() if error is None else error)
        self._complete(failure)
        self._log_completion(failure)
        self.resumeCallbacks()

    def fail(self, e=None):
        """See IJob."""
        if self.status == CALLBACKS:
            # An earlier fail stored the failure but did not finish.
            self.resumeCallbacks()
            return
        self._require_status(
            (NEW, PENDING, ASSIGNED),
            'can only call fail on a job with NEW, PENDING, or ASSIGNED '
            'status')
        self._check_reassigned((NEW, PENDING, ASSIGNED))
        failure = twist.Failure(interfaces.TimeoutError() if e is None else e)
        self._complete(failure)
        self._log_completion(failure)
        self.resumeCallbacks()

    def _fail_pending(self, error, agent=None):
        """Take this PENDING job out of its queue and fail it with
        ``error``, running its callbacks.

        With ``agent``, the job is held by that agent while it fails, and
        ends in its completed jobs; without, it keeps its queue as
        ``parent`` (it can be retried there), out of the pending jobs.
        """
        queue = self.queue
        queue.remove(self)
        if agent is None:
            self.parent = queue
        else:
            # Held as a claim holds it: the agent completes it.
            self.parent = agent
            agent._data.put(self)
        self.fail(error)

    def _replica(self):
        """A new job, to run this one again: the same callable, arguments,
        keyword arguments, quota names, retry policy factory and failure
        log level; not the callbacks.

        The callable is copied as stored, so a job whose callable cannot
        be imported here is copied all the same.
        """
        res = Job.__new__(Job)
        res._init_parts(tuple(self.args), dict(self.kwargs))
        res._callable_root = self._callable_root
        res._callable_name = self._callable_name
        res.retry_policy_factory = self.retry_policy_factory
        res.failure_log_level = self.failure_log_level
        res.quota_names = self.quota_names
        return res

    # -------------------------------------------------------------- hooks

    def setUp(self):
        """See IJob: a hook for subclasses; returns ``setup_info``."""
        return None

    def tearDown(self, setup_info):
        """See IJob: a hook for subclasses."""

    # ---------------------------------------------------------- storing

    def _check_picklable(self):
        """Raise TypeError naming the part of the job that cannot be pickled.

        ``Queue.put`` calls this, so that an unpicklable job fails there and
        not at a later commit.  Persistent objects already in a database are
        references; new ones are checked with their state, as a commit will
        store them.
        """
        parts = [('callable', self._callable_root)]
        parts.extend(('argument %d' % ix, arg)
                     for ix, arg in enumerate(self._args))
        parts.extend(('keyword argument %r' % key, value)
                     for key, value in self._kwargs.items())
        parts.append(('retry_policy_factory', self.retry_policy_factory))
        if self._callbacks is not None:
            parts.append(('callbacks', self._callbacks))
        for label, value in parts:
            problem = pickling.pickling_problem(value)
            if problem is not None:
                raise TypeError('cannot store %r: its %s cannot be pickled '
                                '(%s)' % (self, label, problem))


# ------------------------------------------------------------ helpers


def _adapt(obj):
    """``obj`` as an IJob: itself, its adapter, or a Job calling it."""
    job = interfaces.IJob(obj, None)
    return Job(obj) if job is None else job


def _prepare_callback(callback, failure_log_level, retry_policy_factory,
                      parent):
    """``callback`` as a job (or proxy) of ``parent``.

    Unless told otherwise, callbacks log failures at CRITICAL and use
    :func:`callback_retry_policy_factory`.
    """
    if not interfaces.ICallbackProxy.providedBy(callback):
        callback = _adapt(callback)
        if failure_log_level is not None:
            callback.failure_log_level = failure_log_level
        elif callback.failure_log_level is None:
            callback.failure_log_level = logging.CRITICAL
        if retry_policy_factory is not None:
            callback.retry_policy_factory = retry_policy_factory
        elif callback.retry_policy_factory is None:
            callback.retry_policy_factory = callback_retry_policy_factory
    callback.parent = parent
    return callback


# ----------------------------------------------------- composite jobs

def serial(*jobs, **kw):
    """A job running ``jobs`` one after the other, then ``postprocess``
    (see :mod:`zc.async.composite`)."""
    return _composite(_schedule_serial, jobs, kw)


def parallel(*jobs, **kw):
    """A job running ``jobs`` all at once, then ``postprocess`` (see
    :mod:`zc.async.composite`)."""
    return _composite(_schedule_parallel, jobs, kw)


def _composite(scheduler, jobs, kw):
    unknown = sorted(set(kw) - {'postprocess'})
    if unknown:
        raise TypeError('only accepts one keyword argument, ``postprocess``'
                        ' (got %s)' % ', '.join(unknown))
    postprocess = _adapt(kw.get('postprocess', _transparent))
    return Job(scheduler, *[_adapt(job) for job in jobs],
               postprocess=postprocess)


# ----------------------------------------------------------- proxies

@zope.interface.implementer(interfaces.ICallbackProxy)
class ConditionalCallbackProxy(_CallbackAdder, utils.Base):
    """A callback that chooses its job once the result is known.

    ``ConditionalCallbackProxy((condition, job), ..., [default_job],
    failure_log_level=None, retry_policy_factory=None)``: the first job
    whose ``condition(result)`` is true is chosen, else the default; when
    that is None, a job passing the result through unchanged.  Callbacks
    added before the choice are handed to the chosen job.
    """

    job = None  # the chosen job
    default = None

    def __init__(self, *conditionals, failure_log_level=None,
                 retry_policy_factory=None):
        conditionals = list(conditionals)
        default = None
        if conditionals and not isinstance(conditionals[-1], tuple):
            default = conditionals.pop()
        self.failure_log_level = failure_log_level
        self.retry_policy_factory = retry_policy_factory
        self.conditionals = persistent.list.PersistentList()
        for conditional in conditionals:
            if len(conditional) != 2 or not callable(conditional[0]):
                raise TypeError('expected (condition, job) pairs, then an '
                                'optional default job; got %r'
                                % (conditional,))
            condition, job = conditional
            self.conditionals.append((condition, self._prepare(job)))
        self.default = self._prepare(default)
        self.callbacks = zc.queue.PersistentQueue()

    def _prepare(self, job):
        if job is None:
            return None
        return _prepare_callback(
            job, self.failure_log_level, self.retry_policy_factory, self)

    @property
    def status(self):
        if self.job is None:
            return _derived_status(self.parent)
        return self.job.status

    @property
    def result(self):
        return None if self.job is None else self.job.result

    def getJob(self, result):
        """See ICallbackProxy."""
        if self.job is None:
            job = self._choose(result)
            if job is None:
                job = self._prepare(Job(_pass_result))
            self.job = job
            while self.callbacks:
                job.addCallback(self.callbacks.pull())
        return self.job

    def _choose(self, result):
        for condition, job in self.conditionals:
            if condition(result):
                return job
        return self.default

    def addCallback(self, callback, failure_log_level=None,
                    retry_policy_factory=None):
        """See IAbstractJob; forwarded to the chosen job, once chosen."""
        if self.job is not None:
            return self.job.addCallback(
                callback, failure_log_level, retry_policy_factory)
        callback = _prepare_callback(
            callback, failure_log_level, retry_policy_factory, self)
        self.callbacks.put(callback)
        # Conflict with a concurrent choice, which moves the callbacks.
        self._p_changed = True
        return callback


class SuccessFailureCallbackProxy(ConditionalCallbackProxy):
    """Choose ``failure`` for a Failure result, else ``success``."""

    def __init__(self, success, failure, failure_log_level=None,
                 retry_policy_factory=None):
        super().__init__((isFailure, failure), success,
                         failure_log_level=failure_log_level,
                         retry_policy_factory=retry_policy_factory)

    @property
    def success(self):
        return self.default

    @property
    def failure(self):
        return self.conditionals[0][1]


def _pass_result(result):
    """The job of a proxy with no job for the result: pass it on as is."""
    return result
