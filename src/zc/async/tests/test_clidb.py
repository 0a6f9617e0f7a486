"""``zc-async status``, ``jobs`` and ``job`` (zc.async.ops.clidb), run as real
processes against a FileStorage.

One database is built for the module (the commands only read); its jobs
call standard-library functions, so the commands need no ``--import``:

========= ================ ===========================================
job       queue            state
========= ================ ===========================================
good      ''               succeeded: ``operator.add(40, 2)``
bad       ''               failed: ``operator.truediv(1, 0)``
assigned  ''               assigned to agent 'main'
active    ''               active (its process "died" while it ran)
pending   ''               pending: ``operator.sub(5, 3)``
later     'second'         pending, begin_after in an hour
========= ================ ===========================================
"""
import datetime
import json
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import uuid

import transaction
import zope.component.testing
import ZODB
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.utils
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.live import set_up_components

DISPATCHER = uuid.UUID('5d8f3c2a-8f1e-11f1-a300-02fc00000001')


def _claimed(queue, agent, call, *args):
    """Put ``call(*args)`` and let ``agent`` claim it (committed)."""
    job = queue.put(zc.asynchronous.job.Job(call, *args))
    transaction.commit()
    assert agent.claimJob() is job
    transaction.commit()
    return job


def build_scene(path):
    """Make the jobs of the module docstring; return their oids by name."""
    db = ZODB.DB(path)
    conn = db.open()
    try:
        root = conn.root()
        queues = root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        queue = queues[''] = zc.asynchronous.queue.Queue()
        second = queues['second'] = zc.asynchronous.queue.Queue()
        transaction.commit()
        queue.dispatchers.register(DISPATCHER)
        agents = queue.dispatchers[DISPATCHER]
        agents.activate()
        agent = agents['main'] = zc.asynchronous.agent.Agent(size=3)
        transaction.commit()
        jobs = {}
        for name, call, args in (('good', operator.add, (40, 2)),
                                 ('bad', operator.truediv, (1, 0))):
            jobs[name] = _claimed(queue, agent, call, *args)
            jobs[name]()
            transaction.commit()
        jobs['assigned'] = _claimed(queue, agent, operator.mul, 6, 7)
        jobs['active'] = _claimed(queue, agent, sys.exit, 3)
        try:  # SystemExit is explosive: the job stays active, as in a crash
            jobs['active']()
        except SystemExit:
            transaction.abort()
        jobs['pending'] = queue.put(
            zc.asynchronous.job.Job(operator.sub, 5, 3))
        jobs['later'] = second.put(
            zc.asynchronous.job.Job(operator.neg, 1),
            begin_after=zc.asynchronous.utils.now()
            + datetime.timedelta(hours=1))
        transaction.commit()
        return {name: ZODB.utils.u64(job._p_oid)
                for name, job in jobs.items()}
    finally:
        transaction.abort()
        conn.close()
        db.close()


class SceneLayer:
    """The database of the module docstring, built once."""

    @classmethod
    def setUp(cls):
        cls.directory = tempfile.mkdtemp(prefix='zc.async-clidb-')
        cls.uri = 'file://' + os.path.join(cls.directory, 'Data.fs')
        zope.component.testing.setUp()
        try:
            set_up_components(uuid.uuid1())
            cls.oids = build_scene(os.path.join(cls.directory, 'Data.fs'))
        finally:
            zope.component.testing.tearDown()

    @classmethod
    def tearDown(cls):
        shutil.rmtree(cls.directory)


def zc_async(*args):
    """Run ``zc-async ARGS``; return (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, '-m', 'zc.async.ops.cli', *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=processes.TIMEOUT, env=processes.subprocess_env())
    return done.returncode, done.stdout, done.stderr


class CommandTestCase(unittest.TestCase):

    layer = SceneLayer

    def run_ok(self, command, *args):
        status, out, err = zc_async(command, SceneLayer.uri, *args)
        self.assertEqual((status, err), (0, ''), out)
        return out

    def run_json(self, command, *args):
        return json.loads(self.run_ok(command, *args, '--json'))

    def assertError(self, expected, command, *args):
        status, out, err = zc_async(command, *args)
        self.assertEqual(status, 2, (out, err))
        self.assertEqual(out, '')
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith(
            'zc-async %s: error: %s' % (command, expected)), lines[0])

    def ids(self, *names):
        return [[SceneLayer.oids[name], 'unnamed'] for name in names]


class StatusTests(CommandTestCase):

    def test_human_readable(self):
        out = self.run_ok('status')
        self.assertEqual(out.splitlines()[0], "queue '': 1 pending")
        self.assertIn('  dispatcher %s: alive, ' % DISPATCHER, out)
        self.assertIn("    agent 'main': 2 of 3 jobs, filter -", out)
        self.assertIn("queue 'second': 1 pending\n"
                      '  no activated dispatchers', out)

    def test_json_with_filters(self):
        res = self.run_json('status', '--queue', '', '--agent', 'nosuch')
        self.assertEqual(list(res), [''])
        self.assertEqual(res['']['len'], 1)
        found = res['']['dispatchers'][str(DISPATCHER)]
        self.assertFalse(found['dead'])
        self.assertEqual(found['agents'], {})
        self.assertEqual(found['ping interval'], {'seconds': 30.0})


class JobsTests(CommandTestCase):

    def test_all_states_by_default_in_asyncdb_order(self):
        self.assertEqual(self.run_json('jobs'), self.ids(
            'pending', 'later', 'active', 'assigned', 'bad', 'good'))

    def test_table(self):
        lines = self.run_ok('jobs', 'pending', 'failed').splitlines()
        self.assertEqual(lines[0].split(), [
            'OID', 'DATABASE', 'STATUS', 'QUEUE', 'AGENT', 'BEGIN', 'AFTER',
            'JOB'])
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[1].split()[:5], [
            str(SceneLayer.oids['pending']), 'unnamed', 'pending', "''",
            '-'])
        self.assertEqual(lines[2].split()[2:4], ["pending", "'second'"])
        self.assertEqual(lines[3].split()[2:6], [
            'completed', '(failed)', "''", 'main'])
        self.assertTrue(lines[3].endswith('``_operator.truediv(1, 0)``>'))

    def test_filters_states_and_count(self):
        self.assertEqual(self.run_json('jobs', 'succeeded'),
                         self.ids('good'))
        self.assertEqual(self.run_json('jobs', '--callable', 'sub'),
                         self.ids('pending'))
        self.assertEqual(self.run_json('jobs', 'pending', '--queue',
                                       'sec*'), self.ids('later'))
        self.assertEqual(
            self.run_json('jobs', '--uuid', str(DISPATCHER), '--agent',
                          'ma*', '--start', 'since1H', '--count', '2'),
            self.ids('active', 'bad'))

    def test_repr_and_details(self):
        out = self.run_ok('jobs', 'assigned', '--display', 'repr')
        self.assertEqual(out, "<zc.async.job.Job (oid %d, db 'unnamed') "
                         "``_operator.mul(6, 7)``>\n"
                         % SceneLayer.oids['assigned'])
        out = self.run_ok('jobs', 'active', '--display', 'details')
        self.assertIn('\nstatus:                active\n', out)
        self.assertIn("\nqueue:                 ''\n", out)

    def test_no_jobs(self):
        self.assertEqual(self.run_ok('jobs', 'callbacks'), 'no jobs\n')

    def test_errors(self):
        uri = SceneLayer.uri
        self.assertError('Available states are pending, assigned, active, '
                         'callbacks, completed, succeeded, failed (unknown: '
                         'bogus)', 'jobs', uri, 'bogus')
        self.assertError('can only include zero or one of "completed", '
                         '"succeeded," or "failed" states.', 'jobs', uri,
                         'failed', 'succeeded')
        self.assertError('bad value for filter "start": \'yesterday\'',
                         'jobs', uri, '--start', 'yesterday')
        self.assertError("'nope' is not a UUID (nor THIS)", 'jobs', uri,
                         '--uuid', 'nope')


class JobTests(CommandTestCase):

    def test_summary(self):
        out = self.run_ok('job', str(SceneLayer.oids['good']))
        self.assertIn('\nstatus:                completed\n', out)
        self.assertIn('\nresult:                42\n', out)
        self.assertIn('\nagent:                 main\n', out)
        self.assertIn('\ndispatcher:            %s\n' % DISPATCHER, out)
        res = self.run_json('job', str(SceneLayer.oids['pending']))
        self.assertEqual(res['status'], 'pending')
        self.assertEqual(res['args'], ['5', '3'])
        self.assertIsNone(res['agent'])
        self.assertNotIn('traceback', res)

    def test_traceback(self):
        oid = str(SceneLayer.oids['bad'])
        out = self.run_ok('job', oid, '--traceback')
        self.assertIn('failed:                True\n', out)
        self.assertIn('ZeroDivisionError', out.split('\n\n', 1)[1])
        res = self.run_json('job', oid, '--traceback', 'brief')
        self.assertTrue(res['failed'])
        self.assertIn("<class 'ZeroDivisionError'>: division by zero",
                      res['traceback'])
        res = self.run_json('job', str(SceneLayer.oids['good']),
                            '--traceback')
        self.assertIsNone(res['traceback'])

    def test_errors(self):
        uri = SceneLayer.uri
        self.assertError("no object with oid 999999 in database 'unnamed'",
                         'job', uri, '999999')
        self.assertError('oid 0 is not a job', 'job', uri, '0')
        self.assertError("oid must be an integer, not 'x'", 'job', uri, 'x')
        self.assertError("unknown database 'other'", 'job', uri,
                         str(SceneLayer.oids['good']), '--database',
                         'other')


class DatabaseErrorTests(unittest.TestCase):
    """Problems with the database argument: one line, exit status 2."""

    def test_missing_file_and_unknown_scheme(self):
        directory = tempfile.mkdtemp(prefix='zc.async-clidb-')
        self.addCleanup(shutil.rmtree, directory)
        uri = 'file://' + os.path.join(directory, 'nosuch.fs')
        status, out, err = zc_async('status', uri)
        self.assertEqual(status, 2)
        self.assertTrue(err.startswith(
            "zc-async status: error: no FileStorage file '%s'" % (
                os.path.join(directory, 'nosuch.fs'),)), err)
        self.assertFalse(os.path.exists(os.path.join(directory,
                                                     'nosuch.fs')))
        status, out, err = zc_async('jobs', 'nosuch://x')
        self.assertEqual((status, err.strip()), (
            2, "zc-async jobs: error: unknown database URI scheme 'nosuch' "
               "in 'nosuch://x'"))


class AbortTests(unittest.TestCase):
    """``zc-async abort`` (zc.async.ops.clijobs) on a copy of the scene."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-abort-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, 'Data.fs')
        shutil.copy(os.path.join(SceneLayer.directory, 'Data.fs'), self.path)
        self.uri = 'file://' + self.path

    layer = SceneLayer

    def abort(self, name):
        return zc_async('abort', self.uri, str(SceneLayer.oids[name]))

    def job(self, name):
        db = ZODB.DB(self.path)
        try:
            job = db.open().get(ZODB.utils.p64(SceneLayer.oids[name]))
            return job.status, job.abort_requested, job.result
        finally:
            db.close()

    def test_a_pending_job_fails_at_once(self):
        status, out, err = self.abort('pending')
        self.assertEqual((status, out), (0, (
            'failed job %d (_operator.sub) with AbortRequested: it had not '
            'started\n' % (SceneLayer.oids['pending'],))))
        status, requested, result = self.job('pending')
        self.assertEqual((status, requested), (interfaces.COMPLETED, True))
        self.assertIsNotNone(result.check(interfaces.AbortRequested))

    def test_a_running_job_gets_the_request(self):
        status, out, err = self.abort('active')
        self.assertEqual((status, out, err), (0, (
            'asked for the abort of job %d (sys.exit): the dispatcher running '
            'it stops it\n' % (SceneLayer.oids['active'],)), ''))
        self.assertEqual(self.job('active')[:2], (interfaces.ACTIVE, True))

    def test_jobs_with_a_result_and_unknown_oids_are_errors(self):
        status, out, err = self.abort('good')
        self.assertEqual((status, out, err), (
            2, '', 'zc-async abort: error: cannot abort job %d '
                   '(_operator.add): only pending or running jobs can be '
                   'aborted, and it is completed\n'
                   % (SceneLayer.oids['good'],)))
        status, out, err = zc_async('abort', self.uri + '.missing', '1')
        self.assertEqual(status, 2)
        self.assertTrue(err.startswith(
            "zc-async abort: error: no FileStorage file '%s.missing'"
            % (self.path,)), err)
        self.assertFalse(os.path.exists(self.path + '.missing'))
        status, out, err = zc_async('abort', self.uri, '999999')
        self.assertEqual((status, err), (2, "zc-async abort: error: no "
                                            "object with oid 999999 in "
                                            "database 'unnamed'\n"))
