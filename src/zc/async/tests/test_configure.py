"""Tests of zc.async.configure: the pure-Python registrations and start()."""
import operator
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import uuid

import persistent.interfaces
import persistent.mapping
import transaction
import transaction.interfaces
import zope.component
import zope.interface.registry
import zope.component.testing
import ZODB
import ZODB.FileStorage
import ZODB.interfaces
import ZODB.MappingStorage

import zc.asynchronous.ops.cli
import zc.asynchronous.configure as configure
import zc.asynchronous.dispatcher
import zc.asynchronous.instanceuuid as instanceuuid
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.legacy
import zc.asynchronous.ops.monitorserver as monitorserver
import zc.asynchronous.queue
import zc.asynchronous.subscribers as subscribers
from zc.asynchronous.tests.test_subscribers import DEADLINE
from zc.asynchronous.tests.test_subscribers import Reader
from zc.asynchronous.tests.test_subscribers import use_temporary_instance_uuid
from zc.asynchronous.tests.test_subscribers import wait_until
from zc.asynchronous.tests.test_monitorserver import session

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def a_function():
    return 'function'


class Thing:

    def method(self):
        return 'method'


class TempDirMixin:

    def setUp(self):
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-configure-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        use_temporary_instance_uuid(self, self.tmpdir)

    def stored(self, db):
        """A persistent object committed in ``db`` and its connection."""
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        conn.root()['thing'] = obj = persistent.mapping.PersistentMapping()
        tm.commit()
        return obj, conn


class RegistrationTests(TempDirMixin, unittest.TestCase):

    def setUp(self):
        super().setUp()
        self.registry = zope.interface.registry.Components('test')
        self.db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.db.close)

    def test_minimal_registers_transaction_manager_adapters(self):
        configure.minimal(self.registry)
        obj, conn = self.stored(self.db)
        for context in (obj, conn):
            self.assertIs(
                self.registry.getAdapter(
                    context, transaction.interfaces.ITransactionManager),
                conn.transaction_manager)

    def test_minimal_adapts_callables_to_new_jobs(self):
        configure.minimal(self.registry)
        thing = Thing()
        callables = [a_function, thing.method, (1).__add__, len, [].append]
        kinds = {type(c) for c in callables}
        self.assertEqual(kinds, set(configure.JOB_ADAPTED_TYPES))
        for func in callables:
            job = self.registry.getAdapter(func, interfaces.IJob)
            self.assertIsInstance(job, zc.asynchronous.job.Job)
            self.assertEqual(job.callable, func)
            self.assertEqual(job.status, interfaces.NEW)

    def test_minimal_registers_the_instance_uuid(self):
        configure.minimal(self.registry)
        self.assertEqual(self.registry.getUtility(interfaces.IUUID),
                         instanceuuid.UUID)
        # The instance UUID provides IUUID; uuid.UUID is left unchanged.
        self.assertTrue(interfaces.IUUID.providedBy(instanceuuid.UUID))
        self.assertFalse(interfaces.IUUID.implementedBy(uuid.UUID))

    def test_minimal_has_no_connection_adapter_base_has(self):
        obj, conn = self.stored(self.db)
        configure.minimal(self.registry)
        self.assertIsNone(self.registry.queryAdapter(
            obj, ZODB.interfaces.IConnection))
        configure.base(self.registry)
        self.assertIs(self.registry.getAdapter(
            obj, ZODB.interfaces.IConnection), conn)

    def test_the_global_registry_is_the_default(self):
        configure.base()
        job = interfaces.IJob(a_function)
        self.assertEqual(job.callable, a_function)
        self.assertEqual(zope.component.getUtility(interfaces.IUUID),
                         instanceuuid.UUID)
        obj, conn = self.stored(self.db)
        self.assertIs(ZODB.interfaces.IConnection(obj), conn)
        self.assertIs(transaction.interfaces.ITransactionManager(conn),
                      conn.transaction_manager)

    def test_client_registers_the_default_queue_adapters(self):
        # A client-only process: base() alone cannot find the queue.
        configure.base()
        obj, conn = self.stored(self.db)
        with self.assertRaises(TypeError):
            interfaces.IQueue(conn)
        conn.root()[interfaces.KEY] = zc.asynchronous.queue.Queues()
        queue = conn.root()[interfaces.KEY][''] = zc.asynchronous.queue.Queue()
        conn.transaction_manager.commit()
        self.assertIsNone(configure.client())
        self.assertIs(interfaces.IQueue(conn), queue)
        self.assertIs(interfaces.IQueue(obj), queue)
        job = interfaces.IQueue(conn).put(a_function)
        self.assertEqual(job.status, interfaces.PENDING)

    def test_client_takes_a_registry(self):
        configure.client(self.registry)
        obj, conn = self.stored(self.db)
        self.assertIsNone(zope.component.queryAdapter(conn, interfaces.IQueue))
        self.assertEqual(
            [r.required[0] for r in self.registry.registeredAdapters()
             if r.provided is interfaces.IQueue],
            [persistent.interfaces.IPersistent, ZODB.interfaces.IConnection])


class StartTests(TempDirMixin, unittest.TestCase):
    """start() with a real threaded dispatcher on a FileStorage."""

    def setUp(self):
        super().setUp()
        configure.base()
        self.db = self.file_db('Data.fs')

    def file_db(self, name, **kw):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.tmpdir, name)), **kw)
        self.addCleanup(db.close)
        return db

    def start(self, **kw):
        configure.start(self.db, poll_interval=0.5, **kw)
        dispatcher = zc.asynchronous.dispatcher.get()
        self.addCleanup(zc.asynchronous.ops.cli.stop_dispatcher, dispatcher)
        return dispatcher

    def handlers(self, registry=None):
        registry = registry or zope.component.getGlobalSiteManager()
        return {type(r.factory): r.factory
                for r in registry.registeredHandlers()}

    def test_registers_installers_with_the_settings(self):
        chooser = zc.asynchronous.legacy.chooseFirst
        self.start(agent_size=4, agent_chooser=chooser)
        handlers = self.handlers()
        self.assertEqual(set(handlers), {
            subscribers.QueueInstaller,
            subscribers.ThreadedDispatcherInstaller,
            subscribers.AgentInstaller})
        self.assertIsNone(handlers[subscribers.QueueInstaller].db_name)
        self.assertEqual(
            handlers[subscribers.ThreadedDispatcherInstaller].poll_interval,
            0.5)
        agent_installer = handlers[subscribers.AgentInstaller]
        self.assertEqual(
            (agent_installer.agent_name, agent_installer.size,
             agent_installer.chooser),
            ('main', 4, chooser))

    def test_installs_queue_dispatcher_and_agent_and_runs_jobs(self):
        dispatcher = self.start(agent_size=2)
        self.assertTrue(dispatcher.thread.is_alive())
        self.assertEqual(dispatcher.UUID, instanceuuid.UUID)
        reader = Reader(self.db)
        self.addCleanup(reader.close)

        def agent():
            queue = reader.root()[interfaces.KEY]['']
            agents = queue.dispatchers.get(dispatcher.UUID)
            return None if agents is None else agents.get('main')

        wait_until(lambda: agent() is not None)
        self.assertEqual(agent().size, 2)
        # The default-queue adapters, then a real job run by the dispatcher.
        queue = interfaces.IQueue(reader.conn)
        self.assertIs(interfaces.IQueue(reader.conn.root()), queue)
        job = queue.put(zc.asynchronous.job.Job(operator.mul, 21, 2))
        reader.tm.commit()
        reader.tm.begin()
        wait_until(
            lambda: reader.root() and job.status == interfaces.COMPLETED)
        self.assertEqual(job.result, 42)

    def test_stop_lets_the_running_job_finish_and_forgets_the_dispatcher(
            self):
        previous = signal.getsignal(signal.SIGTERM)
        dispatcher = self.start()
        self.assertIsNot(signal.getsignal(signal.SIGTERM), previous)
        reader = Reader(self.db)
        self.addCleanup(reader.close)
        wait_until(lambda: interfaces.KEY in reader.root())
        queue = interfaces.IQueue(reader.conn)
        job = queue.put(zc.asynchronous.job.Job(time.sleep, 1))
        reader.tm.commit()
        reader.tm.begin()
        wait_until(lambda: reader.root() is not None
                   and job.status == interfaces.ACTIVE)
        configure.stop(10)
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        self.assertFalse(dispatcher.activated)
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertIs(signal.getsignal(signal.SIGTERM), previous)
        reader.root()
        self.assertEqual(job.status, interfaces.COMPLETED)
        configure.stop()  # nothing to stop

    def test_db_name_puts_the_queues_in_that_database(self):
        databases = {}
        self.db = self.file_db('main.fs', databases=databases,
                               database_name='main')
        self.file_db('async.fs', databases=databases, database_name='async')
        self.start(db_name='async')
        self.assertEqual(self.handlers()[subscribers.QueueInstaller].db_name,
                         'async')
        reader = Reader(self.db)
        self.addCleanup(reader.close)
        queues = reader.root()[interfaces.KEY]
        self.assertEqual(queues._p_jar.db().database_name, 'async')

    def test_a_registry_that_is_not_current_still_gets_the_event(self):
        registry = zope.interface.registry.Components('other')
        self.start(registry=registry)
        self.assertEqual(len(self.handlers(registry)), 3)
        self.assertEqual(self.handlers(), {})
        reader = Reader(self.db)
        self.addCleanup(reader.close)
        self.assertIn('', reader.root()[interfaces.KEY])
        self.assertIsNone(zope.component.queryAdapter(
            reader.conn, interfaces.IQueue))
        self.assertIsNotNone(registry.queryAdapter(
            reader.conn, interfaces.IQueue))

    def test_monitor_port_serves_the_monitor_commands(self):
        dispatcher = self.start(monitor_port='0')  # text, as from environ
        installer = [r.factory for r in zope.component.getGlobalSiteManager(
            ).registeredHandlers()][-1]  # the last installer to run
        self.assertIsInstance(installer, monitorserver.MonitorInstaller)
        address = installer.servers[dispatcher].getHost()
        self.assertEqual(address.host, '127.0.0.1')
        self.assertEqual(
            session((address.host, address.port), 'async UUID',
                    'asyncdb count pending'),
            '%s\n0\n' % (dispatcher.UUID,))

    def test_without_monitor_port_no_monitor(self):
        self.start()
        self.assertNotIn(monitorserver.MonitorInstaller, self.handlers())

    def test_a_bad_monitor_port_fails_before_anything_starts(self):
        with self.assertRaises(ValueError) as caught:
            configure.start(self.db, monitor_port='http')
        self.assertEqual(str(caught.exception),
                         'the monitor port must be an integer from 0 to '
                         "65535, not 'http'")
        self.assertEqual(self.handlers(), {})
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        reader = Reader(self.db)
        self.addCleanup(reader.close)
        self.assertNotIn(interfaces.KEY, reader.root())


TWISTED_SCRIPT = textwrap.dedent('''
    import operator, sys, time
    import transaction, ZODB, ZODB.FileStorage
    from twisted.internet import reactor
    import zc.asynchronous.configure, zc.asynchronous.dispatcher
    from zc.asynchronous.interfaces import COMPLETED, IQueue
    from zc.asynchronous.job import Job

    db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1]))
    zc.asynchronous.configure.base()
    zc.asynchronous.configure.start(db, poll_interval=0.1, twisted=True)
    dispatcher = zc.asynchronous.dispatcher.get()
    print('global reactor:', dispatcher.reactor is reactor)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    with tm:
        job = IQueue(conn).put(Job(operator.mul, 21, 2))
    deadline = time.monotonic() + float(sys.argv[2])

    def check():
        with tm:
            done, result = job.status == COMPLETED, job.result
        if done or time.monotonic() > deadline:
            print('result:', result)
            reactor.stop()
        else:
            reactor.callLater(0.05, check)

    reactor.callWhenRunning(check)
    reactor.run()
    print('activated after the reactor stopped:', dispatcher.activated)
    conn.close()
    db.close()
''')


# 1.5's Twisted program: the job's callback stops the reactor.  The
# reactor's shutdown waits for the worker thread to finish the callback and
# commit the job's completion.
CALLBACK_STOPS_SCRIPT = textwrap.dedent('''
    import operator, sys
    import transaction, ZODB, ZODB.FileStorage
    from twisted.internet import reactor
    import zc.asynchronous.configure
    from zc.asynchronous.interfaces import COMPLETED, IQueue
    from zc.asynchronous.job import Job

    def stop_reactor(result):
        reactor.callFromThread(reactor.stop)
        return 'stopping at %r' % (result,)

    db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1]))
    zc.asynchronous.configure.base()
    zc.asynchronous.configure.start(db, poll_interval=0.1, twisted=True)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    with tm:
        job = IQueue(conn).put(Job(operator.mul, 21, 2))
        callback = job.addCallback(stop_reactor)
    reactor.run()
    with tm:
        print('job:', job.status == COMPLETED, job.result)
        print('callback:', callback.status == COMPLETED, callback.result)
    conn.close()
    db.close()
''')


class TwistedStartTests(unittest.TestCase):

    def run_script(self, script, *args):
        tmpdir = tempfile.mkdtemp(prefix='zc.async-configure-')
        self.addCleanup(shutil.rmtree, tmpdir, True)
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [SRC] + [p for p in [env.get('PYTHONPATH')] if p])
        env[instanceuuid.key] = os.path.join(tmpdir, 'uuid.txt')
        process = subprocess.run(
            [sys.executable, '-c', script, os.path.join(tmpdir, 'Data.fs'),
             *args], cwd=tmpdir, env=env, capture_output=True, text=True,
            timeout=DEADLINE * 2)
        self.assertEqual(process.returncode, 0, process.stderr)
        return process.stdout.splitlines()

    def test_start_with_twisted_runs_jobs_on_the_main_reactor(self):
        self.assertEqual(self.run_script(TWISTED_SCRIPT, str(DEADLINE)), [
            'global reactor: True',
            'result: 42',
            'activated after the reactor stopped: False'])

    def test_a_callback_that_stops_the_reactor(self):
        self.assertEqual(self.run_script(CALLBACK_STOPS_SCRIPT), [
            'job: True 42',
            'callback: True stopping at 42'])


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
