"""Tests for zc.async.retry: the numbers of 1.5's retry policies."""
import datetime
import logging
import time
import unittest

import zope.component
import zope.interface.verify
import zope.testing.cleanup
import ZEO.Exceptions
import ZODB.POSException

from zc.asynchronous import interfaces
from zc.asynchronous import retry
from zc.asynchronous import twist
from zc.asynchronous.job import Job

UTC = datetime.timezone.utc
STARTED = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, tzinfo=UTC)


def failure_of(error):
    try:
        raise error
    except type(error):
        return twist.Failure()


def conflict():
    return failure_of(ZODB.POSException.ConflictError())


def disconnect():
    return failure_of(ZEO.Exceptions.ClientDisconnected())


def other():
    return failure_of(ValueError('other'))


class PolicyTestCase(unittest.TestCase):

    def setUp(self):
        self.sleeps = []
        original = retry.backoff_sleep
        retry.backoff_sleep = self.sleeps.append
        self.addCleanup(setattr, retry, 'backoff_sleep', original)
        self.job = Job(len)
        self.job._active_start = STARTED
        self.records = []
        logger = logging.getLogger('zc.async')
        handler = logging.Handler(logging.DEBUG)
        handler.emit = self.records.append
        old = logger.level, logger.propagate
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)

        def restore():
            logger.removeHandler(handler)
            logger.level, logger.propagate = old
        self.addCleanup(restore)
        self.addCleanup(zope.testing.cleanup.cleanUp)

    def logged(self, level, text=''):
        return [r.getMessage() for r in self.records
                if r.levelno == level and text in r.getMessage()]

    def answers(self, method, make_failure, count):
        cache = {}
        return [method(make_failure(), cache) for _ in range(count)], cache


class RetryCommonFourTimesTests(PolicyTestCase):

    def test_interface_and_names(self):
        policy = retry.RetryCommonFourTimes(self.job)
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IRetryPolicy, policy))
        self.assertIs(policy.parent, self.job)
        self.assertIs(policy.__parent__, self.job)
        self.assertEqual(type(policy).__module__, 'zc.async.job')
        self.assertEqual(policy.max_interruptions, 9)
        self.assertEqual(policy.log_every, 5)
        self.assertIs(policy.transaction_exceptions,
                      policy.internal_exceptions)

    def test_conflicts_give_five_attempts_without_sleeping(self):
        policy = retry.RetryCommonFourTimes(self.job)
        answers, cache = self.answers(policy.jobError, conflict, 5)
        self.assertEqual(answers, [True, True, True, True, False])
        self.assertEqual(self.sleeps, [])
        self.assertEqual(cache['transaction_error'], 4)
        self.assertTrue(cache['last_transaction_error'].check(
            ZODB.POSException.ConflictError))
        self.assertEqual(cache['first_active'], STARTED)
        self.assertEqual(len(self.logged(
            logging.WARNING, 'requests another attempt after 1 counts of '
            'transaction_error occurrences')), 1)
        self.assertEqual(len(self.logged(
            logging.WARNING, 'is not retrying after 5 counts of '
            'transaction_error occurrences')), 1)

    def test_job_and_commit_errors_share_the_count(self):
        policy = retry.RetryCommonFourTimes(self.job)
        cache = {}
        self.assertTrue(policy.jobError(conflict(), cache))
        self.assertTrue(policy.commitError(conflict(), cache))
        self.assertTrue(policy.jobError(conflict(), cache))
        self.assertTrue(policy.commitError(conflict(), cache))
        self.assertFalse(policy.commitError(conflict(), cache))

    def test_disconnects_are_retried_forever_with_backoff(self):
        policy = retry.RetryCommonFourTimes(self.job)
        answers, cache = self.answers(policy.commitError, disconnect, 15)
        self.assertTrue(all(answers))
        self.assertEqual(self.sleeps, [5, 10, 15, 20, 25, 30, 35, 40, 45, 50,
                                       55, 60, 60, 60, 60])
        self.assertEqual(cache['zeo_disconnected'], 15)
        # logged on the first and every fifth occurrence
        self.assertEqual(len(self.logged(logging.WARNING, 'zeo_disconnected')),
                         4)

    def test_other_errors_are_not_retried(self):
        policy = retry.RetryCommonFourTimes(self.job)
        cache = {}
        self.assertFalse(policy.jobError(other(), cache))
        self.assertFalse(policy.commitError(other(), cache))
        self.assertEqual(cache, {})

    def test_ninth_interruption_retries_tenth_gives_up(self):
        policy = retry.RetryCommonFourTimes(self.job)
        answers = [policy.interrupted() for _ in range(10)]
        self.assertEqual(answers, [True] * 9 + [False])
        self.assertEqual(policy.data['interruptions'], 10)
        self.assertEqual(policy.data['first_active'], STARTED)
        self.assertEqual(len(self.logged(
            logging.INFO, 'is not retrying after 10 interrupts')), 1)

    def test_update_data_keeps_the_first_first_active(self):
        policy = retry.RetryCommonFourTimes(self.job)
        policy.updateData({'first_active': STARTED, 'transaction_error': 1})
        later = STARTED + datetime.timedelta(hours=1)
        policy.updateData({'first_active': later, 'transaction_error': 2})
        self.assertEqual(policy.data['first_active'], STARTED)
        self.assertEqual(policy.data['transaction_error'], 2)


class RetryCommonForeverTests(PolicyTestCase):

    def test_names(self):
        policy = retry.RetryCommonForever(self.job)
        self.assertIsInstance(policy, retry.RetryCommonFourTimes)
        self.assertEqual(type(policy).__module__, 'zc.async.job')
        self.assertIsNone(policy.max_interruptions)
        self.assertEqual((policy.other_commit_initial_backoff,
                          policy.other_commit_incremental_backoff,
                          policy.other_commit_max_backoff), (0, 1, 60))

    def test_conflicts_are_retried_forever_without_sleeping(self):
        policy = retry.RetryCommonForever(self.job)
        answers, cache = self.answers(policy.jobError, conflict, 30)
        self.assertTrue(all(answers))
        self.assertEqual(self.sleeps, [])

    def test_disconnects_back_off(self):
        policy = retry.RetryCommonForever(self.job)
        self.answers(policy.jobError, disconnect, 3)
        self.assertEqual(self.sleeps, [5, 10, 15])

    def test_job_code_errors_are_not_retried(self):
        policy = retry.RetryCommonForever(self.job)
        self.assertFalse(policy.jobError(other(), {}))

    def test_other_commit_errors_are_retried_with_slow_backoff(self):
        policy = retry.RetryCommonForever(self.job)
        answers, cache = self.answers(policy.commitError, other, 63)
        self.assertTrue(all(answers))
        self.assertEqual(self.sleeps, list(range(1, 61)) + [60, 60])
        self.assertEqual(cache['other'], 63)
        self.assertTrue(cache['last_other'].check(ValueError))
        self.assertEqual(cache['first_active'], STARTED)
        # CRITICAL on the first and every fifth: 1, 5, 10, ... 60
        self.assertEqual(len(self.logged(logging.CRITICAL,
                                         'other occurrences')), 13)

    def test_interruptions_are_always_retried(self):
        policy = retry.RetryCommonForever(self.job)
        self.assertTrue(all(policy.interrupted() for _ in range(20)))


class NeverRetryTests(PolicyTestCase):

    def test_never_retries(self):
        policy = retry.NeverRetry(self.job)
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IRetryPolicy, policy))
        self.assertEqual(type(policy).__module__, 'zc.async.job')
        cache = {}
        self.assertFalse(policy.jobError(conflict(), cache))
        self.assertFalse(policy.commitError(disconnect(), cache))
        self.assertFalse(policy.interrupted())
        policy.updateData({'x': 1})
        self.assertEqual(cache, {})
        self.assertEqual(self.sleeps, [])


class CallbackPolicyFactoryTests(PolicyTestCase):

    def test_default_is_retry_forever(self):
        policy = retry.callback_retry_policy_factory(self.job)
        self.assertIsInstance(policy, retry.RetryCommonForever)
        self.assertIs(policy.parent, self.job)

    def test_named_adapter_wins(self):
        zope.component.provideAdapter(
            retry.NeverRetry, provides=interfaces.IRetryPolicy,
            name='callback')
        self.assertIsInstance(retry.callback_retry_policy_factory(self.job),
                              retry.NeverRetry)


class BackoffSleepTests(unittest.TestCase):

    def test_sleeps_through_time_sleep_looked_up_when_called(self):
        slept = []
        original = time.sleep
        time.sleep = slept.append
        try:
            retry.backoff_sleep(7)
        finally:
            time.sleep = original
        self.assertEqual(slept, [7])
