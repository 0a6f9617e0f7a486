"""Jobs whose callable is an ``async def`` function (zc.async.coroutines)."""
import asyncio
import datetime
import threading
import unittest

import persistent.mapping
import transaction
import zope.component.testing
import ZODB.POSException

import zc.asynchronous
from zc.asynchronous import coroutines
from zc.asynchronous import interfaces
from zc.asynchronous import retry
from zc.asynchronous import testing
from zc.asynchronous.job import Job
from zc.asynchronous.tests.live import DispatcherTestCase
from zc.asynchronous.tests.reactorcase import ReactorTestCase

LOOPS = []  # the running loop of each call of ``add``
CALLS = []
STARTED = threading.Event()
RELEASE = threading.Event()


class Stop(Exception):
    """What the tests interrupt coroutine jobs with."""


async def add(a, b):
    LOOPS.append(asyncio.get_running_loop())
    await asyncio.sleep(0)
    return a + b


async def divide(a, b):
    await asyncio.sleep(0)
    return a / b


def returns_a_coroutine(a, b):
    return add(a, b)


async def count(mapping, times=1):
    """Add 1 to ``mapping['n']``, after an await; raise ConflictError the
    first ``times - 1`` calls."""
    CALLS.append(None)
    await asyncio.sleep(0)
    mapping['n'] = mapping.get('n', 0) + 1
    if len(CALLS) < times:
        raise ZODB.POSException.ConflictError()
    return mapping['n']


async def leave_a_task():
    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            CALLS.append('cleaned up')
    asyncio.get_running_loop().create_task(forever())
    await asyncio.sleep(0)
    return 'left one'


async def wait_for_release():
    STARTED.set()
    try:
        while not RELEASE.is_set():
            await asyncio.sleep(0.01)
    finally:
        CALLS.append('finally')
    return 'released'


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt()


async def stopped_from_outside():
    """Sleep until an error raised outside the task (as an asynchronous
    exception raised in the thread would be) stops the loop."""
    asyncio.get_running_loop().call_soon(_raise_keyboard_interrupt)
    try:
        await asyncio.sleep(3600)
    finally:
        CALLS.append('finally')


async def who_am_i():
    await asyncio.sleep(0)
    return zc.asynchronous.local.getJob()._p_oid


async def connection_error_once():
    CALLS.append(None)
    await asyncio.sleep(0)
    if len(CALLS) == 1:
        raise ConnectionError('try again')
    return len(CALLS)


async def report_progress():
    zc.asynchronous.local.setLiveAnnotation('progress', 'half way')
    while not RELEASE.is_set():
        await asyncio.sleep(0.01)
    return 'done'


class DirectCallTests(unittest.TestCase):
    """Jobs called in the test's thread, as tests and callbacks do."""

    def setUp(self):
        zope.component.testing.setUp()
        zc.asynchronous.configure.base()
        self.db = testing.db()
        self.conn = self.db.open()
        self.root = self.conn.root()
        del LOOPS[:], CALLS[:]
        STARTED.clear()
        RELEASE.clear()
        self.addCleanup(RELEASE.set)

    def tearDown(self):
        coroutines.close_loop()
        transaction.abort()
        self.conn.close()
        self.db.close()
        zope.component.testing.tearDown()

    def job(self, *args, **kwargs):
        job = self.root['job'] = Job(*args, **kwargs)
        transaction.commit()
        return job

    def test_result_is_stored(self):
        job = self.job(add, 40, 2)
        self.assertEqual(job(), 42)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 42)

    def test_failure_is_stored(self):
        job = self.job(divide, 1, 0)
        job()
        self.assertTrue(job.result.check(ZeroDivisionError))
        self.assertIn('in divide', job.result.getTraceback())

    def test_a_callable_returning_a_coroutine(self):
        job = self.job(returns_a_coroutine, 1, 2)
        self.assertEqual(job(), 3)

    def test_changes_are_committed_with_the_result(self):
        mapping = self.root['mapping'] = persistent.mapping.PersistentMapping()
        job = self.job(count, mapping)
        job()
        other = self.db.open(transaction.TransactionManager())
        self.assertEqual(other.root()['mapping']['n'], 1)
        self.assertEqual(other.root()['job'].result, 1)
        other.close()

    def test_a_conflict_calls_again_for_a_new_coroutine(self):
        mapping = self.root['mapping'] = persistent.mapping.PersistentMapping()
        job = self.job(count, mapping, 3)
        self.assertEqual(job(), 1)  # the first two changes were aborted
        self.assertEqual(len(CALLS), 3)

    def test_one_loop_per_thread_until_closed(self):
        self.job(add, 1, 1)()
        self.job(add, 2, 2)()
        first, second = LOOPS
        self.assertIs(first, second)
        self.assertFalse(first.is_running())
        coroutines.close_loop()
        self.assertTrue(first.is_closed())
        self.job(add, 3, 3)()
        self.assertIsNot(LOOPS[2], first)

    def test_an_async_callback(self):
        job = self.job(add, 1, 2)
        callback = job.addCallback(Job(add, 10))
        transaction.commit()
        job()
        self.assertEqual(callback.result, 13)
        self.assertEqual(callback.status, interfaces.COMPLETED)

    def test_tasks_left_running_are_cancelled(self):
        job = self.job(leave_a_task)
        self.assertEqual(job(), 'left one')
        self.assertEqual(CALLS, ['cleaned up'])

    def test_refused_in_a_thread_running_a_loop(self):
        job = self.job(add, 1, 1)

        async def caller():
            return job()
        asyncio.run(caller())
        self.assertTrue(job.result.check(RuntimeError))
        self.assertIn('already runs an asyncio event loop',
                      job.result.getErrorMessage())

    def test_an_error_from_outside_the_task_still_ends_it(self):
        job = self.job(stopped_from_outside)
        with self.assertRaises(KeyboardInterrupt):
            job()
        self.assertEqual(CALLS, ['finally'])
        transaction.abort()
        self.assertEqual(job.status, interfaces.ACTIVE)  # as for any job
        self.assertEqual(asyncio.all_tasks(coroutines._loop()), set())

    def test_interrupted_from_another_thread(self):
        job = self.job(wait_for_release)
        oid = job._p_oid
        results = []

        def run():
            tm = transaction.TransactionManager()
            conn = self.db.open(tm)
            try:
                results.append(conn.get(oid)())
            finally:
                coroutines.close_loop()
                conn.close()
        thread = threading.Thread(target=run)
        thread.start()
        self.assertTrue(STARTED.wait(30))
        self.assertFalse(coroutines.interrupt(threading.get_ident(), Stop()))
        self.assertTrue(coroutines.interrupt(thread.ident, Stop('time up')))
        thread.join(30)
        self.assertFalse(thread.is_alive())
        (failure,) = results
        self.assertTrue(failure.check(Stop))
        self.assertEqual(failure.getErrorMessage(), 'time up')
        self.assertEqual(CALLS, ['finally'])  # the coroutine cleaned up
        self.assertFalse(coroutines.interrupt(thread.ident, Stop()))


class WorkerThreadTests(ReactorTestCase):
    """Coroutine jobs run by a dispatcher's worker threads."""

    def setUp(self):
        super().setUp()
        del LOOPS[:], CALLS[:]

    def test_result_failure_and_local(self):
        good = self.put(Job(add, 40, 2))
        bad = self.put(Job(divide, 1, 0))
        me = self.put(Job(who_am_i))
        self.run_until_completed(good, bad, me)
        self.assertEqual(good.result, 42)
        self.assertTrue(bad.result.check(ZeroDivisionError))
        self.assertEqual(me.result, me._p_oid)
        (loop,) = LOOPS
        self.assertFalse(loop.is_closed())
        testing.tear_down_dispatcher(self.dispatcher)
        # The worker thread closed its loop when it ended.
        self.assertTrue(loop.is_closed())

    def test_rescheduled_by_a_retrying_policy(self):
        job = self.put(Job(connection_error_once),
                       retry_policy_factory=retry.retrying(
                           delay=datetime.timedelta(seconds=5)))
        self.run_until_completed(job)
        self.assertEqual(job.result, 2)
        self.assertEqual(retry.attempt(job), 2)


class LiveAnnotationTests(DispatcherTestCase):
    """A coroutine job publishes live annotations, with a real reactor."""

    def test_live_annotation(self):
        RELEASE.clear()
        self.addCleanup(RELEASE.set)
        self.start()
        job = self.put(report_progress)
        self.assertEqual(testing.wait_for_annotation(job, 'progress', 30),
                         'half way')
        self.assertEqual(job.status, interfaces.ACTIVE)
        RELEASE.set()
        self.assertEqual(testing.wait_for_result(job, 30), 'done')
