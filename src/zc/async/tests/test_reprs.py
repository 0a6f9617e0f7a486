"""Job reprs stay short, whatever the size of the arguments and results:
in the repr itself, the logs, the CLI and monitor summaries and the
dashboard's API."""
import json

import transaction

import zc.asynchronous.job
from zc.asynchronous import logs
from zc.asynchronous import monitordb
from zc.asynchronous import utils
from zc.asynchronous.ops import webapi
from zc.asynchronous.tests.live import DispatcherTestCase
import zc.asynchronous.testing as testing

BIG = 'x' * 10000000


def same(value, key=None):
    return value


class BoundedReprTests(DispatcherTestCase):

    def test_bounded_repr(self):
        self.assertEqual(logs.bounded_repr('abc'), "'abc'")
        text = logs.bounded_repr('y' * 300)
        self.assertEqual(text, "'" + 'y' * 199 + '...(302 characters)')
        self.assertEqual(repr(logs.BoundedRepr('y' * 300)), text)

    def test_a_big_argument_and_result(self):
        job = self.put(same, BIG, key=BIG)
        self.assertLess(len(repr(job)), 700)
        self.assertIn("xxx...(10000002 characters), key='xxx", repr(job))
        self.start()
        self.assertEqual(len(testing.wait_for_result(job)), len(BIG))
        transaction.begin()
        longest = max(len(record.getMessage()) for record in self.log.records)
        self.assertLess(longest, 1500)
        summary = monitordb.jobsummary(job)
        self.assertEqual([len(arg) for arg in summary['args']], [224])
        self.assertEqual(len(summary['kwargs']['key']), 224)
        self.assertEqual(len(summary['result']), 224)
        answer = webapi.encoder.encode(webapi.job_detail(
            self.conn, str(job._p_oid[-1])))
        self.assertLess(len(answer), 5000)
        self.assertEqual(json.loads(answer)['args'], summary['args'])

    def put(self, call, *args, **kwargs):
        job = self.queue.put(zc.asynchronous.job.Job(call, *args, **kwargs))
        transaction.commit()
        return job
