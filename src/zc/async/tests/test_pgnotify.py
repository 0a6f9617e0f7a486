"""Instant dispatch on RelStorage with PostgreSQL (zc.async.pgnotify).

Every test runs against a real private PostgreSQL cluster
(``processes.PostgreSQLLayer``) and skips, saying why, where none can run.
A notification either arrives or it does not; to tell "not" from "not
yet", a test sends a marker notification of its own after the commit in
question: PostgreSQL delivers notifications in commit order, so whatever
the commit sent would arrive before the marker.
"""
import select
import time
import unittest
import uuid

import BTrees.Length
import psycopg2
import transaction
import transaction.interfaces
import zope.component.testing
import zope.interface
import ZODB.POSException
import ZODB.utils

from zc.asynchronous import interfaces
from zc.asynchronous import job as jobmodule
from zc.asynchronous import pgnotify
from zc.asynchronous import queue as queuemodule
from zc.asynchronous.tests import jobs_for_processes as jobs
from zc.asynchronous.tests import live
from zc.asynchronous.tests import processes

MARKER = 'marker'
LONG_POLL = 3600  # seconds: no test here may wait for a poll


class PostgreSQLCase(unittest.TestCase):
    """A RelStorage database with queue ''; ``self.listen()`` gives a
    plain psycopg2 connection LISTENing to the channel."""

    layer = processes.PostgreSQLLayer

    def setUp(self):
        if processes.PostgreSQLLayer.unavailable:
            self.skipTest(processes.PostgreSQLLayer.unavailable)
        self.server = processes.PostgreSQLLayer.server
        self.dbname = processes.PostgreSQLLayer.dbname
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        live.set_up_components(uuid.uuid1())
        self.db = self.server.open_db(self.dbname)
        self.addCleanup(self.db.close)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.addCleanup(self.conn.close)
        self.addCleanup(self.tm.abort)
        root = self.conn.root()
        root[interfaces.KEY] = queuemodule.Queues()
        root[interfaces.KEY][''] = queuemodule.Queue()
        self.tm.commit()

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def listen(self):
        listener = psycopg2.connect(**self.server.dsn(self.dbname))
        self.addCleanup(listener.close)
        listener.autocommit = True
        with listener.cursor() as cursor:
            cursor.execute('LISTEN %s' % pgnotify.CHANNEL)
        return listener

    def send_marker(self):
        sender = psycopg2.connect(**self.server.dsn(self.dbname))
        try:
            sender.autocommit = True
            with sender.cursor() as cursor:
                cursor.execute("NOTIFY %s, '%s'" % (pgnotify.CHANNEL, MARKER))
        finally:
            sender.close()

    def payloads_until_marker(self, listener):
        """The payloads that arrive before the marker (sent first)."""
        self.send_marker()
        payloads = []
        deadline = time.monotonic() + processes.TIMEOUT
        while MARKER not in payloads:
            self.assertLess(time.monotonic(), deadline, 'no marker came')
            select.select([listener], [], [], 1)
            listener.poll()
            while listener.notifies:
                payloads.append(listener.notifies.pop(0).payload)
        return payloads[:payloads.index(MARKER)]

    def length_payload(self):
        return str(ZODB.utils.u64(self.queue._length._p_oid))

    def put(self):
        self.tm.begin()
        job = self.queue.put(jobmodule.Job(jobs.double, BTrees.Length.Length(), 21))
        return job


@zope.interface.implementer(transaction.interfaces.IDataManager)
class _FailingVote:
    """A data manager that votes last and refuses: the transaction aborts
    after every other resource voted (and NOTIFY was executed)."""

    def __init__(self, tm):
        self.transaction_manager = tm

    def sortKey(self):
        return '~~~~ last'

    def tpc_vote(self, txn):
        raise ZODB.POSException.ConflictError('refused by the test')

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort


class SendingTests(PostgreSQLCase):

    def test_a_committed_put_notifies_once_with_the_length_oid(self):
        listener = self.listen()
        self.put()
        self.queue.put(jobmodule.Job(jobs.double, BTrees.Length.Length(), 21))  # same commit
        self.tm.commit()
        self.assertEqual(self.payloads_until_marker(listener),
                         [self.length_payload()])

    def test_an_aborted_put_does_not_notify(self):
        listener = self.listen()
        self.put()
        self.tm.abort()
        self.assertEqual(self.payloads_until_marker(listener), [])

    def test_a_put_whose_commit_fails_after_the_notify_does_not_notify(self):
        listener = self.listen()
        self.put()
        txn = self.tm.get()
        txn.join(_FailingVote(self.tm))
        self.assertRaises(ZODB.POSException.ConflictError, self.tm.commit)
        self.tm.abort()
        self.assertEqual(self.payloads_until_marker(listener), [])
        # The put is not in the database either.
        self.tm.begin()
        self.assertEqual(len(self.queue), 0)

    def test_a_put_back_notifies(self):
        job = self.put()
        self.tm.commit()
        listener = self.listen()
        self.tm.begin()
        self.queue.pull()
        self.tm.commit()
        self.assertEqual(self.payloads_until_marker(listener), [])
        self.tm.begin()
        self.queue.putBack(job)
        self.tm.commit()
        self.assertEqual(self.payloads_until_marker(listener),
                         [self.length_payload()])

    def test_savepoints_work_after_a_put(self):
        listener = self.listen()
        self.put()
        savepoint = self.tm.savepoint()
        self.queue.put(jobmodule.Job(jobs.double, BTrees.Length.Length(), 21))
        savepoint.rollback()
        self.tm.commit()
        self.tm.begin()
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(self.payloads_until_marker(listener),
                         [self.length_payload()])

    def test_turned_off_nothing_is_sent(self):
        listener = self.listen()
        self.patch_enabled(False)
        self.put()
        self.tm.commit()
        self.assertEqual(self.payloads_until_marker(listener), [])

    def patch_enabled(self, value):
        old, pgnotify.enabled = pgnotify.enabled, value
        self.addCleanup(setattr, pgnotify, 'enabled', old)

    def test_other_storages_send_nothing(self):
        import ZODB.DB
        import ZODB.MappingStorage
        db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.addCleanup(db.close)
        self.assertFalse(pgnotify.postgresql(db.storage))
        self.assertFalse(pgnotify.postgresql(db.open()._storage))
        self.assertTrue(pgnotify.postgresql(self.conn._storage))
        self.assertTrue(pgnotify.postgresql(self.db._mvcc_storage))


class ListenerTests(PostgreSQLCase):

    def setUp(self):
        super().setUp()
        self.calls = []

    def callback(self, storage, oids, committing):
        self.calls.append((storage, oids, committing))

    def start_listener(self):
        storage = self.db._mvcc_storage
        pgnotify.Listener.listen(storage, self.callback)
        self.addCleanup(pgnotify.Listener.unlisten, storage, self.callback)
        listener = pgnotify.Listener.get(storage)
        processes.wait_for(listener.listening.is_set, message='LISTEN')
        return listener

    def test_first_a_look_then_each_put(self):
        self.start_listener()
        # Once listening, it tells its callbacks to look once (None).
        processes.wait_for(lambda: self.calls, message='the first call')
        self.assertEqual(self.calls, [(self.db._mvcc_storage, None, None)])
        self.put()
        self.tm.commit()
        processes.wait_for(lambda: len(self.calls) > 1, message='a call')
        self.assertEqual(self.calls[1], (self.db._mvcc_storage,
                                         {self.queue._length._p_oid}, None))

    def test_the_last_unlisten_ends_the_thread(self):
        listener = self.start_listener()
        pgnotify.Listener.unlisten(self.db._mvcc_storage, self.callback)
        listener.thread.join(processes.TIMEOUT)
        self.assertFalse(listener.thread.is_alive())
        self.assertIsNone(pgnotify.Listener.get(self.db._mvcc_storage))

    def test_a_server_restart_reconnects(self):
        listener = self.start_listener()
        processes.wait_for(lambda: self.calls, message='the first call')
        self.server.stop()
        self.server.start()
        # Back: it looks once more (notifications may have been lost).
        processes.wait_for(lambda: len(self.calls) >= 2 and
                           listener.listening.is_set(),
                           message='reconnected')
        self.assertEqual(self.calls[1][1], None)
        before = len(self.calls)
        for attempt in self.tm.attempts():  # the first may see the restart
            with attempt:
                self.queue.put(jobmodule.Job(jobs.double, BTrees.Length.Length(), 21))
        processes.wait_for(lambda: len(self.calls) > before,
                           message='a call after the restart')


class DispatchTests(PostgreSQLCase):
    """Dispatchers that poll once an hour start put jobs all the same."""

    def test_an_in_process_dispatcher_wakes_on_a_put(self):
        dispatcher = live.LiveDispatcher(self.db, LONG_POLL)
        self.addCleanup(dispatcher.stop)
        processes.wait_for(lambda: pgnotify.Listener.get(
            self.db._mvcc_storage) is not None, message='a listener')
        for n in range(3):  # each one wakes it again
            job = self.put()
            self.tm.commit()
            processes.wait_for_db(
                self.db, lambda root: root._p_jar.get(job._p_oid).status
                == interfaces.COMPLETED, message='job %d completed' % n)

    def test_a_worker_process_wakes_on_a_put(self):
        directory = self.server.directory
        worker = processes.WorkerProcess(
            self.server.uri(self.dbname), directory,
            'pgnotify-worker-%s' % uuid.uuid4().hex[:8],
            '--poll-interval', str(LONG_POLL)).start()
        self.addCleanup(worker.stop)
        processes.wait_for_db(
            self.db, lambda root: worker.uuid in root[interfaces.KEY][
                ''].dispatchers, message='the worker registered')
        job = self.put()
        self.tm.commit()
        processes.wait_for_db(
            self.db, lambda root: root._p_jar.get(job._p_oid).status
            == interfaces.COMPLETED, message='the job completed')

