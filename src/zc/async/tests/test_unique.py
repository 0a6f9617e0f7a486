"""Unique jobs: ``queue.put(..., unique_key=...)`` (zc.async.unique)."""
import datetime
import operator
import threading
import unittest

import transaction
import ZODB.POSException
import ZODB.utils

from zc.asynchronous import interfaces
from zc.asynchronous import monitordb
from zc.asynchronous import retry
from zc.asynchronous import testing
from zc.asynchronous import utils
from zc.asynchronous.job import Job
from zc.asynchronous.queue import Queue, Queues
from zc.asynchronous.tests.reactorcase import ReactorTestCase
from zc.asynchronous.tests.test_reliability import ZEOScenario

KEY = 'invoice-42'
GATE = threading.Event()  # opened by the tests to let ``gated`` return
CALLS = []


def gated(n):
    """Wait (at most a minute) until the test opens the gate."""
    CALLS.append(n)
    GATE.wait(60)
    return n


def fails_once():
    CALLS.append(None)
    if len(CALLS) == 1:
        raise ConnectionError('once')
    return 'done'


class UniqueKeyTests(ReactorTestCase):
    """Puts with unique keys, with a real dispatcher running the jobs."""

    def setUp(self):
        super().setUp()
        GATE.clear()
        del CALLS[:]
        self.addCleanup(GATE.set)

    def index(self):
        transaction.begin()
        return dict(self.queue._unique_jobs or {})

    def test_same_key_returns_the_pending_job(self):
        first = self.put(Job(operator.add, 40, 2), unique_key=KEY)
        self.assertEqual(first.unique_key, KEY)
        again = self.put(Job(operator.add, 1, 1), unique_key=KEY)
        self.assertIs(again, first)
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(self.index(), {KEY: first})
        self.assertEqual(monitordb.jobsummary(first)['unique key'], KEY)

    def test_raise_on_duplicate(self):
        first = self.put(Job(operator.add, 40, 2), unique_key=KEY)
        new = Job(operator.add, 1, 1)
        with self.assertRaises(interfaces.DuplicateJobError) as caught:
            self.queue.put(new, unique_key=KEY, on_duplicate='raise')
        error = caught.exception
        self.assertEqual(error.key, KEY)
        self.assertIs(error.job, first)
        self.assertIn("unique key 'invoice-42' is already pending or "
                      "running in queue ''", str(error))
        self.assertEqual(new.status, interfaces.NEW)
        self.assertIsNone(new.unique_key)
        self.assertEqual(len(self.queue), 1)

    def test_different_keys_and_no_key(self):
        a = self.put(Job(operator.add, 1, 1), unique_key='a')
        b = self.put(Job(operator.add, 2, 2), unique_key='b')
        plain = self.put(Job(operator.add, 3, 3))
        plain2 = self.put(Job(operator.add, 3, 3))
        self.assertEqual(len({a, b, plain, plain2}), 4)
        self.assertIsNone(plain.unique_key)
        self.assertEqual(self.index(), {'a': a, 'b': b})
        self.assertNotIn('unique key', monitordb.jobsummary(plain))

    def test_puts_without_a_key_never_touch_the_index(self):
        self.assertNotIn('_unique_jobs', Queue().__getstate__())
        job = self.put(Job(operator.add, 40, 2))
        self.run_until_completed(job)
        self.queue.pull(0) if len(self.queue) else None
        self.assertIsNone(self.queue._unique_jobs)

    def test_bad_arguments_change_nothing(self):
        cases = [
            (dict(unique_key=KEY, on_duplicate='ignore'), ValueError,
             "on_duplicate must be 'return' or 'raise', not 'ignore'"),
            (dict(unique_key=42), TypeError,
             'unique_key must be a non-empty string, not 42'),
            (dict(unique_key=''), TypeError,
             'unique_key must be a non-empty string'),
        ]
        for kw, error, text in cases:
            job = Job(operator.add, 1, 1)
            with self.assertRaises(error) as caught:
                self.queue.put(job, **kw)
            self.assertIn(text, str(caught.exception))
            self.assertEqual(job.status, interfaces.NEW)
        job = Job(operator.add, 1, 1)
        job.unique_key = 'mine'
        with self.assertRaises(ValueError) as caught:
            self.queue.put(job, unique_key='other')
        self.assertIn("already has the unique key 'mine'",
                      str(caught.exception))
        self.assertEqual(len(self.queue), 0)
        self.assertIsNone(self.queue._unique_jobs)

    def test_held_while_running_and_released_when_completed(self):
        job = self.put(Job(gated, 1), unique_key=KEY)
        self.run_until(lambda: job.status == interfaces.ACTIVE)
        self.assertIs(self.put(Job(gated, 2), unique_key=KEY), job)
        GATE.set()
        self.run_until_completed(job)
        self.assertEqual(self.index(), {})
        self.assertEqual(CALLS, [1])
        second = self.put(Job(gated, 3), unique_key=KEY)
        self.assertIsNot(second, job)
        self.assertEqual(self.index(), {KEY: second})

    def test_released_when_pulled_or_removed(self):
        later = utils.now() + datetime.timedelta(hours=1)
        job = self.put(Job(operator.add, 1, 1), unique_key='a',
                       begin_after=later)
        self.assertIs(self.queue.pull(0), job)
        transaction.commit()
        self.assertEqual(self.index(), {})
        job = self.put(Job(operator.add, 1, 1), unique_key='a',
                       begin_after=later)
        self.queue.remove(job)
        transaction.commit()
        self.assertEqual(self.index(), {})
        # The pulled job keeps its key: it may be put again, under it.
        self.assertIs(self.put(job), job)
        self.assertEqual(self.index(), {'a': job})

    def test_released_when_a_missed_deadline_fails_the_job(self):
        job = self.put(Job(operator.add, 1, 1), unique_key=KEY,
                       begin_after=utils.now() - datetime.timedelta(
                           seconds=10),
                       begin_by=datetime.timedelta(seconds=1))
        self.run_until_completed(job)
        self.assertTrue(job.result.check(interfaces.TimeoutError))
        self.assertEqual(self.index(), {})

    def test_a_job_rescheduled_by_its_policy_keeps_its_key(self):
        job = self.put(Job(fails_once), unique_key=KEY,
                       retry_policy_factory=retry.retrying())
        self.run_until(lambda: CALLS and job.status == interfaces.PENDING)
        self.assertEqual(retry.attempt(job), 2)
        self.assertIs(self.put(Job(fails_once), unique_key=KEY), job)
        self.assertEqual(self.index(), {KEY: job})
        self.run_until_completed(job)
        self.assertEqual(job.result, 'done')
        self.assertEqual(self.index(), {})

    def test_an_entry_whose_job_is_done_counts_as_free(self):
        # Say, a zc.async 1.5 process completed it, knowing nothing of keys.
        done = self.put(Job(operator.add, 1, 1))
        self.run_until_completed(done)
        other = self.put(Job(operator.add, 2, 2), unique_key='b')
        self.queue._unique_jobs[KEY] = done
        transaction.commit()
        new = self.put(Job(operator.add, 3, 3), unique_key=KEY)
        self.assertIsNot(new, done)
        self.assertEqual(self.index(), {KEY: new, 'b': other})


class ConcurrentPutTests(unittest.TestCase):
    """Two transactions putting at once, in two connections."""

    def setUp(self):
        self.db = testing.db()
        self.tms = [transaction.TransactionManager() for _ in range(2)]
        self.conns = [self.db.open(tm) for tm in self.tms]
        root = self.conns[0].root()
        root[interfaces.KEY] = Queues()
        root[interfaces.KEY][''] = Queue()
        self.tms[0].commit()

    def tearDown(self):
        for tm, conn in zip(self.tms, self.conns):
            tm.abort()
            conn.close()
        self.db.close()

    def queues(self):
        for tm in self.tms:
            tm.begin()
        return [conn.root()[interfaces.KEY][''] for conn in self.conns]

    def put_both(self, key1, key2):
        """Both connections put (one under each key); the first commits.
        Return the jobs put."""
        q1, q2 = self.queues()
        job1 = q1.put(Job(operator.add, 1, 1), unique_key=key1)
        job2 = q2.put(Job(operator.add, 2, 2), unique_key=key2)
        self.tms[0].commit()
        return job1, job2

    def test_the_same_key_conflicts_and_the_retry_finds_the_winner(self):
        job1, job2 = self.put_both(KEY, KEY)
        self.assertIsNot(job1, job2)
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.tms[1].commit()
        self.tms[1].abort()
        q2 = self.queues()[1]
        again = q2.put(Job(operator.add, 2, 2), unique_key=KEY)
        self.assertEqual(again._p_oid, job1._p_oid)
        self.tms[1].commit()
        self.assertEqual(len(q2), 1)

    def test_different_keys_merge(self):
        self.put_both('a', None)  # the index exists, holding 'a'
        self.tms[1].commit()
        self.put_both('b', 'c')
        self.tms[1].commit()  # no ConflictError
        q1 = self.queues()[0]
        self.assertEqual(sorted(q1._unique_jobs.keys()), ['a', 'b', 'c'])
        self.assertEqual(len(q1), 4)


class ProducerProcessTests(ZEOScenario, unittest.TestCase):
    """Four producer processes put the same key 100 times each."""

    def test_four_producers_leave_exactly_one_pending_job(self):
        reports = self.produce(4, 100, KEY)
        oids = {oid for report in reports for oid in report['oids']}
        self.assertEqual(sum(len(r['oids']) for r in reports), 400)
        self.assertEqual(len(oids), 1, oids)  # every put got the same job
        self.tm.begin()
        queue = self.queue
        self.assertEqual(len(queue), 1)
        (job,) = list(queue)
        self.assertEqual(ZODB.utils.u64(job._p_oid), oids.pop())
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(job.unique_key, KEY)
        self.assertEqual(dict(queue._unique_jobs), {KEY: job})
