"""Tests of the modules kept for old pickles and configurations.

``zc.async.legacy``, ``zc.async.partial`` and ``zc.async.adapters``.
"""
import importlib
import unittest

import transaction
import twisted.python.failure
import ZODB
import ZODB.MappingStorage

import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.legacy as legacy
import zc.asynchronous.twist as twist


def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAVE_JOB = _importable('zc.async.job')
HAVE_QUEUE = HAVE_JOB and _importable('zc.async.queue')


class SuccessOrFailureTests(unittest.TestCase):

    def test_values_go_to_success(self):
        self.assertEqual(
            legacy.success_or_failure(lambda r: ('ok', r), None, 3), ('ok', 3))

    def test_failures_go_to_failure(self):
        failure = twist.Failure(ValueError('x'))
        plain = twisted.python.failure.Failure(KeyError('y'))
        handled = legacy.success_or_failure(None, lambda f: f.type, failure)
        self.assertIs(handled, ValueError)
        handled = legacy.success_or_failure(None, lambda f: f.type, plain)
        self.assertIs(handled, KeyError)

    def test_missing_branch_passes_the_bare_result(self):
        failure = twist.Failure(ValueError('x'))
        self.assertIs(legacy.success_or_failure(None, None, failure), failure)
        self.assertEqual(legacy.success_or_failure(None, print, 5), 5)


def _db(test):
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    test.addCleanup(db.close)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    test.addCleanup(conn.close)
    test.addCleanup(tm.abort)
    return conn, tm


@unittest.skipUnless(HAVE_QUEUE, 'zc.async.job or zc.async.queue missing')
class QueueUsingTests(unittest.TestCase):

    def setUp(self):
        from zc.asynchronous import queue
        self.conn, self.tm = _db(self)
        queues = self.conn.root()[interfaces.KEY] = queue.Queues()
        self.queue = queues[''] = queue.Queue()
        self.tm.commit()

    def test_choose_first_claims_the_next_job_of_the_agents_queue(self):
        job = self.queue.put(len, begin_after=None)
        holder = type('AgentParts', (), {'queue': self.queue})()
        self.assertIs(legacy.chooseFirst(holder), job)
        self.assertEqual(len(self.queue), 0)

    def test_default_queue_adapter(self):
        from zc.asynchronous import adapters
        self.assertIs(adapters.defaultQueueAdapter(self.queue), self.queue)
        self.assertIs(adapters.defaultQueueAdapter(self.conn), self.queue)


@unittest.skipUnless(HAVE_JOB, 'zc.async.job missing')
class PartialPlaceholderTests(unittest.TestCase):

    def test_constructing_raises(self):
        from zc.asynchronous import job, partial
        self.assertTrue(issubclass(partial.Partial, job.Job))
        with self.assertRaisesRegex(Exception, 'placeholder'):
            partial.Partial(len)

    def test_old_pickles_still_load(self):
        from zc.asynchronous import partial
        obj = partial.Partial.__new__(partial.Partial)
        self.assertIsInstance(obj, partial.Partial)
