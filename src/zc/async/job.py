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

Callback proxies (:class:`ConditionalCallbackProxy`,
:class:`SuccessFailureCallbackProxy`) choose a callback job once the result
is known.  The retry policies and the serial/parallel helpers live in
:mod:`zc.async.retry` and :mod:`zc.async.composite`; this module re-exports
them under their 1.5 names (``zc.async.job.RetryCommonFourTimes``,
``zc.async.job.serial``, ...), which stored objects refer to.
"""
import datetime
import functools
import logging
import types

import persistent.list
import twisted.internet.defer
import twisted.python.failure
import zc.queue
import zope.component
import zope.interface

from . import clock
from . import coroutines
from . import interfaces
from . import logs
from . import pickling
from . import twist
from . import txn
from . import unique
from . import utils
from . import watchdog
from ._jobparts import JobParts
from .snapshot import connection_tid
from .interfaces import NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED
from .retry import (  # noqa: F401  (1.5 names of zc.async.job)
    RetryCommonFourTimes, RetryCommonForever, NeverRetry,
    callback_retry_policy_factory)
from .threadlocal import local

# The raw status ids stored on jobs (as in 1.5); PENDING and ASSIGNED are
# derived from ``parent`` while the id is NEW.
_NEW, _ACTIVE, _CALLBACKS, _COMPLETED = range(4)
_STATUSES = {_NEW: NEW, _ACTIVE: ACTIVE, _CALLBACKS: CALLBACKS,
             _COMPLETED: COMPLETED}
_STATUS_NAMES = {NEW: 'NEW', PENDING: 'PENDING', ASSIGNED: 'ASSIGNED',
                 ACTIVE: 'ACTIVE', CALLBACKS: 'CALLBACKS',
                 COMPLETED: 'COMPLETED'}

_RETRY = object()  # an attempt's outcome: run the callable again

# The annotation that records an abort request (see requestAbort): a change
# of the annotations, which merges with the job's own commits.
_ABORT_KEY = 'zc.async.abort_requested'


class _Lazy:
    """``text % args``, formatted only when a log message prints it.

    The retry loops describe what they do only when they log an error,
    and a job's repr loads its arguments: passing a ``_Lazy`` keeps that
    cost off every successful call.
    """

    __slots__ = ('text', 'args')

    def __init__(self, text, *args):
        self.text = text
        self.args = args

    def __str__(self):
        try:
            return self.text % self.args
        except Exception:
            # Formatted late, maybe while the database is unreachable and a
            # job's repr cannot load its arguments: name objects by oid.
            return self.text.replace('%r', '%s') % tuple(
                logs.custom_repr(arg) for arg in self.args)


_REASSIGNED = (  # 1.5's words, which log alerts match
    '%r was reassigned.  Likely cause was that polling was unable to occur '
    'as regularly as expected, perhaps because of long commit times in the '
    'application.')

# Names defined in zc.async.composite that 1.5 defined here (see __getattr__).
_COMPOSITE_NAMES = frozenset([
    'serial', 'parallel', '_transparent', '_queue_next', '_schedule_serial',
    '_queue_all', '_schedule_parallel'])


def __getattr__(name):
    # zc.async.composite imports this module, so its names are fetched on
    # first use rather than imported here.
    if name in _COMPOSITE_NAMES:
        from . import composite
        return getattr(composite, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


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
class Job(_CallbackAdder, JobParts, utils.Base):
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

    # ------------------------------------------------------- attributes

    @property
    def callable(self):
        if self._callable_name is None:
            return self._callable_root
        return getattr(self._callable_root, self._callable_name)

    @callable.setter
    def callable(self, value):
        self._require_status(
            (NEW,), 'can only set callable when a job has NEW, PENDING, or '
            'ASSIGNED status')  # 1.5's text; only NEW is allowed (A8)
        if not callable(value):
            raise TypeError('a job needs a callable, not %r' % (value,))
        owner = _bound_owner(value)
        if owner is None:
            self._callable_root, self._callable_name = value, None
        else:
            # Bound methods do not pickle; their owner and name do.
            self._callable_root, self._callable_name = owner, value.__name__
        root = self._callable_root
        if (interfaces.IJob.providedBy(root) and root is not self
                and root.parent is None):
            # Wrapper jobs (handleInterrupt, resumeCallbacks, fail) adopt
            # their job, so that it can still find its queue and agent.
            root.parent = self

    @property
    def result(self):
        return self._result

    @property
    def begin_after(self):
        return self._begin_after

    @begin_after.setter
    def begin_after(self, value):
        self._require_status(
            (NEW,), 'can only set begin_after when a job has NEW status')
        if value is not None:
            value = _aware_utc(value, 'begin_after')
        self._begin_after = value

    @property
    def begin_by(self):
        return self._begin_by

    @begin_by.setter
    def begin_by(self, value):
        self._require_status(
            (NEW, PENDING),
            'can only set begin_by when a job has NEW or PENDING status')
        if value is not None:
            if not isinstance(value, datetime.timedelta):
                raise TypeError('begin_by must be a timedelta or None, not %r'
                                % (value,))
            if value < datetime.timedelta(0):
                raise ValueError('negative values are not allowed '
                                 '(begin_by=%r)' % (value,))
        self._begin_by = value

    @property
    def time_limit(self):
        return self._time_limit

    @time_limit.setter
    def time_limit(self, value):
        self._require_status(
            (NEW, PENDING),
            'can only set time_limit when a job has NEW or PENDING status')
        self._time_limit = watchdog.check_time_limit(value)

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

    @property
    def quota_names(self):
        return self._quota_names

    @quota_names.setter
    def quota_names(self, value):
        if isinstance(value, (str, bytes)):
            raise TypeError('provide an iterable of names, not the '
                            'string %r' % (value,))
        names = tuple(value)
        self._require_status(
            (NEW, PENDING),
            'can only set quota_names when a job has NEW or PENDING status')
        if self.status == PENDING:
            quotas = self.queue.quotas
            for name in names:
                if name not in quotas:
                    raise ValueError('unknown quota name', name)
        self._quota_names = names

    @property
    def active_start(self):
        return self._active_start

    @property
    def active_end(self):
        return self._active_end

    @property
    def active_snapshot(self):
        return self._active_snapshot

    @property
    def initial_callbacks_end(self):
        if self.key is None:
            return None
        return clock.long_to_dt(self.key)

    def _expired(self):
        """Whether the ``begin_after + begin_by`` deadline has passed."""
        return _deadline_passed(self)

    # ------------------------------------------------------ retry policy

    def getRetryPolicy(self):
        """See IJob."""
        if self._retry_policy is None:
            self._retry_policy = self._make_retry_policy()
        return self._retry_policy

    def _make_retry_policy(self):
        factory = self.retry_policy_factory
        if factory is None:
            policy = zope.component.queryAdapter(
                self, interfaces.IRetryPolicy, '')
            return RetryCommonFourTimes(self) if policy is None else policy
        if isinstance(factory, str):
            # A missing adapter raises: the caller's never-fail loop keeps
            # retrying (and logging) until someone registers it.
            return zope.component.getAdapter(
                self, interfaces.IRetryPolicy, factory)
        return factory(self)

    def _update_policy_data(self, data_cache):
        if data_cache and self._retry_policy is not None:
            self._retry_policy.updateData(data_cache)

    def _ask_policy(self, call_name, tm, *args):
        """The answer of the policy's ``call_name`` method (None if it has
        none); False once the ``begin_by`` deadline has passed."""
        self._check_reassigned((ACTIVE,))
        if self._expired():
            return False
        policy = txn.never_fail(
            self.getRetryPolicy, _Lazy('getting retry policy for %r', self),
            tm)
        call = getattr(policy, call_name, None)
        if call is None:
            logs.log.error(
                'retry policy %r for %r does not have required %s method',
                policy, self, call_name)
            return None
        answer = txn.never_fail(
            lambda: call(*args),
            _Lazy('getting result for %s retry for %r', call_name, self), tm)
        self._check_reassigned((ACTIVE,))
        return answer

    def _handle_error(self, call_name, failure, tm, data_cache):
        """Ask the retry policy what to do about ``failure``.

        Returns _RETRY (run again now), the job itself (rescheduled in its
        queue) or None (give up: the failure stands).
        """
        answer = self._ask_policy(call_name, tm, failure, data_cache)
        if _is_time(answer):
            if (interfaces.IAgent.providedBy(self.parent)
                    and self.queue is not None):
                return txn.never_fail(
                    lambda: self._reschedule(answer, data_cache),
                    _Lazy('rescheduling %r as requested by associated '
                          'IRetryPolicy %r', self, self._retry_policy), tm)
            logs.log.critical(
                'error for IRetryPolicy %r on %r: can only reschedule a job '
                'directly in an agent', self._retry_policy, self)
            return None
        return _RETRY if answer else None

    def _reschedule(self, when, data_cache=None):
        """Put the job back in its queue, NEW, to be claimed at ``when``
        (a datetime or timedelta; past or non-positive: first in line)."""
        queue = self.queue
        self._update_policy_data(data_cache)
        self._reset()
        if interfaces.IAgent.providedBy(self.parent):
            self.parent.remove(self)
        self.parent = None
        begin_after = _reschedule_time(when)
        if begin_after is None:
            queue.putBack(self)
        else:
            queue.put(self, begin_after=begin_after)
        return self

    # -------------------------------------------------- reassignment

    def _check_reassigned(self, expected_statuses):
        """Raise ReassignedError if someone else took this job over.

        That is, its status is not one of ``expected_statuses``; or, in a
        dispatcher's worker thread and for the job the thread itself runs,
        its agent is not the thread's agent of the thread's dispatcher.
        """
        status = self.status
        if status in expected_statuses:
            reason = self._foreign_agent()
            if reason is None:
                return
        else:
            reason = 'its status is %s, not %s' % (
                _STATUS_NAMES.get(status, status),
                ' or '.join(_STATUS_NAMES[s] for s in expected_statuses))
        if watchdog.dropped(self):  # handed back by a stop, or abandoned
            logs.tracelog.info('dropping this attempt of %r: %s', self,
                               reason)
        else:
            logs.log.error(_REASSIGNED, self)
        raise interfaces.ReassignedError('%r was reassigned: %s'
                                         % (self, reason))

    def _foreign_agent(self):
        """Why the job is not this worker thread's any more, or None."""
        dispatcher = local.dispatcher
        # Jobs run on behalf of another job (inner jobs' and Deferreds'
        # completions, wrapper jobs) are checked through that job.
        if dispatcher is None or (local.job is not None
                                  and local.job is not self):
            return None
        if watchdog.abandoned():
            return 'its worker thread was abandoned'
        agent = self.agent
        if agent is None:
            return 'no agent holds it'
        uuid = getattr(agent.parent, 'UUID', None)
        if agent.name != local.name or uuid != dispatcher.UUID:
            return ('agent %r of dispatcher %s holds it, not agent %r of '
                    'dispatcher %s' % (agent.name, uuid, local.name,
                                       dispatcher.UUID))
        return None

    # ------------------------------------------------------------ calling

    def __call__(self, *args, **kwargs):
        """See IJob."""
        statuses = self._call_statuses()
        self._require_status(
            statuses, 'can only call a job with NEW or ASSIGNED status')
        tm = twist.transactionManager(self)
        tries = []  # the active_start each try of the start stored

        def start():
            started = tries[-1] if tries else None
            prepared = self._start(args, kwargs, statuses, started)
            tries.append(self._active_start)
            return prepared

        call_args, call_kwargs = txn.never_fail(
            start, _Lazy('preparing for call of %r', self), tm)
        return self._run(call_args, call_kwargs, tm)

    def _call_claimed(self, started):
        """Call a job that ``_start_claimed`` made ACTIVE at ``started``:
        the steps of ``__call__`` after its start commit.

        ReassignedError if the job is not in that start any more (another
        dispatcher took it over, or it was claimed again since).
        """
        self._check_reassigned((ACTIVE,))
        if self._active_start != started:
            logs.log.error(_REASSIGNED + '  (It was started again.)', self)
            raise interfaces.ReassignedError(
                '%r was reassigned: started at %s, not %s'
                % (self, self._active_start, started))
        return self._run(list(self._args), dict(self._kwargs),
                         twist.transactionManager(self))

    def _run(self, args, kwargs, tm):
        """Call until the outcome is stored (steps 3-10 of __call__)."""
        data_cache = {}  # the retry policy's counters for this call
        while True:
            outcome = self._attempt(args, kwargs, tm, data_cache)
            if outcome is not _RETRY:
                return outcome

    def _attempt(self, args, kwargs, tm, data_cache):
        """Call once and store the outcome; _RETRY or what to return."""
        jar = self._p_jar
        snapshot = None if jar is None else connection_tid(jar)
        res, raised, teardown = self._invoke(args, kwargs, tm)
        if raised:
            decision = self._handle_error('jobError', res, tm, data_cache)
            if decision is not None:
                return decision
        failure, waiting = self._store_and_commit(res, tm, data_cache,
                                                  teardown, snapshot)
        if failure is not None:
            decision = self._handle_error(
                'commitError', failure, tm, data_cache)
            if decision is not None:
                return decision
            self._log_lost_outcome(res)
            txn.never_fail(
                lambda: self._complete_if_still_ours(failure, data_cache),
                _Lazy('storing failure at commit of %r', self), tm)
        elif waiting:
            if isinstance(res, twisted.internet.defer.Deferred):
                self._wait_for_deferred(res)
            return res
        self._log_completion(self._result)
        if self._status_id != _COMPLETED:  # else finished in the result commit
            txn.never_fail(self.resumeCallbacks,
                           _Lazy('performing callbacks of %r', self), tm)
        return self._result

    def _invoke(self, args, kwargs, tm):
        """Call the callable between ``setUp`` and ``tearDown``.

        Returns ``(result, raised, teardown)``.  When the callable (or
        setUp) raised, ``result`` is a Failure, the transaction was aborted
        and tearDown ran; otherwise ``teardown()`` runs it.
        """
        previous, local.job = local.job, self
        setup_info = None  # what tearDown gets if setUp fails
        try:
            setup_info = self.setUp()
            # Stopped by its time limit or an abort request (see watchdog).
            res = watchdog.watched(self, self.callable)(*args, **kwargs)
            if coroutines.is_coroutine(res):  # an async def function's
                res = watchdog.watched(self, coroutines.run)(res)
        except txn.EXPLOSIVE_ERRORS:
            txn.abort(tm, _Lazy('calling %r', self), wait=False)
            self._tear_down(setup_info)
            raise
        except BaseException:  # the job boundary: any error is a result
            res = twist.Failure()  # before the abort ghosts the locals
            # A disconnect may fail the abort too: wait for the database.
            txn.abort(tm, _Lazy('calling %r', self))
            self._tear_down(setup_info)
            return res, True, _nothing
        finally:
            local.job = previous
        return res, False, functools.partial(self._tear_down, setup_info)

    def _tear_down(self, setup_info):
        try:
            self.tearDown(setup_info)
        except Exception:
            logs.log.critical('Error while tearDown for %r', self,
                              exc_info=True)

    def _store_and_commit(self, res, tm, data_cache, teardown, snapshot):
        """Record the callable's outcome, and the ``snapshot`` it ran in
        (see IJob.active_snapshot), and commit.

        Returns ``(commit failure or None, whether the job waits for an
        inner job or Deferred)``; tearDown runs after the commit or abort.

        When the callable changed nothing transactional, the outcome is all
        there is to store: a job with no callbacks is completed in the same
        commit, and a conflict of that commit (say, with another worker's
        completion) only stores it again, without calling the callable
        again.
        """
        quiet = not _joined(tm)
        while True:
            stored_end = None
            finished = False
            try:
                waiting = self._store_result(res, data_cache)
                if self._p_changed:  # no commit of its own: rides along
                    self._active_snapshot = snapshot
                if not waiting:
                    stored_end = self._active_end
                    finished = quiet and self._finish_if_no_callbacks()
                tm.commit()
            except txn.EXPLOSIVE_ERRORS:
                txn.abort(tm, _Lazy('storing result of %r', self),
                          wait=False)
                teardown()
                raise
            except Exception as e:
                # Nothing of the callable's is lost by a conflict of a
                # result-only commit: store it again (no Failure needed).
                again = finished and txn._error_kind(e) == 'conflict'
                failure = None if again else twist.Failure()
                # A disconnect may fail the abort too: wait for the database.
                txn.abort(tm, _Lazy('storing result of %r', self))
                if again:
                    continue
                teardown()
                if (stored_end is not None
                        and self._result_landed(stored_end, tm)):
                    return None, False
                return failure, False
            teardown()
            return None, waiting

    def _finish_if_no_callbacks(self):
        """CALLBACKS -> COMPLETED now, in the result's commit, when there
        is no callback to run; return whether it did.

        A callback another transaction adds meanwhile changes this job, so
        one of the two commits conflicts: if ours, the result is stored
        again and the callback runs; if the adder's, its retry finds the
        job COMPLETED and runs the callback at once.
        """
        if self._has_callbacks():
            return False
        self._check_reassigned((CALLBACKS,))
        self._finish()
        return True

    def _complete_if_still_ours(self, res, data_cache):
        # Another dispatcher may have completed the job meanwhile (false
        # death): ReassignedError ends the retry loop, BadStatusError
        # would not.
        self._check_reassigned((ACTIVE,))
        self._complete(res, data_cache)

    def _result_landed(self, stored_end, tm):
        """Whether a result commit that raised was recorded all the same.

        A ZEO disconnect during the second phase of a commit raises after
        the server committed; running the callable again would do its work
        twice, so look before asking the retry policy.
        """
        # Equal times alone do not prove it (frozen or coarse clocks): a
        # dispatcher that took the job over may have completed it since.
        # Only a read: no commit (the sequence of commits stays 1.5's).
        return txn.never_fail(
            lambda: (self._status_id != _ACTIVE
                     and self._active_end == stored_end
                     and self._foreign_agent() is None),
            _Lazy('checking the stored result of %r', self), tm,
            commit=False)

    def _store_result(self, res, data_cache):
        """Record ``res``; return whether the job must wait for it."""
        if interfaces.IJob.providedBy(res):
            self._result = res  # until the inner job's result arrives
            self._update_policy_data(data_cache)
            if not self._waits_on(res):  # a re-run may return it again
                parent = self.parent
                res.addCallback(self._callback)
                # The callback job must not adopt this job as its child.
                self.parent = parent
            return True
        if isinstance(res, twisted.internet.defer.Deferred):
            self._update_policy_data(data_cache)
            return True
        self._complete(res, data_cache)
        return False

    def _waits_on(self, inner):
        """Whether ``inner`` already has a completion callback for this job
        that has yet to run (one that ran while this job was put back after
        an interruption failed, and cannot deliver any more)."""
        return any(getattr(cb, '_callable_root', None) is self
                   and getattr(cb, '_callable_name', None) == '_callback'
                   and cb.status != COMPLETED
                   for cb in inner.callbacks)

    def _wait_for_deferred(self, deferred):
        """Complete the job, in a connection of its own, when ``deferred``
        fires."""
        partial = txn.Partial(self._callback)
        partial.max_transaction_errors = None  # retry conflicts forever
        dispatcher = local.dispatcher
        if dispatcher is None:
            deferred.addBoth(partial)
        else:
            # Deferreds are not thread-safe: attach in the reactor thread.
            partial.setReactor(dispatcher.reactor)
            dispatcher.reactor.callFromThread(deferred.addBoth, partial)

    def _callback(self, res):
        """Complete the job with the outcome of the inner job or Deferred
        that its callable returned, then run its callbacks."""
        self._require_status(
            (ACTIVE,), 'can only store an awaited result of a job with '
            'ACTIVE status')
        tm = twist.transactionManager(self)
        stored = []  # the active_end each try of the store recorded

        def complete():
            # A retry after a commit that landed despite a disconnect must
            # not store the result twice.
            if not (stored and self._status_id != _ACTIVE
                    and self._active_end == stored[-1]):
                self._complete(res)
                stored.append(self._active_end)

        txn.never_fail(complete, _Lazy('storing result of %r', self), tm)
        self._log_completion(self._result)
        txn.never_fail(self.resumeCallbacks,
                       _Lazy('performing callbacks of %r', self), tm)

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

    def resumeCallbacks(self):
        """See IJob."""
        self._require_status(
            (CALLBACKS,),
            'can only resumeCallbacks on a job with CALLBACKS status')
        self._check_reassigned((CALLBACKS,))
        tm = twist.transactionManager(self)
        done = 0
        while True:
            pending = self._callback_list()[done:]
            if not pending:
                break
            for callback in pending:
                self._check_reassigned((CALLBACKS,))
                self._run_callback(callback)
            done += len(pending)
            # A new transaction sees callbacks other threads added meanwhile.
            tm.commit()
            tm.begin()
        self._finish()
        tm.commit()

    def _run_callback(self, callback):
        """Bring ``callback`` to completion with this job's result."""
        result = self._result
        while interfaces.ICallbackProxy.providedBy(callback):
            callback = callback.getJob(result)
        status = callback.status
        if status in (NEW, PENDING, ASSIGNED):
            if _deadline_passed(callback):
                logs.log.error('failing expired callback %r to %r',
                               callback, self)
                callback.fail()
            else:
                logs.tracelog.debug('starting callback %r to %r',
                                    callback, self)
                callback(result)
        elif status == ACTIVE:
            callback.handleCallbackInterrupt(self)
        elif status == CALLBACKS:
            callback.resumeCallbacks()

    # ------------------------------------------------ interruptions, fail

    def handleInterrupt(self):
        """See IJob."""
        if self.status == CALLBACKS:
            self.resumeCallbacks()
            return
        self._require_status(
            (ACTIVE,),
            'can only call ``handleInterrupt`` on a job with ACTIVE status')
        answer = self._ask_policy('interrupted',
                                  twist.transactionManager(self))
        if answer or _is_time(answer):
            if self.queue is not None:
                self._reschedule(answer if _is_time(answer)
                                 else datetime.timedelta(0))
                return
            logs.log.critical('cannot retry interrupted %r: it is in no '
                              'queue; aborting it', self)
        self._abort()

    def handleCallbackInterrupt(self, caller):
        """Retry or abort this callback, found ACTIVE while ``caller`` (its
        parent, in CALLBACKS status) runs its callbacks.

        Callbacks cannot be rescheduled: a datetime or timedelta answer of
        the retry policy means "retry now" (and is logged as an error).
        """
        self._require_status(
            (ACTIVE,), 'can only handleCallbackInterrupt on a job with ACTIVE '
            'status')
        caller._require_status(
            (CALLBACKS,), 'can only handleCallbackInterrupt with caller in '
            'CALLBACKS status')
        answer = self._ask_policy('interrupted',
                                  twist.transactionManager(self))
        if _is_time(answer):
            logs.log.error(
                'error for IRetryPolicy %r on %r: cannot reschedule a '
                'callback, only retry.  We will retry now, for no clear '
                '"right" action.', self._retry_policy, self)
        if answer or _is_time(answer):
            logs.tracelog.debug('retrying interrupted callback %r to %r',
                                self, caller)
            self._reset()
            return self(caller.result)
        logs.tracelog.debug('aborting interrupted callback %r to %r',
                            self, caller)
        self._abort()

    def _abort(self, error=None):
        """Give up an interrupted job: ``error`` (by default an
        AbortedError), then the callbacks."""
        failure = twist.Failure(
            interfaces.AbortedError() if error is None else error)
        self._complete(failure)
        self._log_completion(failure)
        self.resumeCallbacks()

    def _abandon(self, error):
        """Settle this ACTIVE job, whose worker thread was abandoned after
        ``error`` (a JobStopped) was raised in it (see zc.async.watchdog),
        as if its callable had raised ``error``: the retry policy's
        ``jobError`` decides whether it is put back in its queue (a retry
        cannot happen in this thread) or fails.  Commits.
        """
        self._require_status(
            (ACTIVE,), 'can only settle an abandoned job with ACTIVE status')
        tm = twist.transactionManager(self)
        failure = twist.Failure(error)
        decision = self._handle_error('jobError', failure, tm, {})
        if decision is _RETRY and self.queue is not None:
            txn.never_fail(
                lambda: self._reschedule(datetime.timedelta(0)),
                _Lazy('putting back abandoned %r', self), tm)
        elif decision is None or decision is _RETRY:
            txn.never_fail(
                lambda: self._complete_if_still_ours(failure, {}),
                _Lazy('storing the failure of abandoned %r', self), tm)
            self._log_completion(failure)
            txn.never_fail(self.resumeCallbacks,
                           _Lazy('performing callbacks of %r', self), tm)

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

def _joined(tm):
    """Whether anything joined the current transaction of ``tm`` (a
    connection with changes, or another data manager)."""
    return bool(getattr(tm.get(), '_resources', True))


def _nothing():
    pass


def _skip_jobs(ob):
    """The nearest of ``ob`` and its parents that is not a job or proxy."""
    while ob is not None and interfaces.IAbstractJob.providedBy(ob):
        ob = ob.parent
    return ob


def _passes_to_queue(ob):
    """Whether a walk from a job to its queue goes on through ``ob``."""
    return (interfaces.IAbstractJob.providedBy(ob)
            or interfaces.IAgent.providedBy(ob)
            or interfaces.IDispatcherAgents.providedBy(ob))


def _derived_status(parent):
    """NEW, PENDING or ASSIGNED, from the nearest non-job container."""
    ob = _skip_jobs(parent)
    if interfaces.IAgent.providedBy(ob):
        return ASSIGNED
    if interfaces.IQueue.providedBy(ob):
        return PENDING
    return NEW


def _bound_owner(value):
    """The object a bound method, method-wrapper or builtin method is
    bound to; None for other callables."""
    if isinstance(value, (types.MethodType, types.MethodWrapperType,
                          types.BuiltinMethodType)):
        owner = getattr(value, '__self__', None)
        # Builtin functions such as ``len`` are "bound" to their module.
        if owner is not None and not isinstance(owner, types.ModuleType):
            return owner
    return None


def _aware_utc(value, argname):
    """``value`` in UTC; it must be a timezone-aware datetime."""
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (argname, value))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            'cannot use timezone-naive values (%s=%r); give a tzinfo, such '
            'as datetime.timezone.utc' % (argname, value))
    return value.astimezone(datetime.timezone.utc)


def _deadline_passed(job):
    """Whether ``job``'s ``begin_after + begin_by`` deadline has passed."""
    begin_after, begin_by = job.begin_after, job.begin_by
    return (begin_after is not None and begin_by is not None
            and begin_after + begin_by < clock.now())


def _is_time(answer):
    return isinstance(answer, (datetime.datetime, datetime.timedelta))


def _reschedule_time(when):
    """The ``begin_after`` for a reschedule answer; None: first in line."""
    now = clock.now()
    if isinstance(when, datetime.timedelta):
        return now + when if when > datetime.timedelta(0) else None
    if when.tzinfo is None:  # naive answers of retry policies mean UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when if when > now else None


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
