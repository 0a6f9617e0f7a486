"""``zc-async schedules`` (zc.async.ops.clischedules), run as a real process
against a FileStorage holding two schedules, one of which has fired."""
import datetime
import json
import operator
import os
import shutil
import tempfile
import unittest

import transaction
import ZODB
import ZODB.utils

import zc.asynchronous.clock
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.queue
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous import schedule
from zc.asynchronous.tests.test_clidb import zc_async

T0 = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


class SchedulesCommandTests(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-schedules-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.uri = 'file://' + os.path.join(self.directory, 'Data.fs')

    def build(self):
        """Queue '' with 'nightly' (cron) and 'often' (fired once), queue
        'other' with none."""
        testing.set_now(T0)
        try:
            db = ZODB.DB(os.path.join(self.directory, 'Data.fs'))
            conn = db.open()
            queues = conn.root()[interfaces.KEY] = (
                zc.asynchronous.queue.Queues())
            queue = queues[''] = zc.asynchronous.queue.Queue()
            queues['other'] = zc.asynchronous.queue.Queue()
            transaction.commit()
            queue.schedules['nightly'] = schedule.Schedule(
                operator.add, 1, 2, cron='0 3 * * *', timezone='Europe/Paris')
            queue.schedules['often'] = schedule.Schedule(
                operator.mul, 6, 7, every=datetime.timedelta(minutes=5))
            transaction.commit()
            testing.set_now(T0 + datetime.timedelta(minutes=5))
            schedule.fire_due(queue)
            transaction.commit()
            job_oid = queue.schedules['often'].last_job._p_oid
            conn.close()
            db.close()
        finally:
            zc.asynchronous.clock._set_frozen_now(None)
        return ZODB.utils.u64(job_oid)

    def run_ok(self, *args):
        status, out, err = zc_async('schedules', self.uri, *args)
        self.assertEqual((status, err), (0, ''), out)
        return out

    def test_lists_the_schedules(self):
        oid = self.build()
        self.assertEqual(self.run_ok().splitlines(), [
            'NAME     QUEUE  CALLABLE       RULE                         '
            '     NEXT RUN              LAST RUN              LAST JOB',
            "nightly  ''     _operator.add  cron '0 3 * * *' in Europe/Paris"
            '  2024-01-02T02:00:00Z  -                     -',
            "often    ''     _operator.mul  every 0:05:00                    "
            ' 2024-01-01T12:10:00Z  2024-01-01T12:05:00Z  %d (pending)'
            % oid])

    def test_json(self):
        oid = self.build()
        found = json.loads(self.run_ok('--json'))
        self.assertEqual([s['name'] for s in found], ['nightly', 'often'])
        self.assertEqual(found[1], {
            'name': 'often', 'queue': '', 'callable': '_operator.mul',
            'rule': 'every 0:05:00', 'catch up': 'once', 'overlap': True,
            'next run': '2024-01-01T12:10:00Z',
            'last run': '2024-01-01T12:05:00Z',
            'last job': [oid, 'unnamed'], 'last job status': 'pending'})

    def test_queue_filter_and_none(self):
        self.build()
        self.assertEqual(self.run_ok('--queue', 'other'), 'no schedules\n')

    def test_a_database_without_queues(self):
        ZODB.DB(os.path.join(self.directory, 'Data.fs')).close()
        self.assertEqual(self.run_ok(), 'no schedules\n')
