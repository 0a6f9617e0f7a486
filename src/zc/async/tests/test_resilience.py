"""Database outages of any storage: ZEO's and RelStorage's disconnects.

RelStorage raises its database driver's errors (for PostgreSQL:
``psycopg2.OperationalError``) where ZEO raises ``ClientDisconnected``, in
commits and in aborts too (an abort synchronizes with the database).  These
tests inject real driver exceptions into the transaction manager of jobs
stored in a FileStorage and check that jobs wait for the database with
backoff and complete exactly once, and that a worker thread never leaves
a job stranded.
"""
import os
import shutil
import tempfile
import unittest
import unittest.mock

import transaction
import ZEO.Exceptions
import ZODB
import ZODB.FileStorage

import zc.asynchronous.job
from zc.asynchronous import interfaces
from zc.asynchronous import retry
from zc.asynchronous import txn
from zc.asynchronous import utils
from zc.asynchronous.tests import test_dispatcher
from zc.asynchronous.tests.test_dispatcher import count

try:
    import psycopg2
    import relstorage.adapters.postgresql.adapter  # noqa: F401 (in use)
except ImportError:  # pragma: no cover (RelStorage is installed here)
    psycopg2 = None

needs_psycopg2 = unittest.skipIf(psycopg2 is None,
                                 'RelStorage with psycopg2 is not installed')


def driver_error():
    """The error psycopg2 raises when PostgreSQL went away."""
    return psycopg2.OperationalError(
        'server closed the connection unexpectedly')


class OutageTransactionManager(transaction.TransactionManager):
    """Commits and aborts fail as RelStorage's do while its database is
    down: a failing commit raises before anything is stored; a failing
    abort raises after the transaction was aborted (its synchronization
    with the database failed).  ``down(commits, aborts)`` sets how many
    of each fail next; ``history`` records every attempt."""

    def __init__(self):
        super().__init__()
        self.failing_commits = self.failing_aborts = 0
        self.history = []

    def down(self, commits, aborts):
        self.failing_commits, self.failing_aborts = commits, aborts

    def commit(self):
        if self.failing_commits:
            self.failing_commits -= 1
            self.history.append('commit failed')
            raise driver_error()
        self.history.append('commit')
        return super().commit()

    def abort(self):
        super().abort()
        if self.failing_aborts:
            self.failing_aborts -= 1
            self.history.append('abort failed')
            raise driver_error()
        self.history.append('abort')


# Jobs are pickled by reference: their callables live at module level.

calls = []
outage = {}  # what the next outage fails: {'commits': n, 'aborts': n}


def work_through_outage(value):
    """Answer ``value``; the database goes down during the first call."""
    calls.append(value)
    if len(calls) == 1 and outage:
        outage['tm'].down(outage['commits'], outage['aborts'])
    return value


def lose_connection_twice():
    """Raise the driver's error in the first two calls (as a load from a
    RelStorage whose database is down does), then answer 42."""
    calls.append('call')
    if len(calls) <= 2:
        raise driver_error()
    return 42


def note_result(result):
    calls.append(('callback', result))
    return result


class BreaksOnce(zc.asynchronous.job.Job):
    """A job whose first attempt fails outside the job boundary after it
    went ACTIVE: what used to kill a worker thread and strand the job."""

    def _attempt(self, *args):
        if count('breaks') == 1:
            raise RuntimeError('unexpected')
        return super()._attempt(*args)


class ClassificationTests(unittest.TestCase):

    def test_zeo_disconnects_are_disconnects(self):
        self.assertIn(ZEO.Exceptions.ClientDisconnected,
                      txn.disconnect_errors())
        self.assertTrue(
            txn.is_disconnect(ZEO.Exceptions.ClientDisconnected()))
        self.assertFalse(txn.is_disconnect(ValueError()))
        self.assertFalse(txn.is_disconnect(
            ZODB.POSException.ConflictError()))

    @needs_psycopg2
    def test_driver_errors_of_relstorage_in_use_are_disconnects(self):
        self.assertTrue(txn.is_disconnect(driver_error()))
        self.assertTrue(txn.is_disconnect(psycopg2.InterfaceError()))
        # Subclasses too: what a server shutdown raises.
        self.assertTrue(txn.is_disconnect(
            psycopg2.errors.AdminShutdown()))
        self.assertFalse(txn.is_disconnect(psycopg2.ProgrammingError()))
        self.assertEqual(txn._error_kind(driver_error()), 'system')

    def test_families_not_in_use_are_left_out(self):
        import sqlite3
        if 'relstorage.adapters.sqlite.adapter' in __import__('sys').modules:
            self.skipTest('a sqlite RelStorage is in use in this process')
        self.assertFalse(txn.is_disconnect(sqlite3.OperationalError()))

    @needs_psycopg2
    def test_policy_tables_read_client_disconnected_as_any_storage(self):
        classes = txn.with_disconnects(
            (ZEO.Exceptions.ClientDisconnected,))
        self.assertIn(psycopg2.OperationalError, classes)
        self.assertEqual(txn.with_disconnects((ValueError,)),
                         (ValueError,))


class AbortTests(unittest.TestCase):
    """``txn.abort`` tries again until the abort went through."""

    def setUp(self):
        self.sleeps = []
        patcher = unittest.mock.patch.object(txn, '_sleep',
                                             self.sleeps.append)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.tm = OutageTransactionManager()
        self.log = self._capture()

    def _capture(self):
        import zope.testing.loggingsupport
        handler = zope.testing.loggingsupport.InstalledHandler(
            'zc.async.events')
        self.addCleanup(handler.uninstall)
        return handler

    @needs_psycopg2
    def test_waits_with_backoff_for_the_database(self):
        self.tm.down(0, 3)
        self.assertIsNone(txn.abort(self.tm, 'testing'))
        self.assertEqual(self.sleeps, [5, 10, 15])
        self.assertEqual(self.tm.history, ['abort failed'] * 3 + ['abort'])
        self.assertEqual(self.log.records[0].levelname, 'ERROR')
        self.assertIn('aborting (testing)', self.log.records[0].getMessage())

    def test_other_errors_are_retried_at_once_first(self):
        tm = unittest.mock.Mock()
        tm.abort.side_effect = [RuntimeError('rm broke'), None]
        self.assertIsNone(txn.abort(tm, 'testing'))
        self.assertEqual(self.sleeps, [])
        self.assertEqual(tm.abort.call_count, 2)

    @needs_psycopg2
    def test_without_waiting_gives_up_after_two_tries(self):
        self.tm.down(0, 5)
        failure = txn.abort(self.tm, 'polling', wait=False)
        self.assertTrue(failure.check(psycopg2.OperationalError))
        self.assertEqual(self.sleeps, [])
        self.assertEqual(self.tm.history, ['abort failed'] * 2)
        # The transaction is gone all the same; a later abort syncs.
        self.tm.down(0, 0)
        self.tm.abort()

    @needs_psycopg2
    def test_retry_loops_survive_failing_aborts(self):
        self.tm.down(2, 2)  # two commits fail, each abort after them too
        self.assertEqual(utils.never_fail(lambda: 42, 'testing', self.tm),
                         42)
        self.assertEqual(self.tm.history, [
            'commit failed', 'abort failed', 'abort failed', 'abort',
            'commit failed', 'abort', 'commit'])
        # The failed aborts waited (5, 10), and the loop backed off on each
        # failed commit (5, 10).
        self.assertEqual(self.sleeps, [5, 10, 5, 10])

    @needs_psycopg2
    def test_reactor_side_loops_do_not_sleep(self):
        self.tm.down(1, 2)
        failure = utils.try_five_times(lambda: 42, 'polling', self.tm)
        self.assertTrue(failure.check(psycopg2.OperationalError))
        self.assertEqual(self.sleeps, [])


@needs_psycopg2
class JobOutageTests(unittest.TestCase):
    """A job in a FileStorage whose transaction manager fails as
    RelStorage's does while PostgreSQL is down."""

    def setUp(self):
        del calls[:]
        outage.clear()
        test_dispatcher._reset()
        self.sleeps = []
        for module, name in ((txn, '_sleep'), (retry, 'backoff_sleep')):
            patcher = unittest.mock.patch.object(module, name,
                                                 self.sleeps.append)
            patcher.start()
            self.addCleanup(patcher.stop)
        self.directory = tempfile.mkdtemp(prefix='zc.async-resilience-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.directory, 'Data.fs')))
        self.addCleanup(self.db.close)
        self.tm = OutageTransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.addCleanup(self.conn.close)

    def store(self, job):
        self.conn.root()['job'] = job
        self.tm.commit()
        return job

    def reread(self, job):
        """The job as another connection sees it (what is committed)."""
        conn = self.db.open()
        try:
            transaction.begin()
            stored = conn.get(job._p_oid)
            return stored.status, stored.result
        finally:
            transaction.abort()
            conn.close()

    def test_result_commit_and_its_abort_fail_then_complete_once(self):
        job = self.store(zc.asynchronous.job.Job(work_through_outage, 42))
        callback = job.addCallback(note_result)
        self.tm.commit()
        outage.update(tm=self.tm, commits=1, aborts=2)
        self.assertEqual(job(), 42)
        self.assertEqual(self.reread(job), (interfaces.COMPLETED, 42))
        self.assertEqual(callback.status, interfaces.COMPLETED)
        # The callable ran again after the failed commit; the result and
        # the callback were stored once.
        self.assertEqual(calls, [42, 42, ('callback', 42)])
        first_failure = self.tm.history.index('commit failed')
        self.assertEqual(self.tm.history[first_failure:first_failure + 5], [
            'commit failed', 'abort failed', 'abort failed', 'abort',
            'commit'])  # the check whether the result landed after all
        self.assertEqual(self.tm.history.count('commit failed'), 1)
        # The abort waited for the database (5, then 10 seconds), and the
        # retry policy backed off 5 seconds for its first disconnect.
        self.assertEqual(self.sleeps, [5, 10, 5])
        data = job.getRetryPolicy().data
        self.assertEqual(data['zeo_disconnected'], 1)
        self.assertTrue(
            data['last_zeo_disconnected'].check(psycopg2.OperationalError))

    def test_driver_errors_in_job_code_are_retried_forever(self):
        job = self.store(zc.asynchronous.job.Job(lose_connection_twice))
        self.assertEqual(job(), 42)
        self.assertEqual(self.reread(job), (interfaces.COMPLETED, 42))
        self.assertEqual(calls, ['call'] * 3)
        self.assertEqual(self.sleeps, [5, 10])  # the policy's backoff

    def test_never_retry_still_fails_at_once(self):
        job = zc.asynchronous.job.Job(lose_connection_twice)
        job.retry_policy_factory = retry.NeverRetry
        self.store(job)
        failure = job()
        self.assertTrue(failure.check(psycopg2.OperationalError))
        self.assertEqual(calls, ['call'])
        self.assertEqual(self.sleeps, [])


class StrandedJobTests(test_dispatcher.VirtualTimeTestCase):
    """A worker thread that meets an unexpected error hands its ACTIVE job
    back (as a dead dispatcher's would be) before it ends."""

    def setUp(self):
        super().setUp()
        self.dispatcher.activate()
        self.reactor.time_flies(1)

    def test_job_is_retried_and_completes_once(self):
        job = self.queue.put(BreaksOnce(test_dispatcher.add, 40, 2))
        callback = job.addCallback(test_dispatcher.report_result)
        transaction.commit()
        self.reactor.time_flies(5)
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 42)
        self.assertEqual(test_dispatcher.attempts['breaks'], 2)
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)
        transaction.begin()
        test_dispatcher.wait_until(
            lambda: test_dispatcher._status(callback) == interfaces.COMPLETED)
        self.assertEqual(callback.result, 'I got result 42')
        self.assertIn('unexpected error', self.messages('CRITICAL'))
