"""``zc-async remove|fail|retry|requeue`` (zc.async.ops.clijobs and
zc.async.jobactions), run in this process against a FileStorage whose
jobs this process cannot all load.

Each test builds its scene, closes the database, runs commands (as the
``zc-async`` command does: ``cli.main``) and opens the database again to
count every job.
"""
import contextlib
import datetime
import io
import json
import operator
import os
import shutil
import sys
import tempfile
import unittest
import uuid

import transaction
import ZODB
import ZODB.Connection
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.utils
from zc.asynchronous.ops import cli
from zc.asynchronous.tests import badcode

Job = zc.asynchronous.job.Job
LIVE, DEAD = uuid.uuid1(), uuid.uuid1()


class JobCommandTests(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-clijobs-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, 'Data.fs')
        self.gone = badcode.GoneModule()
        self.addCleanup(self.gone.clean_up)
        db = ZODB.DB(self.path)
        conn = db.open()
        root = conn.root()
        queues = root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        queue = queues[''] = zc.asynchronous.queue.Queue()
        queues['other'] = zc.asynchronous.queue.Queue()
        third = queues['third'] = zc.asynchronous.queue.Queue()
        transaction.commit()
        for each in (LIVE, DEAD):
            queue.dispatchers.register(each)
            queue.dispatchers[each].activate()
            queue.dispatchers[each]['main'] = zc.asynchronous.agent.Agent()
        self.oids = {}
        for name, uuid_ in (('stranded', DEAD), ('held', LIVE)):
            self.oids[name] = queue.put(Job(self.gone.double, 2))
            transaction.commit()
            agent = queue.dispatchers[uuid_]['main']
            self.assertIs(agent.claimJob(), self.oids[name])
            transaction.commit()
        self.oids['stranded']._start_claimed()  # ACTIVE
        long_ago = zc.asynchronous.utils.now() - datetime.timedelta(hours=1)
        queue.dispatchers[DEAD].activated = long_ago
        queue.dispatchers[DEAD].last_ping.value = long_ago
        self.oids.update({
            'bad': queue.put(Job(self.gone.double, 1)),
            'broken': queue.put(self.gone.SpecialJob(len, [1])),
            'good': queue.put(Job(operator.mul, 6, 7)),
        })
        self.oids['callback'] = self.oids['bad'].addCallback(
            Job(operator.truth))
        self.oids['unstorable'] = third.put(
            Job(len, [badcode.Unstorable(1)]))
        transaction.commit()
        self.oids = {name: job._p_oid for name, job in self.oids.items()}
        conn.close()
        db.close()
        self.gone.vanish()
        badcode.Unstorable.refuse = True
        self.addCleanup(setattr, badcode.Unstorable, 'refuse', False)

    def run_command(self, *words):
        """``zc-async WORDS`` on the database: (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        args = [words[0], 'file://' + self.path, *words[1:]]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(args)
        return status, out.getvalue(), err.getvalue()

    def oid(self, name):
        return str(ZODB.utils.u64(self.oids[name]))

    @contextlib.contextmanager
    def opened(self):
        """The database, opened again (this process still lacks the
        module, so the jobs that need it are Broken)."""
        ZODB.Connection.resetCaches()
        db = ZODB.DB(self.path)
        conn = db.open()
        try:
            yield conn
        finally:
            transaction.abort()
            conn.close()
            db.close()

    def pending(self, conn, name=''):
        return [job._p_oid for job in conn.root()[interfaces.KEY][name]]

    def test_remove(self):
        status, out, err = self.run_command('remove', self.oid('bad'))
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(out, "removed job %s (%s.double) from queue ''\n"
                         % (self.oid('bad'), self.gone.name))
        status, out, err = self.run_command('remove', self.oid('bad'))
        self.assertEqual((status, out), (2, ''))
        self.assertEqual(err, 'zc-async remove: error: cannot remove job %s '
                         '(%s.double): only pending jobs can be removed from '
                         'their queue, and it is new\n'
                         % (self.oid('bad'), self.gone.name))
        with self.opened() as conn:
            self.assertEqual(self.pending(conn),
                             [self.oids['broken'], self.oids['good']])
            job = conn.get(self.oids['bad'])
            self.assertEqual(job.status, interfaces.NEW)
            self.assertIsNone(job.parent)

    def test_remove_a_job_whose_class_is_missing(self):
        status, out, err = self.run_command('remove', self.oid('broken'))
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(out, "removed job %s (builtins.len) from queue '' "
                         '(its record is left as it is: its class %s.'
                         'SpecialJob cannot be imported here)\n'
                         % (self.oid('broken'), self.gone.name))
        status, out, err = self.run_command('fail', self.oid('broken'))
        self.assertEqual(status, 2)
        self.assertIn("its class %s.SpecialJob cannot be imported here"
                      % self.gone.name, err)
        with self.opened() as conn:
            self.assertEqual(self.pending(conn),
                             [self.oids['bad'], self.oids['good']])

    def test_remove_a_job_that_cannot_be_stored_here(self):
        status, out, err = self.run_command('fail', self.oid('unstorable'))
        self.assertEqual(status, 2)
        self.assertIn('it cannot be stored here: TypeError: Unstorable '
                      'refuses to be stored (such a job can only be removed '
                      'from its queue)', err)
        status, out, err = self.run_command('remove', self.oid('unstorable'))
        self.assertEqual((status, err), (0, ''))
        self.assertIn("from queue 'third' (its record is left as it is: it "
                      'cannot be stored here', out)
        with self.opened() as conn:
            self.assertEqual(self.pending(conn, 'third'), [])

    def test_fail_runs_the_callbacks_and_retry_copies(self):
        status, out, err = self.run_command(
            'fail', self.oid('bad'), '--reason', 'its code is gone')
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(out, "failed job %s (%s.double), taken out of queue "
                         "''\n" % (self.oid('bad'), self.gone.name))
        status, out, err = self.run_command('retry', self.oid('good'))
        self.assertEqual(status, 2)
        self.assertIn('only failed jobs can be retried, and it is pending',
                      err)
        status, out, err = self.run_command('remove', self.oid('good'))
        status, out, err = self.run_command('retry', self.oid('good'))
        self.assertIn('only failed jobs can be retried, and it is new', err)
        status, out, err = self.run_command('retry', self.oid('bad'))
        self.assertEqual((status, err), (0, ''))
        self.assertIn("in queue ''", out)
        status, out, err = self.run_command(
            'retry', self.oid('bad'), '--queue', 'nowhere')
        self.assertEqual((status, err), (2, "zc-async retry: error: no queue "
                                            "named 'nowhere'\n"))
        status, out, err = self.run_command(
            'retry', self.oid('bad'), '--queue', 'other', '--json')
        self.assertEqual((status, err), (0, ''))
        answer = json.loads(out)
        self.assertEqual(answer['job'], [int(self.oid('bad')), 'unnamed'])
        new = ZODB.utils.p64(answer['new job'][0])
        self.assertEqual(answer['done'], "retried job %s (%s.double) as job "
                         "%d in queue 'other'" % (
                             self.oid('bad'), self.gone.name,
                             answer['new job'][0]))
        with self.opened() as conn:
            job = conn.get(self.oids['bad'])
            self.assertEqual(job.status, interfaces.COMPLETED)
            self.assertIsInstance(job.result.value, interfaces.AbortedError)
            self.assertEqual(str(job.result.value),
                             'failed by an operator: its code is gone')
            callback = conn.get(self.oids['callback'])
            self.assertEqual(callback.status, interfaces.COMPLETED)
            self.assertIs(callback.result, True)  # truth of the failure
            self.assertEqual(self.pending(conn, 'other'), [new])
            self.assertEqual(len(self.pending(conn)), 2)  # broken, copy
            copy = conn.get(new)
            self.assertEqual(copy.args[0], 1)
            self.assertEqual(copy._callable_root.__module__, self.gone.name)
        # Where the code is, the copy has it.
        sys.path.insert(0, self.gone.directory)
        self.addCleanup(self.gone.vanish)
        with self.opened() as conn:
            copy = conn.get(new)
            self.assertEqual(copy.callable(*copy.args), 2)

    def test_stranded_jobs(self):
        status, out, err = self.run_command('requeue', self.oid('held'))
        self.assertEqual(status, 2)
        self.assertIn('cannot requeue job %s (%s.double): dispatcher %s, '
                      'which holds it, is live' % (
                          self.oid('held'), self.gone.name, LIVE), err)
        status, out, err = self.run_command('fail', self.oid('held'))
        self.assertIn('dispatcher %s, which holds it, is live' % LIVE, err)
        status, out, err = self.run_command('requeue', self.oid('good'))
        self.assertIn('only jobs that an agent holds, assigned or active, '
                      'can be put back, and it is pending', err)
        status, out, err = self.run_command('requeue', self.oid('stranded'))
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(out, "put job %s (%s.double) back in queue '', "
                         "first in line\n" % (self.oid('stranded'),
                                              self.gone.name))
        with self.opened() as conn:
            self.assertEqual(self.pending(conn)[0], self.oids['stranded'])
            job = conn.get(self.oids['stranded'])
            self.assertEqual(job.status, interfaces.PENDING)
            self.assertIsNone(job.active_start)
            agents = conn.root()[interfaces.KEY][''].dispatchers
            self.assertEqual(len(agents[DEAD]['main']), 0)
            self.assertEqual(len(agents[LIVE]['main']), 1)

    def test_fail_a_stranded_job(self):
        status, out, err = self.run_command('fail', self.oid('stranded'))
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(out, 'failed job %s (%s.double), which a stopped '
                         'dispatcher held\n' % (self.oid('stranded'),
                                                self.gone.name))
        with self.opened() as conn:
            job = conn.get(self.oids['stranded'])
            self.assertEqual(job.status, interfaces.COMPLETED)
            self.assertEqual(str(job.result.value),
                             'failed by an operator: zc-async fail')
            agent = conn.root()[interfaces.KEY][''].dispatchers[DEAD]['main']
            self.assertEqual(list(agent.completed), [job])

    def test_listing_jobs_this_process_cannot_load(self):
        status, out, err = self.run_command('jobs', 'pending')
        self.assertEqual((status, err), (0, ''))
        lines = out.splitlines()
        self.assertEqual(len(lines), 5)  # the header, 4 jobs
        broken = [line for line in lines if line.startswith(
            self.oid('broken') + ' ')]
        self.assertIn('<%s.SpecialJob (oid %s): its class cannot be '
                      'imported here>' % (self.gone.name, self.oid('broken')),
                      broken[0])
        bad = [line for line in lines if line.startswith(
            self.oid('bad') + ' ')]
        self.assertIn("``<class '%s.double'>(1)``" % self.gone.name, bad[0])
        status, out, err = self.run_command('job', self.oid('broken'))
        self.assertEqual((status, err), (0, ''))
        self.assertIn('status:                pending', out)
        self.assertIn("queue:                 ''", out)

    def test_bad_input(self):
        for words, message in (
                (('remove', 'x'), "oid must be an integer, not 'x'"),
                (('remove', '123456'), "no object with oid 123456 in "
                                       "database 'unnamed'"),
                (('remove', '0'), 'oid 0 is not a job'),
                (('remove', self.oid('bad'), '--database', 'nope'),
                 "unknown database 'nope'")):
            status, out, err = self.run_command(*words)
            self.assertEqual((status, out), (2, ''), words)
            self.assertIn(message, err, words)
