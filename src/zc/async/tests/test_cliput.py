"""``zc-async put`` (zc.async.ops.cliput): bad input in-process against a
FileStorage, then jobs run end to end by a real worker on ZEO."""
import contextlib
import datetime
import io
import json
import operator
import os
import shutil
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage
import ZODB.utils

from zc.asynchronous.ops import cli
from zc.asynchronous.ops import cliput
from zc.asynchronous import interfaces
from zc.asynchronous import utils
from zc.asynchronous.queue import Queue, Queues
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.test_clidb import zc_async
from zc.asynchronous.tests.test_worker import wait_installed


def not_at_top_level():
    return 1


not_at_top_level.__qualname__ = 'somewhere.else'
not_callable = 42


class BadInputTests(unittest.TestCase):
    """Every mistake prints one line, exits with 2 and commits nothing."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-put-')
        self.path = os.path.join(self.directory, 'Data.fs')
        self.uri = 'file://' + self.path
        db = ZODB.DB(self.path)
        conn = db.open()
        conn.root()[interfaces.KEY] = Queues()
        conn.root()[interfaces.KEY][''] = Queue()
        transaction.commit()
        conn.close()
        db.close()

    def tearDown(self):
        shutil.rmtree(self.directory)

    def last_transaction(self):
        storage = ZODB.FileStorage.FileStorage(self.path, read_only=True)
        try:
            return storage.lastTransaction()
        finally:
            storage.close()

    def put(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(['put', self.uri, *args])
        return status, out.getvalue(), err.getvalue()

    def assertRefused(self, expected, *args):
        before = self.last_transaction()
        status, out, err = self.put(*args)
        self.assertEqual((status, out), (2, ''), err)
        self.assertEqual(err, 'zc-async put: error: %s\n' % (expected,))
        self.assertEqual(self.last_transaction(), before)

    def test_bad_names(self):
        self.assertRefused("cannot import 'no.such.module': No module named "
                           "'no'", 'no.such.module')
        self.assertRefused("cannot import 'operator.nope': module 'operator' "
                           "has no attribute 'nope'", 'operator.nope')
        name = __name__ + '.not_callable'
        self.assertRefused('%r is not callable: 42' % (name,), name)
        name = __name__ + '.not_at_top_level'
        self.assertRefused(
            '%r cannot be stored in a job: it does not pickle by reference '
            '(name a function or class defined at the top level of its '
            'module)' % (name,), name)

    def test_bad_arguments(self):
        self.assertRefused(
            'argument 2 is not JSON: forty (a string needs JSON quotes, as '
            'in \'"text"\')', 'operator.add', '2', 'forty')
        self.assertRefused(
            '--kwargs is not JSON: {a: 1} (a string needs JSON quotes, as in '
            '\'"text"\')', 'json.dumps', '1', '--kwargs', '{a: 1}')
        self.assertRefused('--kwargs must be a JSON object, not [1]',
                           'json.dumps', '1', '--kwargs', '[1]')
        self.assertRefused(
            "the arguments do not fit operator.add(a, b, /): missing a "
            "required argument: 'b'", 'operator.add', '1')

    def test_bad_times(self):
        self.assertRefused(
            '--begin-after needs a timezone, as in 2030-01-01T03:00+00:00 or '
            '2030-01-01T03:00Z', 'operator.add', '1', '2', '--begin-after',
            '2030-01-01T03:00')
        self.assertRefused(
            '--begin-after must be an ISO 8601 time or +SECONDS, not '
            'tomorrow', 'operator.add', '1', '2', '--begin-after', 'tomorrow')
        for bad in ('+soon', '+-5', '+inf'):
            self.assertRefused(
                '--begin-after +SECONDS needs a number of seconds, not %s'
                % (bad,), 'operator.add', '1', '2', '--begin-after', bad)

    def test_bad_queue_and_key(self):
        self.assertRefused("no queue named 'reports'; the queues are: ''",
                           'operator.add', '1', '2', '--queue', 'reports')
        self.assertRefused("unique_key must be a non-empty string, not ''",
                           'operator.add', '1', '2', '--unique-key', '')

    def test_no_queues(self):
        os.remove(self.path)
        ZODB.DB(self.path).close()  # an empty database
        self.assertRefused(
            "no zc.async queues in database 'unnamed' (a worker installs "
            "them when it starts)", 'operator.add', '1', '2')

    def test_times(self):
        when = cliput.parse_begin_after('2030-01-01T03:00:00Z')
        self.assertEqual(when, datetime.datetime(
            2030, 1, 1, 3, tzinfo=datetime.timezone.utc))
        when = cliput.parse_begin_after('2030-01-01T04:00:00+01:00')
        self.assertEqual(when.astimezone(datetime.timezone.utc),
                         datetime.datetime(2030, 1, 1, 3,
                                           tzinfo=datetime.timezone.utc))
        before = utils.now()
        when = cliput.parse_begin_after('+90.5')
        self.assertGreaterEqual(
            when, before + datetime.timedelta(seconds=90.5))
        self.assertLess(when, utils.now() + datetime.timedelta(seconds=91))


class EndToEndTests(unittest.TestCase):
    """``zc-async put`` with a real worker, on a real ZEO server."""

    layer = processes.ZEOLayer

    def setUp(self):
        self.server = processes.ZEOLayer.server
        self.directory = tempfile.mkdtemp(prefix='zc.async-put-')
        self.db = self.server.open_db()
        self.worker = processes.WorkerProcess(
            self.server.uri, self.directory, 'w', '--install',
            '--poll-interval', '0.2').start()
        wait_installed(self.db, self.worker, [''], 'main')

    def tearDown(self):
        self.worker.stop()
        self.db.close()
        shutil.rmtree(self.directory)

    def put(self, *args):
        status, out, err = zc_async('put', self.server.uri, *args)
        self.assertEqual((status, err), (0, ''), out)
        return out

    def result(self, oid):
        oid = ZODB.utils.p64(oid)
        processes.wait_for_db(
            self.db, lambda root: root._p_jar.get(oid).status
            == interfaces.COMPLETED, message='the job completed')
        conn = self.db.open(transaction.TransactionManager())
        try:
            return conn.get(oid).result
        finally:
            conn.close()

    def test_a_job_runs(self):
        oid = int(self.put('operator.add', '40', '2'))
        self.assertEqual(self.result(oid), 42)

    def test_json_arguments_and_keyword_arguments(self):
        oid = int(self.put('json.dumps', '{"b": [1, null], "a": "text"}',
                           '--kwargs', '{"sort_keys": true}'))
        self.assertEqual(self.result(oid), '{"a": "text", "b": [1, null]}')

    def test_unique_key_and_begin_after(self):
        first = json.loads(self.put(
            'operator.mul', '6', '7', '--unique-key', 'answer',
            '--begin-after', '+3600', '--json'))
        again = json.loads(self.put(
            'operator.mul', '6', '7', '--unique-key', 'answer', '--json'))
        self.assertEqual(first['database'], 'unnamed')
        self.assertEqual((first['new'], again['new']), (True, False))
        self.assertEqual(first['oid'], again['oid'])
        status, out, err = zc_async('job', self.server.uri,
                                    str(first['oid']))
        self.assertEqual(status, 0, err)
        self.assertIn('unique key:', out)
        self.assertIn('status:', out)
        self.assertIn('pending', out)
        later = json.loads(self.put(
            'operator.mul', '6', '7', '--begin-after',
            (utils.now() + datetime.timedelta(seconds=1)).isoformat(),
            '--json'))
        self.assertEqual(self.result(later['oid']), operator.mul(6, 7))
