"""How a job runs: its attempts and their commits, its callbacks, and what
its retry policy says.

:class:`JobRun` is a base class of :class:`zc.async.job.Job`: the calling
machinery of a job, apart from its state.  Calling a job starts it (one
commit), calls its callable between ``setUp`` and ``tearDown``, stores the
outcome (one commit, which also completes a job without callbacks) and
runs its callbacks; an error or an interruption is put to the job's retry
policy, whose answer retries the call, reschedules the job in its queue
or lets the failure stand.  Each status change is one of the transitions
of :mod:`zc.async.job`; :meth:`JobRun._check_reassigned` stops an attempt
that another dispatcher took over.
"""
import datetime
import functools

import twisted.internet.defer
import zope.component

from . import clock
from . import coroutines
from . import interfaces
from . import logs
from . import twist
from . import txn
from . import watchdog
from ._jobstatus import _ACTIVE, _COMPLETED, _STATUS_NAMES
from .interfaces import NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED
from .logs import Lazy
from .retry import RetryCommonFourTimes
from .snapshot import connection_tid
from .threadlocal import local

_RETRY = object()  # an attempt's outcome: run the callable again

_REASSIGNED = (  # 1.5's words, which log alerts match
    '%r was reassigned.  Likely cause was that polling was unable to occur '
    'as regularly as expected, perhaps because of long commit times in the '
    'application.')


class JobRun:
    """The running of a job; mixed into :class:`zc.async.job.Job`, whose
    transitions (``_start``, ``_complete``, ``_finish``, ``_reset``) it
    calls."""

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
            start, Lazy('preparing for call of %r', self), tm)
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
                Lazy('storing failure at commit of %r', self), tm)
        elif waiting:
            if isinstance(res, twisted.internet.defer.Deferred):
                self._wait_for_deferred(res)
            return res
        self._log_completion(self._result)
        if self._status_id != _COMPLETED:  # else finished in the result commit
            txn.never_fail(self.resumeCallbacks,
                           Lazy('performing callbacks of %r', self), tm)
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
            txn.abort(tm, Lazy('calling %r', self), wait=False)
            self._tear_down(setup_info)
            raise
        except BaseException:  # the job boundary: any error is a result
            res = twist.Failure()  # before the abort ghosts the locals
            # A disconnect may fail the abort too: wait for the database.
            txn.abort(tm, Lazy('calling %r', self))
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
                txn.abort(tm, Lazy('storing result of %r', self),
                          wait=False)
                teardown()
                raise
            except Exception as e:
                # Nothing of the callable's is lost by a conflict of a
                # result-only commit: store it again (no Failure needed).
                again = finished and txn._error_kind(e) == 'conflict'
                failure = None if again else twist.Failure()
                # A disconnect may fail the abort too: wait for the database.
                txn.abort(tm, Lazy('storing result of %r', self))
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
            Lazy('checking the stored result of %r', self), tm,
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

        txn.never_fail(complete, Lazy('storing result of %r', self), tm)
        self._log_completion(self._result)
        txn.never_fail(self.resumeCallbacks,
                       Lazy('performing callbacks of %r', self), tm)

    # ---------------------------------------------------------- callbacks

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
            self.getRetryPolicy, Lazy('getting retry policy for %r', self),
            tm)
        call = getattr(policy, call_name, None)
        if call is None:
            logs.log.error(
                'retry policy %r for %r does not have required %s method',
                policy, self, call_name)
            return None
        answer = txn.never_fail(
            lambda: call(*args),
            Lazy('getting result for %s retry for %r', call_name, self), tm)
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
                    Lazy('rescheduling %r as requested by associated '
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

    def _expired(self):
        """Whether the ``begin_after + begin_by`` deadline has passed."""
        return _deadline_passed(self)

    # --------------------------------------------------- interruptions

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
                Lazy('putting back abandoned %r', self), tm)
        elif decision is None or decision is _RETRY:
            txn.never_fail(
                lambda: self._complete_if_still_ours(failure, {}),
                Lazy('storing the failure of abandoned %r', self), tm)
            self._log_completion(failure)
            txn.never_fail(self.resumeCallbacks,
                           Lazy('performing callbacks of %r', self), tm)

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


# ------------------------------------------------------------ helpers

def _joined(tm):
    """Whether anything joined the current transaction of ``tm`` (a
    connection with changes, or another data manager)."""
    return bool(getattr(tm.get(), '_resources', True))


def _nothing():
    pass


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
