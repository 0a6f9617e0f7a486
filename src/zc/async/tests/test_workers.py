"""Tests of zc.async.workers: how claimed jobs are started and run.

A poll starts each job it claims in the claim's own commit, and a worker
whose job completes claims and starts its agent's next job in the commit
that completes it.  These tests read the storage's transaction log to
count which commits touched a job.
"""
import collections
import datetime
import operator
import threading
import types
import unittest
import uuid

import transaction
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.claims as claims
import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.unloadable
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
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
        self.assertIn('getting job for UUID', claim)
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
        self.assertIn('getting job for UUID',
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
        child, = [job for job in list(agent) + list(agent.completed)
                  if job.callable is operator.mul]
        self.assertEqual(testing.wait_for_result(child, seconds=5), 42)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(live.dispatcher.getStatistics()['started'], 2)


class DatabaseTestCase(unittest.TestCase):
    """A throwaway FileStorage database and a connection to it."""

    def setUp(self):
        self.db = testing.db()
        self.conn = self.db.open()
        self.addCleanup(self.db.close)
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)


class StartClaimedTests(DatabaseTestCase):
    """``start_claimed`` and ``Job._call_claimed`` on a database."""

    def stored(self, job):
        self.conn.add(job)
        transaction.commit()
        return job

    def test_only_assigned_standard_jobs_are_started(self):
        job = self.stored(zc.asynchronous.job.Job(operator.mul, 6, 7))
        self.assertIsNone(claims.start_claimed(job))  # NEW, not ASSIGNED
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


class ShareTests(DatabaseTestCase):
    """With several dispatchers, workers prefer their share of the jobs."""

    def setUp(self):
        super().setUp()
        root = self.conn.root()
        root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = root[interfaces.KEY][''] = zc.asynchronous.queue.Queue()
        transaction.commit()
        self.jobs = [self.queue.put(zc.asynchronous.job.Job(operator.mul, i, 2))
                     for i in range(6)]
        transaction.commit()

    def fresh_queue(self):
        """The queue in a new connection, its jobs not loaded."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn.root()[interfaces.KEY]['']

    def oid_is(self, job):
        return lambda candidate: candidate._p_oid == job._p_oid

    def test_the_preferred_job_in_the_window_is_claimed(self):
        queue = self.fresh_queue()
        third = self.jobs[2]
        claimed = queue._claim(prefer=self.oid_is(third), window=3)
        self.assertEqual(claimed._p_oid, third._p_oid)
        self.assertEqual(len(queue), 5)
        # The jobs passed over were judged by oid, not loaded.
        first, second = list(queue)[:2]
        self.assertEqual([first._p_status, second._p_status],
                         ['ghost', 'ghost'])

    def test_else_the_first_claimable_job_is(self):
        queue = self.fresh_queue()
        claimed = queue._claim(prefer=self.oid_is(self.jobs[4]), window=3)
        self.assertEqual(claimed._p_oid, self.jobs[0]._p_oid)
        claimed = queue._claim(prefer=lambda job: False, window=8)
        self.assertEqual(claimed._p_oid, self.jobs[1]._p_oid)
        self.assertEqual([job.args[0] for job in queue], [2, 3, 4, 5])

    def test_another_dispatchers_fresh_job_is_left_to_it(self):
        queue = self.fresh_queue()
        waiting = []
        minute = datetime.timedelta(minutes=1)  # the jobs were just put
        self.assertIsNone(queue._claim(prefer=lambda job: False, window=8,
                                       grace=minute, waiting=waiting))
        self.assertEqual(waiting, [self.jobs[0].begin_after])
        claimed = queue._claim(prefer=lambda job: False, window=8,
                               grace=datetime.timedelta(0))
        self.assertEqual(claimed._p_oid, self.jobs[0]._p_oid)

    def test_the_filter_still_applies(self):
        queue = self.fresh_queue()
        claimed = queue._claim(lambda job: job.args[0] != 2,
                               prefer=self.oid_is(self.jobs[2]), window=8)
        self.assertEqual(claimed._p_oid, self.jobs[0]._p_oid)

    def test_shares_of_the_live_dispatchers(self):
        from zc.asynchronous.dispatcher import _share
        uuids = sorted([uuid.uuid1(), uuid.uuid1(), uuid.uuid1()], key=str)
        for one in uuids:
            self.queue.dispatchers.register(one)
        self.assertEqual(_share(self.queue, uuids[0]), (0, 1))  # inactive
        for one in uuids[:2]:
            self.queue.dispatchers[one].activate()
        self.assertEqual(_share(self.queue, uuids[0]), (0, 2))
        self.assertEqual(_share(self.queue, uuids[1]), (1, 2))
        self.assertEqual(_share(self.queue, uuids[2]), (0, 1))

    def test_a_lone_dispatcher_claims_in_order(self):
        dispatcher = types.SimpleNamespace(shares={'': (0, 1)})
        self.assertEqual(claims._preferences(dispatcher, self.queue, []), {})
        dispatcher.shares[''] = (1, 2)
        preferences = claims._preferences(dispatcher, self.queue, [])
        self.assertEqual(preferences['window'], claims.SHARE_WINDOW)
        self.assertEqual(preferences['grace'], claims.GRACE)
        self.assertEqual(
            [preferences['prefer'](job) for job in self.jobs],
            [ZODB.utils.u64(job._p_oid) % 2 == 1 for job in self.jobs])


class RecentClaimsTests(unittest.TestCase):
    """Claims pass over jobs this process claimed in commits that the
    claiming connection does not see yet, and only those."""

    def setUp(self):
        self.db = testing.db()
        self.addCleanup(self.db.close)
        self.uuid = uuid.uuid1()
        conn = self.open()
        root = conn.root()
        root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        queue = root[interfaces.KEY][''] = zc.asynchronous.queue.Queue()
        conn.transaction_manager.commit()
        queue.dispatchers.register(self.uuid)
        queue.dispatchers[self.uuid].activate()
        queue.dispatchers[self.uuid]['main'] = zc.asynchronous.agent.Agent()
        for i in range(3):
            queue.put(zc.asynchronous.job.Job(operator.mul, i, 2))
        conn.transaction_manager.commit()
        self.dispatcher = types.SimpleNamespace(
            recent_claims=collections.OrderedDict(), shares={},
            claim_lock=threading.Lock(),
            unloadable=zc.asynchronous.unloadable.Registry(self.uuid))

    def open(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn

    def agent(self, conn):
        conn.transaction_manager.begin()
        queue = conn.root()[interfaces.KEY]['']
        return queue.dispatchers[self.uuid]['main']

    def test_a_stale_snapshot_passes_over_what_this_process_claimed(self):
        stale = self.agent(self.open())
        first = self.agent(self.open())
        job = claims.claim(self.dispatcher, first)
        self.assertEqual(job.args[0], 0)
        # Under way: passed over.
        other = claims.claim(self.dispatcher, stale)
        self.assertEqual(other.args[0], 1)
        stale._p_jar.transaction_manager.abort()
        claims.forget(self.dispatcher, other)
        older = self.agent(self.open())
        older.queue._p_activate()  # its snapshot is now before the commit
        job._p_jar.transaction_manager.commit()
        claims.landed(self.dispatcher, job)
        # Committed, but not in the older snapshot: passed over still.
        self.assertEqual(claims.claim(self.dispatcher, older).args[0], 1)
        older._p_jar.transaction_manager.abort()
        claims.forget(self.dispatcher, other)
        fresh = self.agent(self.open())
        self.assertEqual(claims.claim(self.dispatcher, fresh).args[0], 1)

    def test_a_job_queued_again_since_its_claim_is_claimed_again(self):
        conn = self.open()
        agent = self.agent(conn)
        job = claims.claim(self.dispatcher, agent)
        conn.transaction_manager.commit()
        claims.landed(self.dispatcher, job)
        agent.remove(job)
        job.parent = None
        agent.queue.putBack(job)
        conn.transaction_manager.commit()
        again = claims.claim(self.dispatcher, self.agent(self.open()))
        self.assertEqual(again._p_oid, job._p_oid)

    def test_a_claim_that_did_not_commit_is_forgotten(self):
        conn = self.open()
        job = claims.claim(self.dispatcher, self.agent(conn))
        conn.transaction_manager.abort()
        claims.forget(self.dispatcher, job)
        again = claims.claim(self.dispatcher, self.agent(self.open()))
        self.assertEqual(again._p_oid, job._p_oid)

    def test_a_share_only_claim_leaves_other_shares_alone(self):
        # As a batch claims (zc.async.batches): even the jobs that are due
        # for longer than the grace are left to the other dispatchers.
        agent = self.agent(self.open())
        mine = [job._p_oid for job in agent.queue
                if ZODB.utils.u64(job._p_oid) % 2 == 1]
        self.assertTrue(0 < len(mine) < len(agent.queue))
        self.dispatcher.shares[''] = (1, 2)
        claimed = []
        while True:
            job = claims.claim(self.dispatcher, agent, [], share_only=True)
            if job is None:
                break
            claimed.append(job._p_oid)
            agent.remove(job)
        self.assertEqual(claimed, mine)
        self.assertEqual(len(agent.queue), 3 - len(mine))


class GraceWakeTests(unittest.TestCase):
    """A job left to another dispatcher brings a poll when it is anybody's.
    """

    def setUp(self):
        self.db = testing.db()
        self.addCleanup(self.db.close)
        self.reactor = testing.Reactor()
        self.reactor.instant_dispatch = True
        self.reactor.start()  # freezes the clock until it stops
        self.addCleanup(self.reactor.stop)
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, self.reactor, uuid=uuid.uuid1())
        self.addCleanup(zc.asynchronous.dispatcher.clear)
        self.dispatcher.activated = True  # as activate() leaves it

    def test_one_poll_at_the_earliest_time(self):
        now = zc.asynchronous.utils.now()
        self.dispatcher._wakeAfterGrace(now)
        self.dispatcher._wakeAfterGrace(now + claims.GRACE)  # later: served
        call, = [call for call in self.reactor.calls if call.active()]
        self.assertEqual(call.call, self.dispatcher._wake)
        self.dispatcher._wakeAfterGrace(now - claims.GRACE)  # earlier
        calls = [call for call in self.reactor.calls if call.active()]
        self.assertEqual(len(calls), 1)
        self.assertLess(calls[0].getTime(), call.getTime())
