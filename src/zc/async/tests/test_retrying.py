"""Tests for ``zc.asynchronous.retry.retrying``: simple retries of
application errors, with jobs rescheduled by a real dispatcher on the test
reactor and their delays read from the test clock."""
import datetime
import pickle
import unittest

import transaction
import zope.interface.verify
import ZODB.POSException

from zc.asynchronous.ops import clidb
from zc.asynchronous import interfaces
from zc.asynchronous import monitordb
from zc.asynchronous import retry
from zc.asynchronous import utils
from zc.asynchronous.ops import webapi
from zc.asynchronous.dispatcher import getId
from zc.asynchronous.job import Job
from zc.asynchronous.tests.reactorcase import ReactorTestCase

SECONDS = datetime.timedelta(seconds=1)

CALLS = []  # the test clock's time at each call of the jobs below


def flaky(failures):
    """Fail with ConnectionError the first ``failures`` calls; then return
    how many calls there were."""
    CALLS.append(utils.now())
    if len(CALLS) <= failures:
        raise ConnectionError('call %d failed' % len(CALLS))
    return len(CALLS)


def flaky_callback(result):
    return flaky(5)


def wrong():
    CALLS.append(utils.now())
    raise ValueError('not a listed error')


def conflicted_once():
    CALLS.append(utils.now())
    if len(CALLS) == 1:
        raise ZODB.POSException.ConflictError()
    return 'done'


class ArgumentTests(unittest.TestCase):

    def test_defaults(self):
        factory = retry.retrying()
        self.assertEqual(factory.attempts, 3)
        self.assertEqual(factory.delay, 10 * SECONDS)
        self.assertEqual(factory.backoff, 2.0)
        self.assertIsNone(factory.max_delay)
        self.assertEqual(factory.errors, (Exception,))
        self.assertEqual(repr(factory), (
            'zc.async.retry.retrying(attempts=3, '
            'delay=datetime.timedelta(seconds=10), backoff=2.0, '
            'max_delay=None, errors=(builtins.Exception,))'))

    def test_delays_grow_by_backoff_up_to_max_delay(self):
        factory = retry.retrying(attempts=6, delay=3 * SECONDS, backoff=3,
                                 max_delay=60 * SECONDS)
        self.assertEqual([factory.delay_before(n) for n in range(2, 7)],
                         [3 * SECONDS, 9 * SECONDS, 27 * SECONDS,
                          60 * SECONDS, 60 * SECONDS])
        constant = retry.retrying(attempts=4, backoff=1)
        self.assertEqual({constant.delay_before(n) for n in range(2, 5)},
                         {10 * SECONDS})

    def test_a_huge_backoff_is_capped(self):
        factory = retry.retrying(attempts=10 ** 6, backoff=1e300,
                                 max_delay=3600 * SECONDS)
        self.assertEqual(factory.delay_before(10 ** 6), 3600 * SECONDS)

    def test_one_error_class_or_several(self):
        self.assertEqual(retry.retrying(errors=KeyError).errors, (KeyError,))
        self.assertEqual(retry.retrying(errors=[KeyError, OSError]).errors,
                         (KeyError, OSError))

    def test_bad_arguments(self):
        class Local(Exception):
            pass
        cases = [
            (dict(attempts=0), ValueError, 'attempts must be at least 1'),
            (dict(attempts=2.5), TypeError, 'attempts must be an integer'),
            (dict(attempts=True), TypeError, 'attempts must be an integer'),
            (dict(delay=10), TypeError, 'delay must be a datetime.timedelta'),
            (dict(delay=-SECONDS), ValueError, 'delay must not be negative'),
            (dict(backoff='2'), TypeError, 'backoff must be a number'),
            (dict(backoff=0.5), ValueError, 'at least 1'),
            (dict(backoff=float('nan')), ValueError, 'at least 1'),
            (dict(backoff=float('inf')), ValueError, 'finite'),
            (dict(max_delay=5), TypeError,
             'max_delay must be a datetime.timedelta'),
            (dict(max_delay=5 * SECONDS), ValueError,
             'must not be shorter than delay'),
            (dict(errors=()), ValueError, 'at least one exception class'),
            (dict(errors='ValueError'), TypeError,
             'an exception class or a tuple'),
            (dict(errors=(ValueError, int)), TypeError,
             'errors must be exception classes'),
            (dict(errors=Local), TypeError, 'cannot be pickled by reference'),
            (dict(attempts=200), ValueError, 'give a max_delay'),
        ]
        for kw, error, text in cases:
            with self.assertRaises(error, msg=kw) as caught:
                retry.retrying(**kw)
            self.assertIn(text, str(caught.exception), kw)

    def test_picklable_factory_and_policy(self):
        factory = retry.retrying(attempts=4, errors=(KeyError, OSError))
        copy = pickle.loads(pickle.dumps(factory))
        self.assertEqual(repr(copy), repr(factory))
        job = Job(flaky, 1)
        job.retry_policy_factory = factory
        job._check_picklable()  # what put checks
        policy = job.getRetryPolicy()
        self.assertIsInstance(policy, retry.RetryingPolicy)
        self.assertIs(policy.settings, factory)
        self.assertIs(policy.parent, job)
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IRetryPolicy, policy))
        self.assertEqual(type(policy).__module__, 'zc.async.retry')
        self.assertEqual(retry.attempt(job), 1)


class RetryingJobTests(ReactorTestCase):
    """Jobs with a ``retrying`` policy, run by a real dispatcher."""

    def setUp(self):
        super().setUp()
        del CALLS[:]
        # The clock must not move while a worker thread runs an attempt,
        # so that the failure happens at the time of its call.
        self.reactor.wait_for_threads = 30

    def test_two_failures_then_success(self):
        """Attempts 1 and 2 fail with a listed error; each time the job goes
        back to the queue for the delay (10, then 20 seconds); attempt 3
        succeeds."""
        job = self.put(Job(flaky, 2), retry_policy_factory=retry.retrying(
            attempts=3, delay=10 * SECONDS, backoff=2.0,
            errors=(ConnectionError,)))
        waits = []
        for calls in (1, 2):
            self.run_until(lambda: len(CALLS) == calls
                           and job.status == interfaces.PENDING)
            # Rescheduled: back in the queue, due after the delay.
            self.assertIs(job.parent, self.queue)
            self.assertIsNone(job.active_start)
            waits.append(job.begin_after - CALLS[-1])
            self.assertEqual(retry.attempt(job), calls + 1)
            self.assertEqual(monitordb.jobsummary(job)['attempt'],
                             '%d of 3' % (calls + 1))
        self.assertEqual(waits, [10 * SECONDS, 20 * SECONDS])
        self.run_until_completed(job)
        self.assertEqual(job.result, 3)
        self.assertEqual(len(CALLS), 3)
        # Each attempt ran when its delay was over (at the next poll).
        gaps = [later - earlier for earlier, later in zip(CALLS, CALLS[1:])]
        for gap, wait in zip(gaps, waits):
            self.assertGreaterEqual(gap, wait)
            self.assertLessEqual(gap, wait + self.poll_interval * SECONDS)
        self.assertEqual(job.annotations[retry.ATTEMPT], 3)
        self.assertEqual(monitordb.jobsummary(job)['attempt'], '3 of 3')
        warnings = self.messages('WARNING')
        self.assertEqual(len(warnings), 2)
        self.assertIn('attempt 1 of 3 failed with ConnectionError: call 1 '
                      'failed; rescheduling it in 0:00:10', warnings[0])
        self.assertIn('attempt 2 of 3 failed with ConnectionError: call 2 '
                      'failed; rescheduling it in 0:00:20', warnings[1])
        self.assertEqual(self.messages('ERROR'), [])

    def test_fails_with_the_last_error_when_attempts_are_used(self):
        job = self.put(Job(flaky, 100), retry_policy_factory=retry.retrying(
            attempts=2, delay=5 * SECONDS))
        self.run_until_completed(job)
        self.assertEqual(len(CALLS), 2)
        self.assertTrue(job.result.check(ConnectionError))
        self.assertEqual(job.result.getErrorMessage(), 'call 2 failed')
        self.assertEqual(retry.attempt(job), 2)
        self.assertEqual(len(self.messages('WARNING')), 1)
        self.assertIn('not retrying after attempt 2 of 2 failed with '
                      'ConnectionError: call 2 failed',
                      self.messages('INFO')[-1] + ''.join(
                          self.messages('INFO')))
        errors = self.messages('ERROR')
        self.assertEqual(len(errors), 1)
        self.assertIn('failed with traceback', errors[0])

    def test_other_errors_are_final(self):
        job = self.put(Job(wrong), retry_policy_factory=retry.retrying(
            errors=(ConnectionError, KeyError)))
        self.run_until_completed(job)
        self.assertEqual(len(CALLS), 1)
        self.assertTrue(job.result.check(ValueError))
        self.assertNotIn(retry.ATTEMPT, job.annotations)
        self.assertEqual(self.messages('WARNING'), [])

    def test_conflicts_are_retried_at_once_and_not_counted(self):
        job = self.put(Job(conflicted_once),
                       retry_policy_factory=retry.retrying())
        self.run_until_completed(job)
        self.assertEqual(job.result, 'done')
        self.assertEqual(CALLS[0], CALLS[1])  # in place, no reschedule
        self.assertEqual(retry.attempt(job), 1)
        self.assertNotIn(retry.ATTEMPT, job.annotations)

    def test_a_callback_cannot_be_rescheduled(self):
        job = self.queue.put(Job(len, 'abc'))
        callback = job.addCallback(flaky_callback,
                                   retry_policy_factory=retry.retrying())
        transaction.commit()
        self.run_until_completed(job)
        self.assertEqual(len(CALLS), 1)
        self.assertTrue(callback.result.check(ConnectionError))
        self.assertTrue(any('its retrying policy cannot reschedule it'
                            in message
                            for message in self.messages('WARNING')))

    def test_attempt_shown_by_the_cli_and_the_dashboard(self):
        job = self.put(Job(flaky, 1), retry_policy_factory=retry.retrying(
            attempts=4))
        self.run_until(lambda: job.status == interfaces.PENDING
                       and CALLS)
        oid = str(getId(job)[0])
        summary = monitordb.job(self.conn, oid)
        self.assertEqual(summary['attempt'], '2 of 4')
        self.assertIn('\nattempt:', clidb.format_summary(summary))
        detail = webapi.job_detail(self.conn, oid)
        self.assertEqual(detail['attempt'], '2 of 4')
        self.assertEqual(detail['annotations'],
                         {retry.ATTEMPT: '2'})
        # A job without the policy shows no attempt.
        plain = self.put(Job(len, 'abc'))
        self.assertNotIn('attempt', monitordb.jobsummary(plain))
