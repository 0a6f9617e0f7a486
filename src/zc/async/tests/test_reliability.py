"""No job lost, none completed twice: catastrophes with real processes.

Every test runs a real ZEO server and real ``zc-async worker`` processes
(see :mod:`zc.async.tests.processes`) and ends by counting every job it put:
each one COMPLETED, with the right result, and its tally (a
``BTrees.Length`` the job adds 1 to in the transaction that commits its
result) exactly 1.  The scenarios follow reference 3.6 (C2, C3, C5, C7-C9;
C6, with the instant take-over, is in test_lifecycle).

Jobs that must be caught while running are "gated": they log their start in
a file and wait for a gate file the test creates, so every step waits on a
condition with a deadline and nothing depends on timing luck.  Death
intervals are shortened with the worker's ``--ping-death-interval``.
"""
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import BTrees.Length
import persistent.mapping
import transaction
import ZODB.utils

from zc.asynchronous import agent
from zc.asynchronous import interfaces
from zc.asynchronous import job as jobmodule
from zc.asynchronous import queue as queuemodule
from zc.asynchronous.tests import jobs_for_processes as jobs
from zc.asynchronous.tests import processes

# Fast polls, and a death interval a few poll intervals longer than the
# ping interval (reference 3.5.3) so that a loaded 2-core machine does not
# cause false deaths in tests that do not want them.
FAST = ('--poll-interval', '0.2', '--ping-interval', '0.5',
        '--ping-death-interval', '4')


class Scenario:
    """Set-up and helpers; subclasses give ``uri`` and ``open_db()``."""

    uri = None

    def open_db(self):
        raise NotImplementedError

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-reliability-')
        self.db = self.open_db()
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        root = self.conn.root()
        root[interfaces.KEY] = queuemodule.Queues()
        root[interfaces.KEY][''] = queuemodule.Queue()
        self.tm.commit()

    def tearDown(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()
        shutil.rmtree(self.directory)

    # -------------------------------------------------------------- helpers

    def path(self, name):
        return os.path.join(self.directory, name)

    def worker(self, name, *options, start=True):
        w = processes.WorkerProcess(
            self.uri, self.directory, name, *(options or FAST))
        return w.start() if start else w

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def put(self, func, *args, **put_kwargs):
        """Put ``Job(func, tally, *args)`` and commit; return its oid."""
        self.tm.begin()
        job = self.queue.put(
            jobmodule.Job(func, BTrees.Length.Length(), *args), **put_kwargs)
        self.tm.commit()
        return job._p_oid

    def wait(self, condition, message):
        """Wait until ``condition(conn)`` holds in a fresh transaction."""
        return processes.wait_for_db(
            self.db, lambda root: condition(root._p_jar), message=message)

    def wait_status(self, oids, status):
        self.wait(lambda conn: all(conn.get(oid).status == status
                                   for oid in oids),
                  '%d job(s) %s' % (len(oids), status))

    def wait_starts(self, count):
        path = self.path(jobs.STARTS)
        processes.wait_for(lambda: jobs.count_lines(path) >= count,
                           message='%d job start(s) in %s' % (count, path))

    def starts(self):
        """(n, pid) of every start of a gated job, in order."""
        return [tuple(map(int, line.split()))
                for line in processes.read(self.path(jobs.STARTS)).split('\n')
                if line]

    def open_gate(self):
        open(self.path(jobs.GATE), 'w').close()

    def records(self, conn=None):
        conn = conn or self.conn
        return conn.root()[interfaces.KEY][''].dispatchers

    def agent_uuid(self, conn, oid):
        """UUID of the dispatcher whose agent holds the job, or None."""
        agent = conn.get(oid).agent
        return None if agent is None else agent.parent.UUID

    def assertAllCompletedOnce(self, oids):
        """The final count: every job COMPLETED once, result 2 * n."""
        self.wait_status(oids, interfaces.COMPLETED)
        self.tm.begin()
        for oid in oids:
            job = self.conn.get(oid)
            self.assertEqual(job.status, interfaces.COMPLETED, job)
            self.assertEqual(job.result, 2 * job.args[1], job)
            self.assertEqual(job.args[0].value, 1,
                             '%r committed %d times' % (job, job.args[0].value))
        self.assertEqual(len(self.queue), 0, list(self.queue))

    def assertWorkersRunning(self, workers):
        stopped = [w for w in workers if not w.running]
        self.assertEqual(stopped, [], ''.join(
            '\n--- %s exited; its log ends:\n%s' % (w.name, w.log[-3000:])
            for w in stopped))

    def produce(self, producers, count, *key):
        """Run ``producers`` producer processes putting ``count`` jobs each
        (with the unique key, if given), all at once; their reports."""
        running = [subprocess.Popen(
            [sys.executable, '-m', jobs.__name__, self.uri, self.directory,
             'p%d' % i, str(count), *key],
            stdout=subprocess.PIPE, env=processes.subprocess_env())
            for i in range(producers)]
        processes.wait_for(
            lambda: jobs.count_lines(self.path('ready.log')) == producers,
            message='%d producers ready' % producers)
        open(self.path('go'), 'w').close()  # all put at once
        reports = [json.loads(p.communicate(timeout=processes.TIMEOUT)[0])
                   for p in running]
        self.assertEqual([p.returncode for p in running], [0] * producers)
        return reports

    def interruptions(self, oid):
        self.tm.begin()
        return self.conn.get(oid).getRetryPolicy().data.get('interruptions')



class DrainTest:
    """Two workers drain what four producer processes put at once."""

    # Commits that store the same two existing objects may deadlock on
    # RelStorage's PostgreSQL row locks (it takes them in no fixed order),
    # which the storage reports as a ConflictError; puts and claims both
    # store the queue's length and, when the queue is short, its one
    # bucket.  ZEO takes one commit lock: no deadlock.
    deadlocks_allowed = 0

    def test_two_workers_drain_four_producers(self):
        workers = [self.worker('a'), self.worker('b')]
        reports = self.produce(4, 50)
        self.assertEqual([r['conflicts'] for r in reports], [0] * 4)
        self.assertLessEqual(sum(r['deadlocks'] for r in reports),
                             self.deadlocks_allowed)
        oids = [ZODB.utils.p64(oid) for r in reports for oid in r['oids']]
        self.assertEqual(len(set(oids)), 200)
        self.assertAllCompletedOnce(oids)
        self.assertWorkersRunning(workers)


class ZEOScenario(Scenario):
    """A scenario on the real ZEO server of :class:`processes.ZEOLayer`."""

    layer = processes.ZEOLayer

    @property
    def uri(self):
        return self.server.uri

    @property
    def server(self):
        return processes.ZEOLayer.server

    def open_db(self):
        return self.server.open_db()


class ReliabilityTests(DrainTest, ZEOScenario, unittest.TestCase):
    """The catastrophes, with a real ZEO server."""

    def test_kill_9_sibling_recovers_the_job(self):  # C7
        a = self.worker('a')
        oid = self.put(jobs.gated, 1, self.directory)
        self.wait_starts(1)
        self.assertEqual(self.wait(
            lambda conn: self.agent_uuid(conn, oid), 'the job in an agent'),
            a.uuid)
        b = self.worker('b')
        self.wait(lambda conn: b.uuid in self.records(conn) and
                  self.records(conn)[b.uuid].activated,
                  'the sibling activated')
        a.kill()
        # After a's death interval b's ping deactivates a's record, which
        # queues handleInterrupt; b runs it, then the job itself.
        self.wait_starts(2)
        self.open_gate()
        self.assertAllCompletedOnce([oid])
        self.assertEqual([pid for n, pid in self.starts()], [a.pid, b.pid])
        self.tm.begin()
        self.assertFalse(self.records()[a.uuid].activated)
        # A ping that a sent just before it was killed may land after b
        # deactivated its record: dead a death interval later.
        self.wait(lambda conn: self.records(conn)[a.uuid].dead, "a's death")
        self.assertEqual(self.interruptions(oid), 1)

    def test_sigterm_mid_job_then_restart(self):  # C5
        # The job outlives the worker's shutdown timeout.
        a = self.worker('a', *FAST, '--shutdown-timeout', '0.5')
        oid = self.put(jobs.gated, 1, self.directory)
        self.wait_starts(1)
        first_pid = a.pid
        self.assertEqual(a.stop(), 0, a.log)
        # Clean deactivation: the job stays ACTIVE and its handleInterrupt
        # waits in the queue.
        self.wait(lambda conn: not self.records(conn)[a.uuid].activated,
                  "a's record deactivated")
        self.tm.begin()
        job = self.conn.get(oid)
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(self.queue[0].callable, job.handleInterrupt)
        self.open_gate()
        a.start()
        self.assertAllCompletedOnce([oid])
        self.assertEqual([pid for n, pid in self.starts()],
                         [first_pid, a.pid])
        self.assertEqual(self.interruptions(oid), 1)

    def test_zeo_server_restart(self):  # C3
        workers = [self.worker('a'), self.worker('b')]
        gated = [self.put(jobs.gated, n, self.directory) for n in range(6)]
        quick = [self.put(jobs.double, n) for n in range(10)]
        self.wait_starts(2)
        self.server.stop()
        # Running jobs finish while the server is down; their commits wait
        # for it (ClientDisconnected is retried with backoff).
        self.open_gate()
        self.server.start()
        processes.wait_for(self.db.storage.is_connected,
                           message='the test client reconnected')
        quick += [self.put(jobs.double, n) for n in range(10, 20)]
        self.assertAllCompletedOnce(gated + quick)
        self.assertWorkersRunning(workers)

    def test_false_death(self):  # C9
        # a pings at each of its rare polls, but siblings declare it dead
        # 1 s after a ping.
        a = self.worker('a', '--poll-interval', '5', '--ping-interval',
                        '0.1', '--ping-death-interval', '1', '--no-agent')
        self.wait(lambda conn: a.uuid in self.records(conn),
                  "a's record")
        # a's agent takes jobs only until the "refuse" file exists, so the
        # re-run after the false death can only happen in b.
        self.tm.begin()
        self.records()[a.uuid]['main'] = agent.Agent(filter=functools.partial(
            jobs.refuse_after, self.path('refuse')), size=1)
        self.tm.commit()
        oid = self.put(jobs.gated, 1, self.directory)
        self.wait_starts(1)
        open(self.path('refuse'), 'w').close()
        b = self.worker('b', '--poll-interval', '0.2')
        self.wait_starts(2)
        self.open_gate()
        self.assertAllCompletedOnce([oid])
        self.assertEqual([pid for n, pid in self.starts()], [a.pid, b.pid])
        # a's run finished too, found the job reassigned and dropped it.
        processes.wait_for(lambda: 'was reassigned' in a.log,
                           message="a's reassignment error")
        self.tm.begin()
        self.assertIn(self.conn.get(oid),
                      list(self.records()[b.uuid]['main'].completed))

    def test_conflicting_claims(self):  # C2
        chooser = functools.partial(jobs.claim_at_barrier, self.directory)
        workers = [self.worker(name, '--poll-interval', '0.2', '--no-agent')
                   for name in 'ab']
        self.wait(lambda conn: all(
            w.uuid in self.records(conn) for w in workers), 'both records')
        self.tm.begin()
        for w in workers:
            self.records()[w.uuid]['main'] = agent.Agent(chooser=chooser)
        self.tm.commit()
        oid = self.put(jobs.double, 21)
        # Both polls claimed the job before either committed: one commit
        # conflicted, was aborted and polling went on.
        self.assertAllCompletedOnce([oid])
        claims = processes.read(self.path(jobs.CLAIMS)).split()
        self.assertEqual(sorted(map(int, claims[:2])),
                         sorted(w.pid for w in workers))
        self.tm.begin()
        self.assertEqual(self.conn.get(oid).result, 42)
        oid = self.put(jobs.double, 5)  # polling carries on
        self.assertAllCompletedOnce([oid])

    def test_conflicting_job_commits(self):  # C8
        workers = [self.worker(name, '--poll-interval', '0.2',
                               '--agent-size', '2') for name in 'ab']
        self.tm.begin()
        counter = self.conn.root()['counter'] = (
            persistent.mapping.PersistentMapping(n=0))
        jobs_ = [self.queue.put(
            jobmodule.Job(jobs.contended, counter, self.directory),
            retry_policy_factory=jobmodule.RetryCommonForever)
            for n in range(8)]
        self.tm.commit()
        oids = [j._p_oid for j in jobs_]
        self.wait_status(oids, interfaces.COMPLETED)
        self.tm.begin()
        # Each job's increment was committed once, though some attempts
        # conflicted and ran again.
        self.assertEqual(self.conn.root()['counter']['n'], 8)
        self.assertEqual(sorted(self.conn.get(oid).result for oid in oids),
                         list(range(1, 9)))
        self.assertGreater(jobs.count_lines(self.path(jobs.ATTEMPTS)), 8)
        self.assertWorkersRunning(workers)


class PostgreSQLReliabilityTests(DrainTest, Scenario, unittest.TestCase):
    """The drain test on PostgreSQL through RelStorage, when a private
    PostgreSQL server can run here (see ``processes.PostgreSQLLayer``)."""

    layer = processes.PostgreSQLLayer
    deadlocks_allowed = 20  # of 200 puts: see DrainTest

    def setUp(self):
        if processes.PostgreSQLLayer.unavailable:
            self.skipTest(processes.PostgreSQLLayer.unavailable)
        self.uri = processes.PostgreSQLLayer.server.uri(
            processes.PostgreSQLLayer.dbname)
        super().setUp()

    def open_db(self):
        return processes.PostgreSQLLayer.server.open_db(
            processes.PostgreSQLLayer.dbname)
