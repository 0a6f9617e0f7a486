"""Tests of zc.async.batches: several small jobs of an agent per commit.

A real dispatcher on a real reactor and FileStorage; the storage's
transaction log tells which commits stored which job.
"""
import datetime
import pickle
import threading
import time
import unittest

import BTrees.Length
import persistent.mapping
import transaction
import twisted.internet.defer
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.retry
import zc.asynchronous.testing as testing
from zc.asynchronous.dispatcher import getId
from zc.asynchronous.tests import jobs_for_processes as jobs
from zc.asynchronous.tests.live import DispatcherTestCase, wait_until
from zc.asynchronous.tests.test_reliability import FAST, ZEOScenario


RUNS = []  # what the jobs below did, in order


def note(name):
    """A job that changes the database: adds ``name`` to the root's
    ``'notes'``."""
    RUNS.append(name)
    conn = zc.asynchronous.local.getJob()._p_jar
    conn.root()['notes'][name] = len(RUNS)
    return name


def note_then_raise(name):
    note(name)
    raise ValueError(name)


CONFLICTED = []


def note_and_conflict(name):
    """``note``; the first time, also commit a change of the same record
    from another connection, so that the batch's commit conflicts."""
    note(name)
    if not CONFLICTED:
        CONFLICTED.append(name)
        db = zc.asynchronous.local.getJob()._p_jar.db()
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        try:
            conn.root()['notes']['outsider'] = 0
            tm.commit()
        finally:
            conn.close()
    return name


FLAKY = set()


def flaky(name):
    """``note``, after raising ValueError the first time."""
    if name not in FLAKY:
        FLAKY.add(name)
        RUNS.append('raised ' + name)
        raise ValueError(name)
    return note(name)


SPINNING = threading.Event()


def spin(name):
    """``note``, then wait (in short sleeps) until stopped."""
    note(name)
    SPINNING.set()
    for _ in range(3000):  # 30 seconds at most
        time.sleep(0.01)
    return name


def deferred(value):
    return twisted.internet.defer.succeed(value)


class AgentSettingTests(DispatcherTestCase):

    def test_the_default_is_one_job_per_transaction(self):
        agent = zc.asynchronous.agent.Agent()
        self.assertEqual(agent.batch_size, 1)
        self.assertNotIn('_batch_size', agent.__dict__)
        agent.batch_size = 10
        self.assertEqual(agent.batch_size, 10)

    def test_an_older_agent_loads_with_the_default(self):
        agent = zc.asynchronous.agent.Agent()
        state = agent.__getstate__()
        self.assertNotIn('_batch_size', state)
        copy = pickle.loads(pickle.dumps(agent))
        self.assertEqual(copy.batch_size, 1)

    def test_bad_sizes_are_refused_at_the_setting(self):
        agent = zc.asynchronous.agent.Agent()
        for bad, error in ((0, ValueError), (-3, ValueError),
                           (2.5, TypeError), ('10', TypeError),
                           (True, TypeError), (None, TypeError)):
            with self.assertRaises(error) as raised:
                agent.batch_size = bad
            self.assertIn('batch_size', str(raised.exception))
        self.assertEqual(agent.batch_size, 1)


class BatchTests(DispatcherTestCase):

    def setUp(self):
        super().setUp()
        del RUNS[:]
        del CONFLICTED[:]
        self.conn.root()['notes'] = persistent.mapping.PersistentMapping()
        transaction.commit()
        self.live_dispatcher = self.start(poll_interval=30)
        testing.get_poll(self.live_dispatcher.dispatcher, 0)
        transaction.begin()
        self.agent = self.queue.dispatchers[self.uuid]['main']
        self.agent.size = 1
        self.agent.batch_size = 4
        transaction.commit()

    def put_all(self, *calls):
        """Put ``(callable, arg)`` pairs in one commit; return the jobs."""
        jobs = [self.queue.put(zc.asynchronous.job.Job(call, arg))
                for call, arg in calls]
        transaction.commit()
        return jobs

    def commits(self, jobs, after):
        """For each job, the tids of the commits after ``after`` that
        stored it."""
        storage = self.db.storage
        oids = {job._p_oid: n for n, job in enumerate(jobs)}
        found = [[] for _ in jobs]
        start = ZODB.utils.p64(ZODB.utils.u64(after) + 1)
        for txn in storage.iterator(start):
            for record in txn:
                if record.oid in oids:
                    found[oids[record.oid]].append(txn.tid)
        return found

    def wait(self, jobs):
        return [testing.wait_for_result(job, seconds=30) for job in jobs]

    def completed_once(self, jobs):
        transaction.begin()
        completed = [job._p_oid for job in self.agent.completed]
        for job in jobs:
            self.assertEqual(completed.count(job._p_oid), 1, job)
            self.assertEqual(job.status, interfaces.COMPLETED)

    def test_a_batch_claims_runs_and_completes_jobs_in_one_commit(self):
        jobs = self.put_all(*[(note, 'j%d' % n) for n in range(9)])
        put = jobs[0]._p_serial
        self.assertEqual(self.wait(jobs), ['j%d' % n for n in range(9)])
        commits = self.commits(jobs, put)
        # The first job: claimed by the poll, run in commits of its own.
        self.assertGreaterEqual(len(commits[0]), 2)
        self.assertFalse(set(commits[0]) & set(sum(commits[1:], [])))
        # Then batches of 4: one commit claims, runs and completes them.
        for batch in (commits[1:5], commits[5:9]):
            self.assertEqual([len(tids) for tids in batch], [1] * 4)
            self.assertEqual(len({tids[0] for tids in batch}), 1)
        self.assertNotEqual(commits[1], commits[5])
        self.completed_once(jobs)
        transaction.begin()
        self.assertEqual(len(self.conn.root()['notes']), 9)
        # The dispatcher learnt of each one.
        stats = self.live_dispatcher.dispatcher.getStatistics()
        self.assertEqual(stats['started'], 9)
        self.assertEqual(stats['successful'], 9)
        for job in jobs:
            info = self.live_dispatcher.dispatcher.getJobInfo(*getId(job))
            self.assertEqual(info['result'], repr(job.result))
            self.assertIsNotNone(info['started'])
            self.assertIsNotNone(info['completed'])
        # The poll connection, the thread's, and its batch connection (the
        # growth goes with the dispatcher's deactivation).
        dispatcher = self.live_dispatcher.dispatcher
        self.assertEqual(self.live_dispatcher.call(
            lambda: dispatcher._pool_growth[self.db]), 1 + 1 + 1)

    def test_a_job_that_raises_is_rolled_back_alone_and_fails(self):
        jobs = self.put_all((note, 'first'), (note, 'before'),
                            (note_then_raise, 'raising'), (note, 'after'))
        put = jobs[0]._p_serial
        results = self.wait(jobs)
        self.assertEqual(results[:2], ['first', 'before'])
        self.assertIsInstance(results[2], zc.asynchronous.twist.Failure)
        self.assertIsInstance(results[2].value, ValueError)
        self.assertEqual(results[3], 'after')
        transaction.begin()
        notes = self.conn.root()['notes']
        # What the failed job changed was rolled back; the others' stayed.
        self.assertEqual(sorted(notes), ['after', 'before', 'first'])
        commits = self.commits(jobs, put)
        self.assertEqual(len({tids[0] for tids in commits[1:]}), 1)
        self.completed_once(jobs)
        self.assertEqual(len(self.log_errors_about('raising')), 1)

    def log_errors_about(self, text):
        return [m for m in self.messages('ERROR') if text in m]

    def test_a_conflict_at_the_batch_commit_runs_the_whole_batch_again(self):
        jobs = self.put_all((note, 'first'), (note, 'a'),
                            (note_and_conflict, 'b'), (note, 'c'))
        self.assertEqual(self.wait(jobs), ['first', 'a', 'b', 'c'])
        # The batch ran, its commit conflicted, nothing of it landed: the
        # poll claimed its jobs again, and they all ran again.
        self.assertEqual(RUNS[:4], ['first', 'a', 'b', 'c'])
        self.assertEqual(sorted(RUNS[4:]), ['a', 'b', 'c'])
        self.completed_once(jobs)
        transaction.begin()
        notes = self.conn.root()['notes']
        self.assertEqual(sorted(notes), ['a', 'b', 'c', 'first', 'outsider'])
        self.assertEqual(self.live_dispatcher.dispatcher.getStatistics()[
            'successful'], 4)
        self.assertTrue([r for r in self.log.records
                         if 'commit of a batch' in r.getMessage()])

    def test_a_job_rescheduled_by_its_retry_policy_runs_again_later(self):
        FLAKY.clear()
        first, retried, other = [
            self.queue.put(zc.asynchronous.job.Job(call, name), **kw)
            for call, name, kw in (
                (note, 'first', {}),
                (flaky, 'retried', {'retry_policy_factory':
                                    zc.asynchronous.retry.retrying(
                                        delay=datetime.timedelta(0))}),
                (note, 'other', {}))]
        transaction.commit()
        jobs = [first, retried, other]
        self.assertEqual(self.wait(jobs), ['first', 'retried', 'other'])
        # Put back by its batch, it was not claimed again by that batch
        # (which had claimed it already), but by a later claim.
        self.assertEqual(RUNS, ['first', 'raised retried', 'other',
                                'retried'])
        transaction.begin()
        self.assertEqual(zc.asynchronous.retry.attempt(retried), 2)
        self.completed_once(jobs)

    def test_an_abort_requested_mid_batch_fails_the_job(self):
        SPINNING.clear()
        jobs = self.put_all((note, 'first'), (note, 'before'),
                            (spin, 'spinning'), (note, 'after'))
        self.assertTrue(SPINNING.wait(30))
        # For everybody else the batch's jobs are still pending: the
        # request fails the job at once, and the batch's commit conflicts.
        for attempt in transaction.manager.attempts():
            with attempt:
                jobs[2].requestAbort()
        results = self.wait(jobs)
        self.assertIsInstance(results[2].value, interfaces.AbortRequested)
        self.assertEqual([results[n] for n in (0, 1, 3)],
                         ['first', 'before', 'after'])
        self.completed_once([jobs[n] for n in (0, 1, 3)])
        transaction.begin()
        self.assertNotIn('spinning', self.conn.root()['notes'])
        self.assertEqual(RUNS.count('spinning'), 1)

    def test_a_job_with_a_time_limit_runs_alone(self):
        first, in_batch = [self.queue.put(zc.asynchronous.job.Job(note, n))
                           for n in ('first', 'batched')]
        limited = self.queue.put(zc.asynchronous.job.Job(note, 'limited'),
                                 time_limit=datetime.timedelta(minutes=5))
        last = self.queue.put(zc.asynchronous.job.Job(note, 'last'))
        transaction.commit()
        jobs = [first, in_batch, limited, last]
        put = first._p_serial
        self.assertEqual(self.wait(jobs),
                         ['first', 'batched', 'limited', 'last'])
        commits = self.commits(jobs, put)
        # The batch claims and starts the limited job, then ends: the job
        # runs in commits of its own.
        self.assertEqual(commits[1][0], commits[2][0])
        self.assertEqual(len(commits[1]), 1)
        self.assertGreater(len(commits[2]), 1)
        self.assertNotIn(commits[2][-1], commits[3])
        self.completed_once(jobs)

    def test_a_job_returning_a_deferred_completes_after_the_commit(self):
        jobs = self.put_all((note, 'first'), (deferred, 42), (note, 'x'))
        self.assertEqual(self.wait(jobs), ['first', 42, 'x'])
        self.completed_once(jobs)

    def test_callbacks_run_in_the_batch_and_a_failing_one_fails_alone(self):
        first, job = [self.queue.put(zc.asynchronous.job.Job(note, n))
                      for n in ('first', 'parent')]
        good = job.addCallback(zc.asynchronous.job.Job(note))
        bad = job.addCallback(zc.asynchronous.job.Job(note_then_raise))
        transaction.commit()
        put = first._p_serial
        self.assertEqual(self.wait([first, job]), ['first', 'parent'])
        transaction.begin()
        self.assertEqual(good.result, 'parent')
        self.assertIsInstance(bad.result.value, ValueError)
        self.assertEqual(bad.status, interfaces.COMPLETED)
        # The parent, its callbacks and their outcomes: one commit.
        commits = self.commits([job, good, bad], put)
        self.assertEqual([len(tids) for tids in commits], [1, 1, 1])
        self.assertEqual(len({tids[0] for tids in commits}), 1)
        # The failing callback's change was rolled back: the good one's
        # (the third run) stayed.
        self.assertEqual(RUNS, ['first'] + ['parent'] * 3)
        self.assertEqual(dict(self.conn.root()['notes']),
                         {'first': 1, 'parent': 3})
        self.completed_once([first, job])

    def test_a_stopping_dispatcher_claims_no_more(self):
        started, release = threading.Event(), threading.Event()
        BLOCKERS[:] = [(started, release)]
        jobs = self.put_all((note, 'first'), (block, 'blocked'),
                            (note, 'left'))
        self.assertTrue(started.wait(30))
        dispatcher = self.live_dispatcher.dispatcher
        self.live_dispatcher.call(setattr, dispatcher, 'stopping', True)
        release.set()
        pool, = dispatcher._pools()
        wait_until(lambda: not pool.batching and not pool.busy, 30)
        transaction.begin()
        # The batch under way committed; the job it had not claimed yet
        # is still queued.
        self.assertEqual(jobs[1].status, interfaces.COMPLETED)
        self.assertEqual(jobs[2].status, interfaces.PENDING)
        self.live_dispatcher.call(setattr, dispatcher, 'stopping', False)


BLOCKERS = []


def block(name):
    started, release = BLOCKERS[0]
    started.set()
    release.wait(30)
    return name


class KilledMidBatchTests(ZEOScenario, unittest.TestCase):
    """A real worker process killed (SIGKILL) in the middle of a batch."""

    def test_the_batch_s_jobs_are_run_by_another_worker_at_once(self):
        a = self.worker('a', *FAST, '--agent-size', '1', '--batch-size', '5')
        self.wait(lambda conn: a.uuid in self.records(conn)
                  and 'main' in self.records(conn)[a.uuid], "a's agent")
        # The first job comes from the poll; the batch after it claims the
        # gated one and the two after it, and is killed in the gated one.
        oids = [self.put(jobs.double, 0)]
        self.tm.begin()
        for n, func, args in ((1, jobs.gated, (self.directory,)),
                              (2, jobs.double, ()), (3, jobs.double, ())):
            oids.append(self.queue.put(zc.asynchronous.job.Job(
                func, BTrees.Length.Length(), n, *args)))
        self.tm.commit()
        oids[1:] = [job._p_oid for job in oids[1:]]
        self.wait_starts(1)
        a.kill()
        # Nothing of the batch was committed: b claims its jobs without
        # waiting for a to be declared dead.
        b = self.worker('b', '--poll-interval', '0.2', '--ping-interval',
                        '0.5', '--ping-death-interval', '600')
        self.wait_starts(2)
        self.open_gate()
        self.assertAllCompletedOnce(oids)
        self.assertEqual([pid for n, pid in self.starts()], [a.pid, b.pid])
        self.assertIsNone(self.interruptions(oids[1]))
        self.assertWorkersRunning([b])
