"""Tests of zc.async.ftesting and ftesting.zcml.

``FunctionalLayer`` is a ``zope.testrunner`` layer written the way an
application's functional-test layer is: ftesting.zcml, a base FileStorage,
and a DemoStorage per test with ``ftesting.setUp``/``tearDown`` around each
test.  The other tests call ``setUp``/``tearDown`` directly and check what
they do.
"""
import contextlib
import io
import logging
import operator
import os
import shutil
import signal
import tempfile
import threading
import unittest

import persistent.mapping
import transaction
import zope.component
import zope.component.testing
import zope.configuration.xmlconfig
import ZODB
import ZODB.DemoStorage
import ZODB.FileStorage

import zc.asynchronous.dispatcher
import zc.asynchronous.ftesting as ftesting
import zc.asynchronous.instanceuuid as instanceuuid
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.subscribers as subscribers
import zc.asynchronous.testing
from zc.asynchronous.tests.test_subscribers import DEADLINE
from zc.asynchronous.tests.test_subscribers import use_temporary_instance_uuid

FTESTING_ZCML = '''\
<configure xmlns="http://namespaces.zope.org/zope">
  <include package="zc.async" file="ftesting.zcml" />
</configure>
'''

RELEASE = threading.Event()  # lets wait_for_release() return


def wait_for_release():
    RELEASE.wait(DEADLINE)
    return 'released'


def put(conn, job):
    """Put ``job`` in the default queue of ``conn`` and commit."""
    conn.transaction_manager.begin()  # see what the installers committed
    interfaces.IQueue(conn).put(job)
    conn.transaction_manager.commit()
    return job


class FunctionalLayer:
    """ftesting.zcml; a base FileStorage; a DemoStorage on it per test."""

    __bases__ = ()
    __name__ = 'FunctionalLayer'
    __module__ = __name__

    @classmethod
    def setUp(cls):
        zope.component.testing.setUp()
        cls.tmpdir = tempfile.mkdtemp(prefix='zc.async-ftesting-')
        cls.saved_uuid = instanceuuid.__dict__.pop('UUID', None)
        instanceuuid.UUID = instanceuuid.getUUID(
            os.path.join(cls.tmpdir, 'uuid.txt'))
        zope.configuration.xmlconfig.string(FTESTING_ZCML)
        cls.base = ZODB.FileStorage.FileStorage(
            os.path.join(cls.tmpdir, 'Data.fs'))

    @classmethod
    def tearDown(cls):
        cls.base.close()
        instanceuuid.__dict__.pop('UUID', None)
        if cls.saved_uuid is not None:
            instanceuuid.UUID = cls.saved_uuid
        shutil.rmtree(cls.tmpdir, True)
        zope.component.testing.tearDown()

    @classmethod
    def testSetUp(cls):
        cls.db = ZODB.DB(ZODB.DemoStorage.DemoStorage(
            base=cls.base, close_base_on_close=False))
        cls.conn = cls.db.open(
            transaction_manager=transaction.TransactionManager())
        ftesting.setUp(cls.conn, log_file=None)

    @classmethod
    def testTearDown(cls):
        ftesting.tearDown()
        cls.conn.transaction_manager.abort()
        cls.conn.close()
        cls.db.close()


class LayerTests(unittest.TestCase):

    layer = FunctionalLayer

    def test_jobs_run_in_the_tests_database(self):
        conn = FunctionalLayer.conn
        job = put(conn, zc.asynchronous.job.Job(operator.mul, 6, 7))
        self.assertEqual(
            zc.asynchronous.testing.wait_for_result(job, DEADLINE), 42)

    def test_each_test_starts_with_empty_queues(self):
        FunctionalLayer.conn.transaction_manager.begin()
        queue = interfaces.IQueue(FunctionalLayer.conn)
        self.assertEqual(len(queue), 0)
        self.assertEqual(len(queue.dispatchers), 1)
        put(FunctionalLayer.conn, zc.asynchronous.job.Job(operator.neg, 1))


class FTestingZCMLTests(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        tmpdir = tempfile.mkdtemp(prefix='zc.async-ftesting-')
        self.addCleanup(shutil.rmtree, tmpdir, True)
        use_temporary_instance_uuid(self, tmpdir)

    def test_adapters_but_no_dispatcher_policy(self):
        zope.configuration.xmlconfig.string(FTESTING_ZCML)
        gsm = zope.component.getGlobalSiteManager()
        self.assertEqual(
            [r.factory for r in gsm.registeredHandlers()
             if r.factory.__module__.startswith('zc.async')], [])
        self.assertEqual(
            sorted(r.required[0].__name__ for r in gsm.registeredAdapters()
                   if r.provided is interfaces.IQueue),
            ['IConnection', 'IPersistent'])
        self.assertIsNotNone(zope.component.queryUtility(interfaces.IUUID))
        self.assertIsInstance(interfaces.IJob(len), zc.asynchronous.job.Job)


class FTestingTests(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-ftesting-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        use_temporary_instance_uuid(self, self.tmpdir)
        zope.configuration.xmlconfig.string(FTESTING_ZCML)
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.tmpdir, 'Data.fs')))
        self.addCleanup(self.db.close)
        self.conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        self.addCleanup(self.conn.close)
        self.addCleanup(self.conn.transaction_manager.abort)
        self.sigterm = signal.getsignal(signal.SIGTERM)
        self.zc_async_handlers = list(logging.getLogger('zc.async').handlers)
        self.addCleanup(self.tear_down_if_set_up)

    def zc_async_handlers_registered(self):
        return [r.factory for r in
                zope.component.getGlobalSiteManager().registeredHandlers()
                if r.factory.__module__.startswith('zc.async')]

    def tear_down_if_set_up(self):
        if ftesting._state:
            ftesting.tearDown()

    def dispatcher_agents(self):
        self.conn.transaction_manager.begin()
        queue = self.conn.root()[interfaces.KEY]['']
        return queue.dispatchers[instanceuuid.UUID]

    def test_set_up_starts_a_fast_polling_dispatcher(self):
        ftesting.setUp(self.conn, log_file=None)
        dispatcher = zc.asynchronous.dispatcher.get()
        self.assertTrue(dispatcher.activated)
        self.assertTrue(dispatcher.thread.is_alive())
        self.assertEqual(dispatcher.poll_interval, 0.1)
        self.assertGreaterEqual(len(dispatcher.polls), 2)
        self.assertEqual(list(self.dispatcher_agents()), ['main'])
        self.assertIsNot(signal.getsignal(signal.SIGTERM), self.sigterm)
        self.assertEqual(self.zc_async_handlers_registered(),
                         [subscribers.agent_installer])
        job = put(self.conn, zc.asynchronous.job.Job(operator.mul, 21, 2))
        self.assertEqual(
            zc.asynchronous.testing.wait_for_result(job, DEADLINE), 42)

    def test_tear_down_stops_and_forgets_everything(self):
        ftesting.setUp(self.conn, log_file=None)
        dispatcher = zc.asynchronous.dispatcher.get()
        ftesting.tearDown()
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        self.assertFalse(dispatcher.activated)
        self.assertFalse(dispatcher.thread.is_alive())
        for pool in dispatcher._pools():
            self.assertEqual([t for t in pool.threads if t.is_alive()], [])
        self.assertFalse(self.dispatcher_agents().activated)
        self.assertIs(signal.getsignal(signal.SIGTERM), self.sigterm)
        self.assertEqual(self.zc_async_handlers_registered(), [])
        self.assertEqual(ftesting._state, {})

    def test_set_up_accepts_the_database(self):
        ftesting.setUp(self.db, log_file=None)
        self.assertIs(zc.asynchronous.dispatcher.get().db, self.db)

    def test_set_up_needs_a_connection_or_database(self):
        with self.assertRaises(ValueError) as caught:
            ftesting.setUp()  # and no getRootFolder in this module
        self.assertIn('getRootFolder()._p_jar', str(caught.exception))
        with self.assertRaises(TypeError) as caught:
            ftesting.setUp('Data.fs')
        self.assertIn("not 'Data.fs'", str(caught.exception))
        self.assertEqual(ftesting._state, {})

    def test_set_up_finds_getRootFolder_in_the_callers_globals(self):
        # A zope.app.testing functional doctest has getRootFolder in its
        # globals; 1.5 tests call setUp() with no argument there.
        folder = self.conn.root()['folder'] = (
            persistent.mapping.PersistentMapping())
        self.conn.transaction_manager.commit()
        doctest_globals = {'getRootFolder': lambda: folder,
                           'zc': __import__('zc.asynchronous.ftesting')}
        exec('zc.asynchronous.ftesting.setUp(log_file=None)',
             doctest_globals)
        dispatcher = zc.asynchronous.dispatcher.get()
        self.assertIs(dispatcher.db, self.db)
        self.assertTrue(dispatcher.activated)
        exec('zc.asynchronous.ftesting.tearDown()', doctest_globals)
        self.assertIsNone(zc.asynchronous.dispatcher.get())

    def test_tear_down_stops_a_dispatcher_it_did_not_start(self):
        # 1.5's tearDown stopped the process's dispatcher, whatever had
        # started it, and restored the signal handlers.
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        self.assertIsNone(subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.1)(interfaces.DatabaseOpened(self.db)))
        dispatcher = zc.asynchronous.dispatcher.get()
        self.assertIsNot(signal.getsignal(signal.SIGTERM), self.sigterm)
        zc.asynchronous.testing.get_poll(dispatcher, 0)
        ftesting.tearDown()
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        self.assertFalse(dispatcher.activated)
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertIs(signal.getsignal(signal.SIGTERM), self.sigterm)
        self.assertNotIn(id(dispatcher), subscribers.signal_handlers)

    def test_set_up_twice_and_tear_down_without_set_up(self):
        ftesting.setUp(self.conn, log_file=None)
        with self.assertRaises(ValueError) as caught:
            ftesting.setUp(self.conn, log_file=None)
        self.assertIn('setUp was called twice', str(caught.exception))
        ftesting.tearDown()
        with self.assertRaises(ValueError) as caught:
            ftesting.tearDown()  # nothing left to stop
        self.assertIn('no dispatcher runs in this process',
                      str(caught.exception))

    def test_a_failing_set_up_undoes_itself(self):
        def broken_installer(event):
            raise RuntimeError('no queues today')
        with self.assertRaises(RuntimeError):
            ftesting.setUp(self.conn, queue_installer=broken_installer)
        self.assertEqual(ftesting._state, {})
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        self.assertEqual(self.zc_async_handlers_registered(), [])
        self.assertEqual(logging.getLogger('zc.async').handlers,
                         self.zc_async_handlers)

    def test_critical_logs_go_to_stdout_at_call_time(self):
        log = logging.getLogger('zc.async.events')
        with contextlib.redirect_stdout(io.StringIO()) as out:
            ftesting.setUp(self.conn)
        log.error('an error')
        log.critical('a critical problem')
        ftesting.tearDown()
        log.critical('after tear-down')
        self.assertEqual(out.getvalue(), 'CRITICAL a critical problem\n')
        self.assertEqual(logging.getLogger('zc.async').handlers,
                         self.zc_async_handlers)

    def test_log_file_and_level(self):
        log = logging.getLogger('zc.async.events')
        out = io.StringIO()
        ftesting.setUp(self.conn, log_file=out, log_level=logging.ERROR)
        log.warning('a warning')
        log.error('an error')
        self.assertEqual(out.getvalue(), 'ERROR an error\n')

    def test_log_file_none_echoes_nothing(self):
        ftesting.setUp(self.conn, log_file=None)
        self.assertEqual(logging.getLogger('zc.async').handlers,
                         self.zc_async_handlers)

    def test_other_installers(self):
        queue_installer = subscribers.QueueInstaller(queues=('', 'other'))
        agent_installer = subscribers.AgentInstaller('helper', size=1)
        ftesting.setUp(self.conn, queue_installer=queue_installer,
                       dispatcher_installer=subscribers
                       .ThreadedDispatcherInstaller(poll_interval=0.2),
                       agent_installer=agent_installer, log_file=None)
        self.assertEqual(zc.asynchronous.dispatcher.get().poll_interval, 0.2)
        self.assertEqual(list(self.dispatcher_agents()), ['helper'])
        queues = self.conn.root()[interfaces.KEY]
        self.assertEqual(sorted(queues), ['', 'other'])

    def test_a_stuck_job_is_named_and_the_rest_is_undone(self):
        RELEASE.clear()
        self.addCleanup(RELEASE.set)
        ftesting.setUp(self.conn, log_file=None)
        dispatcher = zc.asynchronous.dispatcher.get()
        job = put(self.conn, zc.asynchronous.job.Job(wait_for_release))
        zc.asynchronous.testing.wait_for_start(job, DEADLINE)
        with self.assertRaises(zc.asynchronous.testing.TearDownDispatcherError
                               ) as caught:
            ftesting.tearDown()
        self.assertIs(ftesting.TearDownDispatcherError,
                      zc.asynchronous.testing.TearDownDispatcherError)
        message = str(caught.exception)
        self.assertIn("Job in pool 'main' failed to stop:", message)
        self.assertIn('wait_for_release', message)
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        self.assertIs(signal.getsignal(signal.SIGTERM), self.sigterm)
        self.assertEqual(ftesting._state, {})
        # Let the job end before the database closes.
        RELEASE.set()
        for pool in dispatcher._pools():
            for thread in list(pool.threads):
                thread.join(DEADLINE)

    @unittest.skipUnless(os.path.isdir('/proc/self/fd'), 'needs /proc')
    def test_no_file_descriptors_leak(self):
        def open_fds():
            return len(os.listdir('/proc/self/fd'))
        ftesting.setUp(self.conn, log_file=None)
        ftesting.tearDown()
        before = open_fds()
        for _ in range(3):
            ftesting.setUp(self.conn, log_file=None)
            ftesting.tearDown()
        self.assertEqual(open_fds(), before)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
