"""Tests of zc.async.workers: how claimed jobs are started and run.

A poll starts each job it claims in the claim's own commit, and a worker
whose job completes claims and starts its agent's next job in the commit
that completes it.  These tests read the storage's transaction log to
count which commits touched a job.
"""
import operator
import unittest

import transaction
import ZODB.utils

import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
import zc.asynchronous.workers as workers
from zc.asynchronous.dispatcher import getId
from zc.asynchronous.tests.live import DispatcherTestCase


class CallCountingJob(zc.asynchronous.job.Job):
    """A job class with a ``__call__`` of its own, as 1.5 code may have."""

    calls = 0

    def __call__(self, *args, **kwargs):
        CallCountingJob.calls += 1
        return super().__call__(*args, **kwargs)


def put_job(queue):
    """A job run by a job: puts ``6 * 7`` in the queue; returns None."""
    queue.put(zc.asynchronous.job.Job(operator.mul, 6, 7))


class ClaimCommitTests(DispatcherTestCase):

    def commits_touching(self, job, after):
        """Notes of the committed transactions after tid ``after`` that
        stored ``job``."""
        storage = self.db.storage
        return [txn.description.decode('utf-8')
                for txn in storage.iterator(ZODB.utils.p64(
                    ZODB.utils.u64(after) + 1))
                if any(record.oid == job._p_oid for record in txn)]

    def set_agent_size(self, size):
        transaction.begin()
        self.queue.dispatchers[self.uuid]['main'].size = size
        transaction.commit()

    def test_a_poll_starts_the_jobs_it_claims(self):
        live = self.start(poll_interval=30)
        testing.get_poll(live.dispatcher, 0)
        job = self.put(operator.mul, 6, 7)
        put_tid = job._p_serial
        self.assertEqual(testing.wait_for_result(job, seconds=5), 42)
        # Two commits: the claim (which made it ACTIVE) and the result;
        # no commit of its own to go ACTIVE.
        claim, result = self.commits_touching(job, put_tid)
        self.assertIn('getting jobs', claim)
        transaction.begin()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertLess(job.active_start, job.active_end)
        info = live.dispatcher.getJobInfo(*getId(job))
        self.assertEqual(info['result'], '42')
        self.assertIsNotNone(info['started'])

    def test_a_job_class_with_its_own_call_is_called_as_in_1_5(self):
        live = self.start(poll_interval=30)
        testing.get_poll(live.dispatcher, 0)
        CallCountingJob.calls = 0
        job = self.queue.put(CallCountingJob(operator.mul, 6, 7))
        transaction.commit()
        put_tid = job._p_serial
        self.assertEqual(testing.wait_for_result(job, seconds=5), 42)
        self.assertEqual(CallCountingJob.calls, 1)
        # The claim leaves it ASSIGNED; its own start commit makes it ACTIVE.
        self.assertEqual(len(self.commits_touching(job, put_tid)), 3)

    def test_a_completing_commit_claims_and_starts_the_next_job(self):
        live = self.start(poll_interval=30)
        testing.get_poll(live.dispatcher, 0)
        self.set_agent_size(1)
        polls = len(live.dispatcher.polls)
        jobs = [self.queue.put(zc.asynchronous.job.Job(operator.mul, i, 2))
                for i in range(5)]
        transaction.commit()
        put_tid = jobs[0]._p_serial
        self.assertEqual([testing.wait_for_result(job, seconds=5)
                          for job in jobs], [0, 2, 4, 6, 8])
        # The first job is claimed by the poll that the put woke; each
        # later one by the commit completing the one before it.
        self.assertIn('getting jobs',
                      self.commits_touching(jobs[0], put_tid)[0])
        for before, job in zip(jobs, jobs[1:]):
            claim, result = self.commits_touching(job, put_tid)
            self.assertEqual(
                claim, self.commits_touching(before, put_tid)[-1])
        # Those commits only claimed: they woke no poll (one for the put,
        # and one when the last job found nothing to claim).
        self.assertLessEqual(len(live.dispatcher.polls), polls + 2)
        stats = live.dispatcher.getStatistics()
        self.assertEqual(stats['started'], 5)
        self.assertEqual(stats['successful'], 5)
        for job in jobs:
            info = live.dispatcher.getJobInfo(*getId(job))
            self.assertIsNotNone(info['poll id'])
            self.assertIsNotNone(info['completed'])

    def test_a_job_put_by_a_job_is_claimed_in_the_same_commit(self):
        live = self.start(poll_interval=30)
        testing.get_poll(live.dispatcher, 0)
        self.set_agent_size(1)
        parent = self.put(put_job, self.queue)
        self.assertIsNone(testing.wait_for_result(parent, seconds=5))
        transaction.begin()
        agent = self.queue.dispatchers[self.uuid]['main']
        child, = [job for job in agent.completed
                  if job.callable is operator.mul]
        self.assertEqual(testing.wait_for_result(child, seconds=5), 42)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(live.dispatcher.getStatistics()['started'], 2)


class StartClaimedTests(unittest.TestCase):
    """``start_claimed`` and ``Job._call_claimed`` on a database."""

    def setUp(self):
        self.db = testing.db()
        self.conn = self.db.open()
        self.addCleanup(self.db.close)
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)

    def stored(self, job):
        self.conn.add(job)
        transaction.commit()
        return job

    def test_only_assigned_standard_jobs_are_started(self):
        job = self.stored(zc.asynchronous.job.Job(operator.mul, 6, 7))
        self.assertIsNone(workers.start_claimed(job))  # NEW, not ASSIGNED
        self.assertEqual(job.status, interfaces.NEW)

    def test_a_job_started_again_since_is_not_run(self):
        job = self.stored(zc.asynchronous.job.Job(operator.mul, 6, 7))
        job._status_id = zc.asynchronous.job._ACTIVE  # as a claim leaves it
        job._active_start = zc.asynchronous.utils.now()
        transaction.commit()
        with self.assertRaises(interfaces.ReassignedError):
            job._call_claimed(None)
        self.assertEqual(job._call_claimed(job.active_start), 42)
        self.assertEqual(job.status, interfaces.COMPLETED)
