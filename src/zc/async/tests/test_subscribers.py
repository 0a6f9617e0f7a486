"""Tests of zc.async.subscribers: installers of queues, dispatchers, agents."""
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import unittest
import uuid

import transaction
import twisted.internet.selectreactor
import zope.component
import zope.component.testing
import zope.event
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage

import zc.asynchronous.agent
import zc.asynchronous.ops.cli
import zc.asynchronous.configure
import zc.asynchronous.dispatcher
import zc.asynchronous.instanceuuid
import zc.asynchronous.legacy
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.queue
import zc.asynchronous.subscribers as subscribers

# Generous bound for real threads on a loaded 2-core machine.
DEADLINE = 30


def wait_until(predicate, timeout=DEADLINE):
    """Wait (polling) until ``predicate()`` is true; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError('condition not met in %s seconds' % timeout)
        time.sleep(0.01)


def use_temporary_instance_uuid(testcase, tmpdir):
    """Give ``instanceuuid.UUID`` a value from ``tmpdir`` for this test."""
    module = zc.asynchronous.instanceuuid
    saved = module.__dict__.pop('UUID', None)
    module.UUID = module.getUUID(os.path.join(tmpdir, 'uuid.txt'))

    def restore():
        module.__dict__.pop('UUID', None)
        if saved is not None:
            module.UUID = saved

    testcase.addCleanup(restore)


class Reader:
    """A connection with its own transaction manager, synced on demand."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()

    def root(self):
        self.tm.abort()
        self.tm.begin()  # see the latest commits
        return self.conn.root()

    def close(self):
        self.tm.abort()
        self.conn.close()


class EventRecorder:

    def __init__(self, testcase):
        self.events = []
        zope.event.subscribers.append(self.events.append)
        testcase.addCleanup(zope.event.subscribers.remove, self.events.append)

    def of(self, iface):
        return [e for e in self.events if iface.providedBy(e)]


class RegistryMixin:

    def setUp(self):
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)

    def mapping_db(self, **kw):
        db = ZODB.DB(ZODB.MappingStorage.MappingStorage(), **kw)
        self.addCleanup(db.close)
        return db


class QueueInstallerTests(RegistryMixin, unittest.TestCase):

    def test_defaults_and_prebuilt_instances(self):
        installer = subscribers.QueueInstaller()
        self.assertEqual(installer.queues, ('',))
        self.assertIs(installer.factory, subscribers.queue_factory)
        self.assertIsNone(installer.db_name)
        self.assertIsInstance(subscribers.queue_installer,
                              subscribers.QueueInstaller)
        self.assertIsNone(subscribers.queue_installer.db_name)
        self.assertEqual(subscribers.multidb_queue_installer.db_name, 'async')
        self.assertEqual(zope.component.adaptedBy(subscribers.queue_installer),
                         (interfaces.IDatabaseOpenedEvent,))

    def test_a_string_of_queue_names_is_refused(self):
        with self.assertRaisesRegex(TypeError, "not the string 'abc'"):
            subscribers.QueueInstaller(queues='abc')

    def test_installs_queues_fires_events_and_logs(self):
        db = self.mapping_db()
        recorder = EventRecorder(self)
        with self.assertLogs('zc.async.events', logging.INFO) as logs:
            subscribers.QueueInstaller()(interfaces.DatabaseOpened(db))
        self.assertEqual([r.getMessage() for r in logs.records],
                         ['queues collection added', "queue '' added"])
        reader = Reader(db)
        self.addCleanup(reader.close)
        root = reader.root()
        queues = root[interfaces.KEY]
        self.assertIsInstance(queues, zc.asynchronous.queue.Queues)
        self.assertEqual(list(queues), [''])
        self.assertIsInstance(queues[''], zc.asynchronous.queue.Queue)
        added = recorder.of(interfaces.IObjectAdded)
        self.assertEqual([(e.name, type(e.object).__name__) for e in added],
                         [(interfaces.KEY, 'Queues'), ('', 'Queue')])
        self.assertEqual(added[1].parent._p_oid, queues._p_oid)

    def test_is_idempotent(self):
        db = self.mapping_db()
        installer = subscribers.QueueInstaller(queues=('', 'other'))
        installer(interfaces.DatabaseOpened(db))
        recorder = EventRecorder(self)
        with self.assertNoLogs('zc.async.events', logging.INFO):
            installer(interfaces.DatabaseOpened(db))
        self.assertEqual(recorder.events, [])
        reader = Reader(db)
        self.addCleanup(reader.close)
        self.assertEqual(sorted(reader.root()[interfaces.KEY]), ['', 'other'])

    def test_adds_only_missing_queues_with_the_factory(self):
        db = self.mapping_db()
        subscribers.QueueInstaller()(interfaces.DatabaseOpened(db))
        calls = []

        def factory(conn, name):
            calls.append((conn.root()[interfaces.KEY]._p_oid, name))
            return zc.asynchronous.queue.Queue()

        with self.assertLogs('zc.async.events', logging.INFO) as logs:
            subscribers.QueueInstaller(queues=('', 'a', 'b'), factory=factory)(
                interfaces.DatabaseOpened(db))
        self.assertEqual([r.getMessage() for r in logs.records],
                         ["queue 'a' added", "queue 'b' added"])
        self.assertEqual([name for oid, name in calls], ['a', 'b'])

    def test_uses_its_own_connection_and_transaction(self):
        # Given an open, uncommitted change in the thread's transaction,
        db = self.mapping_db()
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        conn.root()['pending'] = 1
        # when the installer runs,
        subscribers.QueueInstaller()(interfaces.DatabaseOpened(db))
        # that change is neither committed nor lost.
        self.assertEqual(conn.root()['pending'], 1)
        reader = Reader(db)
        self.addCleanup(reader.close)
        root = reader.root()
        self.assertIn(interfaces.KEY, root)
        self.assertNotIn('pending', root)
        # The installer closed its connection: only ours and the reader's.
        self.assertEqual(len([c for c in db.pool.all if c.opened]), 2)

    def test_a_concurrent_install_is_retried_and_not_duplicated(self):
        db = self.mapping_db()
        subscribers.QueueInstaller()(interfaces.DatabaseOpened(db))
        competitor_done = []

        def factory(conn, name):
            if not competitor_done:
                # Another process adds the same queue and commits first.
                with db.transaction() as other:
                    other.root()[interfaces.KEY][name] = (
                        zc.asynchronous.queue.Queue())
                competitor_done.append(name)
            return zc.asynchronous.queue.Queue()

        with self.assertNoLogs('zc.async.events', logging.INFO):
            subscribers.QueueInstaller(queues=('x',), factory=factory)(
                interfaces.DatabaseOpened(db))
        reader = Reader(db)
        self.addCleanup(reader.close)
        self.assertEqual(sorted(reader.root()[interfaces.KEY]), ['', 'x'])

    def test_multidb_puts_the_queues_in_the_named_database(self):
        databases = {}
        main = self.mapping_db(databases=databases, database_name='main')
        self.mapping_db(databases=databases, database_name='async')
        subscribers.multidb_queue_installer(interfaces.DatabaseOpened(main))
        reader = Reader(main)
        self.addCleanup(reader.close)
        queues = reader.root()[interfaces.KEY]
        self.assertEqual(queues._p_jar.db().database_name, 'async')
        self.assertEqual(queues['']._p_jar.db().database_name, 'async')
        async_root = reader.conn.get_connection('async').root()
        self.assertIs(async_root[interfaces.KEY], queues)

    def test_multidb_without_the_named_database_is_refused(self):
        db = self.mapping_db(database_name='main')
        with self.assertRaises(ValueError) as raised:
            subscribers.multidb_queue_installer(interfaces.DatabaseOpened(db))
        self.assertIn("named 'async'", str(raised.exception))
        self.assertIn("['main']", str(raised.exception))
        reader = Reader(db)
        self.addCleanup(reader.close)
        self.assertNotIn(interfaces.KEY, reader.root())

    def test_provide_handler_needs_no_adapts(self):
        db = self.mapping_db()
        zope.component.provideHandler(subscribers.queue_installer)
        zope.event.notify(interfaces.DatabaseOpened(db))
        reader = Reader(db)
        self.addCleanup(reader.close)
        self.assertIn('', reader.root()[interfaces.KEY])


class AgentInstallerTests(RegistryMixin, unittest.TestCase):

    def dispatcher_agents(self, queue_name=''):
        queues = zc.asynchronous.queue.Queues()
        queues[queue_name] = zc.asynchronous.queue.Queue()
        key = uuid.uuid4()
        queues[queue_name].dispatchers.register(key)
        return queues[queue_name].dispatchers[key]

    def test_defaults_and_prebuilt_instance(self):
        installer = subscribers.AgentInstaller('a')
        self.assertEqual(
            (installer.agent_name, installer.chooser, installer.size,
             installer.queue_names, installer.filter),
            ('a', None, 3, None, None))
        self.assertEqual(subscribers.agent_installer.agent_name, 'main')
        self.assertEqual(zope.component.adaptedBy(subscribers.agent_installer),
                         (interfaces.IDispatcherActivated,))

    def test_chooser_and_filter_exclude_each_other(self):
        with self.assertRaises(ValueError) as raised:
            subscribers.AgentInstaller('a', chooser=len, filter=bool)
        self.assertEqual(raised.exception.args,
                         ('cannot set both chooser and filter to non-None',))

    def test_a_bad_batch_size_is_refused(self):
        with self.assertRaises(ValueError) as raised:
            subscribers.AgentInstaller('a', batch_size=0)
        self.assertIn('batch_size', str(raised.exception))

    def test_the_agent_gets_the_batch_size(self):
        da = self.dispatcher_agents()
        subscribers.AgentInstaller('a', size=1, batch_size=10)(
            interfaces.DispatcherActivated(da))
        self.assertEqual(da['a'].batch_size, 10)
        subscribers.AgentInstaller('b')(interfaces.DispatcherActivated(da))
        self.assertNotIn('_batch_size', da['b'].__dict__)

    def test_a_string_of_queue_names_is_refused(self):
        with self.assertRaises(TypeError):
            subscribers.AgentInstaller('a', queue_names='')

    def test_adds_the_agent_once(self):
        da = self.dispatcher_agents()
        installer = subscribers.AgentInstaller('helper', size=5, filter=bool)
        with self.assertLogs('zc.async.events', logging.INFO) as logs:
            installer(interfaces.DispatcherActivated(da))
            agent = da['helper']
            installer(interfaces.DispatcherActivated(da))
        self.assertEqual([r.getMessage() for r in logs.records],
                         ["agent 'helper' added to queue ''",
                          "agent 'helper' already in queue ''"])
        self.assertIs(da['helper'], agent)
        self.assertIsInstance(agent, zc.asynchronous.agent.Agent)
        self.assertEqual((agent.size, agent.filter, agent.chooser),
                         (5, bool, None))

    def test_chooser_is_passed_on(self):
        da = self.dispatcher_agents()
        chooser = zc.asynchronous.legacy.chooseFirst
        subscribers.AgentInstaller('main', chooser=chooser)(
            interfaces.DispatcherActivated(da))
        self.assertIs(da['main'].chooser, chooser)

    def test_queue_names_limit_the_queues(self):
        installer = subscribers.AgentInstaller('main', queue_names=('jobs',))
        other = self.dispatcher_agents('other')
        with self.assertNoLogs('zc.async.events', logging.INFO):
            installer(interfaces.DispatcherActivated(other))
        self.assertNotIn('main', other)
        jobs = self.dispatcher_agents('jobs')
        installer(interfaces.DispatcherActivated(jobs))
        self.assertIn('main', jobs)


class ThreadedDispatcherInstallerTests(RegistryMixin, unittest.TestCase):
    """A real dispatcher on a real FileStorage, in its own reactor thread."""

    def setUp(self):
        super().setUp()
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-subscribers-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        use_temporary_instance_uuid(self, self.tmpdir)
        zc.asynchronous.configure.base()
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            self.tmpdir + '/Data.fs'))
        self.addCleanup(self.db.close)
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        zope.component.provideHandler(subscribers.agent_installer)
        self.uuid = uuid.uuid4()

    def start(self, **kw):
        installer = subscribers.ThreadedDispatcherInstaller(
            poll_interval=0.5, uuid=self.uuid, **kw)
        self.assertIsNone(installer(interfaces.DatabaseOpened(self.db)))
        dispatcher = zc.asynchronous.dispatcher.get(self.uuid)
        self.addCleanup(self.tear_down, dispatcher)
        return dispatcher

    def tear_down(self, dispatcher):
        zc.asynchronous.ops.cli.stop_dispatcher(dispatcher)

    def dispatcher_agents(self):
        reader = Reader(self.db)
        self.addCleanup(reader.close)
        return lambda: reader.root()[interfaces.KEY][''].dispatchers.get(
            self.uuid)

    def test_defaults(self):
        installer = subscribers.ThreadedDispatcherInstaller()
        self.assertEqual(installer.poll_interval, 5)
        self.assertIs(installer.reactor_factory,
                      twisted.internet.selectreactor.SelectReactor)
        self.assertIsNone(installer.uuid)
        self.assertIsInstance(subscribers.threaded_dispatcher_installer,
                              subscribers.ThreadedDispatcherInstaller)

    def test_starts_an_activated_dispatcher_in_a_daemon_thread(self):
        dispatcher = self.start()
        self.assertIs(zc.asynchronous.dispatcher.get(self.uuid), dispatcher)
        self.assertEqual(dispatcher.UUID, self.uuid)
        self.assertEqual(dispatcher.poll_interval, 0.5)
        self.assertIsInstance(dispatcher.reactor,
                              twisted.internet.selectreactor.SelectReactor)
        self.assertTrue(dispatcher.thread.daemon)
        self.assertTrue(dispatcher.thread.is_alive())
        self.assertTrue(dispatcher.activated)
        # Its first poll activates it in the queue; the agent installer runs.
        da = self.dispatcher_agents()
        wait_until(lambda: da() is not None and 'main' in da())
        self.assertTrue(da().activated)

    def test_uses_the_reactor_factory(self):
        made = []

        def factory():
            made.append(twisted.internet.selectreactor.SelectReactor())
            return made[-1]

        dispatcher = self.start(reactor_factory=factory)
        self.assertEqual(made, [dispatcher.reactor])

    def test_records_and_restores_signal_handlers(self):
        # (A test run started in the background ignores SIGINT.)
        original = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, original)
        before = {s: signal.getsignal(s) for s in (signal.SIGINT,
                                                   signal.SIGTERM)}
        dispatcher = self.start()
        recorded = subscribers.signal_handlers[id(dispatcher)]
        self.assertEqual(sorted(recorded), [signal.SIGINT, signal.SIGTERM])
        for signum, (previous, installed) in recorded.items():
            self.assertIs(previous, before[signum])
            self.assertIs(signal.getsignal(signum), installed)
        subscribers.restore_signal_handlers(dispatcher)
        self.assertNotIn(id(dispatcher), subscribers.signal_handlers)
        for signum, handler in before.items():
            self.assertIs(signal.getsignal(signum), handler)

    def test_restore_leaves_a_later_handler_alone(self):
        dispatcher = self.start()
        previous_sigterm = subscribers.signal_handlers[id(dispatcher)][
            signal.SIGTERM][0]

        def later(signum, frame):
            pass

        original_sigint = signal.signal(signal.SIGINT, later)
        try:
            subscribers.restore_signal_handlers(dispatcher)
            self.assertIs(signal.getsignal(signal.SIGINT), later)
            self.assertIs(signal.getsignal(signal.SIGTERM), previous_sigterm)
        finally:
            signal.signal(signal.SIGINT, original_sigint)

    def test_sigterm_stops_the_reactor_then_exits(self):
        dispatcher = self.start()
        da = self.dispatcher_agents()
        wait_until(lambda: da() is not None and da().activated)
        with self.assertRaises(SystemExit):
            signal.raise_signal(signal.SIGTERM)
        self.assertFalse(dispatcher.thread.is_alive())
        # The reactor's shutdown deactivated the dispatcher's records.
        self.assertFalse(da().activated)

    def test_sigint_stops_the_reactor_then_calls_the_previous_handler(self):
        calls = []

        def previous(signum, frame):
            calls.append(signum)

        original = signal.signal(signal.SIGINT, previous)
        self.addCleanup(signal.signal, signal.SIGINT, original)
        dispatcher = self.start()
        da = self.dispatcher_agents()
        wait_until(lambda: da() is not None and da().activated)
        signal.raise_signal(signal.SIGINT)
        self.assertEqual(calls, [signal.SIGINT])
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertFalse(da().activated)

    def test_sigint_with_the_default_handler_raises_keyboard_interrupt(self):
        original = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, original)
        dispatcher = self.start()
        with self.assertRaises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        self.assertFalse(dispatcher.thread.is_alive())

    def test_an_ignored_signal_stays_ignored(self):
        original = signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.addCleanup(signal.signal, signal.SIGINT, original)
        dispatcher = self.start()
        self.assertEqual(sorted(subscribers.signal_handlers[id(dispatcher)]),
                         [signal.SIGTERM])
        self.assertEqual(signal.getsignal(signal.SIGINT), signal.SIG_IGN)

    def test_no_signal_handlers_outside_the_main_thread(self):
        started = []
        thread = threading.Thread(target=lambda: started.append(self.start()))
        thread.start()
        thread.join(DEADLINE)
        dispatcher, = started
        self.assertNotIn(id(dispatcher), subscribers.signal_handlers)
        self.assertTrue(dispatcher.thread.is_alive())

    def test_a_second_dispatcher_with_the_same_uuid_is_refused(self):
        self.start()
        with self.assertRaises(ValueError):
            subscribers.ThreadedDispatcherInstaller(uuid=self.uuid)(
                interfaces.DatabaseOpened(self.db))


class TwistedDispatcherInstallerTests(unittest.TestCase):
    """Running it needs the global reactor: see test_configure's process."""

    def test_defaults(self):
        installer = subscribers.TwistedDispatcherInstaller()
        self.assertEqual(installer.poll_interval, 5)
        self.assertEqual(
            subscribers.twisted_dispatcher_installer.poll_interval, 5)
        self.assertEqual(
            zope.component.adaptedBy(subscribers.twisted_dispatcher_installer),
            (interfaces.IDatabaseOpenedEvent,))


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
