"""Tests of the ZCML files and the ``async:policy`` directive (zc.async.zcml).

Configuration-time tests process ZCML strings; start-up tests process a
site.zcml with ``zope.app.appsetup`` and open the site's databases the way
a Zope 3 server does (ZConfig ``<zodb>`` sections, ``multi_database``, then
``DatabaseOpened``), on real FileStorages with a real threaded dispatcher.
"""
import io
import json
import operator
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest

import transaction
import transaction.interfaces
import ZConfig
import ZODB.config
import ZODB.interfaces
import zope.annotation.interfaces
import zope.app.appsetup.appsetup as appsetup
import zope.component
import zope.component.testing
import zope.configuration.config
import zope.configuration.exceptions
import zope.configuration.xmlconfig
import zope.event
import zope.interface.interfaces

import zc.asynchronous.ops.cli
import zc.asynchronous.configure
import zc.asynchronous.dispatcher
import zc.asynchronous.instanceuuid as instanceuuid
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.monitor
import zc.asynchronous.monitordb
import zc.asynchronous.ops.monitorserver as monitorserver
import zc.asynchronous.queue
import zc.asynchronous.subscribers as subscribers
import zc.asynchronous.testing
import zc.asynchronous.zcml as zcml
from zc.asynchronous.tests.test_monitorserver import session
from zc.asynchronous.tests.test_subscribers import DEADLINE
from zc.asynchronous.tests.test_subscribers import use_temporary_instance_uuid

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

ZOPE = 'http://namespaces.zope.org/zope'


def site_zcml(*lines):
    """A site.zcml holding ``lines`` (zope and zc.async namespaces)."""
    return textwrap.dedent('''\
        <configure xmlns="http://namespaces.zope.org/zope"
                   xmlns:async="http://namespaces.zope.org/zc.async">
        %s
        </configure>
        ''') % '\n'.join(lines)


INCLUDE = '<include package="zc.async" />'
BASIC = '<include package="zc.async" file="basic_dispatcher_policy.zcml" />'
MULTIDB = ('<include package="zc.async"'
           ' file="multidb_dispatcher_policy.zcml" />')


def a_function():
    return 'function'


def hello(connection, name='world'):
    """Say hello (a monitor command of the site's own)."""
    connection.write('Hello, %s!\n' % (name,))


def ours(registrations):
    """The registrations of zc.async's own objects."""
    return [r for r in registrations
            if (getattr(r, 'factory', None) or r.component).__module__
            in ('zc.async', 'uuid') or
            (getattr(r, 'factory', None) or r.component).__module__
            .startswith('zc.async.')]


def registrations(registry):
    """What ``registry`` holds of zc.async, as comparable tuples."""
    adapters = {(r.factory, r.required, r.provided, r.name)
                for r in ours(registry.registeredAdapters())}
    # (ZCML also registers the interfaces it names as utilities.)
    utilities = {(r.component, r.provided, r.name)
                 for r in ours(registry.registeredUtilities())
                 if r.provided is not zope.interface.interfaces.IInterface}
    handlers = [(r.factory, r.required)
                for r in ours(registry.registeredHandlers())]
    return adapters, utilities, handlers


class ZCMLTestCase(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-zcml-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        use_temporary_instance_uuid(self, self.tmpdir)
        self.gsm = zope.component.getGlobalSiteManager()

    def process(self, *lines):
        return zope.configuration.xmlconfig.string(site_zcml(*lines))

    def handlers(self):
        """The zc.async event handlers registered."""
        return [r.factory for r in ours(self.gsm.registeredHandlers())]


class ConfigureZCMLTests(ZCMLTestCase):

    def test_configure_zcml_registers_what_configure_minimal_does(self):
        self.process(INCLUDE)
        from_zcml = registrations(self.gsm)
        zope.component.testing.tearDown()
        zope.component.testing.setUp()
        zc.asynchronous.configure.minimal()
        self.assertEqual(registrations(self.gsm), from_zcml)

    def test_registrations_work(self):
        self.process(INCLUDE)
        job = interfaces.IJob(a_function)
        self.assertIsInstance(job, zc.asynchronous.job.Job)
        self.assertIs(job.callable, a_function)
        self.assertIsInstance(interfaces.IJob(len), zc.asynchronous.job.Job)
        self.assertEqual(zope.component.getUtility(interfaces.IUUID),
                         instanceuuid.UUID)
        db = ZODB.DB(None)
        self.addCleanup(db.close)
        conn = db.open()
        self.addCleanup(conn.close)
        self.assertIs(transaction.interfaces.ITransactionManager(conn),
                      conn.transaction_manager)
        self.assertIs(transaction.interfaces.ITransactionManager(conn.root()),
                      conn.transaction_manager)
        # No connection adapter (Zope sites have zope.keyreference's) ...
        self.assertIsNone(zope.component.queryAdapter(
            conn.root(), ZODB.interfaces.IConnection))
        # ... and no policy: no installer, no default-queue adapter.
        self.assertEqual(self.handlers(), [])
        self.assertIsNone(zope.component.queryAdapter(conn, interfaces.IQueue))

    def test_job_annotations_through_zope_annotation(self):
        self.process(INCLUDE)
        job = zc.asynchronous.job.Job(a_function)
        annotations = zope.annotation.interfaces.IAnnotations(job)
        self.assertIs(annotations, job.annotations)
        annotations['progress'] = 0.5
        self.assertEqual(job.annotations['progress'], 0.5)
        job.annotations['step'] = 'two'
        self.assertEqual(
            dict(zope.annotation.interfaces.IAnnotations(job)),
            {'progress': 0.5, 'step': 'two'})

    def test_dispatcher_zcml_adds_the_monitor_commands(self):
        self.process('<include package="zc.async" file="dispatcher.zcml" />')
        adapters, utilities, handlers = registrations(self.gsm)
        self.assertEqual(
            dict(zope.component.getUtilitiesFor(interfaces.IMonitorPlugin)),
            {'async': zc.asynchronous.monitor.async_,
             'asyncdb': zc.asynchronous.monitordb.asyncdb})
        zope.component.testing.tearDown()
        zope.component.testing.setUp()
        self.process(INCLUDE)
        self.assertEqual(registrations(self.gsm), (
            adapters,
            {u for u in utilities if u[1] is not interfaces.IMonitorPlugin},
            handlers))
        self.assertEqual(
            list(zope.component.getUtilitiesFor(interfaces.IMonitorPlugin)),
            [])

    def test_including_the_files_twice_is_harmless(self):
        self.process(INCLUDE, BASIC, INCLUDE,
                     '<include package="zc.async" file="dispatcher.zcml" />',
                     BASIC)
        self.assertEqual(len(self.handlers()), 3)


class PolicyTests(ZCMLTestCase):
    """What the policy files and ``async:policy`` register."""

    def queue_adapters(self):
        return sorted(r.required[0].__name__
                      for r in self.gsm.registeredAdapters()
                      if r.provided is interfaces.IQueue
                      and r.factory is zc.asynchronous.queue.getDefaultQueue)

    def test_basic_policy_registers_the_prebuilt_installers(self):
        self.process(INCLUDE, BASIC)
        self.assertEqual(self.handlers(), [
            subscribers.queue_installer,
            subscribers.threaded_dispatcher_installer,
            subscribers.agent_installer])
        required = [r.required
                    for r in ours(self.gsm.registeredHandlers())]
        self.assertEqual(required, [(interfaces.IDatabaseOpenedEvent,)] * 2
                         + [(interfaces.IDispatcherActivated,)])
        self.assertEqual(self.queue_adapters(),
                         ['IConnection', 'IPersistent'])

    def test_multidb_policy_keeps_the_queues_in_database_async(self):
        self.process(INCLUDE, MULTIDB)
        self.assertEqual(self.handlers(), [
            subscribers.multidb_queue_installer,
            subscribers.threaded_dispatcher_installer,
            subscribers.agent_installer])
        self.assertEqual(subscribers.multidb_queue_installer.db_name, 'async')
        self.assertEqual(self.queue_adapters(),
                         ['IConnection', 'IPersistent'])

    def test_policy_directive_with_settings_makes_new_installers(self):
        self.process('<include package="zc.async" file="dispatcher.zcml" />',
                     '<async:policy name="multidb" database="queues"'
                     ' poll_interval="0.5" agent_size="2" />')
        queue, dispatcher, agent = self.handlers()
        self.assertIsInstance(queue, subscribers.QueueInstaller)
        self.assertEqual((queue.db_name, queue.queues), ('queues', ('',)))
        self.assertIsInstance(dispatcher,
                              subscribers.ThreadedDispatcherInstaller)
        self.assertEqual(dispatcher.poll_interval, 0.5)
        self.assertIsInstance(agent, subscribers.AgentInstaller)
        self.assertEqual((agent.agent_name, agent.size, agent.chooser,
                          agent.filter), ('main', 2, None, None))
        self.assertNotIn(queue, (subscribers.queue_installer,
                                 subscribers.multidb_queue_installer))


class MonitorDirectiveTests(ZCMLTestCase):
    """``<async:monitor />`` registers a MonitorInstaller, last."""

    def test_registers_an_installer_after_the_policy_installers(self):
        self.process(INCLUDE, '<async:monitor port="8081" />', BASIC)
        handlers = self.handlers()
        self.assertEqual(handlers[:3], [
            subscribers.queue_installer,
            subscribers.threaded_dispatcher_installer,
            subscribers.agent_installer])
        installer = handlers[3]
        self.assertIsInstance(installer, monitorserver.MonitorInstaller)
        self.assertEqual((installer.port, installer.host),
                         (8081, '127.0.0.1'))
        self.assertEqual(len(handlers), 4)

    def test_another_host_only_when_configured(self):
        self.process(INCLUDE, '<async:monitor port="0" host="0.0.0.0" />')
        installer, = self.handlers()
        self.assertEqual((installer.port, installer.host), (0, '0.0.0.0'))


class BadConfigurationTests(ZCMLTestCase):
    """Mistakes fail while the ZCML is processed, and register nothing."""

    def assertFails(self, lines, *fragments,
                    error=zope.configuration.exceptions.ConfigurationError):
        with self.assertRaises(error) as caught:
            self.process(INCLUDE, *lines)
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertEqual(self.handlers(), [])
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        return message

    def test_unknown_policy(self):
        self.assertFails(
            ['<async:policy name="fancy" />'],
            "unknown zc.async dispatcher policy 'fancy'", "'basic'",
            "'multidb'", 'line 4')

    def test_multidb_policy_without_database_name(self):
        for line in ['<async:policy name="multidb" />',
                     '<async:policy name="multidb" database="" />']:
            self.assertFails(
                [line], 'the multidb zc.async dispatcher policy needs the'
                ' name of the database that holds the queues')

    def test_basic_policy_with_a_database_name(self):
        self.assertFails(
            ['<async:policy name="basic" database="async" />'],
            "database='async' is not allowed")

    def test_policy_without_name(self):
        self.assertFails(['<async:policy />'], 'name')

    def test_bad_settings(self):
        self.assertFails(['<async:policy name="basic" poll_interval="0" />'],
                         'poll_interval must be a number of seconds above 0')
        self.assertFails(['<async:policy name="basic" agent_size="0" />'],
                         'agent_size')
        self.assertFails(['<async:policy name="basic" poll_interval="x" />'],
                         'poll_interval')

    def test_bad_monitor_settings(self):
        self.assertFails(['<async:monitor />'], 'port')
        for port in ('x', '-1', '65536'):
            self.assertFails(['<async:monitor port="%s" />' % port], 'port')
        self.assertFails(['<async:monitor port="8081" host="" />'],
                         'the monitor host must be an address', 'line 4')

    def test_two_monitors_in_one_site_conflict(self):
        message = self.assertFails(
            ['<async:monitor port="8081" />', '<async:monitor port="8082" />'],
            error=zope.configuration.config.ConfigurationConflictError)
        self.assertIn("('zc.async', 'monitor')", message)

    def test_unknown_policy_file(self):
        self.assertFails(
            ['<include package="zc.async" file="fancy_policy.zcml" />'],
            'fancy_policy.zcml', error=Exception)

    def test_two_policies_in_one_site_conflict(self):
        message = self.assertFails(
            [BASIC, MULTIDB], 'basic_dispatcher_policy.zcml',
            'multidb_dispatcher_policy.zcml',
            error=zope.configuration.config.ConfigurationConflictError)
        self.assertIn("('zc.async', 'dispatcher policy')", message)


# ------------------------------------------------------------- start-up

def zope_conf(tmpdir, names):
    """``<zodb>`` sections as in zope.conf: main (unnamed), then ``names``.
    """
    sections = []
    for name in ('',) + tuple(names):
        sections.append('<zodb %s>\n  <filestorage>\n    path %s\n'
                        '  </filestorage>\n</zodb>\n' % (
                            name, os.path.join(tmpdir, (name or 'main')
                                               + '.fs')))
    return ''.join(sections)


class StartUpTests(ZCMLTestCase):
    """A site.zcml processed by zope.app.appsetup starts a dispatcher when
    the site's database opens."""

    def start(self, lines, names=()):
        """Configure the site, open its databases, fire DatabaseOpened."""
        path = os.path.join(self.tmpdir, 'site.zcml')
        with open(path, 'w') as f:
            f.write(site_zcml(*lines))
        appsetup.config(path)
        config, handler = ZConfig.loadConfigFile(
            ZODB.config.getDbSchema(),
            io.StringIO(zope_conf(self.tmpdir, names)))
        databases, by_name = appsetup.multi_database(config.database)
        for db in databases:
            self.addCleanup(db.close)
        self.dbs = by_name
        appsetup.database(databases[0])
        dispatcher = zc.asynchronous.dispatcher.get()
        if dispatcher is not None:
            self.addCleanup(zc.asynchronous.ops.cli.stop_dispatcher,
                            dispatcher)
        return dispatcher

    def open(self, name=''):
        tm = transaction.TransactionManager()
        conn = self.dbs[name].open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn

    def assertRunsJobs(self, dispatcher):
        """The dispatcher is active with agent 'main' and runs a job."""
        self.assertTrue(dispatcher.activated)
        self.assertEqual(dispatcher.UUID, instanceuuid.UUID)
        poll = zc.asynchronous.testing.get_poll(dispatcher, 0)
        self.assertEqual(poll, {'': {'main': {
            'active jobs': [], 'error': None, 'len': 0, 'new jobs': [],
            'size': 3}}})
        conn = self.open()
        queue = interfaces.IQueue(conn.root())
        self.assertIs(interfaces.IQueue(conn), queue)
        job = queue.put(zc.asynchronous.job.Job(operator.mul, 21, 2))
        conn.transaction_manager.commit()
        self.assertEqual(
            zc.asynchronous.testing.wait_for_result(job, DEADLINE), 42)
        return queue

    def test_basic_policy(self):
        dispatcher = self.start([INCLUDE, BASIC])
        queue = self.assertRunsJobs(dispatcher)
        self.assertEqual(queue._p_jar.db().database_name, '')
        self.assertEqual(dispatcher.poll_interval, 5)

    def test_monitor_directive_serves_the_dispatcher(self):
        dispatcher = self.start([
            INCLUDE, '<async:monitor port="0" />', BASIC,
            '<utility component="zc.async.tests.test_zcml.hello"'
            ' provides="zc.async.interfaces.IMonitorPlugin" name="hello" />'])
        self.assertRunsJobs(dispatcher)
        installer = self.handlers()[-1]
        address = installer.servers[dispatcher].getHost()
        self.assertEqual(address.host, '127.0.0.1')
        lines = session((address.host, address.port), 'async status',
                        'asyncdb count completed uuid:THIS', 'hello Zope',
                        'help').split('\n')
        status_end = lines.index('}')
        status = json.loads('\n'.join(lines[:status_end + 1]))
        self.assertEqual((status['status'], status['uuid']),
                         ('RUNNING', str(dispatcher.UUID)))
        self.assertEqual(lines[status_end + 1:status_end + 4], [
            '1', 'Hello, Zope!', 'Supported commands:'])
        self.assertIn('  async -- Monitor zc.async activity in this process.',
                      lines)
        self.assertIn('  hello -- Say hello (a monitor command of the '
                      "site's own).", lines)

    def test_multidb_policy_puts_the_queues_in_the_async_database(self):
        dispatcher = self.start([INCLUDE, MULTIDB], names=['async'])
        queue = self.assertRunsJobs(dispatcher)
        self.assertEqual(queue._p_jar.db().database_name, 'async')
        root = self.open().root()
        self.assertEqual(root[interfaces.KEY]._p_jar.db().database_name,
                         'async')
        self.assertEqual(
            list(self.open('async').root()[interfaces.KEY]), [''])

    def test_multidb_policy_without_the_async_database(self):
        with self.assertRaises(ValueError) as caught:
            self.start([INCLUDE, MULTIDB])
        self.assertIn("the zc.async queues belong in the database named"
                      " 'async'", str(caught.exception))
        self.assertIsNone(zc.asynchronous.dispatcher.get())
        self.assertNotIn(interfaces.KEY, self.open().root())

    def test_with_zope_app_appsetup_bootstrap(self):
        # zope.app.appsetup's bootstrap creates the root folder on
        # DatabaseOpened and then fires DatabaseOpenedWithRoot.
        events = []
        zope.event.subscribers.append(events.append)
        self.addCleanup(zope.event.subscribers.remove, events.append)
        dispatcher = self.start([
            INCLUDE,
            '<subscriber for="zope.processlifetime.IDatabaseOpened"'
            ' handler="zope.app.appsetup.bootstrap.bootStrapSubscriber" />',
            BASIC])
        self.assertRunsJobs(dispatcher)
        root = self.open().root()
        self.assertEqual(sorted(root), ['Application', interfaces.KEY])
        names = [type(event).__name__ for event in events]
        self.assertEqual(names.count('DatabaseOpenedWithRoot'), 1)
        self.assertEqual(names.count('DatabaseOpened'), 1)

    def test_a_second_start_reuses_the_queues(self):
        dispatcher = self.start([INCLUDE, BASIC])
        self.assertRunsJobs(dispatcher)
        zc.asynchronous.ops.cli.stop_dispatcher(dispatcher)
        conn = self.open()
        queues = conn.root()[interfaces.KEY]
        da = queues[''].dispatchers[dispatcher.UUID]
        self.assertFalse(da.activated)
        appsetup.database(self.dbs[''])
        again = zc.asynchronous.dispatcher.get()
        self.addCleanup(zc.asynchronous.ops.cli.stop_dispatcher, again)
        self.assertIsNot(again, dispatcher)
        zc.asynchronous.testing.get_poll(again, 0)
        conn.transaction_manager.begin()
        self.assertIs(conn.root()[interfaces.KEY], queues)
        self.assertTrue(da.activated)


# ------------------------------------------------------ process shutdown

PROCESS_SCRIPT = textwrap.dedent('''
    import io, os, signal, sys, time
    import ZConfig, ZODB.config
    import zope.app.appsetup.appsetup as appsetup
    import zc.asynchronous.dispatcher

    tmpdir, how = sys.argv[1:3]
    appsetup.config(os.path.join(tmpdir, 'site.zcml'))
    config, handler = ZConfig.loadConfigFile(
        ZODB.config.getDbSchema(), open(os.path.join(tmpdir, 'zope.conf')))
    databases, by_name = appsetup.multi_database(config.database)
    appsetup.database(databases[0])
    dispatcher = zc.asynchronous.dispatcher.get()
    deadline = time.monotonic() + float(sys.argv[3])
    while not dispatcher.polls and time.monotonic() < deadline:
        time.sleep(0.01)
    print('polled', bool(dispatcher.polls), flush=True)
    if how == 'signal':
        time.sleep(float(sys.argv[3]))  # until the test sends SIGTERM
    print('exiting', flush=True)
''')


class ProcessShutdownTests(unittest.TestCase):
    """A Zope process started by the policy deactivates its dispatcher
    when it exits or is terminated (real processes)."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-zcml-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        with open(os.path.join(self.tmpdir, 'site.zcml'), 'w') as f:
            f.write(site_zcml(INCLUDE, BASIC))
        with open(os.path.join(self.tmpdir, 'zope.conf'), 'w') as f:
            f.write(zope_conf(self.tmpdir, ()))

    def run_site(self, how):
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [SRC] + [p for p in [env.get('PYTHONPATH')] if p])
        env[instanceuuid.key] = os.path.join(self.tmpdir, 'uuid.txt')
        err = tempfile.TemporaryFile('w+')
        self.addCleanup(err.close)
        process = subprocess.Popen(
            [sys.executable, '-c', PROCESS_SCRIPT, self.tmpdir, how,
             str(DEADLINE)],
            cwd=self.tmpdir, env=env, stdout=subprocess.PIPE, stderr=err,
            text=True)
        self.addCleanup(process.stdout.close)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        self.assertEqual(process.stdout.readline(), 'polled True\n')
        if how == 'signal':
            process.send_signal(signal.SIGTERM)
        out = process.stdout.read()
        process.wait(DEADLINE)
        err.seek(0)
        return process.returncode, out, err.read()

    def dispatcher_agents(self):
        db = ZODB.config.databaseFromString(zope_conf(self.tmpdir, ()))
        self.addCleanup(db.close)
        conn = db.open()
        self.addCleanup(conn.close)
        uuid = instanceuuid.getUUID(os.path.join(self.tmpdir, 'uuid.txt'))
        return conn.root()[interfaces.KEY][''].dispatchers[uuid]

    def test_normal_exit_deactivates_the_dispatcher(self):
        returncode, out, err = self.run_site('exit')
        self.assertEqual((returncode, out), (0, 'exiting\n'), err)
        da = self.dispatcher_agents()
        self.assertFalse(da.activated)
        self.assertEqual(list(da), ['main'])

    def test_sigterm_deactivates_the_dispatcher(self):
        returncode, out, err = self.run_site('signal')
        self.assertEqual((returncode, out), (0, ''), err)
        self.assertFalse(self.dispatcher_agents().activated)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
