"""A worker's life as operators see it, with real processes: warm shutdown
on SIGTERM, a second signal, time limits, abort requests, and the instant
take-over after kill -9 (see zc.async.shutdown, zc.async.watchdog and
zc.async.instanceuuid).

Every test runs a real ZEO server and real ``zc-async worker`` processes
and counts every job it put (see :mod:`zc.async.tests.test_reliability`).
The bounds on durations here are what the features promise (an exit
before the shutdown timeout, a re-run before the death interval), far from
what a loaded machine needs.
"""
import datetime
import re
import signal
import subprocess
import sys
import time
import unittest

import ZODB.utils

from zc.asynchronous import interfaces
from zc.asynchronous.tests import jobs_for_processes as jobs
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.test_reliability import FAST, ZEOScenario


class LifecycleTests(ZEOScenario, unittest.TestCase):

    def wait_log(self, worker, text):
        processes.wait_for(lambda: text in worker.log,
                           message='%r in %s' % (text, worker.log_path))

    def failure(self, oid, error):
        """The job's result: a failure with ``error``."""
        self.tm.begin()
        result = self.conn.get(oid).result
        self.assertIsNotNone(result.check(error), result)
        return result

    def test_sigterm_lets_running_jobs_finish(self):
        a = self.worker('a', *FAST, '--shutdown-timeout', '20')
        oids = [self.put(jobs.sleepy, n, self.directory, 3) for n in range(3)]
        self.wait_starts(3)
        started = time.monotonic()
        a.process.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait(), 0, a.log)
        # The worker waited for its jobs, and no longer than its timeout.
        self.assertLess(time.monotonic() - started, 20, a.log)
        self.assertAllCompletedOnce(oids)
        self.assertEqual(len(self.starts()), 3)  # none ran again
        self.tm.begin()
        self.assertFalse(self.records()[a.uuid].activated)
        self.assertIn('waiting up to 20.0 seconds for 3 running job(s)',
                      a.log)
        self.assertNotIn('handed back', a.log)

    def test_a_second_sigterm_stops_at_once(self):
        a = self.worker('a', *FAST)
        oids = [self.put(jobs.gated, n, self.directory) for n in range(3)]
        self.wait_starts(3)
        a.process.send_signal(signal.SIGTERM)
        self.wait_log(a, 'running job(s)')
        a.process.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait(), 0, a.log)
        # The jobs were handed back: each is ACTIVE, its handleInterrupt
        # in the queue, and the worker said so, once for each.
        self.tm.begin()
        self.assertEqual(sorted(job.callable.__self__._p_oid
                                for job in self.queue), sorted(oids))
        self.assertEqual(len(re.findall('handed back', a.log)), 3, a.log)
        self.assertIn('received SIGTERM again: stopping at once', a.log)
        self.assertNotIn('was reassigned', a.log)
        self.open_gate()
        a.start()
        self.assertAllCompletedOnce(oids)
        self.assertEqual(len(self.starts()), 6)
        self.assertEqual([self.interruptions(oid) for oid in oids],
                         [1, 1, 1])

    def test_a_time_limit_stops_a_looping_job(self):
        self.worker('a', *FAST, '--agent-size', '1')
        looping = self.put(jobs.spin, 1, self.directory,
                           time_limit=datetime.timedelta(seconds=2))
        quick = self.put(jobs.double, 21)  # waits for the only slot
        self.assertAllCompletedOnce([quick])
        self.wait_status([looping], interfaces.COMPLETED)
        self.assertIn('it ran longer than its time limit of 0:00:02',
                      str(self.failure(looping, interfaces.TimeLimitExceeded)))

    def test_abort_stops_a_running_loop_and_fails_a_pending_job(self):
        self.worker('a', *FAST, '--agent-size', '1')
        looping = self.put(jobs.spin, 1, self.directory)
        self.wait_starts(1)
        pending = self.put(jobs.double, 21)  # waits for the only slot
        self.abort(pending)
        self.tm.begin()
        self.assertEqual(self.conn.get(pending).status, interfaces.COMPLETED)
        self.assertEqual(len(self.queue), 0)
        self.failure(pending, interfaces.AbortRequested)
        self.abort(looping)
        self.wait_status([looping], interfaces.COMPLETED)
        self.failure(looping, interfaces.AbortRequested)
        self.assertAllCompletedOnce([self.put(jobs.double, 5)])

    def abort(self, oid):
        """``zc-async abort``, as an operator would run it."""
        done = subprocess.run(
            [sys.executable, '-m', 'zc.async.ops.cli', 'abort', self.uri,
             str(ZODB.utils.u64(oid)), '--import', jobs.__name__],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, timeout=processes.TIMEOUT,
            env=processes.subprocess_env())
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_kill_9_then_restart_takes_over_at_once(self):  # C6
        # A death interval the re-run must not wait for.
        a = self.worker('a', '--poll-interval', '0.2', '--ping-interval',
                        '0.5', '--ping-death-interval', '60')
        oid = self.put(jobs.gated, 1, self.directory)
        self.wait_starts(1)
        first_pid = a.pid
        a.kill()
        killed = time.monotonic()
        a.start()
        self.wait_starts(2)
        self.assertLess(time.monotonic() - killed, 60, a.log)
        self.open_gate()
        self.assertAllCompletedOnce([oid])
        self.assertEqual([pid for n, pid in self.starts()],
                         [first_pid, a.pid])
        self.assertIn('took over its record', a.log)
        self.assertNotIn('another process?', a.log)
        self.assertEqual(self.interruptions(oid), 1)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
