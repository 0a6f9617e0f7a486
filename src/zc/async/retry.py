"""Retry policies decide what happens after a job fails or is interrupted.

A job consults its policy (see :class:`zc.async.interfaces.IRetryPolicy`)
when its callable raises (``jobError``), when committing its result fails
(``commitError``) and when it was found active after its dispatcher went
away (``interrupted``).  An answer of True means "try again now, in this
thread", False "give up", and a ``datetime``/``timedelta`` "put the job back
in its queue to be claimed then".

* :class:`RetryCommonFourTimes` (the default for jobs) retries conflicts up
  to five attempts in all and storage disconnects (ZEO's or RelStorage's)
  forever, with backoff;
* :class:`RetryCommonForever` (the default for callbacks and housekeeping
  jobs) retries conflicts and disconnects forever, and retries any other
  commit error forever too, with a slowly growing backoff;
* :class:`NeverRetry` never retries (for non-transactional work);
* :func:`retrying` makes a factory of :class:`RetryingPolicy`, which also
  reschedules the job, after a growing delay, when its callable raises one
  of the listed application errors, until its attempts are used up.

The classes keep 1.5's dotted names, ``zc.async.job.RetryCommonFourTimes``
and so on, so that stored policies and ``retry_policy_factory`` values
written by zc.async 1.5 still load; ``zc.async.job`` re-exports them.
"""
import datetime
import math
import numbers
import pickle
import time

import BTrees.OOBTree
import persistent
import zope.component
import zope.interface
import ZEO.Exceptions
import ZODB.POSException

from . import interfaces
from . import logs
from . import txn


def backoff_sleep(seconds):
    """Wait ``seconds`` before a retry.

    Every policy sleeps through this one function, so tests replace it (or
    ``time.sleep``, which it looks up at call time) instead of waiting.
    """
    time.sleep(seconds)


def _backoff(count, initial, increment, maximum):
    """Seconds to wait before the ``count``-th retry: a capped ramp."""
    return min(maximum, initial + (count - 1) * increment)


@zope.component.adapter(interfaces.IJob)
@zope.interface.implementer(interfaces.IRetryPolicy)
class RetryCommonFourTimes(persistent.Persistent):
    """Retry conflicts (five attempts in all) and disconnects (forever).

    Each row of ``internal_exceptions`` (used by ``jobError``) and
    ``transaction_exceptions`` (used by ``commitError``) is
    ``(exception classes, data key, max count or None, initial backoff,
    backoff increment, max backoff)``, times in seconds; ZEO's
    ``ClientDisconnected`` in a row stands for the disconnect errors of
    every storage (:func:`zc.async.txn.disconnect_errors`: RelStorage's
    database driver errors too), counted as ``'zeo_disconnected'`` as in
    1.5.  The counts live
    in the data cache of one call of the job, shared by both methods;
    interruptions are counted in the persistent ``data``.
    """

    internal_exceptions = (
        ((ZEO.Exceptions.ClientDisconnected,), 'zeo_disconnected',
         None, 5, 5, 60),
        ((ZODB.POSException.TransactionError,), 'transaction_error',
         5, 0, 0, 0),
    )
    transaction_exceptions = internal_exceptions
    max_interruptions = 9
    log_every = 5

    def __init__(self, job):
        self.parent = self.__parent__ = job
        self.data = BTrees.OOBTree.OOBTree()

    def updateData(self, data_cache):
        """Merge ``data_cache`` into ``data``; keep the first ``first_active``.
        """
        if 'first_active' in self.data:
            data_cache.pop('first_active', None)
        self.data.update(data_cache)

    def jobError(self, failure, data_cache):
        """Retry a common transient error raised by the job's callable."""
        return self._process(failure, data_cache, self.internal_exceptions)

    def commitError(self, failure, data_cache):
        """Retry a common transient error raised by the result's commit."""
        return self._process(
            failure, data_cache, self.transaction_exceptions)

    def _process(self, failure, data_cache, table):
        """True (after the backoff) if ``failure`` matches a row with
        retries left; False otherwise."""
        for (exceptions, key, max_count,
             initial, increment, maximum) in table:
            if failure.check(*txn.with_disconnects(exceptions)) is None:
                continue
            count = data_cache.get(key, 0) + 1
            if max_count is not None and count >= max_count:
                logs.tracelog.warning(
                    'Retry policy for job %r is not retrying after %d '
                    'counts of %s occurrences', self.parent, count, key)
                return False
            if count == 1 or not count % self.log_every:
                logs.tracelog.warning(
                    'Retry policy for job %r requests another attempt '
                    'after %d counts of %s occurrences',
                    self.parent, count, key)
            self._record(data_cache, key, count, failure)
            seconds = _backoff(count, initial, increment, maximum)
            if seconds:
                backoff_sleep(seconds)
            return True
        return False

    def _record(self, data_cache, key, count, failure):
        data_cache[key] = count
        data_cache['last_' + key] = failure
        data_cache.setdefault('first_active', self.parent.active_start)

    def interrupted(self):
        """Retry until the ``max_interruptions``-th interruption is passed.
        """
        if 'first_active' not in self.data:
            self.data['first_active'] = self.parent.active_start
        count = self.data['interruptions'] = (
            self.data.get('interruptions', 0) + 1)
        if self.max_interruptions is None or count <= self.max_interruptions:
            if count == 1 or not count % self.log_every:
                logs.tracelog.info(
                    'Retry policy for job %r requests another attempt '
                    'after %d interrupts', self.parent, count)
            return True
        logs.tracelog.info(
            'Retry policy for job %r is not retrying after %d interrupts',
            self.parent, count)
        return False


class RetryCommonForever(RetryCommonFourTimes):
    """Retry common transient errors, and any commit error, forever.

    Job code errors other than conflicts and disconnects are not retried.
    Other commit errors are retried after 0, 1, 2, ... 60 seconds and logged
    CRITICAL (the first and every ``log_every``-th time): nothing can go on
    until someone fixes their cause.
    """

    internal_exceptions = (
        ((ZEO.Exceptions.ClientDisconnected,), 'zeo_disconnected',
         None, 5, 5, 60),
        ((ZODB.POSException.TransactionError,), 'transaction_error',
         None, 0, 0, 0),
    )
    transaction_exceptions = internal_exceptions
    max_interruptions = None
    other_commit_initial_backoff = 0
    other_commit_incremental_backoff = 1
    other_commit_max_backoff = 60

    def commitError(self, failure, data_cache):
        """Always retry; back off on errors that are not common ones."""
        if super().commitError(failure, data_cache):
            return True
        key = 'other'
        count = data_cache.get(key, 0) + 1
        self._record(data_cache, key, count, failure)
        seconds = _backoff(count, self.other_commit_initial_backoff,
                           self.other_commit_incremental_backoff,
                           self.other_commit_max_backoff)
        if count == 1 or not count % self.log_every:
            logs.log.critical(
                'Retry policy for job %r requests another attempt in %d '
                'seconds after %d counts of %s occurrences\n%s', self.parent,
                seconds, count, key, failure.getTraceback())
        if seconds:
            backoff_sleep(seconds)
        return True


@zope.component.adapter(interfaces.IJob)
@zope.interface.implementer(interfaces.IRetryPolicy)
class NeverRetry(persistent.Persistent):
    """Never retry: for work that must not run twice (say, a payment)."""

    def __init__(self, job):
        self.parent = self.__parent__ = job

    def updateData(self, data_cache):
        """Nothing is kept."""

    def jobError(self, failure, data_cache):
        return False

    def commitError(self, failure, data_cache):
        return False

    def interrupted(self):
        return False


def callback_retry_policy_factory(job):
    """The policy of a callback: the ``IRetryPolicy`` adapter named
    ``'callback'`` if one is registered, else :class:`RetryCommonForever`.
    """
    res = zope.component.queryAdapter(job, interfaces.IRetryPolicy,
                                      'callback')
    if res is None:
        res = RetryCommonForever(job)
    return res


# 1.5 defined these in zc.async.job; stored objects and factories name them
# there (zc.async.job re-exports them).
for _obj in (RetryCommonFourTimes, RetryCommonForever, NeverRetry,
             callback_retry_policy_factory):
    _obj.__module__ = 'zc.async.job'
del _obj


# ------------------------------------------------------------ retrying

#: The annotation of a job whose :func:`retrying` policy rescheduled it:
#: the number of the attempt it is on (waiting for, running or last made).
#: A job without it is on its first attempt.
ATTEMPT = 'zc.async.retry.attempt'

#: The longest wait a :func:`retrying` policy may ask for (a ``begin_after``
#: must stay a representable datetime).
LONGEST_DELAY = datetime.timedelta(days=36500)


def retrying(attempts=3, delay=datetime.timedelta(seconds=10), backoff=2.0,
             max_delay=None, errors=(Exception,)):
    """A retry policy factory that also retries application errors.

    Use the result as a job's ``retry_policy_factory`` (or pass it to
    ``queue.put``).  When the job's callable raises one of ``errors`` (an
    exception class or a tuple of them), the job goes back to its queue and
    is claimed again -- by any dispatcher, in a new transaction -- after
    ``delay``; each further wait is ``backoff`` times the one before, at
    most ``max_delay`` (a timedelta, or None for no cap).  The job is
    called at most ``attempts`` times so; after the last attempt it fails
    with the last error.  Conflict errors, storage disconnects, commit
    errors and interruptions are handled as by the default policy
    (:class:`RetryCommonFourTimes`), and do not count as attempts.

    The attempt a job is on is its annotation :data:`ATTEMPT` (see
    :func:`attempt`).  Bad arguments raise TypeError or ValueError here.
    """
    return Retrying(attempts, delay, backoff, max_delay, errors)


def attempt(job):
    """The number of the attempt ``job`` is on, under a :func:`retrying`
    policy: 1 until the policy first rescheduled it."""
    return job.annotations.get(ATTEMPT, 1)


class Retrying:
    """The settings of a :func:`retrying` policy, and the policy's factory.

    Stored by value in the job (its error classes by reference), so every
    process sees the same settings; calling it with a job makes the job's
    :class:`RetryingPolicy`.
    """

    def __init__(self, attempts, delay, backoff, max_delay, errors):
        self.attempts = _check_attempts(attempts)
        self.delay = _check_delay(delay, 'delay')
        self.backoff = _check_backoff(backoff)
        self.max_delay = max_delay
        if max_delay is not None:
            _check_delay(max_delay, 'max_delay')
            if max_delay < delay:
                raise ValueError('max_delay (%s) must not be shorter than '
                                 'delay (%s)' % (max_delay, delay))
        self.errors = _check_errors(errors)
        if self.attempts > 1 and self.delay_before(
                self.attempts) > LONGEST_DELAY:
            raise ValueError(
                'the wait before attempt %d would be longer than %s: give '
                'a max_delay, or fewer attempts or a smaller backoff'
                % (self.attempts, LONGEST_DELAY))

    def __call__(self, job):
        return RetryingPolicy(job, self)

    def delay_before(self, number):
        """The wait before attempt ``number`` (2 or more)."""
        try:
            wait = self.delay * (self.backoff ** (number - 2))
        except OverflowError:  # grown beyond any cap
            wait = datetime.timedelta.max
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        return wait

    def __repr__(self):
        return ('zc.async.retry.retrying(attempts=%r, delay=%r, backoff=%r, '
                'max_delay=%r, errors=(%s,))' % (
                    self.attempts, self.delay, self.backoff, self.max_delay,
                    ', '.join('%s.%s' % (error.__module__, error.__qualname__)
                              for error in self.errors)))


class RetryingPolicy(RetryCommonFourTimes):
    """The policy of a :func:`retrying` factory (``settings``).

    A listed error of the job's callable reschedules the job (a timedelta
    answer) while attempts are left, and records the next attempt's number
    in the job's :data:`ATTEMPT` annotation, in the commit of the answer.
    """

    def __init__(self, job, settings):
        super().__init__(job)
        self.settings = settings

    def jobError(self, failure, data_cache):
        """Retry common errors in place; reschedule listed ones."""
        common = txn.with_disconnects(
            [error for row in self.internal_exceptions for error in row[0]])
        if failure.check(*common) is not None:
            return super().jobError(failure, data_cache)
        if failure.check(*self.settings.errors) is None:
            return False
        return self._next_attempt(failure)

    def _next_attempt(self, failure):
        """The wait before the next attempt, or False if none is left."""
        job = self.parent
        number, total = attempt(job), self.settings.attempts
        error = '%s: %s' % (failure.type.__name__, failure.getErrorMessage())
        if number >= total:
            logs.tracelog.info(
                'Retry policy for job %r is not retrying after attempt %d of '
                '%d failed with %s', job, number, total, error)
            return False
        if not interfaces.IAgent.providedBy(job.parent):
            logs.log.warning(
                '%r failed with %s; its retrying policy cannot reschedule '
                'it, as no agent holds it (a callback, or a job called '
                'directly)', job, error)
            return False
        wait = self.settings.delay_before(number + 1)
        job.annotations[ATTEMPT] = number + 1
        logs.log.warning(
            '%r: attempt %d of %d failed with %s; rescheduling it in %s',
            job, number, total, error, wait)
        return wait


def _check_attempts(value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError('attempts must be an integer, not %r' % (value,))
    if value < 1:
        raise ValueError('attempts must be at least 1, not %r' % (value,))
    return int(value)


def _check_delay(value, name):
    if not isinstance(value, datetime.timedelta):
        raise TypeError('%s must be a datetime.timedelta, not %r'
                        % (name, value))
    if value < datetime.timedelta(0):
        raise ValueError('%s must not be negative, not %s' % (name, value))
    return value


def _check_backoff(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError('backoff must be a number, not %r' % (value,))
    if not (value >= 1 and math.isfinite(value)):  # NaN fails too
        raise ValueError('backoff must be a finite number of at least 1 '
                         '(the waits must not shrink), not %r' % (value,))
    return float(value)


def _check_errors(value):
    """``value`` as a non-empty tuple of exception classes that pickle by
    reference (a worker of another process must be able to load them)."""
    errors = (value,) if isinstance(value, type) else value
    if not isinstance(errors, (tuple, list)):
        raise TypeError('errors must be an exception class or a tuple of '
                        'them, not %r' % (value,))
    if not errors:
        raise ValueError('errors must name at least one exception class')
    for error in errors:
        if not (isinstance(error, type) and issubclass(error, BaseException)):
            raise TypeError('errors must be exception classes, not %r'
                            % (error,))
        try:
            loaded = pickle.loads(pickle.dumps(error))
        except Exception as e:  # pickling fails in many ways
            loaded = e
        if loaded is not error:
            raise TypeError(
                'error class %r cannot be pickled by reference: define it '
                'at the top level of an importable module' % (error,))
    return tuple(errors)
