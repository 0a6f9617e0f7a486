"""Tests of zc.async.testing: frozen clock, test reactor, waiters, fixtures.
"""
import datetime
import io
import logging
import os
import pickle
import threading
import unittest
import uuid
from unittest import mock

import pytz
import transaction
import twisted.internet.selectreactor
import zope.interface.verify
import ZODB

import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.testing as testing
import zc.asynchronous.utils as utils
from zc.asynchronous.tests.live import DispatcherTestCase

REAL_DATETIME = datetime.datetime
UTC = datetime.timezone.utc
START = REAL_DATETIME(2006, 8, 10, 15, 44, 22, 211, UTC)

blocker = threading.Event()


def wait_for_blocker():
    blocker.wait(10)


class FrozenDatetimeTests(unittest.TestCase):

    def setUp(self):
        testing.setUpDatetime()
        self.addCleanup(testing.tearDownDatetime)

    def test_patches_datetime_and_freezes_the_library_clock(self):
        self.assertIs(datetime.datetime, testing._datetime)
        self.assertEqual(utils.now(), START)
        self.assertEqual(datetime.datetime.now(),
                         REAL_DATETIME(2006, 8, 10, 15, 44, 22, 211))
        self.assertEqual(datetime.datetime.utcnow(),
                         REAL_DATETIME(2006, 8, 10, 15, 44, 22, 211))
        self.assertEqual(datetime.datetime.now(UTC), START)

    def test_keyword_arguments(self):
        self.assertEqual(datetime.datetime.now(tz=pytz.UTC), START)
        self.assertEqual(datetime.datetime.now(tzinfo=pytz.UTC), START)
        eastern = pytz.timezone('US/Eastern')
        now = datetime.datetime.now(pytz.UTC)
        self.assertEqual(now.astimezone(tz=eastern).hour, 11)
        self.assertEqual(now.astimezone(tzinfo=eastern).hour, 11)
        self.assertEqual(now.astimezone(eastern), START)

    def test_repr_looks_like_the_real_class(self):
        self.assertEqual(
            repr(datetime.datetime.now(UTC)),
            'datetime.datetime(2006, 8, 10, 15, 44, 22, 211, '
            'tzinfo=datetime.timezone.utc)')

    def test_isinstance_accepts_real_datetimes(self):
        self.assertIsInstance(REAL_DATETIME.now(), datetime.datetime)
        self.assertTrue(issubclass(REAL_DATETIME, datetime.datetime))
        self.assertIsInstance(datetime.datetime.now(), REAL_DATETIME)

    def test_set_now(self):
        testing.set_now(REAL_DATETIME(2010, 1, 1, 12))  # naive is UTC
        self.assertEqual(utils.now(), REAL_DATETIME(2010, 1, 1, 12, tzinfo=UTC))
        self.assertEqual(datetime.datetime.now(),
                         REAL_DATETIME(2010, 1, 1, 12))
        self.assertIs(type(utils.now()), REAL_DATETIME)

    def test_pickles_as_the_real_class(self):
        frozen = datetime.datetime.now(UTC)
        real = REAL_DATETIME(2001, 1, 1, tzinfo=UTC)
        data = pickle.dumps((frozen, real, frozen + datetime.timedelta(1)),
                            3)  # ZODB's protocol
        self.assertIn(b'cdatetime\ndatetime\n', data)
        self.assertNotIn(b'testing', data)
        testing.tearDownDatetime()
        loaded = pickle.loads(data)
        self.assertEqual(loaded[:2], (START, real))
        self.assertEqual([type(value) for value in loaded], [REAL_DATETIME] * 3)

    def test_datetimes_store_in_zodb_while_patched(self):
        db = ZODB.DB(None)
        self.addCleanup(db.close)
        with db.transaction() as conn:
            conn.root()['when'] = (datetime.datetime.now(UTC), utils.now())
        testing.tearDownDatetime()
        with db.transaction() as conn:
            self.assertEqual(conn.root()['when'], (START, START))

    def test_tear_down_restores(self):
        testing.tearDownDatetime()
        self.assertIs(datetime.datetime, REAL_DATETIME)
        self.assertNotEqual(utils.now(), START)
        self.assertGreater(utils.now().year, 2020)


class ReactorTests(unittest.TestCase):

    def setUp(self):
        self.reactor = testing.Reactor()
        self.calls = []

    def tearDown(self):
        if self.reactor.started:
            self.reactor.stop()

    def record(self, *args):
        self.calls.append((utils.now(), args))

    def test_provides_IReactor(self):
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IReactor, self.reactor))

    def test_must_be_started(self):
        for call in (lambda: self.reactor.callLater(1, self.record),
                     lambda: self.reactor.time_flies(1),
                     self.reactor.time_passes, self.reactor.wait_for):
            with self.assertRaises(ValueError) as raised:
                call()
            self.assertEqual(str(raised.exception), 'not started')

    def test_start_freezes_and_stop_unfreezes_time(self):
        self.reactor.start()
        self.assertIs(datetime.datetime, testing._datetime)
        self.assertEqual(utils.now(), START)
        self.reactor.stop()
        self.assertIs(datetime.datetime, REAL_DATETIME)
        self.assertFalse(self.reactor.started)

    def test_time_flies_runs_due_calls_in_time_order(self):
        self.reactor.start()
        self.reactor.callLater(3, self.record, 'c')
        self.reactor.callLater(1, self.record, 'a')
        self.reactor.callLater(1, self.record, 'b')
        self.reactor.callWhenRunning(self.record, 'now')
        self.reactor.callLater(10, self.record, 'later')
        self.assertEqual(self.reactor.time_flies(5), 4)
        second = datetime.timedelta(seconds=1)
        self.assertEqual(self.calls, [
            (START, ('now',)), (START + second, ('a',)),
            (START + second, ('b',)), (START + 3 * second, ('c',))])
        self.assertEqual(utils.now(), START + 5 * second)
        self.assertEqual(self.reactor.time_flies(5), 1)

    def test_cancelled_calls_do_not_run(self):
        self.reactor.start()
        call = self.reactor.callLater(1, self.record)
        self.assertTrue(call.active())
        self.assertEqual(call.getTime(), START + datetime.timedelta(seconds=1))
        call.cancel()
        self.assertFalse(call.active())
        self.assertEqual(self.reactor.time_flies(2), 0)

    def test_time_passes_runs_one_call_due_now(self):
        self.reactor.start()
        self.reactor.callFromThread(self.record, 1)
        self.reactor.callFromThread(self.record, 2)
        self.reactor.callLater(1, self.record, 3)
        self.assertTrue(self.reactor.time_passes())
        self.assertEqual(self.calls, [(START, (1,))])
        self.assertTrue(self.reactor.time_passes())
        self.assertFalse(self.reactor.time_passes())
        self.assertEqual(utils.now(), START)

    def test_shutdown_triggers_run_once_on_stop(self):
        self.reactor.start()
        self.reactor.addSystemEventTrigger('before', 'shutdown',
                                           self.record, 'bye')
        self.reactor.stop()
        self.assertEqual([args for when, args in self.calls], [('bye',)])
        self.reactor.start()
        self.reactor.stop()
        self.assertEqual(len(self.calls), 1)
        with self.assertRaises(ValueError):
            self.reactor.addSystemEventTrigger('after', 'startup', self.record)

    def test_callInThread_uses_a_real_thread(self):
        self.reactor.start()
        seen = []
        done = threading.Event()
        self.reactor.callInThread(
            lambda: (seen.append(threading.current_thread()), done.set()))
        self.assertTrue(done.wait(5))
        self.assertIsNot(seen[0], threading.current_thread())

    def test_thread_reports_run_first_and_are_not_counted(self):
        self.reactor.start()

        def report(value):
            self.record(value)
        report.zc_async_handoff = True
        self.reactor.callLater(1, self.record, 'poll')
        self.reactor.callFromThread(report, 'report')
        self.assertEqual(self.reactor.time_flies(1), 1)
        self.assertEqual([args for when, args in self.calls],
                         [('report',), ('poll',)])


class WaiterTests(DispatcherTestCase):
    """The waiters fail fast with a clear message when nothing happens."""

    def test_timeouts(self):
        job = self.put(int)  # no dispatcher runs it
        dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, testing.Reactor())
        cases = [
            (lambda: testing.wait_for_result(job, 0.05),
             'job never completed'),
            (lambda: testing.wait_for_start(job, 0.05), 'job never started'),
            (lambda: testing.get_poll(dispatcher, seconds=0.05), 'no poll!'),
            (lambda: testing.get_poll(dispatcher, 0, seconds=0.05),
             'no poll!'),
        ]
        for call, message in cases:
            with self.assertRaises(AssertionError) as raised:
                call()
            self.assertEqual(str(raised.exception), message)
        with self.assertRaises(AssertionError):
            testing.wait_for_annotation(job, 'x', 0.05)

    def test_wait_for_prints_TIME_OUT(self):
        job = self.put(int)
        reactor = testing.Reactor()
        reactor.start()
        self.addCleanup(reactor.stop)
        with mock.patch('sys.stdout', new_callable=io.StringIO) as out:
            reactor.wait_for(job, attempts=2)
        self.assertEqual(out.getvalue(), 'TIME OUT\n')

    def test_waiters_see_other_connections(self):
        live = self.start()
        testing.get_poll(live.dispatcher, 0)
        job = self.put(int, '7')
        self.assertEqual(testing.wait_for_result(job), 7)
        da = self.queue.dispatchers[self.uuid]
        live.stop()
        testing.wait_for_deactivation(live.dispatcher)
        transaction.begin()
        da.ping_death_interval = datetime.timedelta(seconds=0)
        transaction.commit()
        testing.wait_for_death(da)


class TearDownTests(DispatcherTestCase):

    def test_reports_stuck_jobs(self):
        blocker.clear()
        self.addCleanup(blocker.set)
        live = self.start()
        job = self.put(wait_for_blocker)
        testing.wait_for_start(job)
        with self.assertRaises(testing.TearDownDispatcherError) as raised:
            testing.tear_down_dispatcher(live.dispatcher, seconds=0.1)
        self.assertEqual(str(raised.exception),
                         "Job in pool 'main' failed to stop: %r" % (job,))
        blocker.set()  # and tearDown joins the thread

    def test_reports_a_reactor_thread_that_does_not_stop(self):
        dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, twisted.internet.selectreactor.SelectReactor(),
            uuid=uuid.uuid1())
        release = threading.Event()
        dispatcher.thread = threading.Thread(target=release.wait,
                                             name='stuck')
        dispatcher.thread.start()
        self.addCleanup(dispatcher.thread.join)
        self.addCleanup(release.set)
        with self.assertRaises(testing.TearDownDispatcherError) as raised:
            testing.tear_down_dispatcher(dispatcher, seconds=0.05)
        self.assertEqual(str(raised.exception),
                         'Dispatcher (stuck, %s) failed to stop.'
                         % (dispatcher.UUID,))


class PrintLogsTests(unittest.TestCase):

    def test_echoes_zc_async_records_at_the_level(self):
        stream = io.StringIO()
        handler = testing.print_logs(stream, logging.ERROR)
        self.addCleanup(logging.getLogger('zc.async').removeHandler, handler)
        utils.log.warning('not shown')
        utils.log.error('shown')
        utils.tracelog.critical('also shown')
        self.assertEqual(stream.getvalue(), 'ERROR shown\nCRITICAL also shown\n')

    def test_default_stream_is_stdout_at_call_time(self):
        with mock.patch('sys.stdout', new_callable=io.StringIO) as out:
            handler = testing.print_logs()
            self.addCleanup(logging.getLogger('zc.async').removeHandler,
                            handler)
            utils.log.critical('hello')
        self.assertEqual(out.getvalue(), 'CRITICAL hello\n')


class TemporaryDBTests(unittest.TestCase):

    def test_lives_in_a_directory_removed_on_close(self):
        db = testing.db(database_name='main')
        self.assertEqual(db.database_name, 'main')
        with db.transaction() as conn:
            conn.root()['x'] = 1
        self.assertTrue(os.path.exists(os.path.join(db.directory, 'Data.fs')))
        db.close()
        self.assertFalse(os.path.exists(db.directory))

    def test_time_sleep_is_the_real_sleep(self):
        import time
        self.assertIs(testing.time_sleep, time.sleep)
