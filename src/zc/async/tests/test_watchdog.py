"""Tests of run-time limits and abort requests (zc.async.watchdog).

Live dispatchers run on real reactors in threads against a FileStorage
(see :class:`zc.async.tests.live.DispatcherTestCase`); the virtual-time
tests drive the test reactor.  Jobs that must be caught running wait for
events that the tests set; limits and grace periods are fractions of a
second, and every wait has a deadline.
"""
import datetime
import threading
import time
import unittest

import transaction

import zc.asynchronous.agent
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.retry
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous import local
from zc.asynchronous import watchdog
from zc.asynchronous.tests.live import DispatcherTestCase
from zc.asynchronous.tests.live import wait_until
from zc.asynchronous.tests.test_dispatcher import VirtualTimeTestCase

SECOND = datetime.timedelta(seconds=1)

events = {}  # name -> threading.Event
seen = []  # what jobs saw


def event(name):
    return events.setdefault(name, threading.Event())


def spin(name):
    """Loop in Python until stopped; record the start."""
    event('started ' + name).set()
    while True:
        time.sleep(0.005)


def cooperative():
    """Return as soon as the abort is requested."""
    event('started cooperative').set()
    while not local.isAbortRequested():
        time.sleep(0.005)
    seen.append('abort requested')
    return 'returned early'


def blocked(name):
    """Block in a C call (a lock) until the event is set."""
    event('started ' + name).set()
    event(name).wait(30)
    seen.append(name + ' returned')
    return 'too late'


def swallows():
    """Swallow every error for half a second, then return."""
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        try:
            time.sleep(0.005)
        except Exception as e:
            seen.append(type(e).__name__)
    return 'returned'


async def waits_forever():
    """A coroutine job: awaits until cancelled."""
    import asyncio
    event('started coroutine').set()
    while True:
        await asyncio.sleep(0.005)


async def swallows_cancellation():
    import asyncio
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        seen.append('cancelled')
    return 'swallowed'


def lingers(seconds):
    time.sleep(seconds)
    return seconds


def double(n):
    return 2 * n


def note(result):
    seen.append(result)


class RetryStopsOnce(zc.asynchronous.retry.RetryCommonFourTimes):
    """Retries the first JobStopped of a call at once."""

    def jobError(self, failure, data_cache):
        if failure.check(interfaces.JobStopped) and 'stopped' not in \
                data_cache:
            data_cache['stopped'] = 1
            return True
        return super().jobError(failure, data_cache)


def once_slow():
    """Spin the first time, return the second."""
    seen.append('call')
    if len(seen) == 1:
        spin('once_slow')
    return 'second call'


class WatchdogTestCase(DispatcherTestCase):
    """A live dispatcher whose agent 'main' runs one job at a time."""

    agent_time_limit = None

    def setUp(self):
        super().setUp()
        events.clear()
        del seen[:]
        self.queue.dispatchers.register(self.uuid)
        self.queue.dispatchers[self.uuid]['main'] = \
            zc.asynchronous.agent.Agent(size=1,
                                        time_limit=self.agent_time_limit)
        transaction.commit()
        self.running = self.start(poll_interval=0.2)
        self.watchdog = self.running.dispatcher.watchdog
        testing.get_poll(self.running.dispatcher, 0)

    def tearDown(self):
        for e in events.values():
            e.set()
        super().tearDown()

    def wait_started(self, name):
        self.assertTrue(event('started ' + name).wait(10), name)

    def assertOverLimit(self, job, limit):
        return self.assertStopped(
            job, interfaces.TimeLimitExceeded,
            'it ran longer than its time limit of %s' % (limit,))

    def assertStopped(self, job, error, message):
        result = testing.wait_for_result(job, 10)
        self.assertIsNotNone(result.check(error), result)
        self.assertEqual(str(result.value), message)
        return result


class TimeLimitTests(WatchdogTestCase):

    def test_a_looping_job_fails_and_its_slot_runs_the_next_job(self):
        job = self.put(spin, 'loop', time_limit=SECOND / 5)
        following = self.put(double, 21)
        self.assertOverLimit(job, '0:00:00.200000')
        self.assertEqual(testing.wait_for_result(following), 42)
        message = ('stopping %r in a worker thread of agent \'main\': it ran '
                   'longer than its time limit of 0:00:00.200000' % (job,))
        self.assertIn(message, self.messages('INFO'))
        # The traceback shows where the job was when it was stopped.
        self.assertIn('in spin', job.result.getTraceback())

    def test_a_job_that_swallows_the_exception_fails_all_the_same(self):
        job = self.put(swallows, time_limit=SECOND / 10)
        self.assertOverLimit(job, '0:00:00.100000')
        self.assertEqual(seen, ['TimeLimitExceeded'])

    def test_a_coroutine_job_is_cancelled(self):
        job = self.put(waits_forever, time_limit=SECOND / 5)
        self.assertOverLimit(job, '0:00:00.200000')
        job = self.put(swallows_cancellation, time_limit=SECOND / 5)
        self.assertOverLimit(job, '0:00:00.200000')  # all the same
        self.assertEqual(seen, ['cancelled'])

    def test_a_job_that_returns_in_time_succeeds(self):
        job = self.put(lingers, 0.1, time_limit=SECOND * 10)
        self.assertEqual(testing.wait_for_result(job), 0.1)
        self.assertEqual(self.watchdog._timers, {})  # disarmed

    def test_the_retry_policy_decides(self):
        job = self.put(once_slow, time_limit=SECOND / 5,
                       retry_policy_factory=RetryStopsOnce)
        self.assertEqual(testing.wait_for_result(job), 'second call')
        self.assertEqual(seen, ['call', 'call'])

    def test_a_job_stuck_in_a_blocking_call_is_abandoned(self):
        self.watchdog.grace = 0.2
        pool = self.running.call(
            lambda: self.running.dispatcher.queues['']['main'])
        stuck_thread = pool.threads[0]
        job = self.put(blocked, 'stuck', time_limit=SECOND / 5)
        following = self.put(double, 21)
        # The job is failed from another thread; a new thread takes the
        # slot of the stuck one and runs the next job.
        self.assertOverLimit(job, '0:00:00.200000')
        self.assertEqual(testing.wait_for_result(following), 42)
        self.assertEqual(self.running.call(lambda: (
            stuck_thread in pool.threads, pool.abandoned)),
            (False, [stuck_thread]))
        self.assertIn("abandoning a worker thread of agent 'main': %r has "
                      "not returned 0.2 seconds after TimeLimitExceeded was "
                      "raised in it (a blocking call?); a new thread takes "
                      "its place, its retry policy settles the job, and what "
                      "it does if it returns is dropped" % (job,),
                      self.messages('WARNING'))
        # When the call returns at last, the exception lands at once (the
        # job's next line never runs), what the job did is dropped, and
        # the thread ends.
        event('stuck').set()
        stuck_thread.join(10)
        self.assertFalse(stuck_thread.is_alive())
        wait_until(lambda: self.running.call(lambda: pool.abandoned) == [])
        self.assertEqual(seen, [])
        transaction.begin()
        self.assertEqual(str(job.result.value),
                         'it ran longer than its time limit of '
                         '0:00:00.200000')
        errors = self.messages('ERROR')
        self.assertEqual(len(errors), 1, errors)  # no "was reassigned"
        self.assertTrue(errors[0].startswith(
            '%r failed with traceback:' % (job,)))
        self.assertEqual(self.running.call(lambda: len(pool.threads)), 1)


class AgentTimeLimitTests(WatchdogTestCase):

    agent_time_limit = SECOND / 5

    def test_jobs_without_a_limit_get_the_agent_s(self):
        job = self.put(spin, 'loop')
        self.assertOverLimit(job, '0:00:00.200000')

    def test_a_job_s_own_limit_wins_and_callbacks_have_none(self):
        job = self.queue.put(zc.asynchronous.job.Job(lingers, 0.4),
                             time_limit=SECOND * 10)
        callback = job.addCallback(zc.asynchronous.job.Job(lingers))
        transaction.commit()
        self.assertEqual(testing.wait_for_result(job), 0.4)
        self.assertEqual(testing.wait_for_result(callback), 0.4)


class AbortTests(WatchdogTestCase):

    def request(self, job):
        for attempt in transaction.manager.attempts():
            with attempt:
                job.requestAbort()

    def test_a_running_job_is_stopped(self):
        job = self.put(spin, 'loop')
        self.wait_started('loop')
        self.assertFalse(job.abort_requested)
        self.request(job)
        self.assertTrue(job.abort_requested)
        self.assertStopped(job, interfaces.AbortRequested,
                           'its abort was requested')
        self.assertIn('zc.async.abort_requested', job.annotations)

    def test_a_running_coroutine_job_is_cancelled(self):
        job = self.put(waits_forever)
        self.wait_started('coroutine')
        self.request(job)
        self.assertStopped(job, interfaces.AbortRequested,
                           'its abort was requested')

    def test_a_cooperative_job_returns_early_and_fails_all_the_same(self):
        job = self.put(cooperative)
        self.wait_started('cooperative')
        self.request(job)
        self.assertStopped(job, interfaces.AbortRequested,
                           'its abort was requested')

    def test_a_pending_job_fails_at_once(self):
        job = self.put(double, 21, begin_after=(
            zc.asynchronous.utils.now() + datetime.timedelta(days=1)))
        callback = job.addCallback(zc.asynchronous.job.Job(note))
        transaction.commit()
        self.request(job)  # fail commits
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(str(job.result.value),
                         'its abort was requested before it started')
        self.assertEqual(callback.status, interfaces.COMPLETED)
        self.assertEqual(seen, [job.result])
        self.assertEqual(len(self.queue), 0)
        self.assertIs(job.parent, self.queue)  # as zc-async fail leaves it

    def test_a_job_whose_abort_was_requested_before_it_starts(self):
        # (A job held by an agent, or put back after an interruption.)
        job = zc.asynchronous.job.Job(double, 21)
        job.annotations['zc.async.abort_requested'] = \
            zc.asynchronous.utils.now()
        self.queue.put(job)
        transaction.commit()
        self.assertStopped(job, interfaces.AbortRequested,
                           'its abort was requested before it started')

    def test_jobs_with_a_result_refuse(self):
        job = self.put(double, 21)
        testing.wait_for_result(job)
        with self.assertRaises(interfaces.BadStatusError) as raised:
            job.requestAbort()
        self.assertIn('can only request the abort of a job that has no '
                      'result yet', str(raised.exception))
        self.assertFalse(job.abort_requested)


class AttributeTests(unittest.TestCase):

    def test_time_limits_are_positive_timedeltas_or_none(self):
        job = zc.asynchronous.job.Job(double, 1)
        self.assertIsNone(job.time_limit)
        job.time_limit = SECOND
        self.assertEqual(job.time_limit, SECOND)
        job.time_limit = None
        with self.assertRaises(TypeError) as raised:
            job.time_limit = 5
        self.assertEqual(str(raised.exception),
                         'time_limit must be a timedelta or None, not 5')
        with self.assertRaises(ValueError) as raised:
            zc.asynchronous.agent.Agent(time_limit=datetime.timedelta(0))
        self.assertEqual(str(raised.exception), 'time_limit must be '
                         'positive, not datetime.timedelta(0)')
        self.assertIsNone(zc.asynchronous.agent.Agent().time_limit)

    def test_1_5_pickles_have_the_class_defaults(self):
        job = zc.asynchronous.job.Job.__new__(zc.asynchronous.job.Job)
        agent = zc.asynchronous.agent.Agent.__new__(
            zc.asynchronous.agent.Agent)
        self.assertEqual((job.time_limit, agent.time_limit), (None, None))

    def test_stopped_jobs_are_async_errors(self):
        for error in (interfaces.TimeLimitExceeded,
                      interfaces.AbortRequested):
            self.assertTrue(issubclass(error, interfaces.JobStopped))
            self.assertTrue(issubclass(error, interfaces.AsyncError))

    def test_outside_a_worker_thread_nothing_is_watched(self):
        job = zc.asynchronous.job.Job(local.isAbortRequested)
        job.time_limit = datetime.timedelta(microseconds=1)
        self.assertIs(job(), False)
        self.assertFalse(watchdog.abandoned())


class VirtualTimeTests(VirtualTimeTestCase):
    """The test reactor drives the limits and the abort checks."""

    def setUp(self):
        super().setUp()
        events.clear()
        self.dispatcher.activate()
        self.reactor.time_flies(1)

    def test_a_time_limit_passes_on_the_virtual_clock(self):
        job = self.put(spin, 'virtual', time_limit=SECOND * 2)
        self.reactor.time_flies(5)  # a poll claims it
        self.assertTrue(event('started virtual').wait(10))
        self.reactor.time_flies(1.5)
        transaction.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.reactor.time_flies(1)
        self.reactor.wait_for(job)
        self.assertIsNotNone(job.result.check(interfaces.TimeLimitExceeded))

    def test_abort_requests_are_read_by_the_polls(self):
        job = self.put(spin, 'polled')
        self.reactor.time_flies(5)
        self.assertTrue(event('started polled').wait(10))
        transaction.begin()
        job.requestAbort()
        transaction.commit()
        self.reactor.wait_for(job)
        self.assertEqual(str(job.result.value), 'its abort was requested')


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
