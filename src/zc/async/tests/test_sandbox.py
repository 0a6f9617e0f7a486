"""Replay and dry-run (zc.async.ops.sandbox, snapshot, sandboxcli), and the
snapshot jobs record.

On FileStorage (with a real dispatcher and the ``zc-async`` command as a
separate process), on a real ZEO server with a real worker process, and on
RelStorage (history-preserving and history-free) when a private
PostgreSQL server can run here.  The jobs and data are in
:mod:`zc.async.tests.sandbox_jobs`: an *order* of items whose prices are
text; ``invoice_total`` fails on a price that is not a number.

"Nothing written" is checked byte for byte: the storage's last transaction
and the file's size and SHA-256 are the same after a replay or dry-run.
"""
import datetime
import decimal
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import persistent.list
import transaction
import twisted.internet.defer
import ZODB
import ZODB.FileStorage
import ZODB.utils

import zc.asynchronous
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous import interfaces
from zc.asynchronous.ops import sandbox
from zc.asynchronous.ops import sandboxreport
from zc.asynchronous import snapshot
from zc.asynchronous.ops import web
from zc.asynchronous.job import Job
from zc.asynchronous.tests import browser
from zc.asynchronous.tests import processes
from zc.asynchronous.tests import sandbox_jobs as jobs
from zc.asynchronous.tests.live import DispatcherTestCase
from zc.asynchronous.tests.test_web import BrowserTests, DashboardTestCase

JOBS = 'zc.async.tests.sandbox_jobs'
ITEM = JOBS + '.Item'
ENTRY = JOBS + '.Entry'
TREE = 'BTrees.OOBTree.OOBTree'
BAD_PRICE = "[<class 'decimal.ConversionSyntax'>]"


def LATER():
    """A begin_after in an hour: the job stays pending."""
    return zc.asynchronous.utils.now() + datetime.timedelta(hours=1)


def u64(obj):
    return ZODB.utils.u64(obj._p_oid)


def zc_async(*args, input=None):
    """Run ``zc-async ARGS`` (importing the test jobs); return (exit status,
    stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, '-m', 'zc.async.ops.cli', *args, '--import', JOBS],
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=processes.TIMEOUT,
        env=processes.subprocess_env())
    # ZODB warns that the index of a FileStorage in use is not up to date
    err = ''.join(line for line in done.stderr.splitlines(True)
                  if not line.startswith('Ignoring index for '))
    return done.returncode, done.stdout, err


def file_state(path, storage):
    """What must not change: the last transaction, the file's size and
    digest."""
    with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return storage.lastTransaction(), os.path.getsize(path), digest


def changed_oids(report):
    return {change.oid for change in report.changed}


def class_names(changes):
    return sorted(change.class_name for change in changes)


class SandboxTestCase(DispatcherTestCase):
    """A FileStorage with queue '', an order of two items and a log."""

    def setUp(self):
        super().setUp()
        root = self.conn.root()
        self.order = root['order'] = jobs.order('10', 'twelve')
        self.log_list = root['log'] = persistent.list.PersistentList()
        transaction.commit()
        self.path = os.path.join(self.db.directory, 'Data.fs')
        self.uri = 'file://' + self.path

    def state(self):
        return file_state(self.path, self.db.storage)

    def fix(self):
        """Correct the bad price (committed)."""
        self.order[1].price = '12'
        transaction.commit()

    def failed_job(self, call=jobs.invoice_total, *args):
        """A job that a real dispatcher ran and that failed on the bad
        price; the dispatcher is stopped (nothing commits any more)."""
        live = self.start()
        job = self.put(call, *(args or (self.order,)))
        testing.wait_for_result(job)
        self.live.remove(live)
        live.stop()
        transaction.begin()
        self.assertEqual(str(job.result.value), BAD_PRICE)
        return job

    def called_job(self, call, *args):
        """A job of no queue, called here (the path of ``job()``)."""
        job = Job(call, *args)
        self.conn.add(job)
        transaction.commit()
        job()
        return job


# ------------------------------------------------------------ snapshots

class SnapshotRecordingTests(SandboxTestCase):

    def test_a_called_job_records_the_snapshot_of_its_start(self):
        job = self.called_job(jobs.invoice_total, self.order)
        at = job.active_snapshot
        self.assertEqual(len(at), 8)
        then = self.db.open(at=at, transaction_manager=(
            transaction.TransactionManager()))
        just_before = self.db.open(before=at, transaction_manager=(
            transaction.TransactionManager()))
        try:
            # exactly the start commit: ACTIVE at it, NEW before it
            self.assertEqual(then.get(job._p_oid).status, interfaces.ACTIVE)
            self.assertEqual(then.get(job._p_oid).active_start,
                             job.active_start)
            self.assertEqual(just_before.get(job._p_oid).status,
                             interfaces.NEW)
        finally:
            then.close()
            just_before.close()

    def test_a_dispatched_job_records_the_snapshot_of_its_worker(self):
        live = self.start()
        job = self.put(jobs.invoice_total, jobs.order('1', '2'))
        self.assertEqual(testing.wait_for_result(job), 3)
        at = job.active_snapshot
        then = self.db.open(at=at, transaction_manager=(
            transaction.TransactionManager()))
        try:
            seen = then.get(job._p_oid)
            self.assertEqual(seen.status, interfaces.ACTIVE)
            self.assertEqual(seen.active_start, job.active_start)
            self.assertEqual(seen.agent.parent.UUID, live.dispatcher.UUID)
        finally:
            then.close()

    def test_recording_costs_no_commit(self):
        last = self.db.storage.lastTransaction()
        job = self.called_job(jobs.invoice_total, jobs.order('1'))
        self.assertIsNotNone(job.active_snapshot)
        # the add, the start and the result: as without the record
        self.assertEqual(len(list(self.db.storage.iterator(
            ZODB.utils.p64(ZODB.utils.u64(last) + 1)))), 3)

    def test_a_job_that_waits_on_a_deferred_writes_nothing_more(self):
        last = self.db.storage.lastTransaction()
        job = self.called_job(twisted.internet.defer.Deferred)
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertIsNone(job.active_snapshot)
        self.assertEqual(len(list(self.db.storage.iterator(
            ZODB.utils.p64(ZODB.utils.u64(last) + 1)))), 2)

    def test_jobs_of_older_versions_have_none(self):
        job = Job.__new__(Job)
        job.__setstate__({'_status_id': 3})
        self.assertIsNone(job.active_snapshot)
        self.assertIsNone(Job(jobs.invoice_total).active_snapshot)

    def test_a_historical_connection_tells_its_tid(self):
        tid = self.db.storage.lastTransaction()
        self.assertEqual(snapshot.connection_tid(self.conn), tid)
        conn = self.db.open(at=tid)
        try:
            self.assertEqual(snapshot.connection_tid(conn), tid)
        finally:
            conn.close()


class TidTextTests(unittest.TestCase):

    def test_hex_and_times(self):
        tid = ZODB.utils.p64(0x03e9a1b2c3d4e5f6)
        text = snapshot.tid_text(tid)
        self.assertTrue(text.startswith('0x03e9a1b2c3d4e5f6 ('), text)
        self.assertEqual(snapshot.parse_tid('0x03e9a1b2c3d4e5f6'), tid)
        self.assertEqual(snapshot.parse_tid('03E9A1B2C3D4E5F6'), tid)
        at = snapshot.parse_tid('2026-01-31T12:00:00Z')
        self.assertEqual(snapshot.tid_time(at).isoformat(),
                         '2026-01-31T12:00:00+00:00')
        self.assertEqual(snapshot.parse_tid('2026-01-31T13:00:00+01:00'), at)
        self.assertEqual(snapshot.parse_tid('2026-01-31 12:00:00'), at)

    def test_bad_text(self):
        with self.assertRaises(ValueError) as caught:
            snapshot.parse_tid('yesterday')
        self.assertEqual(str(caught.exception), (
            "not a transaction id: 'yesterday' (give 0x and up to 16 hex "
            "digits, or an ISO time such as 2026-01-31T12:00:00Z)"))

    def test_a_pinned_view_is_read_only(self):
        db = testing.db()
        self.addCleanup(db.close)
        pinned = snapshot.Pinned(db.storage, db.storage.lastTransaction())
        self.assertTrue(pinned.isReadOnly())
        with self.assertRaises(ZODB.POSException.ReadOnlyError):
            pinned.new_oid()


# --------------------------------------------------------------- replay

class ReplayTests(SandboxTestCase):

    def test_a_job_that_failed_on_data_since_fixed_fails_again(self):
        job = self.failed_job()
        self.fix()
        # a plain re-run against today's data would succeed
        self.assertEqual(jobs.invoice_total(self.order), 22)
        before = self.state()
        report = sandbox.replay(self.db, job._p_oid)
        self.assertTrue(report.failed)
        self.assertIs(type(report.error), job.result.type)
        self.assertIs(type(report.error), decimal.InvalidOperation)
        self.assertEqual(str(report.error), str(job.result.value))
        self.assertEqual(report.at, job.active_snapshot)
        self.assertEqual(report.job_id, (u64(job), 'unnamed'))
        self.assertIn('in invoice_total', report.traceback)
        self.assertEqual((report.added, report.changed, report.removed,
                          report.missing), ([], [], [], []))
        self.assertEqual(self.state(), before)
        # the command, in another process reading the same file
        status, out, err = zc_async('replay', self.uri, str(u64(job)))
        self.assertEqual((status, err), (1, ''), out)
        self.assertTrue(out.startswith(
            'replay of %r\nagainst the data at %s (the snapshot its last run '
            'saw)\nfailed after ' % (job, snapshot.tid_text(
                job.active_snapshot))), out)
        self.assertIn('\ndecimal.InvalidOperation: %s\n' % BAD_PRICE, out)
        self.assertTrue(out.endswith(
            'added: nothing\nchanged: nothing\nno longer referenced '
            '(removed): nothing\nnothing was written to the database\n'), out)
        self.assertEqual(self.state(), before)

    def test_at_another_transaction(self):
        job = self.failed_job()
        self.fix()
        report = sandbox.replay(self.db, u64(job),
                                at=self.db.storage.lastTransaction())
        self.assertFalse(report.failed)
        self.assertEqual(report.result, 22)
        self.assertEqual(report.at_source, 'as asked')
        status, out, err = zc_async(
            'replay', self.uri, str(u64(job)), '--at',
            '0x%016x' % ZODB.utils.u64(self.db.storage.lastTransaction()))
        self.assertEqual((status, err), (0, ''), out)
        self.assertIn('\nsucceeded after ', out)
        self.assertIn(" seconds; result: Decimal('22')\n", out)

    def test_post_mortem_sees_the_data_in_the_sandbox(self):
        job = self.failed_job()
        self.fix()
        seen = []

        def post_mortem(traceback):
            while traceback.tb_next is not None:
                traceback = traceback.tb_next
            item = traceback.tb_frame.f_locals['item']
            seen.append((item.price, zc.asynchronous.local.isSandbox()))
        sandbox.replay(self.db, job, post_mortem=post_mortem)
        self.assertEqual(seen, [('twelve', True)])

    def test_pdb_in_the_command(self):
        job = self.failed_job()
        self.fix()
        status, out, err = zc_async(
            'replay', self.uri, str(u64(job)), '--pdb',
            input='p item.price\np zc.asynchronous.local.isSandbox()\nq\n')
        self.assertEqual(status, 1, err)
        self.assertIn('post-mortem debugging', out)
        self.assertIn("(Pdb) 'twelve'\n(Pdb) True\n", out)
        self.assertIn('\ndecimal.InvalidOperation: ', out)

    def test_a_packed_away_snapshot_is_refused_clearly(self):
        job = self.failed_job()
        self.fix()
        self.db.pack()
        before = self.state()
        with self.assertRaises(interfaces.SnapshotUnavailableError) as caught:
            sandbox.replay(self.db, job._p_oid)
        oldest = caught.exception.oldest
        self.assertGreater(oldest, job.active_snapshot)
        message = (
            'cannot replay job %d at %s: the database was packed after it, '
            'so the data the job saw then is gone.  The oldest complete '
            'state is at %s: replay at that (--at 0x%016x) to run the job '
            'against the data then' % (
                u64(job), snapshot.tid_text(job.active_snapshot),
                snapshot.tid_text(oldest), ZODB.utils.u64(oldest)))
        self.assertEqual(str(caught.exception), message)
        status, out, err = zc_async('replay', self.uri, str(u64(job)))
        self.assertEqual((status, out, err),
                         (2, '', 'zc-async replay: error: %s\n' % message))
        # as offered: the oldest complete state (the data was fixed by then)
        status, out, err = zc_async('replay', self.uri, str(u64(job)),
                                    '--at', '0x%016x' % ZODB.utils.u64(oldest))
        self.assertEqual((status, err), (0, ''), out)
        self.assertEqual(self.state(), before)

    def test_live_annotations_go_to_the_sandbox(self):
        job = self.failed_job(jobs.discount, self.order, self.log_list, 10)
        testing.wait_for_annotation(job, 'progress')
        before = self.state()
        report = sandbox.replay(self.db, job)
        self.assertIs(type(report.error), decimal.InvalidOperation)
        # at the snapshot, before the real run annotated the job, it had
        # no annotations: the sandbox's were committed there on their own
        self.assertEqual(class_names(report.added), [TREE])
        self.assertEqual(changed_oids(report), {u64(job)})
        self.assertEqual(self.state(), before)

    def test_a_callback_gets_the_result_of_its_job(self):
        self.order[1].price = '12'
        job = Job(jobs.invoice_total, self.order)
        callback = job.addCallback(Job(jobs.check_total, 5))
        self.conn.add(job)
        transaction.commit()
        job()
        self.assertEqual(str(callback.result.value), 'total 22 is over 5')
        report = sandbox.replay(self.db, callback)
        self.assertIs(type(report.error), ValueError)
        self.assertEqual(str(report.error), 'total 22 is over 5')

    def test_a_multi_database(self):
        directory = tempfile.mkdtemp(prefix='zc.async-sandbox-')
        self.addCleanup(shutil.rmtree, directory)
        databases = {}
        app = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(directory, 'app.fs')), databases=databases,
            database_name='app')
        queues = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(directory, 'async.fs')), databases=databases,
            database_name='async')
        self.addCleanup(app.close)
        self.addCleanup(queues.close)
        tm = transaction.TransactionManager()
        conn = queues.open(transaction_manager=tm)
        order = conn.get_connection('app').root()['order'] = jobs.order(
            'ten')
        tm.commit()  # stored in 'app' before 'async' refers to it
        job = conn.root()['job'] = Job(jobs.invoice_total, order)
        tm.commit()
        job()
        order[0].price = '10'
        tm.commit()
        self.assertEqual(str(job.result.value), BAD_PRICE)
        report = sandbox.replay(queues, job._p_oid)
        self.assertIs(type(report.error), decimal.InvalidOperation)
        self.assertEqual(report.job_id, (u64(job), 'async'))
        conn.close()

    def test_bad_requests(self):
        earlier = self.db.storage.lastTransaction()
        job = Job(jobs.invoice_total, self.order)
        self.conn.add(job)
        transaction.commit()
        with self.assertRaises(interfaces.SnapshotUnavailableError) as caught:
            sandbox.replay(self.db, job)
        self.assertEqual(str(caught.exception), (
            'job %d has no recorded snapshot (it has not been called since '
            'zc.async 2 records them): give the transaction to replay it at'
            % (u64(job),)))
        with self.assertRaises(interfaces.SnapshotUnavailableError) as caught:
            sandbox.replay(self.db, job, at=earlier)
        self.assertEqual(str(caught.exception), (
            'cannot replay job %d at %s: it was not in the database yet'
            % (u64(job), snapshot.tid_text(earlier))))
        with self.assertRaises(ValueError) as caught:
            sandbox.replay(self.db, self.order._p_oid)
        self.assertEqual(str(caught.exception), (
            "oid %d is not a job: persistent.list.PersistentList (oid %d, "
            "db 'unnamed')" % (u64(self.order), u64(self.order))))
        with self.assertRaises(ValueError) as caught:
            sandbox.replay(self.db, 999999)
        self.assertEqual(str(caught.exception),
                         "no object with oid 999999 in database 'unnamed'")
        for args, error in (
                (('999999',), "no object with oid 999999 in database "
                               "'unnamed'"),
                (('x',), "oid must be an integer, not 'x'"),
                ((str(u64(job)), '--at', 'now'), "not a transaction id: "
                 "'now' (give 0x and up to 16 hex digits, or an ISO time "
                 "such as 2026-01-31T12:00:00Z)"),
                (('1', '--database', 'other'), "unknown database 'other'")):
            status, out, err = zc_async('replay', self.uri, *args)
            self.assertEqual((status, out, err), (
                2, '', 'zc-async replay: error: %s\n' % error))


# -------------------------------------------------------------- dry-run

class DryRunTests(SandboxTestCase):

    def setUp(self):
        super().setUp()
        self.fix()

    def test_a_pending_job_reports_exactly_what_it_would_do(self):
        job = self.put(jobs.discount, self.order, self.log_list, 10)
        serial = job._p_serial
        before = self.state()
        report = sandbox.dry_run(self.db, job)
        self.assertFalse(report.failed, report.traceback)
        self.assertEqual(report.result, ('half way', True))
        self.assertEqual(report.at, before[0])
        self.assertEqual(class_names(report.added), [TREE, ENTRY])
        entry, = [c for c in report.added if c.class_name == ENTRY]
        tree, = [c for c in report.added if c.class_name == TREE]
        self.assertEqual(
            [(c.oid, c.class_name, c.differences) for c in report.changed],
            sorted([
                (u64(self.log_list), 'persistent.list.PersistentList',
                 ["data: [] -> [%s (oid %d, db 'unnamed')]"
                  % (ENTRY, entry.oid)]),
                (u64(self.order[0]), ITEM, ["price: '10' -> '9'"]),
                (u64(self.order[1]), ITEM, ["price: '12' -> '10.8'"]),
                (u64(job), 'zc.async.job.Job',
                 ["_annotations: added %s (oid %d, db 'unnamed')"
                  % (TREE, tree.oid)])]))
        self.assertEqual(report.removed, [])
        # the job is still pending, unchanged; nothing was written
        transaction.begin()
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(job._p_serial, serial)
        self.assertEqual(self.order[0].price, '10')
        self.assertEqual(self.state(), before)
        # the command says the same
        status, out, err = zc_async('dry-run', self.uri, str(u64(job)),
                                    '--json')
        self.assertEqual((status, err), (0, ''), out)
        answer = json.loads(out)
        self.assertEqual(answer['counts'],
                         {'added': 2, 'changed': 4, 'removed': 0})
        self.assertEqual(
            [(c['oid'], c['class']) for c in answer['changed']],
            [(c.oid, c.class_name) for c in report.changed])
        self.assertEqual(
            [c['differences'] for c in answer['changed']
             if c['class'] == ITEM],
            [["price: '10' -> '9'"], ["price: '12' -> '10.8'"]])
        self.assertTrue(answer['text'].endswith(
            'nothing was written to the database; the job is still as it '
            'was'))
        self.assertEqual(self.state(), before)

    def test_objects_no_longer_referenced(self):
        job = self.put(jobs.drop_first, self.order)
        report = sandbox.dry_run(self.db, job)
        self.assertEqual(report.result, 'a')
        self.assertEqual(report.added, [])
        self.assertEqual(changed_oids(report), {u64(self.order)})
        self.assertEqual([(c.oid, c.class_name) for c in report.removed],
                         [(u64(self.order[0]), ITEM)])

    def test_a_callable_with_stored_arguments(self):
        before = self.state()
        for call in (jobs.discount, JOBS + '.discount'):
            report = sandbox.dry_run(self.db, call, self.order, self.log_list,
                                     percent=50)
            self.assertEqual(report.job, (
                "%s.discount(persistent.list.PersistentList (oid %d, db "
                "'unnamed'), persistent.list.PersistentList (oid %d, db "
                "'unnamed'), percent=50)" % (JOBS, u64(self.order),
                                             u64(self.log_list))))
            self.assertEqual(report.job_id, None)
            self.assertEqual(report.result, ('half way', True))
            self.assertEqual(class_names(report.added), [ENTRY])
            self.assertEqual(changed_oids(report), {
                u64(self.log_list), u64(self.order[0]), u64(self.order[1])})
        self.assertEqual(self.state(), before)
        status, out, err = zc_async(
            'dry-run', self.uri, JOBS + '.discount', 'oid:%d' % u64(
                self.order), 'oid:%d' % u64(self.log_list), '--kwargs',
            '{"percent": 50}')
        self.assertEqual((status, err), (0, ''), out)
        self.assertIn("\n    price: '10' -> '5'\n", out)
        self.assertIn("\n    price: '12' -> '6'\n", out)
        self.assertTrue(out.endswith('nothing was written to the database\n'))
        self.assertEqual(self.state(), before)

    def test_a_failure_writes_nothing(self):
        self.order[0].price = 'ten'
        transaction.commit()
        job = self.put(jobs.invoice_total, self.order)
        report = sandbox.dry_run(self.db, job)
        self.assertIs(type(report.error), decimal.InvalidOperation)
        self.assertEqual((report.added, report.changed), ([], []))
        status, out, err = zc_async('dry-run', self.uri, str(u64(job)))
        self.assertEqual((status, err), (1, ''), out)
        self.assertIn('\ndecimal.InvalidOperation: ', out)

    def test_an_async_def_job(self):
        job = self.put(jobs.async_total, self.order)
        self.assertEqual(sandbox.dry_run(self.db, job).result, 22)
        self.order[1].price = 'twelve'
        transaction.commit()
        report = sandbox.dry_run(self.db, jobs.async_total, self.order)
        self.assertIs(type(report.error), decimal.InvalidOperation)

    def test_side_effects_can_be_skipped(self):
        outbox = os.path.join(self.db.directory, 'outbox')
        job = self.put(jobs.mail_total, self.order, outbox)
        report = sandbox.dry_run(self.db, job)
        self.assertEqual(report.result, 22)
        self.assertFalse(os.path.exists(outbox))
        self.assertFalse(zc.asynchronous.local.isSandbox())

    def test_long_differences_are_cut(self):
        job = self.put(jobs.rename_all, self.order[0], 15)
        change, = sandbox.dry_run(self.db, job).changed
        self.assertEqual(change.differences, [
            'extra%02d: added %d' % (number, number) for number in range(10)
        ] + ['5 more differences'])
        self.assertEqual(sandboxreport.cut('x' * 300), 'x' * 197 + '...')

    def test_bad_requests(self):
        done = self.called_job(jobs.invoice_total, self.order)
        with self.assertRaises(interfaces.BadStatusError) as caught:
            sandbox.dry_run(self.db, done)
        message = (
            "only a job that has not started can be dry-run; "
            "zc.async.job.Job (oid %d, db 'unnamed') is completed (replay it "
            "instead)" % (u64(done),))
        self.assertEqual(str(caught.exception), message)
        pending = self.put(jobs.invoice_total, self.order)
        with self.assertRaises(TypeError):
            sandbox.dry_run(self.db, pending, 1)
        with self.assertRaises(TypeError):
            sandbox.dry_run(self.db, 42)
        with self.assertRaises(ValueError) as caught:
            sandbox.dry_run(self.db, JOBS + '.nosuch')
        self.assertTrue(str(caught.exception).startswith(
            "cannot import 'zc.async.tests.sandbox_jobs.nosuch': "))
        other = testing.db()
        self.addCleanup(other.close)
        conn = other.open(transaction_manager=transaction.TransactionManager())
        self.addCleanup(conn.close)
        conn.root()['x'] = persistent.list.PersistentList()
        conn.transaction_manager.commit()
        with self.assertRaises(ValueError):
            sandbox.dry_run(self.db, jobs.drop_first, conn.root()['x'])
        for args, error in (
                ((str(u64(done)),), message),
                ((str(u64(pending)), '1'), 'a job is dry-run with its own '
                 'arguments: give no ARG or --kwargs with an OID'),
                ((JOBS + '.drop_first', 'oid:999999'), "no object with oid "
                 "999999 in database 'unnamed'"),
                ((JOBS + '.drop_first', '--kwargs', '[1]'),
                 "--kwargs must be a JSON object, not '[1]'")):
            status, out, err = zc_async('dry-run', self.uri, *args)
            self.assertEqual((status, out, err), (
                2, '', 'zc-async dry-run: error: %s\n' % error))


# ------------------------------------------------------------------ ZEO

class ZEOTests(unittest.TestCase):
    """A real worker process runs the job on a real ZEO server; the
    ``zc-async`` command replays and dry-runs it."""

    layer = processes.ZEOLayer

    def setUp(self):
        self.server = processes.ZEOLayer.server
        self.directory = tempfile.mkdtemp(prefix='zc.async-sandbox-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.db = self.server.open_db()
        self.addCleanup(self.db.close)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.addCleanup(self.conn.close)

    def root(self):
        self.tm.begin()
        return self.conn.root()

    def state(self):
        self.tm.begin()  # sync: see the server's last transaction
        return file_state(self.server.path, self.db.storage)

    def test_replay_and_dry_run(self):
        w = processes.WorkerProcess(
            self.server.uri, self.directory, 'w', '--install',
            '--poll-interval', '0.2', '--import', JOBS).start()
        processes.wait_for_db(
            self.db, lambda root: interfaces.KEY in root,
            message='installed queue')
        root = self.root()
        root['order'] = jobs.order('10', 'twelve')
        root['log'] = persistent.list.PersistentList()
        failing = root[interfaces.KEY][''].put(
            Job(jobs.invoice_total, root['order']))
        self.tm.commit()
        processes.wait_for_db(
            self.db, lambda root: root._p_jar.get(failing._p_oid).status
            == interfaces.COMPLETED, message='the job ran')
        self.assertEqual(w.stop(), 0, w.log)  # no pings any more
        root = self.root()
        self.assertEqual(str(failing.result.value), BAD_PRICE)
        root['order'][1].price = '12'
        pending = root[interfaces.KEY][''].put(
            Job(jobs.discount, root['order'], root['log'], 10))
        self.tm.commit()
        before = self.state()

        status, out, err = zc_async('replay', self.server.uri,
                                    str(u64(failing)))
        self.assertEqual((status, err), (1, ''), out)
        self.assertIn('(the snapshot its last run saw)\nfailed after ', out)
        self.assertIn('\ndecimal.InvalidOperation: %s\n' % BAD_PRICE, out)
        self.assertEqual(self.state(), before)

        status, out, err = zc_async('dry-run', self.server.uri,
                                    str(u64(pending)), '--json')
        self.assertEqual((status, err), (0, ''), out)
        answer = json.loads(out)
        self.assertEqual(sorted(c['class'] for c in answer['added']),
                         [TREE, ENTRY])
        root = self.root()
        self.assertEqual(
            sorted((c['oid'], c['differences'][:1]) for c in answer[
                'changed'] if c['class'] == ITEM),
            [(u64(root['order'][0]), ["price: '10' -> '9'"]),
             (u64(root['order'][1]), ["price: '12' -> '10.8'"])])
        self.assertEqual(
            sorted(c['oid'] for c in answer['changed']),
            sorted([u64(root['log']), u64(root['order'][0]),
                    u64(root['order'][1]), u64(pending)]))
        self.assertEqual(pending.status, interfaces.PENDING)
        self.assertEqual(self.state(), before)

        self.db.pack()
        status, out, err = zc_async('replay', self.server.uri,
                                    str(u64(failing)))
        self.assertEqual((status, out), (2, ''))
        self.assertTrue(err.startswith(
            'zc-async replay: error: cannot replay job %d at %s: the '
            'database was packed after it' % (
                u64(failing), snapshot.tid_text(failing.active_snapshot))),
            err)
        self.assertIn('replay at that (--at 0x', err)


# ----------------------------------------------------------- RelStorage

class RelStorageTests(unittest.TestCase):
    """History-preserving RelStorage replays; history-free dry-runs."""

    layer = processes.PostgreSQLLayer

    def setUp(self):
        if processes.PostgreSQLLayer.unavailable:
            self.skipTest(processes.PostgreSQLLayer.unavailable)
        self.server = processes.PostgreSQLLayer.server

    def open(self, dbname, history_free=False):
        self.server.fresh_database(dbname)
        import zodburi
        uri = self.server.uri(dbname)
        if history_free:
            uri += '?keep_history=false'
        factory, dbkw = zodburi.resolve_uri(uri)
        db = ZODB.DB(factory(), **dbkw)
        self.addCleanup(db.close)
        conn = db.open(transaction_manager=transaction.TransactionManager())
        self.addCleanup(conn.close)
        return db, conn

    def scene(self, conn):
        """A failed job, its data fixed since; a pending job."""
        tm = conn.transaction_manager
        root = conn.root()
        order = root['order'] = jobs.order('10', 'twelve')
        root['log'] = persistent.list.PersistentList()
        failed = root['failed'] = Job(jobs.invoice_total, order)
        tm.commit()
        failed()
        order[1].price = '12'
        pending = root['pending'] = Job(jobs.discount, order, root['log'], 10)
        tm.commit()
        return failed, pending

    def test_history_preserving(self):
        db, conn = self.open(processes.PostgreSQLLayer.dbname)
        failed, pending = self.scene(conn)
        last = db.storage.lastTransaction()
        report = sandbox.replay(db, failed._p_oid)
        self.assertIs(type(report.error), decimal.InvalidOperation)
        self.assertEqual(str(report.error), str(failed.result.value))
        report = sandbox.dry_run(db, pending)
        self.assertEqual(class_names(report.added), [TREE, ENTRY])
        self.assertEqual(len(report.changed), 4)
        conn.transaction_manager.begin()
        self.assertEqual(db.storage.lastTransaction(), last)
        self.assertEqual(pending.status, interfaces.NEW)
        db.pack()
        with self.assertRaises(interfaces.SnapshotUnavailableError) as caught:
            sandbox.replay(db, failed._p_oid)
        self.assertIn('the database was packed after it',
                      str(caught.exception))
        self.assertFalse(sandbox.replay(db, failed._p_oid,
                                        at=caught.exception.oldest).failed)

    def test_history_free(self):
        db, conn = self.open('zc_async_history_free', history_free=True)
        failed, pending = self.scene(conn)
        with self.assertRaises(interfaces.SnapshotUnavailableError) as caught:
            sandbox.replay(db, failed._p_oid)
        self.assertEqual(str(caught.exception), sandbox.HISTORY_FREE)
        report = sandbox.dry_run(db, pending)
        self.assertEqual(report.result, ('half way', True))
        self.assertEqual(class_names(report.added), [TREE, ENTRY])
        self.assertEqual(len(report.changed), 4)
        self.assertEqual(report.missing, [])


# ------------------------------------------------------------ dashboard

class DashboardSandboxTests(DashboardTestCase):
    """``POST /api/jobs/<oid>/replay`` and ``/dry-run``."""

    allow_replay = True

    def start_dashboard(self, token=None, host='127.0.0.1'):
        port = web.start_dashboard(
            self.db, self.running.reactor, 0, host,
            dispatcher=self.running.dispatcher, actions_token=token,
            allow_replay=self.allow_replay)
        self.ports.append(port)
        return port

    def post(self, job, name, status=200):
        return self.get_json('/api/jobs/%d/%s' % (self.oid(job), name),
                             status, method='POST')

    def test_replay_and_dry_run(self):
        root = self.conn.root()
        order = root['order'] = jobs.order('10', 'twelve')
        transaction.commit()
        failed = self.finished(jobs.invoice_total, order)
        pending = self.put(jobs.drop_first, begin_after=LATER())
        done = self.finished(jobs.invoice_total, jobs.order('1'))
        self.assertTrue(self.get_json('/api/overview')['replay'])
        answer = self.post(failed, 'replay')
        self.assertTrue(answer['failed'])
        self.assertIn('decimal.InvalidOperation', answer['traceback'])
        self.assertEqual(answer['id'], [self.oid(failed), 'unnamed'])
        self.assertTrue(answer['text'].startswith('replay of '))
        answer = self.post(pending, 'dry-run')
        self.assertTrue(answer['failed'])  # drop_first() needs an order
        self.assertIn('TypeError', answer['traceback'])
        self.assertEqual(
            self.post(done, 'replay', 409),
            {'error': 'only failed jobs can be replayed; job %d is '
                      'completed' % self.oid(done)})
        self.assertEqual(
            self.post(failed, 'dry-run', 409),
            {'error': 'only pending jobs can be dry-run; job %d is '
                      'completed' % self.oid(failed)})
        self.assertEqual(self.error('/api/jobs/%d/replay' % self.oid(failed),
                                    405), 'use POST here, not GET')

    def test_refused_unless_allowed(self):
        failed = self.finished(jobs.invoice_total, jobs.order('x'))
        self.port = self.start_dashboard_without_replay()
        self.assertFalse(self.get_json('/api/overview')['replay'])
        self.assertEqual(self.post(failed, 'replay', 403), {
            'error': "replay and dry-run are disabled: they run job code in "
                     "the dashboard's process; start it with --allow-replay "
                     "to enable them"})

    def start_dashboard_without_replay(self):
        self.allow_replay = False
        return self.start_dashboard()


@unittest.skipIf(browser.unavailable(), browser.unavailable())
class DashboardSandboxBrowserTests(DashboardSandboxTests, BrowserTests):
    """The job page's replay and dry-run buttons, in headless Chromium
    (the test suite runs only this class's own tests)."""

    TESTS = ('test_buttons', 'test_hidden_unless_allowed')

    def open_job(self, job):
        self.open('/jobs/%d' % (self.oid(job),))

    def report_text(self):
        return self.browser.evaluate(
            'document.querySelector("#sandbox-report").innerText')

    def test_buttons(self):
        root = self.conn.root()
        order = root['order'] = jobs.order('10', 'twelve')
        transaction.commit()
        failed = self.finished(jobs.invoice_total, order)
        self.open_job(failed)
        self.browser.wait_for('!document.querySelector("#sandbox").hidden')
        self.assertTrue(self.browser.evaluate(
            'document.querySelector("#dry-run-button").hidden'))
        self.browser.evaluate(
            'document.querySelector("#replay-button").click()')
        self.browser.wait_for('document.querySelector("#sandbox-report")'
                              '.innerText.includes("nothing was written")')
        text = self.report_text()
        self.assertTrue(text.startswith('replay of '), text)
        self.assertIn('decimal.InvalidOperation', text)

        pending = self.put(jobs.drop_first, order, begin_after=LATER())
        self.open_job(pending)
        self.browser.wait_for('!document.querySelector("#sandbox").hidden')
        self.assertTrue(self.browser.evaluate(
            'document.querySelector("#replay-button").hidden'))
        self.browser.evaluate(
            'document.querySelector("#dry-run-button").click()')
        self.browser.wait_for('document.querySelector("#sandbox-report")'
                              '.innerText.includes("nothing was written")')
        text = self.report_text()
        self.assertIn("succeeded after", text)
        self.assertIn("result: 'a'", text)
        self.assertIn('no longer referenced (removed): 1 object', text)
        self.assertEqual(self.browser.errors(), [])

    def test_hidden_unless_allowed(self):
        failed = self.finished(jobs.invoice_total, jobs.order('x'))
        self.port = self.start_dashboard_without_replay()
        self.open_job(failed)
        self.browser.wait_for(
            '!document.querySelector("#traceback-section").hidden')
        self.assertTrue(self.browser.evaluate(
            'document.querySelector("#sandbox").hidden'))


def test_suite():
    suite = unittest.TestSuite()
    for case in (SnapshotRecordingTests, TidTextTests, ReplayTests,
                 DryRunTests, ZEOTests, RelStorageTests,
                 DashboardSandboxTests):
        suite.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    suite.addTests(DashboardSandboxBrowserTests(name)
                   for name in DashboardSandboxBrowserTests.TESTS)
    return suite
