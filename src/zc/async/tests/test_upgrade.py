"""The pieces of the 1.5 upgrade, on 1.5 layouts built here.

(``test_upgrade15`` upgrades the real 1.5 database with real processes.)
Each 1.5 layout is made as zodbupdate leaves it: the classes renamed by
:data:`zc.async.upgrade.RENAMES`, Python 2 strings decoded.
"""
import contextlib
import datetime
import importlib
import importlib.metadata
import io
import json
import os
import shutil
import sys
import tempfile
import types
import unittest
import unittest.mock
import uuid

import BTrees.LOBTree
import transaction
import ZODB
import ZODB.utils

from zc.asynchronous.ops import cli
from zc.asynchronous import interfaces
from zc.asynchronous import job as jobmodule
from zc.asynchronous import legacy
from zc.asynchronous import queue as queuemodule
from zc.asynchronous import twist
from zc.asynchronous import upgrade
from zc.asynchronous import utils
from zc.asynchronous.agent import Agent

UTC = datetime.timezone.utc
UUID = uuid.UUID('10e23848-f229-11f1-badf-02fc00000001')


def double(x):  # a job's callable (pickled by reference)
    return 2 * x


def key15(dt, tie=15):
    """1.5's key of ``dt``: ``datetime.max - dt`` packed as days (bits 41
    and up), seconds (24-40) and microseconds (4-23)."""
    delta = datetime.datetime.max - dt.astimezone(UTC).replace(tzinfo=None)
    return (delta.days << 41 | delta.seconds << 24
            | delta.microseconds << 4 | tie)


def store15(jobs_by_age, last_rotation):
    """A 1.5 completed-job store: ``jobs_by_age[i]`` is a list of (time,
    job) for the forest's tree ``i`` (the newest first)."""
    forest = legacy.PeriodicForest()
    forest.buckets = [BTrees.LOBTree.LOBTree() for _ in range(7)]
    forest.last_rotation = last_rotation
    forest._period = datetime.timedelta(days=7)
    for age, pairs in enumerate(jobs_by_age):
        for when, job in pairs:
            key = key15(when)
            forest.buckets[age][key] = job
            job.key = key
    store = utils.Periodic.__new__(utils.Periodic)
    store.__setstate__({'_data': forest})
    return store


class KeyTests(unittest.TestCase):

    def test_1_5_keys_decode_to_their_time(self):
        when = datetime.datetime(2026, 12, 7, 10, 29, 22, 628327, tzinfo=UTC)
        self.assertEqual(legacy.long_to_dt15(key15(when)), when)
        # A key of the real 1.5 database (job 0x21).
        self.assertEqual(legacy.long_to_dt15(6403780836538891663), when)

    def test_1_5_keys_are_read_before_the_upgrade(self):
        for when in (datetime.datetime(1970, 1, 1, tzinfo=UTC),
                     datetime.datetime(2026, 12, 7, 10, 29, tzinfo=UTC),
                     datetime.datetime(2200, 1, 1, tzinfo=UTC)):
            self.assertEqual(utils.long_to_dt(key15(when)), when)
            self.assertEqual(utils.long_to_dt(utils.dt_to_long(when)), when)
        for extreme in (datetime.datetime.min, datetime.datetime.max):
            extreme = extreme.replace(tzinfo=UTC)
            self.assertEqual(
                utils.long_to_dt(utils.dt_to_long(extreme) + 15), extreme)

    def test_converted_keys_keep_time_order_and_tie_bits(self):
        early = datetime.datetime(2020, 1, 1, tzinfo=UTC)
        late = early + datetime.timedelta(microseconds=1)
        # 1.5 gave 15 to the first job added at a time, 14 to the next.
        new = [upgrade.key_from_15(key15(when, tie))
               for when, tie in ((late, 15), (early, 14), (early, 15))]
        self.assertEqual(new, sorted(new))  # newer first, as in 1.5
        self.assertEqual(utils.long_to_dt(new[2]), early)
        self.assertEqual(new[2] - new[1], 1)


class RenameTests(unittest.TestCase):

    def test_zodbupdate_finds_the_renames(self):
        found = [entry for entry in importlib.metadata.entry_points().select(
            group='zodbupdate') if entry.name == 'zc.async']
        self.assertEqual(len(found), 1)
        self.assertIs(found[0].load(), upgrade.RENAMES)

    def test_every_rename_names_a_class_here(self):
        for old, new in upgrade.RENAMES.items():
            module, name = new.split(' ')
            found = getattr(importlib.import_module(module), name)
            self.assertIsInstance(found, type, old)
            self.assertEqual((found.__module__, found.__qualname__),
                             (module, name))
        self.assertEqual(upgrade.RENAMES['zc.twist Failure'],
                         'zc.async.twist Failure')
        self.assertEqual(upgrade.RENAMES['exceptions ValueError'],
                         'builtins ValueError')
        self.assertEqual(upgrade.RENAMES['exceptions StandardError'],
                         'builtins Exception')
        self.assertEqual(upgrade.RENAMES['exceptions IOError'],
                         'builtins OSError')

    def test_python3_names(self):
        self.assertEqual(legacy.python3_qual('exceptions.KeyError'),
                         'builtins.KeyError')
        self.assertEqual(legacy.python3_qual('__builtin__.object'),
                         'builtins.object')
        self.assertEqual(legacy.python3_qual('exceptions.StandardError'),
                         'builtins.Exception')
        self.assertEqual(legacy.python3_qual('myapp.errors.Boom'),
                         'myapp.errors.Boom')
        self.assertEqual(legacy.python3_qual('exceptions.NoSuchThing'),
                         'exceptions.NoSuchThing')


class Failure15Tests(unittest.TestCase):
    """A zc.twist failure, loaded as this package's Failure."""

    def failure(self):
        failure = twist.Failure.__new__(twist.Failure)
        failure.__setstate__({
            'captureVars': False, 'count': 6, 'pickled': 1,
            'sanitized': True, 'stack': [], 'tb': None,
            'frames': [['fail', '/srv/zc15/apps/jobs15.py', 43, [], []]],
            'parents': ['exceptions.ValueError', 'exceptions.StandardError',
                        'exceptions.Exception', 'exceptions.BaseException',
                        '__builtin__.object'],
            'type': ValueError, 'value': ValueError('boom: expected')})
        return failure

    def test_check_and_trap_match_python_3_classes(self):
        failure = self.failure()
        self.assertIs(failure.check(KeyError, ValueError), ValueError)
        self.assertIs(failure.check(Exception), Exception)
        self.assertIsNone(failure.check(KeyError))
        self.assertIs(failure.trap(ValueError), ValueError)
        self.assertEqual(failure.parents, [
            'builtins.ValueError', 'builtins.Exception',
            'builtins.BaseException', 'builtins.object'])

    def test_tracebacks_render(self):
        failure = self.failure()
        self.assertEqual(failure.getTraceback(), (
            'Traceback (most recent call last):\n'
            '  File "/srv/zc15/apps/jobs15.py", line 43, in fail\n'
            '    \n'
            'builtins.ValueError: boom: expected\n'))
        self.assertIn('/srv/zc15/apps/jobs15.py:43: fail(...)',
                      failure.getTraceback(detail='verbose'))
        self.assertTrue(jobmodule.isFailure(failure))


class UpgradeTestCase(unittest.TestCase):
    """A database with queue '' and a dispatcher record with agent
    'main', as a 1.5 database has them."""

    def setUp(self):
        self.db = ZODB.DB(None)
        self.addCleanup(self.db.close)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.addCleanup(self.tm.abort)
        root = self.conn.root()
        queues = root[interfaces.KEY] = queuemodule.Queues()
        self.queue = queues[''] = queuemodule.Queue()
        self.queue.dispatchers.register(UUID)
        self.agent = self.queue.dispatchers[UUID]['main'] = Agent()
        self.tm.commit()

    def stored_job(self, *args):
        job = jobmodule.Job(double, *args)
        self.conn.add(job)
        return job

    def upgrade(self, check=False):
        return upgrade.upgrade(self.conn, check)

    def reopen(self):
        """The agent's store, read in a new connection."""
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn.root()[interfaces.KEY][''].dispatchers[UUID][
            'main'].completed


class CompletedStoreTests(UpgradeTestCase):

    def setUp(self):
        super().setUp()
        self.t0 = datetime.datetime(2026, 12, 1, 12, tzinfo=UTC)
        hour = datetime.timedelta(hours=1)
        self.jobs = [self.stored_job(n) for n in range(4)]
        # Two in the newest tree, one a day older, one in the oldest.
        self.times = [self.t0, self.t0 - hour, self.t0 - 30 * hour,
                      self.t0 - 150 * hour]
        self.agent.completed = store15(
            [list(zip(self.times[:2], self.jobs[:2])),
             [(self.times[2], self.jobs[2])], [], [], [], [],
             [(self.times[3], self.jobs[3])]], last_rotation=self.t0)
        self.agent.completed.__dict__['__parent__'] = self.agent
        self.tm.commit()

    def test_a_1_5_store_reads_as_empty_before_the_upgrade(self):
        store = self.reopen()
        self.assertEqual((len(store), list(store), bool(store)),
                         (0, [], False))

    def test_the_upgrade_moves_the_jobs_and_converts_their_keys(self):
        report = self.upgrade()
        self.assertEqual(report.conversions, 1)
        self.assertEqual(report.unloadable, [])
        store = self.reopen()
        self.assertEqual(list(store), self.jobs_in(store.__parent__))
        self.assertEqual(len(store), 4)
        self.assertEqual([job.initial_callbacks_end for job in store],
                         self.times)
        self.assertEqual([len(tree) for tree in store._buckets],
                         [2, 1, 0, 0, 0, 0, 1])
        self.assertEqual((store.period, store._rotated),
                         (datetime.timedelta(days=7), self.t0))
        self.assertIs(store.parent, store.__parent__)
        self.assertEqual(store.parent.name, 'main')
        self.assertNotIn('_data', store.__dict__)
        self.assertNotIn('__parent__', store.__dict__)
        self.assertIs(store.first(self.t0 - datetime.timedelta(hours=2)),
                      self.jobs_in(store.__parent__)[2])

    def jobs_in(self, agent):
        """``self.jobs`` as loaded by ``agent``'s connection."""
        return [agent._p_jar.get(job._p_oid) for job in self.jobs]

    def test_a_second_run_does_nothing(self):
        self.upgrade()
        serial = self.db.lastTransaction()
        report = self.upgrade()
        self.assertEqual(report.conversions, 0)
        self.assertTrue(report.text().endswith('nothing to convert'))
        self.assertEqual(self.db.lastTransaction(), serial)
        self.assertEqual(len(self.reopen()), 4)

    def test_check_commits_nothing_and_reports_the_same(self):
        serial = self.db.lastTransaction()
        report = self.upgrade(check=True)
        self.assertEqual(self.db.lastTransaction(), serial)
        self.assertEqual(report.conversions, 1)
        where = "agent 'main' of dispatcher %s in queue ''" % (UUID,)
        self.assertIn("would convert: %s: 1.5's completed-job store, 4 jobs "
                      're-keyed' % (where,), report.lines)
        self.assertIn('%s: 4 completed jobs (0 failed)' % (where,),
                      report.lines)
        self.assertEqual(len(self.reopen()), 0)  # still 1.5's

    def test_jobs_completed_before_the_upgrade_are_kept(self):
        # A worker ran on the database before `zc-async upgrade`.
        late = self.stored_job(99)
        with unittest.mock.patch.object(
                utils, 'now', lambda: self.t0 + datetime.timedelta(hours=1)):
            self.agent.completed.add(late)
        self.tm.commit()
        store = self.reopen()
        self.assertEqual(list(store), [store._p_jar.get(late._p_oid)])
        self.upgrade()
        store = self.reopen()
        self.assertEqual(len(store), 5)
        self.assertEqual([job.args[0] for job in store], [99, 0, 1, 2, 3])

    def test_a_job_that_cannot_be_loaded_stays_in_the_1_5_store(self):
        forest = self.agent.completed._data
        # A callable of a module that is gone when the job is loaded.
        module = types.ModuleType('zc_async_test_gone')
        exec('def gone(x):\n    return x\n', module.__dict__)
        sys.modules[module.__name__] = module
        try:
            self.jobs[1]._callable_root = module.gone
            self.tm.commit()
        finally:
            del sys.modules[module.__name__]
        self.conn.cacheMinimize()  # reloaded: the module is gone
        report = self.upgrade()
        where = "agent 'main' of dispatcher %s in queue ''" % (UUID,)
        self.assertIn(
            "converted: %s: 1.5's completed-job store, 3 jobs re-keyed (1 "
            'that cannot be loaded stay in the 1.5 store, unread, until a '
            'run that can load them)' % (where,), report.lines)
        oid = self.jobs[1]._p_oid
        self.assertEqual(report.unloadable, [
            'completed by %s: job %d (%s): callable is '
            'zc_async_test_gone.gone, which cannot be imported' % (
                where, ZODB.utils.u64(oid), ZODB.utils.oid_repr(oid))])
        self.assertEqual(len(self.reopen()), 3)
        self.assertEqual(len(forest.buckets[0]), 1)
        # Once it loads, the next run moves it.
        self.conn.get(self.jobs[1]._p_oid)._callable_root = double
        self.tm.commit()
        report = self.upgrade()
        self.assertEqual(report.unloadable, [])
        self.assertEqual(len(self.reopen()), 4)
        self.assertNotIn('_data', self.reopen().__dict__)


class ScheduledKeyTests(UpgradeTestCase):

    def test_text_oids_in_scheduled_keys_are_made_bytes(self):
        job = self.queue.put(
            jobmodule.Job(double, 1), begin_after=datetime.datetime(
                2030, 1, 1, tzinfo=UTC))
        self.tm.commit()
        # zodbupdate decodes a Python 2 string oid that is valid UTF-8.
        (key, found), = self.queue._held.items()
        del self.queue._held[key]
        self.queue._held[key[:2] + (key[2].decode('utf-8'),)] = found
        self.tm.commit()
        with self.assertRaises(TypeError):  # text and bytes compared
            self.queue.remove(job)
        report = self.upgrade()
        self.assertIn("converted: queue '': the keys of its scheduled jobs "
                      '(1.5 oids that became text)', report.lines)
        self.assertEqual(list(self.queue._held.keys()), [key])
        self.queue.remove(job)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(self.upgrade().conversions, 0)


class ReportTests(UpgradeTestCase):

    def test_an_empty_database(self):
        db = ZODB.DB(None)
        self.addCleanup(db.close)
        conn = db.open()
        self.addCleanup(conn.close)
        report = upgrade.upgrade(conn)
        self.assertEqual(report.text(), (
            "no zc.async queues in this database (root key 'zc.async' "
            'missing)\nnothing to convert'))
        self.assertEqual(report.queues, 0)

    def test_pending_held_and_failed_jobs(self):
        self.queue.put(jobmodule.Job(double, 1))
        failed = self.stored_job(2)
        failed._result = twist.Failure(ValueError('boom'))
        failed._status_id = 3
        self.agent.completed.add(failed)
        self.tm.commit()
        report = self.upgrade()
        where = "agent 'main' of dispatcher %s in queue ''" % (UUID,)
        self.assertEqual(report.text().splitlines(), [
            "queue '': 1 pending jobs",
            "dispatcher %s in queue '': not activated, last ping never"
            % (UUID,),
            '%s: 1 completed jobs (1 failed)' % (where,),
            'nothing to convert'])


class CommandTests(unittest.TestCase):
    """``zc-async upgrade``'s options and exit statuses, in process."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-upgrade-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, 'Data.fs')

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(['upgrade', 'file://' + self.path, *args])
        return code, out.getvalue(), err.getvalue()

    def test_a_database_without_queues_is_worth_a_look(self):
        ZODB.DB(self.path).close()
        self.assertEqual(self.run_cli(), (1, (
            "no zc.async queues in this database (root key 'zc.async' "
            'missing)\nnothing to convert\n'), ''))

    def test_a_zc_async_2_database_needs_nothing(self):
        db = ZODB.DB(self.path)
        with db.transaction() as conn:
            queues = conn.root()[interfaces.KEY] = queuemodule.Queues()
            queues[''] = queuemodule.Queue()
        db.close()
        for options in ((), ('--check',)):
            code, out, err = self.run_cli(*options)
            self.assertEqual((code, err), (0, ''), options)
            self.assertEqual(out, "queue '': 0 pending jobs\n"
                                  'nothing to convert\n')
        code, out, err = self.run_cli('--json')
        self.assertEqual(json.loads(out), {
            'check': False, 'conversions': 0, 'queues': 1,
            'lines': ["queue '': 0 pending jobs"], 'unloadable': []})

    def test_the_help_names_the_step(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
            cli.main(['upgrade', '--help'])
        self.assertIn('Step 2 of upgrading a zc.async 1.5 database',
                      ' '.join(out.getvalue().split()))
        self.assertIn('--check', out.getvalue())
