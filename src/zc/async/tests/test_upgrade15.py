"""The real 1.5 database, upgraded as docs/upgrading.rst says, then served.

The database is one that zc.async 1.5.4 made on Python 2.7 (see
``data/zc.async-1.5-database``: its README.md, the script that made it and
manifest.json; :func:`find_database` says where the database itself is
found).  Each test copies it,
runs the two documented commands as real processes (zodbupdate's console
script, then ``zc-async upgrade``), and starts a real ``zc-async worker``
keeping the 1.5 dispatcher's UUID file (an in-place upgrade) or with a new
one.  The pending jobs must then end with the results the manifest lists,
the job the killed 1.5 process left ACTIVE must run again (1.5's rule: an
interrupted job is retried), and the 1.5 jobs, failures included, must be
readable through the API, ``zc-async jobs``/``job``, the monitor and the
dashboard's JSON API.
"""
import datetime
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import ZODB
import ZODB.FileStorage
import ZODB.utils

from zc.asynchronous import interfaces
from zc.asynchronous import monitordb
from zc.asynchronous import utils
from zc.asynchronous.ops import webapi
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.test_monitorserver import session

DATA = os.path.join(os.path.dirname(__file__), 'data',
                    'zc.async-1.5-database')
DATABASE_VARIABLE = 'ZC_ASYNC_15_DATABASE'


def find_database():
    """The path of the 1.5 ``Data.fs``, or None.

    A database is data, not source, so the checkout holds only the files
    that describe it (``DATA``).  ``$ZC_ASYNC_15_DATABASE`` names the
    database; without it, the project's read-only copy is looked for in a
    folder beside the checkout or above it
    (``shared/data/zc.async-1.5-database/Data.fs``).
    """
    named = os.environ.get(DATABASE_VARIABLE)
    if named:
        return named
    folder = os.path.dirname(os.path.abspath(__file__))
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        path = os.path.join(folder, 'shared', 'data',
                            'zc.async-1.5-database', 'Data.fs')
        if os.path.isfile(path):
            return path
    return None


DATABASE = find_database()
with open(os.path.join(DATA, 'manifest.json')) as f:
    MANIFEST = json.load(f)
OLD_UUID = MANIFEST['dispatcher']['uuid']
ACTIVE_OID = int(MANIFEST['active']['oid'], 16)
CREATED = datetime.datetime.fromisoformat(MANIFEST['created_at_utc'])

# What the manifest's "expected" texts say, as Python 3 values.  A
# callable checks the job itself.
PENDING_RESULTS = {
    'add_now': 3,
    'future_6min': 'hello later',
    'future_20min': 101,
    'annotations': ('ann', {'jobs15.note': 'a note', 'jobs15.n': 7}),
    'quota_0': 'quota 0',
    'quota_1': 'quota 1',
    'quota_2': 'quota 2',
    'persistent_datetime_args': ('c2', 5, '2021-02-03T04:05:06+00:00'),
    'persistent_kw_datetime': ('c1', 11, '2022-03-04T05:06:07'),
    'with_callbacks': 10,
    'serial_pending': [20, 40],
    'parallel_pending': [2, 4],
}
PENDING_CALLBACKS = {
    'with_callbacks': ('success-callback', 10),
    'failing_with_callbacks': ('failure-callback', 'boom: later'),
}
# The 1.5 results (manifest's result_repr), as Python 3 values.
COMPLETED_RESULTS = {
    'add': 42,
    'greet_bytes': 'hello world',
    'greet_unicode': 'hello w\xf6rld',
    'dict': {'raw': b'\xff\x00bin', 'name': 'answer', 'n': 42,
             'when': datetime.datetime(2024, 5, 6, 7, 8, 9,
                                       tzinfo=datetime.timezone.utc)},
    'cb_success': 42,
    'cb_plain': 2,
    'serial': [2, 4],
    'parallel': [6, 8, 10],
    'persistent_arg': ('c1', 1, '2024-01-02T03:04:05'),
}
COMPLETED_FAILURES = {'fail': 'boom: expected', 'cb_failure': 'boom: cb'}
COMPLETED_CALLBACKS = {
    'cb_success': ('success-callback', 42),
    'cb_failure': ('failure-callback', 'boom: cb'),
    'cb_plain': 4,
}


def oid_of(name, section):
    return int(MANIFEST[section][name]['oid'], 16)


def script(name):
    """A console script of this environment (next to its Python)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):
        raise RuntimeError('%s not found next to %s: install the upgrade '
                           'extra' % (name, sys.executable))
    return path


def app_env(app=True):
    """Child processes import this checkout and (unless ``app`` is false)
    the 1.5 jobs' module."""
    return processes.subprocess_env(PYTHONPATH=os.pathsep.join(
        [processes.SRC_DIR] + [DATA] * app))


class Upgrade15TestCase(unittest.TestCase):
    """A copy of the 1.5 database in a temporary directory."""

    def setUp(self):
        if DATABASE is None:
            self.skipTest('the 1.5 database was not found: set $%s to the '
                          'path of its Data.fs' % DATABASE_VARIABLE)
        self.directory = tempfile.mkdtemp(prefix='zc.async-upgrade15-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, 'Data.fs')
        shutil.copyfile(DATABASE, self.path)
        self.uri = 'file://' + self.path
        # The test process loads the jobs too.
        sys.path.insert(0, DATA)
        self.addCleanup(sys.modules.pop, 'jobs15', None)
        self.addCleanup(sys.path.remove, DATA)

    def run_command(self, *argv, app=True):
        """Run ``argv`` in the database's directory; (exit code, stdout,
        stderr)."""
        done = subprocess.run(
            argv, cwd=self.directory, env=app_env(app), timeout=300,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    def zodbupdate(self):
        """Step 1, word for word."""
        code, out, err = self.run_command(
            script('zodbupdate'), '--convert-py3', '--encoding', 'utf-8',
            '--file', 'Data.fs')
        self.assertEqual(code, 0, out + err)
        self.assertIn('rename rules from zc.asynchronous.upgrade:RENAMES',
                      err)
        return err

    def zc_async(self, *args, app=True):
        return self.run_command(script('zc-async'), *args, app=app)

    def upgrade(self, *options):
        """Step 2; its report."""
        code, out, err = self.zc_async('upgrade', self.uri, '--import',
                                       'jobs15', *options)
        self.assertEqual((code, err), (0, ''), out)
        return out

    def read(self, func):
        """``func(root)``, in a read-only view of the database now."""
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path, read_only=True))
        try:
            conn = db.open()
            return func(conn.root())
        finally:
            db.close()

    def job(self, root, oid):
        return root._p_jar.get(ZODB.utils.p64(oid))


class UpgradeCommandTests(Upgrade15TestCase):
    """``zc-async upgrade`` on the real database: the report, --check,
    idempotence, what cannot be loaded."""

    def test_check_then_upgrade_then_nothing_more(self):
        self.zodbupdate()
        size = os.path.getsize(self.path)
        code, out, err = self.zc_async('upgrade', self.uri, '--import',
                                       'jobs15', '--check')
        self.assertEqual((code, err), (1, ''), out)
        where = "agent 'main' of dispatcher %s in queue ''" % (OLD_UUID,)
        self.assertEqual(out.splitlines(), [
            "queue '': 14 pending jobs",
            "dispatcher %s in queue '': activated 2026-12-07T10:29:21.616238"
            "+00:00, last ping 2026-12-07T10:29:21.618976+00:00, dead"
            % (OLD_UUID,),
            "%s holds job %d (0x%x) (active-status): its retry policy "
            "decides (1.5 retries an interrupted job) when a worker finds "
            "this dispatcher dead or reuses its UUID"
            % (where, ACTIVE_OID, ACTIVE_OID),
            "would convert: %s: 1.5's completed-job store, 18 jobs re-keyed"
            % (where,),
            '%s: 18 completed jobs (2 failed)' % (where,),
            '1 conversion needed; nothing was committed (--check)'])
        self.assertEqual(os.path.getsize(self.path), size)

        out = self.upgrade()
        self.assertIn("converted: %s: 1.5's completed-job store, 18 jobs "
                      're-keyed' % (where,), out)
        self.assertTrue(out.endswith('1 conversion committed\n'), out)
        size = os.path.getsize(self.path)

        out = self.upgrade()
        self.assertNotIn('convert', out.replace('nothing to convert', ''))
        self.assertTrue(out.endswith('nothing to convert\n'), out)
        self.assertEqual(os.path.getsize(self.path), size)
        code, out, err = self.zc_async('upgrade', self.uri, '--check',
                                       app=False)
        self.assertEqual(code, 1, out + err)  # jobs15 cannot be imported
        self.assertIn('nothing to convert', out)

    def test_refuses_a_database_that_zodbupdate_did_not_convert(self):
        code, out, err = self.zc_async('upgrade', self.uri)
        self.assertEqual((code, out), (2, ''), err)
        self.assertEqual(err, (
            'zc-async upgrade: error: %s is a Python 2 FileStorage: convert '
            'it first with "zodbupdate --convert-py3 --encoding utf-8 --file '
            '%s" (see the chapter "Upgrading a 1.5 database")\n'
            % (self.path, self.path)))
        with open(self.path, 'rb') as copy, open(DATABASE, 'rb') as original:
            self.assertEqual(copy.read(), original.read())

    def test_reports_a_zodbupdate_without_encoding(self):
        code, out, err = self.run_command(
            script('zodbupdate'), '--convert-py3', '--file', 'Data.fs')
        self.assertNotEqual(code, 0, out + err)
        self.assertIn('Stopped processing', err)
        code, out, err = self.zc_async('upgrade', self.uri, '--json')
        self.assertEqual(code, 1, out + err)
        report = json.loads(out)
        self.assertTrue(report['unloadable'])
        for line in report['unloadable']:
            self.assertIn('StateLoadError:  (UnicodeDecodeError: ', line)
        code, out, err = self.zc_async('upgrade', self.uri)
        self.assertIn('zodbupdate failed: start again from the backup', out)

    def test_reports_what_cannot_be_loaded(self):
        self.zodbupdate()
        code, out, err = self.zc_async('upgrade', self.uri, '--json',
                                       app=False)
        self.assertEqual((code, err), (1, ''), out)
        report = json.loads(out)
        self.assertEqual(report['conversions'], 1)
        self.assertIn(
            "pending in queue '': job %d (0x%x): callable is jobs15.add, "
            'which cannot be imported' % (oid_of('add_now', 'pending'),
                                          oid_of('add_now', 'pending')),
            report['unloadable'])
        self.assertIn(
            "pending in queue '': job 208 (0xd0): argument 0 is "
            'jobs15.Counter, which cannot be imported', report['unloadable'])
        # The completed jobs cannot be stored again: they stay in 1.5's
        # store until a run that loads them.
        where = "agent 'main' of dispatcher %s in queue ''" % (OLD_UUID,)
        self.assertIn(
            "converted: %s: 1.5's completed-job store, 0 jobs re-keyed (18 "
            'that cannot be loaded stay in the 1.5 store, unread, until a '
            'run that can load them)' % (where,), report['lines'])
        self.assertIn(
            'completed by %s: job 33 (0x21): callable is jobs15.add, which '
            'cannot be imported' % (where,), report['unloadable'])
        out = self.upgrade()
        self.assertIn(
            "converted: %s: 1.5's completed-job store, 18 jobs re-keyed\n"
            % (where,), out)
        out = self.upgrade()
        self.assertTrue(out.endswith('nothing to convert\n'), out)

    def test_readers_work_before_zc_async_upgrade(self):
        # Step 2 forgotten: the tools still work; 1.5's completed jobs are
        # not listed until it runs, but each can be described.
        self.zodbupdate()

        def check(root):
            conn = root._p_jar
            overview = webapi.overview(conn)
            self.assertEqual(overview['queues']['']['counts']['pending'], 14)
            self.assertEqual(overview['queues']['']['counts']['completed'],
                             0)
            summary = monitordb.job(conn, oid_of('fail', 'completed'))
            self.assertTrue(summary['failed'])
            self.assertEqual(str(summary['initial callbacks end']),
                             '2026-12-07 10:29:23.652705+00:00')
        self.read(check)
        code, out, err = self.zc_async('jobs', self.uri)
        self.assertEqual((code, err), (0, ''), out)
        self.assertIn('active', out)

    def test_the_api_reads_the_upgraded_database(self):
        self.zodbupdate()
        self.upgrade()

        def check(root):
            for name, expected in COMPLETED_RESULTS.items():
                job = self.job(root, oid_of(name, 'completed'))
                self.assertEqual(job.status, interfaces.COMPLETED)
                self.assertEqual(job.result, expected, name)
            for name, message in COMPLETED_FAILURES.items():
                failure = self.job(root, oid_of(name, 'completed')).result
                self.assertIs(failure.check(ValueError), ValueError)
                self.assertIsNone(failure.check(KeyError))
                self.assertEqual(failure.getErrorMessage(), message)
                text = failure.getTraceback()
                self.assertTrue(text.startswith(
                    'Traceback (most recent call last):\n'), text)
                self.assertIn('/srv/zc15/apps/jobs15.py", line 43, in fail',
                              text)
                self.assertTrue(text.endswith(
                    'builtins.ValueError: %s\n' % (message,)), text)
            for name, expected in COMPLETED_CALLBACKS.items():
                job = self.job(root, oid_of(name, 'completed'))
                self.assertEqual([cb.result for cb in job.callbacks],
                                 [expected])
            # Keys and times as zc.async 2 reads them.
            agent = root[interfaces.KEY][''].dispatchers[
                list(root[interfaces.KEY][''].dispatchers)[0]]['main']
            self.assertEqual(len(agent.completed), 18)
            ends = [job.initial_callbacks_end for job in agent.completed]
            self.assertEqual(ends, sorted(ends, reverse=True))
            first = self.job(root, oid_of('add', 'completed'))
            self.assertEqual(str(first.initial_callbacks_end),
                             '2026-12-07 10:29:22.628327+00:00')
            self.assertEqual(
                monitordb.count(root._p_jar, 'failed'), 2)
            self.assertEqual(
                monitordb.count(root._p_jar, 'completed'), 18)
            summary = monitordb.job(root._p_jar, oid_of('fail', 'completed'))
            self.assertTrue(summary['failed'])
            self.assertIn('ValueError', summary['result'])
        self.read(check)


class UpgradedWorker(processes.WorkerProcess):
    """A worker on the upgraded database, in its directory (where the
    1.5 ``slow`` job writes its marker), importing the 1.5 jobs."""

    def __init__(self, uri, directory, uuid_file=None, *options):
        super().__init__(uri, directory, 'worker', '--import', 'jobs15',
                         '--poll-interval', '0.5', '--monitor-port', '0',
                         '--dashboard-port', '0', *options)
        self.directory = directory
        if uuid_file is not None:  # the 1.5 dispatcher's, kept
            shutil.copyfile(uuid_file, self.uuid_path)
            self.uuid = OLD_UUID

    def start(self):
        self.process = processes.start_process(
            self.argv(), self.log_path, cwd=self.directory,
            PYTHONPATH=app_env()['PYTHONPATH'])
        return self

    def port(self, what):
        pattern = {
            'monitor': r'monitor for dispatcher \S+ listening on '
                       r'127\.0\.0\.1:(\d+)',
            'dashboard': r'dashboard listening on http://127\.0\.0\.1:(\d+)/',
        }[what]
        return int(processes.wait_for(
            lambda: re.search(pattern, self.log),
            message='the %s in %s' % (what, self.log_path)).group(1))


class UpgradeAndServeTests(Upgrade15TestCase):
    """The two commands, then a real worker, with the old or a new UUID."""

    def serve(self, uuid_file):
        self.zodbupdate()
        self.upgrade()
        worker = UpgradedWorker(self.uri, self.directory, uuid_file)
        self.addCleanup(worker.kill)
        worker.start()
        self.wait_until_done(worker)
        return worker

    def wait_until_done(self, worker):
        """Until every pending job and the ACTIVE one completed."""
        oids = [int(info['oid'], 16)
                for info in MANIFEST['pending'].values()] + [ACTIVE_OID]

        def done(root):
            jobs = [self.job(root, oid) for oid in oids]
            return all(job.status == interfaces.COMPLETED and all(
                cb.status == interfaces.COMPLETED for cb in job.callbacks)
                for job in jobs)

        def check():
            try:
                return self.read(done)
            except Exception:  # a transaction being written: read again
                return False
        processes.wait_for(check, message='the pending jobs (log: %s)'
                           % (worker.log_path,), interval=0.5)

    def check_pending_results(self, root):
        for name, expected in PENDING_RESULTS.items():
            job = self.job(root, oid_of(name, 'pending'))
            self.assertEqual(job.result, expected, name)
        for name, expected in PENDING_CALLBACKS.items():
            job = self.job(root, oid_of(name, 'pending'))
            self.assertEqual([cb.result for cb in job.callbacks],
                             [expected], name)
        failure = self.job(root, oid_of('failing_with_callbacks',
                                        'pending')).result
        self.assertEqual(failure.getErrorMessage(), 'boom: later')
        self.assertIs(failure.check(ValueError), ValueError)
        counters = root['jobs15']
        self.assertEqual((counters['c1'].value, counters['c2'].value),
                         (11, 5))
        # begin_by: one hour after the client put it.  (A job that missed
        # it fails without starting: it has no active_start.)
        timed = self.job(root, oid_of('begin_by_1h', 'pending'))
        if timed.active_end > CREATED + datetime.timedelta(hours=1):
            self.assertIs(timed.result.check(interfaces.TimeoutError),
                          interfaces.TimeoutError)
        else:
            self.assertEqual(timed.result, 'within an hour')
        # The quota "single" (size 1): one at a time.
        spans = sorted(
            (job.active_start, job.active_end) for job in (
                self.job(root, oid_of('quota_%d' % i, 'pending'))
                for i in range(3)))
        for (_, end), (start, _) in zip(spans, spans[1:]):
            self.assertLessEqual(end, start)
        # The job the killed 1.5 dispatcher left ACTIVE ran again, once.
        active = self.job(root, ACTIVE_OID)
        self.assertEqual(active.result, 'slept 20')
        self.assertGreater(active.active_start,
                           utils.now() - datetime.timedelta(hours=1))

    def check_marker(self):
        with open(os.path.join(self.directory, 'slow-started.txt')) as f:
            self.assertEqual(len(f.readlines()), 1)

    def test_in_place_with_the_old_uuid_file(self):
        worker = self.serve(os.path.join(DATA, 'uuid-dispatcher.txt'))
        self.read(self.check_pending_results)
        self.check_marker()
        self.assertIn('attempting to activate dispatcher %s' % (OLD_UUID,),
                      worker.log)

        def records(root):
            dispatchers = root[interfaces.KEY][''].dispatchers
            return {str(uuid): bool(agents.activated)
                    for uuid, agents in dispatchers.items()}
        self.assertEqual(self.read(records), {OLD_UUID: True})
        self.check_monitor(worker)
        self.check_dashboard(worker)
        self.assertEqual(worker.stop(), 0, worker.log)
        self.check_cli()

    def test_with_a_new_uuid_file(self):
        worker = self.serve(None)
        self.read(self.check_pending_results)
        self.check_marker()

        def records(root):
            dispatchers = root[interfaces.KEY][''].dispatchers
            return {str(uuid): bool(agents.activated)
                    for uuid, agents in dispatchers.items()}
        # The new dispatcher found the 1.5 one dead and deactivated it,
        # which handed its ACTIVE job to the retry policy.
        self.assertEqual(self.read(records), {
            OLD_UUID: False, str(worker.uuid): True})
        self.check_monitor(worker)
        self.check_dashboard(worker)
        self.assertEqual(worker.stop(), 0, worker.log)
        self.check_cli()

    # ---------------------------------------------------------- readers

    def check_monitor(self, worker):
        fail = oid_of('fail', 'completed')
        text = session(('127.0.0.1', worker.port('monitor')),
                       'asyncdb count failed', 'asyncdb count succeeded',
                       'asyncdb job %d' % (fail,),
                       'asyncdb traceback %d' % (fail,), 'async status')
        counts = text.split('\n', 2)
        # 1.5's two failures, the pending one that fails, and the
        # begin_by job's TimeoutError (not in an agent's store) aside.
        self.assertEqual(counts[0], '3')
        self.assertGreaterEqual(int(counts[1]), 18 + 14)
        rest = counts[2]
        summary = json.loads(rest[:rest.index('\n}\n') + 2])
        self.assertEqual(summary['status'], 'completed')
        self.assertTrue(summary['failed'])
        self.assertIn("ValueError'>: boom: expected", summary['result'])
        self.assertIn('builtins.ValueError: boom: expected', rest)
        self.assertIn('"status": "RUNNING"', rest)

    def check_dashboard(self, worker):
        client = http.client.HTTPConnection(
            '127.0.0.1', worker.port('dashboard'), timeout=30)
        self.addCleanup(client.close)

        def get(path):
            client.request('GET', path)
            response = client.getresponse()
            body = response.read()
            self.assertEqual(response.status, 200, body)
            return json.loads(body)
        overview = get('/api/overview')
        counts = overview['queues']['']['counts']
        self.assertEqual(counts['pending'], 0)
        self.assertGreaterEqual(counts['completed'], 18 + 14)
        failed = get('/api/jobs?state=failed')
        oids = [row['id'][0] for row in failed['jobs']]
        for name in COMPLETED_FAILURES:
            self.assertIn(oid_of(name, 'completed'), oids)
        detail = get('/api/jobs/%d' % (oid_of('fail', 'completed'),))
        self.assertIn('builtins.ValueError: boom: expected',
                      json.dumps(detail))

    def check_cli(self):
        code, out, err = self.zc_async('jobs', self.uri, 'failed',
                                       '--import', 'jobs15')
        self.assertEqual((code, err), (0, ''), out)
        for name in COMPLETED_FAILURES:
            self.assertRegex(out, r'\n%d +unnamed +completed \(failed\)'
                             % (oid_of(name, 'completed'),))
        code, out, err = self.zc_async(
            'job', self.uri, str(oid_of('fail', 'completed')), '--traceback',
            '--import', 'jobs15')
        self.assertEqual((code, err), (0, ''), out)
        self.assertIn('initial callbacks end: 2026-12-07T10:29:23.652705Z',
                      out)
        self.assertTrue(out.endswith(
            'builtins.ValueError: boom: expected\n'), out)
