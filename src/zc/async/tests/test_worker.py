"""The ``zc-async worker`` command, run as a real process.

Bad input must end the process with exit code 2 and one clear line on
stderr (no traceback); good input runs a dispatcher against FileStorage,
ZEO (URI or ZConfig file) until SIGTERM, which exits 0 after a clean
deactivation.
"""
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.POSException
import ZODB.utils

from zc.asynchronous import interfaces
from zc.asynchronous import worker
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.test_monitorserver import session


def run_command(*args, timeout=120, cwd=None):
    """Run ``python -m zc.async.worker ARGS`` to completion; return
    (exit code, stderr text)."""
    done = subprocess.run(
        [sys.executable, '-m', 'zc.async.worker', *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=timeout, cwd=cwd,
        env=processes.subprocess_env())
    return done.returncode, done.stderr.decode()


class BadInputTests(unittest.TestCase):
    """Each start-up problem: exit code 2, the reason on stderr's last
    line, and no traceback."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-worker-')
        self.uuid_file = os.path.join(self.directory, 'uuid.txt')

    def tearDown(self):
        shutil.rmtree(self.directory)

    def assertFails(self, expected, *args):
        rc, stderr = run_command(
            *args, '--uuid-file', self.uuid_file, cwd=self.directory)
        self.assertEqual(rc, worker.EXIT_ERROR, stderr)
        self.assertNotIn('Traceback', stderr)
        last = stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith('zc-async worker: error: '), last)
        self.assertIn(expected, last)
        return last

    def test_unknown_scheme(self):
        self.assertFails("unknown database URI scheme 'nosuch'",
                         'nosuch://somewhere')

    def test_postgresql(self):
        uri = 'postgres://postgres@127.0.0.1:%d/db' % processes.free_port()
        try:
            import relstorage  # noqa: F401
        except ImportError:
            self.assertFails('install RelStorage', uri)
        else:  # nothing listens there
            self.assertFails('cannot open database %r: OperationalError'
                             % uri, uri, '--connect-timeout', '1')

    def test_unreachable_zeo(self):
        uri = 'zeo://127.0.0.1:%d' % processes.free_port()
        last = self.assertFails('cannot open database %r' % uri,
                                uri, '--connect-timeout', '1')
        self.assertIn('timed out waiting for connection', last)

    def test_missing_zconfig_file(self):
        path = os.path.join(self.directory, 'nosuch.conf')
        self.assertFails('no such ZConfig file %r' % path, path)

    def test_broken_zconfig_file(self):
        path = os.path.join(self.directory, 'broken.conf')
        with open(path, 'w') as f:
            f.write('<zodb>\n  <filestorage>\n')
        self.assertFails('cannot open database %r' % path, path)

    def test_file_storage_in_missing_directory(self):
        uri = 'file://%s/nosuch/Data.fs' % self.directory
        self.assertFails('no FileStorage file %r' % (
            os.path.join(self.directory, 'nosuch', 'Data.fs'),), uri)
        self.assertFails('cannot open database %r' % uri, uri, '--install')

    def test_corrupt_uuid_file(self):
        with open(self.uuid_file, 'w') as f:
            f.write('not a uuid\n')
        self.assertFails("should start with a UUID line, found 'not a uuid'",
                         'file://%s/Data.fs' % self.directory)

    def test_module_that_cannot_be_imported(self):
        self.assertFails(
            "cannot import 'zc.async.tests.nosuchmodule' (--import)",
            'file://%s/Data.fs' % self.directory,
            '--import', 'zc.async.tests.nosuchmodule')

    def test_a_busy_monitor_port(self):
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen()
            port = busy.getsockname()[1]
            last = self.assertFails(
                'cannot start the monitor on 127.0.0.1:%d: ' % port,
                'file://%s/Data.fs' % self.directory, '--install',
                '--log-file', os.path.join(self.directory, 'log'),
                '--monitor-port', str(port))
        self.assertIn('Address already in use', last)

    def test_bad_option_values(self):
        for option, value in [('--poll-interval', '0'),
                              ('--agent-size', '-1'),
                              ('--batch-size', '0'),
                              ('--monitor-port', '65536'),
                              ('--log-level', 'LOUD')]:
            rc, stderr = run_command('file:///tmp/x', option, value)
            self.assertEqual(rc, 2, stderr)
            self.assertIn(option, stderr)
            self.assertNotIn('Traceback', stderr)

    def test_a_count_that_is_not_a_number(self):
        rc, stderr = run_command('file:///tmp/x', '--batch-size', 'ten')
        self.assertEqual(rc, 2, stderr)
        self.assertIn("--batch-size: expected an integer greater than 0, "
                      "got 'ten'", stderr)


class OpenDatabaseTests(unittest.TestCase):
    """``open_database`` in-process: URIs and ZConfig files."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-worker-')

    def tearDown(self):
        shutil.rmtree(self.directory)

    def test_file_uri(self):
        db = worker.open_database('file://%s/Data.fs' % self.directory,
                                  create=True)
        try:
            self.assertIsInstance(db.storage, ZODB.FileStorage.FileStorage)
        finally:
            db.close()

    def test_zconfig_file_with_zodb_section(self):
        path = os.path.join(self.directory, 'db.conf')
        with open(path, 'w') as f:
            f.write('<zodb>\n  pool-size 11\n  <filestorage>\n'
                    '    path %s/Data.fs\n  </filestorage>\n</zodb>\n'
                    % self.directory)
        db = worker.open_database(path)
        try:
            self.assertEqual(db.getPoolSize(), 11)
            self.assertIsInstance(db.storage, ZODB.FileStorage.FileStorage)
        finally:
            db.close()

    def test_a_root_another_process_created_meanwhile(self):
        # Two workers that open an empty database together both find no
        # root object and both store one: the second commit conflicts.
        # The open is made again, and finds the other's root.
        path = os.path.join(self.directory, 'Data.fs')
        ZODB.DB(ZODB.FileStorage.FileStorage(path)).close()  # the other's
        storages = []

        def opener():
            storage = ZODB.FileStorage.FileStorage(path)
            if not storages:  # this process looked before the other's commit
                storage.loadBefore = _without_root(storage.loadBefore)
                storage.load = _without_root(storage.load)
            storages.append(storage)
            try:
                return ZODB.DB(storage)
            except BaseException:
                storage.close()
                raise
        db = worker._open(opener, path)
        try:
            self.assertEqual(len(storages), 2)
            self.assertTrue(storages[0]._file.closed)  # not left open
            self.assertEqual(len(db.storage), 1)  # one root, the other's
        finally:
            db.close()

    def test_other_conflicts_while_opening_are_errors(self):
        def opener():
            raise ZODB.POSException.ConflictError(oid=ZODB.utils.p64(7))
        with self.assertRaises(worker.WorkerError) as caught:
            worker._open(opener, 'db')
        self.assertIn("cannot open database 'db': ConflictError",
                      str(caught.exception))

    def test_connect_timeout_added_to_server_uris_only_when_missing(self):
        add = worker._with_connect_timeout
        self.assertEqual(add('zeo://h:1', 7), 'zeo://h:1?wait_timeout=7')
        self.assertEqual(add('zeo://h:1?storage=a', 7),
                         'zeo://h:1?storage=a&wait_timeout=7')
        self.assertEqual(add('zeo://h:1?wait_timeout=3', 7),
                         'zeo://h:1?wait_timeout=3')
        self.assertEqual(add('postgres://u@h:1/db', 7),
                         'postgres://u@h:1/db?connect_timeout=7')
        self.assertEqual(add('postgres://u@h:1/db?connect_timeout=2', 7),
                         'postgres://u@h:1/db?connect_timeout=2')
        self.assertEqual(add('file:///x', 7), 'file:///x')


def _without_root(load):
    """``load`` as it answered before another process stored the root."""
    def load_without_root(oid, *args):
        if oid == ZODB.utils.z64:
            raise ZODB.POSException.POSKeyError(oid)
        return load(oid, *args)
    return load_without_root


def put_jobs(db, count, queue_name=''):
    """Create the queues if needed and put ``count`` quick jobs; return
    their oids."""
    from zc.asynchronous import job, queue
    from zc.asynchronous.tests import jobs_for_processes
    import BTrees.Length
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    if interfaces.KEY not in root:
        root[interfaces.KEY] = queue.Queues()
    queues = root[interfaces.KEY]
    if queue_name not in queues:
        queues[queue_name] = queue.Queue()
        tm.commit()  # a queue must be stored before jobs are put
    jobs = [queues[queue_name].put(job.Job(
        jobs_for_processes.double, BTrees.Length.Length(), n))
        for n in range(count)]
    tm.commit()
    oids = [j._p_oid for j in jobs]
    conn.close()
    return oids


def check_jobs(testcase, db, oids):
    """Every job completed once, with the right result."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        for oid in oids:
            job = conn.get(oid)
            testcase.assertEqual(job.status, interfaces.COMPLETED, job)
            testcase.assertEqual(job.result, 2 * job.args[1], job)
            testcase.assertEqual(job.args[0].value, 1, job)
    finally:
        conn.close()


class FileStorageWorkerTests(unittest.TestCase):
    """A worker owning a FileStorage runs the jobs already in it."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-worker-')
        self.path = os.path.join(self.directory, 'Data.fs')
        self.addCleanup(shutil.rmtree, self.directory)

    def test_runs_jobs_then_stops_cleanly_on_sigterm(self):
        db = ZODB.DB(self.path)
        oids = put_jobs(db, 3)
        db.close()
        w = processes.WorkerProcess(
            'file://' + self.path, self.directory, 'w', '--poll-interval',
            '0.2').start()
        self.addCleanup(w.kill)
        # The FileStorage is locked by the worker: watch its log instead.
        processes.wait_for(lambda: w.log.count('completed in thread') >= 3,
                           message='three completed jobs in %s' % w.log_path)
        self.assertEqual(w.stop(), 0, w.log)
        db = ZODB.DB(self.path)
        try:
            check_jobs(self, db, oids)
            conn = db.open()
            da = conn.root()[interfaces.KEY][''].dispatchers[w.uuid]
            self.assertFalse(da.activated)
            self.assertEqual(da['main'].size, 3)
            conn.close()
        finally:
            db.close()


class MonitorWorkerTests(unittest.TestCase):
    """``zc-async worker --monitor-port``: the monitor over a real socket.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-worker-')
        self.path = os.path.join(self.directory, 'Data.fs')
        self.addCleanup(shutil.rmtree, self.directory)

    def test_the_worker_serves_the_monitor(self):
        db = ZODB.DB(self.path)
        put_jobs(db, 2)
        db.close()
        # No agent: the jobs stay pending for asyncdb to count.
        w = processes.WorkerProcess(
            'file://' + self.path, self.directory, 'w', '--no-agent',
            '--poll-interval', '0.2', '--monitor-port', '0').start()
        self.addCleanup(w.kill)
        port = int(processes.wait_for(lambda: re.search(
            r'monitor for dispatcher %s listening on 127\.0\.0\.1:(\d+)'
            % (w.uuid,), w.log), message='monitor in ' + w.log_path
        ).group(1))
        lines = session(('127.0.0.1', port), 'async status',
                        'asyncdb count pending').split('\n')
        status_end = lines.index('}')
        status = json.loads('\n'.join(lines[:status_end + 1]))
        self.assertEqual(status['uuid'], str(w.uuid))
        self.assertIn(status['status'], ('STARTING', 'RUNNING'))
        self.assertEqual(status['poll interval'], {'seconds': 0.2})
        self.assertEqual(lines[status_end + 1:], ['2', ''])
        self.assertEqual(w.stop(), 0, w.log)

    def test_monitor_options(self):
        args = worker.build_parser().parse_args(
            ['file:///x', '--monitor-port', '8081', '--monitor-host',
             '0.0.0.0'])
        self.assertEqual((args.monitor_port, args.monitor_host),
                         (8081, '0.0.0.0'))
        args = worker.build_parser().parse_args(['file:///x'])
        self.assertEqual((args.monitor_port, args.monitor_host),
                         (None, '127.0.0.1'))


class ZEOWorkerTests(unittest.TestCase):
    """Workers against a real ZEO server."""

    layer = processes.ZEOLayer

    def setUp(self):
        self.server = processes.ZEOLayer.server
        self.directory = tempfile.mkdtemp(prefix='zc.async-worker-')
        self.db = self.server.open_db()

    def tearDown(self):
        self.db.close()
        shutil.rmtree(self.directory)

    def test_install_options_and_sigterm(self):
        w = processes.WorkerProcess(
            self.server.uri, self.directory, 'w', '--install',
            '--queue', '', '--queue', 'reports', '--agent-name', 'crew',
            '--agent-size', '2', '--batch-size', '3', '--poll-interval', '0.2',
            '--ping-interval', '2', '--ping-death-interval', '7').start()

        wait_installed(self.db, w, ['', 'reports'], 'crew')
        oids = put_jobs(self.db, 4) + put_jobs(self.db, 2, 'reports')
        processes.wait_for_db(
            self.db, lambda root: _all_completed(root, oids),
            message='all jobs completed')
        check_jobs(self, self.db, oids)
        self.assertEqual(w.stop(), 0, w.log)
        processes.wait_for_db(self.db, lambda root: not any(
            q.dispatchers[w.uuid].activated
            for q in root[interfaces.KEY].values()), message='deactivation')
        conn = self.db.open(transaction.TransactionManager())
        try:
            for q in conn.root()[interfaces.KEY].values():
                da = q.dispatchers[w.uuid]
                self.assertFalse(da.activated)
                self.assertEqual(da['crew'].size, 2)
                self.assertEqual(da['crew'].batch_size, 3)
                self.assertEqual(da.ping_interval.total_seconds(), 2)
                self.assertEqual(da.ping_death_interval.total_seconds(), 7)
        finally:
            conn.close()

    def test_zconfig_file_with_zeoclient(self):
        path = os.path.join(self.directory, 'zeo.conf')
        with open(path, 'w') as f:
            f.write('<zodb>\n  <zeoclient>\n    server 127.0.0.1:%d\n'
                    '  </zeoclient>\n</zodb>\n' % self.server.port)
        w = processes.WorkerProcess(
            path, self.directory, 'w', '--install', '--poll-interval',
            '0.2').start()
        wait_installed(self.db, w, [''], 'main')
        oids = put_jobs(self.db, 2)
        processes.wait_for_db(
            self.db, lambda root: _all_completed(root, oids),
            message='all jobs completed')
        check_jobs(self, self.db, oids)
        self.assertEqual(w.stop(signal.SIGINT), 0, w.log)
        processes.wait_for_db(
            self.db, lambda root: not root[interfaces.KEY][''].dispatchers[
                w.uuid].activated, message='deactivation')

    def test_without_install_waits_for_queues(self):
        w = processes.WorkerProcess(
            self.server.uri, self.directory, 'w', '--poll-interval',
            '0.2').start()
        processes.wait_for(lambda: 'queues yet' in w.log,
                           message='the no-queues warning')
        oids = put_jobs(self.db, 2)
        processes.wait_for_db(
            self.db, lambda root: _all_completed(root, oids),
            message='all jobs completed')
        self.assertEqual(w.stop(), 0, w.log)


def wait_installed(db, w, queue_names, agent_name):
    """Wait until worker ``w`` runs in exactly these queues, with its
    agent."""
    def installed(root):
        queues = root.get(interfaces.KEY, {})
        return sorted(queues) == sorted(queue_names) and all(
            w.uuid in q.dispatchers and q.dispatchers[w.uuid].activated
            and agent_name in q.dispatchers[w.uuid] for q in queues.values())
    processes.wait_for_db(db, installed, message='installed queues')


def _all_completed(root, oids):
    conn = root._p_jar
    return all(conn.get(oid).status == interfaces.COMPLETED for oid in oids)


class CommandTests(unittest.TestCase):
    """``zc-async worker`` is a subcommand of the ``zc-async`` command."""

    def test_worker_subcommand(self):
        from zc.asynchronous.ops import cli
        args = cli.build_parser().parse_args(
            ['worker', 'zeo://127.0.0.1:8100', '--queue', '', '--queue', 'x',
             '--agent-size', '2', '--import', 'a.b', '--no-agent'])
        self.assertIs(args.run, worker.worker_main)
        self.assertEqual(args.database, 'zeo://127.0.0.1:8100')
        self.assertEqual(args.queues, ['', 'x'])
        self.assertEqual(args.agent_size, 2)
        self.assertEqual(args.imports, ['a.b'])
        self.assertFalse(args.agent)
        self.assertEqual(args.poll_interval, 5)
        self.assertEqual(args.agent_name, 'main')
        self.assertEqual(args.connect_timeout, worker.DEFAULT_CONNECT_TIMEOUT)

    def test_cli_reports_bad_input_like_the_module(self):
        from zc.asynchronous.ops import cli
        directory = tempfile.mkdtemp(prefix='zc.async-worker-')
        self.addCleanup(shutil.rmtree, directory)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli.main(['worker', 'nosuch://x', '--uuid-file',
                           os.path.join(directory, 'uuid.txt'),
                           '--log-file', os.path.join(directory, 'log')])
        self.assertEqual(rc, worker.EXIT_ERROR)
        self.assertEqual(
            err.getvalue(), "zc-async worker: error: unknown database URI "
            "scheme 'nosuch' in 'nosuch://x'\n")


class RelStorageWorkerTests(unittest.TestCase):
    """A worker on PostgreSQL through RelStorage, when a private
    PostgreSQL server can run here."""

    layer = processes.PostgreSQLLayer

    def setUp(self):
        if processes.PostgreSQLLayer.unavailable:
            self.skipTest(processes.PostgreSQLLayer.unavailable)
        self.server = processes.PostgreSQLLayer.server
        self.directory = tempfile.mkdtemp(prefix='zc.async-worker-')
        self.db = self.server.open_db(processes.PostgreSQLLayer.dbname)

    def tearDown(self):
        self.db.close()
        shutil.rmtree(self.directory)

    def test_install_run_and_sigterm(self):
        w = processes.WorkerProcess(
            self.server.uri(processes.PostgreSQLLayer.dbname),
            self.directory, 'w', '--install', '--poll-interval', '0.2').start()
        wait_installed(self.db, w, [''], 'main')
        oids = put_jobs(self.db, 3)
        processes.wait_for_db(
            self.db, lambda root: _all_completed(root, oids),
            message='all jobs completed')
        check_jobs(self, self.db, oids)
        self.assertEqual(w.stop(), 0, w.log)
        processes.wait_for_db(
            self.db, lambda root: not root[interfaces.KEY][''].dispatchers[
                w.uuid].activated, message='deactivation')
