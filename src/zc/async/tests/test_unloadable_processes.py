"""A bad job never stops the queue: real worker processes on ZEO.

The test process writes a module (see :mod:`zc.async.tests.badcode`) and
puts jobs that need it; the ``zc-async worker`` processes cannot import it,
unless a test puts its directory on a worker's path.  Every test counts
every job at the end.  (The single-process case, FileStorage and a
dispatcher in the process that lacks the code, is in
:mod:`zc.async.tests.test_unloadable`.)
"""
import datetime
import os
import subprocess
import sys
import unittest

import BTrees.Length
import ZODB.utils

from zc.asynchronous import interfaces
from zc.asynchronous import job as jobmodule
from zc.asynchronous.tests import badcode
from zc.asynchronous.tests import jobs_for_processes as jobs
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.test_reliability import FAST, ZEOScenario

#: The polls of the test of delays: slow, so that a job started late for
#: want of a claim would show.
SLOW_POLLS = ('--poll-interval', '5', '--ping-interval', '0.5',
              '--ping-death-interval', '30')

CANNOT_RUN = 'cannot be run by dispatcher'


class UnloadableProcessTests(ZEOScenario, unittest.TestCase):
    """Workers that lack a job's code, on a real ZEO server."""

    def setUp(self):
        super().setUp()
        self.gone = badcode.GoneModule(self.directory)
        self.addCleanup(self.gone.clean_up)

    def capable(self, name, *options):
        """A worker that can import the module."""
        w = processes.WorkerProcess(
            self.uri, self.directory, name, *(options or FAST),
            env={'PYTHONPATH': os.pathsep.join(
                [processes.SRC_DIR, self.directory])})
        return w.start()

    def put_bad(self, **put_kwargs):
        """Put a job of the module that the workers lack; its oid."""
        return self.put(self.gone.tallied, 100, **put_kwargs)

    def put_many(self, numbers):
        return [self.put(jobs.double, n) for n in numbers]

    def wait_logged(self, worker, oid, count=1):
        """Wait until ``worker`` logged that it cannot run job ``oid``."""
        text = 'job %d (' % ZODB.utils.u64(oid)
        processes.wait_for(
            lambda: len(self.lines(worker, oid)) >= count,
            message='%s logging %s...' % (worker.name, text))

    def lines(self, worker, oid):
        text = 'job %d (' % ZODB.utils.u64(oid)
        return [line for line in worker.log.splitlines()
                if CANNOT_RUN in line and text in line]

    def wait_polling(self, workers):
        """Wait until each worker's dispatcher is activated in the queue."""
        self.wait(lambda conn: all(
            w.uuid in self.records(conn)
            and self.records(conn)[w.uuid].activated for w in workers),
            'the workers polling')

    def job(self, oid):
        self.tm.begin()
        return self.conn.get(oid)

    def test_an_unloadable_job_delays_none_of_twenty(self):
        workers = [self.worker('a', *SLOW_POLLS),
                   self.worker('b', *SLOW_POLLS)]
        self.wait_polling(workers)
        good = self.put_many(range(10))
        bad = self.put_bad()
        good += self.put_many(range(10, 20))
        self.wait_status(good, interfaces.COMPLETED)
        # Claimed at once (instant dispatch), never left for a poll.
        self.tm.begin()
        for oid in good:
            job = self.conn.get(oid)
            self.assertLess(job.active_start - job.begin_after,
                            datetime.timedelta(seconds=5), job)
        self.assertGoodAndBad(good, [bad])
        self.assertEqual(self.job(bad).status, interfaces.PENDING)
        for worker in workers:
            self.wait_logged(worker, bad)
        self.assertEqual([len(self.lines(w, bad)) for w in workers], [1, 1])
        self.assertWorkersRunning(workers)

    def test_the_worker_that_can_load_it_runs_it_once(self):
        cannot = self.worker('cannot')
        bad = self.put_bad()
        good = self.put_many(range(5))
        self.wait_logged(cannot, bad)
        self.wait_status(good, interfaces.COMPLETED)
        can = self.capable('can')
        self.wait_status([bad], interfaces.COMPLETED)
        job = self.job(bad)
        self.assertEqual(job.agent.parent.UUID, can.uuid)
        self.assertEqual(job.result, 200)
        self.assertEqual(job.args[0].value, 1)
        self.assertGoodAndBad(good, [])
        self.assertEqual(len(self.lines(cannot, bad)), 1)
        self.assertEqual(self.lines(can, bad), [])
        self.assertWorkersRunning([cannot, can])

    def test_failed_after_the_timeout_when_no_worker_can_load_it(self):
        self.tm.begin()
        self.queue.unloadable_timeout = datetime.timedelta(seconds=1)
        self.tm.commit()
        workers = [self.worker('a'), self.worker('b')]
        self.wait_polling(workers)
        self.tm.begin()
        bad = self.queue.put(jobmodule.Job(
            self.gone.tallied, BTrees.Length.Length(), 100))
        callback = bad.addCallback(jobmodule.Job(
            jobs.note_failure, BTrees.Length.Length()))
        self.tm.commit()
        good = self.put_many(range(5))
        self.wait_status([bad._p_oid], interfaces.COMPLETED)
        job = self.job(bad._p_oid)
        error = job.result.value
        self.assertIsInstance(error, interfaces.UnloadableJobError)
        self.assertEqual(error.oid, ZODB.utils.u64(bad._p_oid))
        self.assertEqual(error.callable_name, self.gone.name + '.tallied')
        self.assertIn("No module named '%s'" % self.gone.name, error.error)
        self.assertGreaterEqual(job.active_end - job.begin_after,
                                datetime.timedelta(seconds=1))
        self.assertEqual(job.args[0].value, 0)  # it never ran
        self.wait_status([callback._p_oid], interfaces.COMPLETED)
        callback = self.job(callback._p_oid)
        self.assertEqual(callback.result, 'UnloadableJobError')
        self.assertEqual(callback.args[0].value, 1)
        self.assertGoodAndBad(good, [])
        self.assertEqual([len(self.lines(w, bad._p_oid)) for w in workers],
                         [1, 1])
        self.assertWorkersRunning(workers)

    def test_remove_and_fail_from_a_process_that_cannot_import_it(self):
        cannot = self.worker('cannot')
        first, second = self.put_bad(), self.put_bad()
        good = self.put_many(range(3))
        self.wait_logged(cannot, second)
        self.wait_status(good, interfaces.COMPLETED)
        removed = self.command('remove', first)
        self.assertEqual(removed.returncode, 0, removed.stderr)
        self.assertEqual(removed.stdout, "removed job %d (%s.tallied) from "
                         "queue ''\n" % (ZODB.utils.u64(first),
                                         self.gone.name))
        failed = self.command('fail', second, '--reason', 'code is gone')
        self.assertEqual(failed.returncode, 0, failed.stderr)
        self.assertEqual(failed.stdout, "failed job %d (%s.tallied), taken "
                         "out of queue ''\n" % (ZODB.utils.u64(second),
                                                self.gone.name))
        again = self.command('remove', second)
        self.assertEqual(again.returncode, 2)
        self.assertIn('only pending jobs can be removed', again.stderr)
        self.assertEqual(self.job(first).status, interfaces.NEW)
        job = self.job(second)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(str(job.result.value),
                         'failed by an operator: code is gone')
        self.assertGoodAndBad(good, [])
        self.assertWorkersRunning([cannot])

    # -------------------------------------------------------------- helpers

    def command(self, name, oid, *options):
        """Run ``zc-async NAME URI OID`` in a process that lacks the
        module."""
        return subprocess.run(
            [sys.executable, '-m', 'zc.async.ops.cli', name, self.uri,
             str(ZODB.utils.u64(oid)), *options],
            capture_output=True, text=True, env=processes.subprocess_env(),
            timeout=processes.TIMEOUT)

    def assertGoodAndBad(self, good, pending):
        """Every good job completed once with its result; the queue holds
        exactly the ``pending`` ones."""
        self.tm.begin()
        for oid in good:
            job = self.conn.get(oid)
            self.assertEqual(job.status, interfaces.COMPLETED, job)
            self.assertEqual(job.result, 2 * job.args[1], job)
            self.assertEqual(job.args[0].value, 1, job)
        self.assertEqual([job._p_oid for job in self.queue], pending)

