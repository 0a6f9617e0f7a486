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
* :class:`NeverRetry` never retries (for non-transactional work).

The classes keep 1.5's dotted names, ``zc.async.job.RetryCommonFourTimes``
and so on, so that stored policies and ``retry_policy_factory`` values
written by zc.async 1.5 still load; ``zc.async.job`` re-exports them.
"""
import time

import BTrees.OOBTree
import persistent
import zope.component
import zope.interface
import ZEO.Exceptions
import ZODB.POSException

from . import interfaces
from . import utils


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
    every storage (:func:`zc.async.utils.disconnect_errors`: RelStorage's
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
            if failure.check(*utils.with_disconnects(exceptions)) is None:
                continue
            count = data_cache.get(key, 0) + 1
            if max_count is not None and count >= max_count:
                utils.tracelog.warning(
                    'Retry policy for job %r is not retrying after %d '
                    'counts of %s occurrences', self.parent, count, key)
                return False
            if count == 1 or not count % self.log_every:
                utils.tracelog.warning(
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
                utils.tracelog.info(
                    'Retry policy for job %r requests another attempt '
                    'after %d interrupts', self.parent, count)
            return True
        utils.tracelog.info(
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
            utils.log.critical(
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
